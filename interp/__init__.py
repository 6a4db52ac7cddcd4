"""interp: a mechanistic-interpretability toolkit (activation capture, SAE training, analyses).

The model side's public API, importable from the package root (resolved lazily, so
``import interp`` stays cheap and the subpackages load only when a name is used)::

    from interp import load_model, ActivationCapture, token_windows

The ``saes`` package holds SAEs, training and the SAE analyses; ``circuits`` the circuit discovery.
"""

from __future__ import annotations

import importlib
from typing import Any

__version__ = "0.1.0"

# public name -> the module that defines it
_EXPORTS = {
    "load_model": "interp.models",
    "list_models": "interp.models",
    "ActivationCapture": "interp.activations",
    "ActivationBatch": "interp.activations",
    "shuffled_batches": "interp.activations",
    "token_windows": "interp.data",
    "hook_name": "interp.hooks",
    "Intervention": "interp.interventions",
    "run_with_interventions": "interp.interventions",
    "patch": "interp.interventions",
    "mean_ablate": "interp.interventions",
    "ActivationCache": "interp.cache",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name not in _EXPORTS:
        raise AttributeError(f"module 'interp' has no attribute {name!r}")
    value = getattr(importlib.import_module(_EXPORTS[name]), name)
    globals()[name] = value  # later lookups skip this function
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
