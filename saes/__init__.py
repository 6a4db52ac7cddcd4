"""Sparse autoencoders: the SAE module, selection rules (variants), trainer, evaluation, artifacts,
the feature store and the SAE analyses.

The public API, importable from the package root (resolved lazily, so ``import saes`` stays cheap
and loads a submodule only when one of its names is used)::

    from saes import SAE, RunConfig, train, load_sae, FeatureStore, build_store

* SAEs and training: ``SAE``, ``SAEConfig``, ``variant_names``, ``RunConfig``,
  ``load_run_config``, ``train`` (``saes.training.loop.train``, the training loop: ``train(cfg)``
  trains a run or a job and returns its run folder), ``expand_job``;
* transcoders (per-layer and skip: an ``SAE`` with ``sae.kind``; cross-layer:
  ``CrossLayerTranscoder``): ``load_dictionary`` / ``save_dictionary`` (any run folder, ours,
  SAELens's, sparsify's and circuit-tracer's CLTs), ``load_transcoder_set`` /
  ``write_transcoder_set`` (circuit-tracer's per-layer sets), ``evaluate_replacement`` (FVU and
  CE / KL with one or every MLP replaced);
* run folders and evaluation: ``RunDir``, ``list_runs``, ``load_sae``, ``evaluate_run``,
  ``evaluate_sae``; sweeps: ``SweepConfig``, ``run_sweep``, ``summary_row``;
* features: ``FeatureStore``, ``StoreConfig``, ``build_store``, ``prompt_features``, and their
  HTML (``tokens_html``, ``example_html``, ``examples_html``; all of :mod:`saes.features.render`
  as ``saes.render``) and figures (``saes.figures``);
* analyses: steering (``decoder_direction``, ``mean_activation_norm``, ``steer_latents``),
  attention SAEs (``load_head_layout``, ``head_attribution``, ``explore_prompt``,
  ``InductionSearchConfig``, ``find_induction_features``, ``format_induction_report``) and dark
  matter (``DarkMatterConfig``, ``capture_rows``, ``dark_matter_windows``, ``analyse_sae``,
  ``scaling_report``, ``gradient_pursuit``, ``dark_matter_table`` and the ``*_figure`` functions
  of :mod:`saes.analysis.dark_matter.figures`).
"""

from __future__ import annotations

from interp._lazy import lazy_root

# public name -> the module that defines it ("module:attribute" where the root names it otherwise)
_EXPORTS = {
    "SAE": "saes.sae",
    "SAEConfig": "saes.config",
    "variant_names": "saes.variants",
    "RunConfig": "saes.training.config",
    "load_run_config": "saes.training.config",
    "train": "saes.training.loop",
    "expand_job": "saes.training.shared_stream",
    "evaluate_run": "saes.evaluation.evaluate",
    "evaluate_sae": "saes.evaluation.evaluate",
    "load_sae": "saes.artifacts",
    "CrossLayerTranscoder": "saes.transcoders.clt",
    "load_dictionary": "saes.transcoders.files",
    "save_dictionary": "saes.transcoders.files",
    "load_transcoder_set": "saes.transcoders.files",
    "write_transcoder_set": "saes.transcoders.files",
    "evaluate_replacement": "saes.transcoders.evaluate",
    "RunDir": "saes.rundir",
    "list_runs": "saes.runs",
    "SweepConfig": "saes.training.sweep",
    "run_sweep": "saes.training.sweep",
    "summary_row": "saes.training.sweep",
    "FeatureStore": "saes.features",
    "StoreConfig": "saes.features",
    "build_store": "saes.features",
    "prompt_features": "saes.features.prompt",
    "tokens_html": "saes.features.render",
    "example_html": "saes.features.render",
    "examples_html": "saes.features.render",
    "decoder_direction": "saes.analysis.steering",
    "mean_activation_norm": "saes.analysis.steering",
    "steer_latents": "saes.analysis.steering",
    "load_head_layout": "saes.analysis.attention_heads",
    "head_attribution": "saes.analysis.attention_heads",
    "explore_prompt": "saes.analysis.prompts",
    "InductionSearchConfig": "saes.analysis.induction",
    "find_induction_features": "saes.analysis.induction",
    "format_induction_report": "saes.analysis.induction",
    "DarkMatterConfig": "saes.analysis.dark_matter.pipeline",
    "capture_rows": "saes.analysis.dark_matter.pipeline",
    "dark_matter_windows": "saes.analysis.dark_matter.pipeline:validation_windows",
    "analyse_sae": "saes.analysis.dark_matter.pipeline",
    "scaling_report": "saes.analysis.dark_matter.pipeline",
    "gradient_pursuit": "saes.analysis.dark_matter.pursuit",
    "dark_matter_table": "saes.analysis.dark_matter.cli:format_table",
    "decomposition_figure": "saes.analysis.dark_matter.figures",
    "norm_prediction_figure": "saes.analysis.dark_matter.figures",
    "downstream_figure": "saes.analysis.dark_matter.figures",
    "pursuit_figure": "saes.analysis.dark_matter.figures",
    "scaling_figure": "saes.analysis.dark_matter.figures",
}
# submodules a user reaches as attributes of the root (``saes.figures.activation_histogram``)
_MODULES = {"figures": "saes.figures", "render": "saes.features.render"}

__all__ = sorted(_EXPORTS) + sorted(_MODULES)
__getattr__, __dir__ = lazy_root(__name__, _EXPORTS, _MODULES)
