"""Tiny random models for tests and demos: the offline byte-level tokenizer, :func:`tiny_model`
and the ``"tiny:key=value,..."`` spec parser."""

from __future__ import annotations

import difflib
import functools
import inspect
from typing import TYPE_CHECKING, Any

import torch

from interp.models.hooked import attach_tokenizer, check_device, new_hooked, place
from interp.text import byte_to_char

if TYPE_CHECKING:  # pragma: no cover
    from transformer_lens import HookedTransformer
    from transformers import PreTrainedTokenizerBase

TINY_SPECS = ("tiny", "tiny-attn-only")

BYTE_BOS = "<|endoftext|>"
BYTE_PAD = "<|pad|>"


@functools.lru_cache(maxsize=1)
def _byte_tokenizer_json() -> str:
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers

    b2c = byte_to_char()
    vocab = {b2c[b]: b for b in range(256)}  # token id == byte value
    tok = Tokenizer(models.BPE(vocab=vocab, merges=[], fuse_unk=False))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)
    tok.decoder = decoders.ByteLevel()
    tok.add_special_tokens([BYTE_BOS, BYTE_PAD])  # ids 256, 257
    return tok.to_str()


def byte_tokenizer() -> PreTrainedTokenizerBase:
    """An offline byte-level ``PreTrainedTokenizerFast``: ids 0-255 are the bytes of the UTF-8 text,
    256 is ``<|endoftext|>`` (BOS and EOS), 257 is ``<|pad|>``. It adds no BOS by itself (GPT-2 style);
    HookedTransformer's ``to_tokens`` prepends it (``default_prepend_bos=True`` for tiny models)."""
    from tokenizers import Tokenizer
    from transformers import PreTrainedTokenizerFast

    tok = PreTrainedTokenizerFast(
        tokenizer_object=Tokenizer.from_str(_byte_tokenizer_json()),
        bos_token=BYTE_BOS,
        eos_token=BYTE_BOS,
        pad_token=BYTE_PAD,
        model_max_length=1 << 30,
        clean_up_tokenization_spaces=False,
    )
    tok.padding_side = "right"
    return tok


