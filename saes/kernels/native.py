"""The optional C++ kernels: build (JIT, once, cached on disk), load, and report their status.

The source is ``native.cpp`` next to this module (the top-k selection and the counting sort
behind :class:`saes.kernels.sparse_ops.LatentOrder`), built with ``torch.utils.cpp_extension``.
The build's name hashes that file's contents, the compiler flags and this CPU's fingerprint, so
editing the C++ (or moving to another CPU) always builds afresh instead of loading a stale
library.
"""

from __future__ import annotations

import glob
import hashlib
import os
import shutil
import warnings
from pathlib import Path

import torch
from torch import Tensor

_SRC_PATH = Path(__file__).with_name("native.cpp")
_NATIVE_SRC = _SRC_PATH.read_text()


def _cpu_fingerprint() -> str:
    """This CPU's model and feature flags ("" when unknown): part of the build's name, so that a
    kernel compiled for one CPU (``-march=native``) is never loaded on another."""
    try:
        with open("/proc/cpuinfo") as f:
            lines = [ln for ln in f if ln.startswith(("model name", "flags"))]
        return "".join(sorted(set(lines)))
    except OSError:
        return ""


_CPU = _cpu_fingerprint()
# -march=native: the group-max scan vectorises with the CPU's widest registers (~15% faster)
_NATIVE_FLAGS = ["-O3", "-fopenmp"] + (["-march=native"] if _CPU else [])
_NATIVE_NAME = (
    "saes_native_"
    + hashlib.sha1((_NATIVE_SRC + " ".join(_NATIVE_FLAGS) + _CPU).encode()).hexdigest()[:12]
)
_native_state: dict = {"enabled": None, "lib": None, "error": None}


def enable_native(enabled: bool = True) -> bool:
    """Use (or stop using) the C++ kernels: top-k in :func:`topk_select` ``method="auto"`` and the
    counting sort of :class:`LatentOrder`.

    ``enable_native(True)`` builds the kernel if needed: the first build compiles a small torch
    extension (~30-60 s, needs a C++ compiler with OpenMP) cached by torch under
    ``TORCH_EXTENSIONS_DIR`` (default ``~/.cache/torch_extensions``); later processes load it in
    ~0.2 s. Returns whether the kernel is in use; on any build failure the pure-torch selection
    stays in use.

    Without a call, ``"auto"`` follows the environment: ``SAES_NATIVE=1`` builds and uses it,
    ``SAES_NATIVE=0`` never uses it, and when unset the kernel is used only if this exact
    version is already built (``make setup`` builds it; it is never compiled implicitly
    during training). Both give the same top-k sets (only tie-breaking may differ).
    """
    _native_state["enabled"] = bool(enabled)
    return bool(enabled) and _native_lib(build=True) is not None


def native_status() -> dict:
    """Whether the native top-k is in use, built, the build error if any, and the C++ compiler
    a build would use (None: there is none, so the pure-torch selection is the only one)."""
    return {
        "in_use": _native_ready() and _native_state["lib"] is not None,
        "built": _native_cached(),
        "error": _native_state["error"],
        "name": _NATIVE_NAME,
        "compiler": cxx_compiler(),
    }


def cxx_compiler() -> str | None:
    """The path of the C++ compiler torch's extension builder uses (``$CXX``, else ``c++``), or
    None when this machine has none."""
    return shutil.which(os.environ.get("CXX", "c++"))


def selection_kernel() -> str:
    """A sentence naming the CPU top-k selection that ``method="auto"`` uses in this process."""
    if _native_ready():
        return "C++ kernel (saes.kernels native top-k)"
    if _native_state["error"]:
        reason = f"the C++ kernel failed to build: {_native_state['error']}"
    elif _native_cached():
        reason = "the C++ kernel is built but disabled (SAES_NATIVE=0 or enable_native(False))"
    else:
        reason = "the C++ kernel is not built: `interp kernels --build` compiles it once"
    return f"pure torch max-tree ({reason})"


def _native_cached() -> bool:
    try:
        # deferred: torch.utils.cpp_extension (and its setuptools import) only when asked
        from torch.utils.cpp_extension import _get_build_directory

        return bool(glob.glob(os.path.join(_get_build_directory(_NATIVE_NAME, False), "*.so")))
    except Exception:  # noqa: BLE001
        return False


def _native_ready() -> bool:
    """Decide (once) whether "auto" uses the native kernel; loads it when it will."""
    if _native_state["enabled"] is None:
        env = os.environ.get("SAES_NATIVE", "")
        _native_state["enabled"] = env not in ("0", "") or (env == "" and _native_cached())
    if not _native_state["enabled"] or _native_state["error"] is not None:
        return False
    return _native_lib(build=True) is not None


def _native_lib(build: bool = True):
    if _native_state["lib"] is None and _native_state["error"] is None and build:
        try:
            # deferred: torch.utils.cpp_extension (and its setuptools import) only when building
            from torch.utils.cpp_extension import load_inline

            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                _native_state["lib"] = load_inline(
                    _NATIVE_NAME,
                    cpp_sources=_NATIVE_SRC,
                    functions=["topk_rows", "latent_order"],
                    extra_cflags=_NATIVE_FLAGS,
                    extra_ldflags=["-fopenmp"],
                    verbose=False,
                )
        except Exception as e:  # noqa: BLE001 - any build problem means: use pure torch
            _native_state["error"] = f"{type(e).__name__}: {e}"
    return _native_state["lib"]


def _native_ok(pre: Tensor, k: int) -> bool:
    return (
        pre.dim() == 2
        and pre.device.type == "cpu"
        and pre.dtype in (torch.float32, torch.float64, torch.bfloat16)
        and pre.stride(1) == 1
        and 1 <= k <= pre.shape[1]
    )


def _native_for(t: Tensor):
    """The C++ library when "auto" uses it and ``t`` lives on the CPU, else None."""
    return _native_state["lib"] if t.device.type == "cpu" and _native_ready() else None


def _native_group(n: int, k: int) -> int:
    """Group size: ~4k groups per row (measured best on a 2-core Xeon for n >= 4k)."""
    return max(1, min(64, n // (4 * k)))
