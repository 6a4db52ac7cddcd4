"""Circuit discovery from discrete SAE codes, judged against patching ground truth.

Modules: ``discrete_codes`` (the method), ``planted`` (a model with a known circuit), ``tasks``
(IOI, greater-than, docstring prompts), ``patching`` (activation / attribution patching),
``ground_truth`` (the JSON fixtures), ``experiment`` (every method on one task), ``figures``
(plotly), ``cli`` (``interp circuits``, which ``commands`` adds to ``interp``).

The public API, importable from the package root (resolved lazily, as ``interp``'s and
``saes``'s)::

    from circuits import planted_model, planted_prompts, run_method, run_experiment

* the method: ``CodeSAEConfig``, ``head_vectors``, ``run_method``, ``head_labels``,
  ``heads_to_mask``, ``roc_auc``, ``best_balanced_f1``;
* the planted circuit: ``PLANTED``, ``planted_model``, ``planted_prompts``,
  ``induction_accuracy``;
* a task end to end: ``load_ground_truth``, ``fixture_path``, ``run_experiment``, and its figures
  (``heatmap_figure``, ``ranked_heads``).
"""

from __future__ import annotations

from interp._lazy import lazy_root

# public name -> the module that defines it
_EXPORTS = {
    "CodeSAEConfig": "circuits.discrete_codes",
    "head_vectors": "circuits.discrete_codes",
    "run_method": "circuits.discrete_codes",
    "head_labels": "circuits.discrete_codes",
    "heads_to_mask": "circuits.discrete_codes",
    "roc_auc": "circuits.discrete_codes",
    "best_balanced_f1": "circuits.discrete_codes",
    "PLANTED": "circuits.planted",
    "planted_model": "circuits.planted",
    "planted_prompts": "circuits.planted",
    "induction_accuracy": "circuits.planted",
    "load_ground_truth": "circuits.ground_truth",
    "fixture_path": "circuits.ground_truth",
    "run_experiment": "circuits.experiment",
    "heatmap_figure": "circuits.figures",
    "ranked_heads": "circuits.figures",
}

__all__ = sorted(_EXPORTS)
__getattr__, __dir__ = lazy_root(__name__, _EXPORTS)
