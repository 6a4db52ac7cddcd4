"""Building and placing ``HookedTransformer`` instances: construction without TransformerLens's
warnings, attaching a tokenizer, the fast weight layout, device checks and the final move."""

from __future__ import annotations

import contextlib
import warnings
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import torch

if TYPE_CHECKING:  # pragma: no cover
    from transformer_lens import HookedTransformer
    from transformers import PreTrainedTokenizerBase


def default_device() -> str:
    return "cuda" if torch.cuda.is_available() else "cpu"


@contextlib.contextmanager
def quiet_tl():
    """Silence TransformerLens's HookedTransformer deprecation warning (3.x) while we build one."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", category=DeprecationWarning, module=r"transformer_lens.*")
        warnings.filterwarnings("ignore", message=r".*HookedTransformer is deprecated.*")
        yield


def new_hooked(cfg: Any) -> HookedTransformer:
    """A HookedTransformer built from ``cfg`` on CPU, without a tokenizer (attached separately)."""
    from transformer_lens import HookedTransformer

    with quiet_tl():
        return HookedTransformer(cfg, tokenizer=None, move_to_device=False)


def attach_tokenizer(model: HookedTransformer, tokenizer: PreTrainedTokenizerBase | None) -> None:
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


def fast_layout(model: HookedTransformer) -> None:
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


def check_device(device: str | torch.device | None) -> None:
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


def place(
    model: HookedTransformer, device: str | torch.device | None, dtype: torch.dtype
) -> HookedTransformer:
    """Cast ``model`` to ``dtype``, move it to ``device`` (default: CUDA when available), restore
    the fast layout (``.to()`` may copy) and switch it to eval mode."""
    dev = str(torch.device(default_device() if device is None else device))
    if next(model.parameters()).dtype != dtype:
        model.to(dtype, print_details=False)
    if str(next(model.parameters()).device) != dev or str(model.cfg.device) != dev:
        model.to(dev, print_details=False)
    fast_layout(model)
    model.eval()
    return model
