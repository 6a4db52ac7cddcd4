"""interp: a mechanistic-interpretability toolkit (activation capture, SAE training, analyses).

The model side's public API, importable from the package root (resolved lazily, so
``import interp`` stays cheap and the subpackages load only when a name is used)::

    from interp import load_model, ActivationCapture, token_windows

* models and activations: ``load_model``, ``list_models``, ``hook_name``, ``ActivationCapture``,
  ``ActivationBatch``, ``shuffled_batches``, ``token_windows``, ``Vocab`` (token text);
* activation caches: ``ActivationFiles``, ``ActivationFilesError``;
* interventions: ``Intervention``, ``run_with_interventions``, ``patch``, ``mean_ablate``,
  ``add_direction``;
* activation sparsity (:mod:`interp.sparsity`): the Sparsing Law's series and fits
  (``load_published``, ``fit_series``, ``PAPER_CONSTANTS``), PPL-p% measurement
  (``MeasureConfig``, ``ppl_sparsity``, ``windows_for``) and their figures (``series_figure``,
  ``linearised_figure``, ``profile_figure``, ``layers_figure``).

The ``saes`` package holds SAEs, training and the SAE analyses; ``circuits`` the circuit discovery.
"""

from __future__ import annotations

from interp._lazy import lazy_root
from interp.deprecation import renamed_export

__version__ = "0.1.0"

# public name -> the module that defines it
_EXPORTS = {
    "load_model": "interp.models",
    "list_models": "interp.models",
    "ActivationCapture": "interp.activations",
    "ActivationBatch": "interp.activations",
    "shuffled_batches": "interp.activations",
    "token_windows": "interp.data",
    "Vocab": "interp.text",
    "hook_name": "interp.hooks",
    "Intervention": "interp.interventions",
    "run_with_interventions": "interp.interventions",
    "patch": "interp.interventions",
    "mean_ablate": "interp.interventions",
    "add_direction": "interp.interventions",
    "ActivationFiles": "interp.activation_files",
    "ActivationFilesError": "interp.activation_files",
    "load_published": "interp.sparsity.laws",
    "fit_series": "interp.sparsity.laws",
    "PAPER_CONSTANTS": "interp.sparsity.laws",
    "MeasureConfig": "interp.sparsity.measure",
    "ppl_sparsity": "interp.sparsity.measure",
    "windows_for": "interp.sparsity.measure",
    "series_figure": "interp.sparsity.figures",
    "linearised_figure": "interp.sparsity.figures",
    "profile_figure": "interp.sparsity.figures",
    "layers_figure": "interp.sparsity.figures",
}

# old public name -> where it lives now: still importable from the root, with a
# DeprecationWarning (interp.deprecation; the renames are in docs/changelog.md)
_RENAMED = {
    "ActivationCache": "interp.activation_files.ActivationFiles",
}

__all__ = sorted(_EXPORTS)
_lazy_getattr, __dir__ = lazy_root(__name__, _EXPORTS)


def __getattr__(name: str):
    if name in _RENAMED:
        return renamed_export("interp", name, _RENAMED)
    return _lazy_getattr(name)
