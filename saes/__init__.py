"""Sparse autoencoders: the SAE module, selection rules (variants), trainer, evaluation, artifacts,
the feature store and the SAE analyses.

The public API, importable from the package root (resolved lazily, so ``import saes`` stays cheap
and loads a submodule only when one of its names is used)::

    from saes import SAE, RunConfig, load_sae, FeatureStore, build_store

(``train`` lives in ``saes.train`` for now: a root attribute ``train`` would be replaced by the
submodule of that name as soon as anything imports ``saes.train``.)
"""

from __future__ import annotations

import importlib
from typing import Any

# public name -> the module that defines it
_EXPORTS = {
    "SAE": "saes.sae",
    "SAEConfig": "saes.config",
    "RunConfig": "saes.train_config",
    "load_run_config": "saes.train_config",
    "evaluate_run": "saes.evals",
    "evaluate_sae": "saes.evals",
    "load_sae": "saes.artifacts",
    "RunDir": "saes.rundir",
    "list_runs": "saes.runs",
    "SweepConfig": "saes.sweep",
    "run_sweep": "saes.sweep",
    "FeatureStore": "saes.features",
    "StoreConfig": "saes.features",
    "build_store": "saes.features",
    "variant_names": "saes.variants",
}
# submodules a user reaches as attributes of the root (``saes.figures.activation_histogram``)
_MODULES = {"figures": "saes.figures", "render": "saes.features.render"}

__all__ = sorted(_EXPORTS) + sorted(_MODULES)


def __getattr__(name: str) -> Any:
    if name in _MODULES:
        value = importlib.import_module(_MODULES[name])
    elif name in _EXPORTS:
        value = getattr(importlib.import_module(_EXPORTS[name]), name)
    else:
        raise AttributeError(f"module 'saes' has no attribute {name!r}")
    globals()[name] = value  # later lookups skip this function
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
