"""Reused per-thread CPU buffers for the dense pre-activations (CUDA has a caching allocator).

A fresh B x d_sae allocation costs more in page faults than the top-k selection itself on CPU,
so the TopK paths write their dense matrices into these buffers.
"""

from __future__ import annotations

import threading

import torch
from torch import Tensor

_tls = threading.local()


def _workspace(
    name: str, shape: tuple[int, ...] | int, dtype: torch.dtype, device: torch.device
) -> Tensor | None:
    """A reused per-thread buffer (None off CPU). Valid until the next call with the same name."""
    if device.type != "cpu":
        return None
    shape = (shape,) if isinstance(shape, int) else shape
    numel = 1
    for s in shape:
        numel *= s
    bufs = getattr(_tls, "bufs", None)
    if bufs is None:
        bufs = _tls.bufs = {}
    buf = bufs.get((name, dtype))
    if buf is None or buf.numel() < numel:
        bufs[(name, dtype)] = buf = torch.empty(numel, dtype=dtype, device=device)
    return buf[:numel].view(shape)


def release_workspace() -> None:
    """Free this thread's cached pre-activation workspace."""
    _tls.bufs = {}
