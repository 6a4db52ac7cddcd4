"""The dtype a model runs in: ``float32``, ``bfloat16``, or ``auto``.

``auto`` is bf16 where bf16 matrix products are native and fast, and fp32 elsewhere:

* CUDA: bf16 when the GPU supports it (``torch.cuda.is_bf16_supported()``, Ampere and later);
* CPU: bf16 when the CPU has bf16 matrix units, read from ``/proc/cpuinfo`` flags ``amx_bf16``
  (Intel AMX, Sapphire Rapids and later) or ``avx512_bf16`` (Cooper Lake, AMD Zen 4 and later);
  without them torch emulates bf16 and it is slower than fp32;
* anything else (MPS, macOS, other CPUs): fp32.

What bf16 costs: on SmolLM2 the next-token distribution moves by a mean KL of a few thousandths
of a nat from fp32 (``bench/activations.py`` measures it), and RMSNorm/LayerNorm statistics are
still computed in fp32 (``interp.models.fast_forward``). Activations a capture stores keep their own
dtype (``activation_dtype``), independent of the model's.
"""

from __future__ import annotations

import functools
from pathlib import Path
from typing import Literal

import torch

ModelDtype = Literal["float32", "bfloat16", "auto"]
MODEL_DTYPES: tuple[str, ...] = ("float32", "bfloat16", "auto")
BF16_CPU_FLAGS = ("amx_bf16", "avx512_bf16")


@functools.cache
def cpu_bf16_flags() -> tuple[str, ...]:
    """The bf16 matrix-unit flags this CPU reports (empty where /proc/cpuinfo is unreadable)."""
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return ()
    for line in text.splitlines():
        if line.startswith("flags"):
            flags = set(line.split(":", 1)[1].split())
            return tuple(f for f in BF16_CPU_FLAGS if f in flags)
    return ()


def resolve_model_dtype(
    dtype: str | torch.dtype, device: str | torch.device | None = None
) -> torch.dtype:
    """A torch dtype for ``dtype`` (a torch dtype, or one of MODEL_DTYPES) on ``device``."""
    if isinstance(dtype, torch.dtype):
        return dtype
    if dtype not in MODEL_DTYPES:
        raise ValueError(f"model dtype {dtype!r} is not one of {list(MODEL_DTYPES)}")
    if dtype != "auto":
        return getattr(torch, dtype)
    kind = torch.device(device).type if device is not None else _default_kind()
    if kind == "cuda":
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float32
    if kind == "cpu":
        return torch.bfloat16 if cpu_bf16_flags() else torch.float32
    return torch.float32


def dtype_name(dtype: torch.dtype) -> str:
    return str(dtype).removeprefix("torch.")


def _default_kind() -> str:
    return "cuda" if torch.cuda.is_available() else "cpu"