def tiny_model(
    n_layers: int = 2,
    d_model: int = 64,
    n_heads: int = 4,
    d_head: int = 16,
    d_mlp: int = 256,
    attn_only: bool = False,
    n_key_value_heads: int | None = None,
    n_ctx: int = 256,
    seed: int = 0,
    act_fn: str = "gelu",
    gated_mlp: bool = False,
    normalization_type: str = "LN",
    positional_embedding_type: str = "standard",
    device: str | torch.device | None = None,
    dtype: torch.dtype = torch.float32,
) -> HookedTransformer:
    """A small random-init HookedTransformer with :func:`byte_tokenizer` (vocab 258).

    Deterministic under ``seed`` (weights are drawn inside a forked RNG, so the caller's global
    torch RNG state is left untouched). ``n_key_value_heads`` < ``n_heads`` gives grouped-query
    attention; ``normalization_type`` may be "LN" or "RMS"; ``positional_embedding_type``
    "standard" (learned, has ``hook_pos_embed``) or "rotary".
    """
    from transformer_lens import HookedTransformerConfig

    for name, val in {
        "n_layers": n_layers,
        "d_model": d_model,
        "n_heads": n_heads,
        "d_head": d_head,
        "n_ctx": n_ctx,
    }.items():
        if not isinstance(val, int) or isinstance(val, bool) or val <= 0:
            raise ValueError(f"tiny_model: {name} must be a positive int, got {val!r}")
    if not attn_only and (not isinstance(d_mlp, int) or d_mlp <= 0):
        raise ValueError(f"tiny_model: d_mlp must be a positive int, got {d_mlp!r}")
    if n_key_value_heads is not None and (n_key_value_heads <= 0 or n_heads % n_key_value_heads):
        raise ValueError(
            f"tiny_model: n_heads ({n_heads}) must be a multiple of n_key_value_heads ({n_key_value_heads})"
        )
    if normalization_type not in ("LN", "RMS"):
        raise ValueError(
            f"tiny_model: normalization_type must be 'LN' or 'RMS', got {normalization_type!r}"
        )
    if positional_embedding_type not in ("standard", "rotary"):
        raise ValueError(
            f"tiny_model: positional_embedding_type must be 'standard' or 'rotary', got {positional_embedding_type!r}"
        )
    from transformer_lens.utilities.activation_functions import SUPPORTED_ACTIVATIONS

    if not attn_only and act_fn not in SUPPORTED_ACTIVATIONS:
        raise ValueError(
            f"tiny_model: act_fn {act_fn!r} is not one of {', '.join(sorted(SUPPORTED_ACTIVATIONS))}"
        )
    check_device(device)
    tokenizer = byte_tokenizer()
    name = "tiny-attn-only" if attn_only else "tiny"
    cfg = HookedTransformerConfig(
        model_name=name,
        n_layers=n_layers,
        d_model=d_model,
        n_heads=n_heads,
        d_head=d_head,
        d_mlp=None if attn_only else d_mlp,
        attn_only=attn_only,
        n_key_value_heads=n_key_value_heads,
        n_ctx=n_ctx,
        d_vocab=len(tokenizer),
        act_fn=act_fn,
        gated_mlp=gated_mlp,
        normalization_type=normalization_type,
        positional_embedding_type=positional_embedding_type,
        final_rms=normalization_type == "RMS",
        default_prepend_bos=True,
        device="cpu",
        dtype=torch.float32,
        init_weights=True,
    )
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = new_hooked(cfg)
    model.cfg.seed = seed  # recorded only; setting it in the config would reseed the global RNG
    if attn_only:
        # TL creates hook_mlp_in/hook_mlp_out on every block, but they never fire without an MLP
        for block in model.blocks:
            for name in ("hook_mlp_in", "hook_mlp_out"):
                if hasattr(block, name):
                    delattr(block, name)
        model.setup()
    attach_tokenizer(model, tokenizer)
    return place(model, device, dtype)


def _coerce(key: str, raw: str, default: Any) -> Any:
    val = raw.strip()
    low = val.lower()
    if low in ("none", "null"):
        return None
    if isinstance(default, bool):
        if low in ("1", "true", "yes", "on"):
            return True
        if low in ("0", "false", "no", "off"):
            return False
        raise ValueError(f"tiny spec: {key}={raw!r} is not a boolean (use true/false)")
    if isinstance(default, int) or default is None:
        try:
            return int(val)
        except ValueError:
            raise ValueError(f"tiny spec: {key}={raw!r} is not an integer") from None
    return val


def parse_tiny_spec(spec: str) -> dict[str, Any]:
    """Parse ``"tiny"``, ``"tiny-attn-only"`` or ``"tiny[-attn-only]:k=v,k=v"`` into
    :func:`tiny_model` kwargs. Unknown keys or badly typed values raise ``ValueError``."""
    head, _, rest = spec.strip().partition(":")
    head = head.strip().lower()
    if head not in TINY_SPECS:
        raise ValueError(
            f"not a tiny spec: {spec!r} (expected one of {TINY_SPECS}, optionally ':key=value,...')"
        )
    params = inspect.signature(tiny_model).parameters
    allowed = [k for k in params if k not in ("device", "dtype")]
    kwargs: dict[str, Any] = {"attn_only": True} if head == "tiny-attn-only" else {}
    for item in filter(None, (p.strip() for p in rest.split(","))):
        key, eq, raw = item.partition("=")
        key = key.strip()
        if not eq:
            raise ValueError(f"tiny spec: expected key=value, got {item!r} in {spec!r}")
        if key not in allowed:
            close = difflib.get_close_matches(key, allowed, n=1)
            hint = f" Did you mean {close[0]!r}?" if close else ""
            raise ValueError(
                f"tiny spec: unknown option {key!r} in {spec!r}; valid options: {', '.join(allowed)}.{hint}"
            )
        kwargs[key] = _coerce(key, raw, params[key].default)
    return kwargs
