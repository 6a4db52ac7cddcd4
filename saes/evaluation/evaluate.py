"""Evaluation of any SAE on held-out activations, and with the SAE spliced into the model.

The reconstruction metrics (FVU, explained variance, L0, dead / dense fractions, cosine, norm
ratio; formulas in :mod:`saes.evaluation.metrics`) are computed on held-out rows: the model's activations
on the validation split of the text source, or cached rows when the config names them (``eval.cache``,
a cache of held-out activations; or the tail of ``data.cache`` that training never read,
``eval.holdout_tokens``). With a model the SAE is also spliced into it on validation windows: our
CE/KL (``ce_loss_recovered``, ``kl_div``) and SAELens's convention under ``"saelens"`` (the number
published SAEs report). A run without a model (``data.model`` null) reports the reconstruction
metrics only, and ``metrics.json`` says under ``"skipped"`` which metrics were left out and why.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from interp.activation_files import ActivationFiles
from interp.activations import ActivationBatch, ActivationCapture, capture_stream
from interp.atomic_files import atomic_write_json
from interp.data import token_windows
from interp.models import dtype_name, load_model
from saes.artifacts import load_sae
from saes.evaluation.metrics import (
    DENSE_THRESHOLD,
    SPLICED_KEYS,
    UNDERUSED_RATIO,
    ReconstructionStats,
    fvu,
    reconstruction_metrics,
    saelens_metrics,
    special_token_ids,
    spliced_metrics,
)
from saes.rundir import RunDir
from saes.training.activation_sources import cache_rows, holdout_range
from saes.training.config import RunConfig

__all__ = [
    "DENSE_THRESHOLD",
    "UNDERUSED_RATIO",
    "HeldOutRows",
    "ReconstructionStats",
    "evaluate_run",
    "evaluate_sae",
    "fvu",
    "held_out_rows",
    "reconstruction_metrics",
    "saelens_metrics",
    "special_token_ids",
    "spliced_metrics",
    "validation_windows",
]


@dataclass
class HeldOutRows:
    """Cached activation rows ``[start, stop)`` of ``cache`` evaluated instead of the model's
    validation text: ``kind`` "holdout" (the tail of the training cache, never trained on) or
    "eval_cache" (a cache of held-out activations)."""

    cache: ActivationFiles
    start: int
    stop: int
    kind: str

    def batches(self, hook: str, with_grads: bool = False) -> list[ActivationBatch]:
        return list(cache_rows(self.cache, [hook], self.start, self.stop, with_grads))

    def describe(self) -> dict[str, Any]:
        return {
            "from": self.kind,
            "cache": str(self.cache.folder),
            "rows": [self.start, self.stop],
            "n_rows": self.stop - self.start,
        }

    def sentence(self) -> str:
        what = "the held-out tail of" if self.kind == "holdout" else "eval cache"
        return f"rows {self.start}..{self.stop - 1} of {what} {self.cache.folder}"


def held_out_rows(cfg: RunConfig) -> HeldOutRows | None:
    """The cached rows a run is evaluated on (at most ``eval.tokens`` of them): the first rows of
    ``eval.cache``, else the held-out tail of ``data.cache``; None: the model's validation text."""
    if cfg.eval.cache:
        cache = ActivationFiles(cfg.eval.cache)
        cache.check_hook(cfg.data.hook, d_in=cfg.sae.d_in)
        return HeldOutRows(cache, 0, min(cfg.eval.tokens, len(cache)), "eval_cache")
    if cfg.data.cache:
        cache = ActivationFiles(cfg.data.cache, allow_incomplete=cfg.data.cache_allow_incomplete)
        held = holdout_range(cfg, cache)
        if held is not None:
            start, stop = held
            return HeldOutRows(cache, start, min(stop, start + cfg.eval.tokens), "holdout")
    return None


def validation_windows(model, source: str, context_size: int, seed: int, n: int) -> torch.Tensor:
    """The first ``n`` windows of the validation split of ``source`` (what the CE/KL runs on)."""
    wins = token_windows(
        model.tokenizer, source=source, context_size=context_size, split="validation", seed=seed
    )
    return torch.stack([w for _, w in zip(range(n), wins)])


def evaluate_sae(
    sae,
    model,
    hook: str,
    source: str = "stdlib",
    context_size: int = 128,
    eval_tokens: int = 32_768,
    ce_windows: int = 32,
    batch_windows: int = 16,
    seed: int = 0,
    progress: bool = False,
    rows: HeldOutRows | None = None,
    no_model: str = "no model was given",
) -> dict[str, Any]:
    """All metrics of ``sae``: reconstruction on ``rows`` (cached held-out activations) or, when
    None, on the validation split of ``source`` through ``model``; with a model, the spliced CE/KL
    on its validation windows, ours and SAELens's. ``model`` None (``rows`` needed): the
    spliced metrics are listed under ``"skipped"`` with the reason ``no_model``."""
    needs_grads = getattr(sae.variant, "needs_grads", False)
    skipped: dict[str, str] = {}
    if rows is None:
        if model is None:
            raise ValueError("no model and no cached held-out rows (eval.cache) to evaluate on")
        n = max(ce_windows, -(-eval_tokens // (context_size - 1)))
        windows = validation_windows(model, source, context_size, seed, n)
        capture = ActivationCapture(model, [hook], with_grads=needs_grads)
        batches = list(
            capture_stream(capture, windows.split(batch_windows), max_tokens=eval_tokens)
        )
        grads_ok = needs_grads
    else:
        grads_ok = needs_grads and rows.cache.manifest.has_grads
        if needs_grads and not grads_ok:
            skipped["with_grads"] = (
                f"cache {rows.cache.folder} holds no gradients: evaluated without dL/dx only"
            )
        batches = rows.batches(hook, with_grads=grads_ok)
        windows = None
        if model is not None and ce_windows > 0:
            windows = validation_windows(model, source, context_size, seed, ce_windows)
    if model is None:
        skipped.update({k: no_model for k in (*SPLICED_KEYS, "saelens")})
    elif ce_windows == 0:
        skipped.update({k: "eval.ce_windows is 0" for k in (*SPLICED_KEYS, "saelens")})
    spliced = model is not None and ce_windows > 0

    def one_mode(use_grads: bool) -> dict[str, Any]:
        grads = (b.grads[hook] for b in batches) if use_grads else None
        out = reconstruction_metrics(sae, (b.acts[hook] for b in batches), grads)
        if spliced:
            out.update(spliced_metrics(sae, model, hook, windows[:ce_windows], use_grads=use_grads))
        return out

    # gradient-aware SAEs are evaluated in both inference modes: with dL/dx (the paper's, top level)
    # and without (plain TopK on the same weights, under "without_grads")
    metrics = one_mode(grads_ok)
    metrics["inference_mode"] = "with_grads" if grads_ok else "plain"
    if grads_ok:
        metrics["without_grads"] = one_mode(False)
    if spliced:
        # SAELens's convention, as SAELens computes it on the artifact (plain inference)
        metrics["saelens"] = saelens_metrics(sae, model, hook, windows[:ce_windows])
    metrics.update(
        {
            "hook": hook,
            "eval_source": source if rows is None else f"cache {rows.cache.folder}",
            "eval_split": "validation" if rows is None else rows.kind,
            "context_size": context_size,
        }
    )
    if rows is not None:
        metrics["eval_rows"] = rows.describe()
        if spliced:
            metrics["ce_source"] = f"{source} (validation split), {ce_windows} windows"
    if skipped:
        metrics["skipped"] = skipped
    return metrics


def evaluate_run(
    run_dir: str | Path,
    cfg=None,
    model=None,
    progress: bool = False,
    use_model: bool = True,
    eval_cache: str | Path | None = None,
) -> dict[str, Any]:
    """Evaluate the SAE in a run folder and write ``metrics.json`` there. A run with
    ``data.model`` null (and no ``model`` given) is evaluated on cached held-out rows only;
    ``use_model`` False does the same for any run (its model is not loaded); ``eval_cache`` names
    a cache of held-out activations in place of the config's ``eval.cache``."""
    run_dir = Path(run_dir)
    folder = RunDir(run_dir)
    if cfg is None:
        cfg = RunConfig.from_saved(folder.config(required=True))
    if eval_cache is not None:
        cfg = cfg.model_copy(
            update={"eval": cfg.eval.model_copy(update={"cache": str(eval_cache)})}
        )
    rows = held_out_rows(cfg)
    if cfg.data.model is None:
        no_model = f"no model: the run trained from cache {cfg.data.cache} with data.model null"
    else:
        no_model = f"no model: evaluated without loading data.model {cfg.data.model!r}"
        if not use_model:
            model = None
        elif model is None:
            model = load_model(cfg.data.model, device=cfg.device, dtype=cfg.data.model_dtype)
    if model is None and rows is None:
        raise ValueError(
            f"{run_dir}: no model to evaluate with and no held-out cached rows: name a cache of "
            "held-out activations (eval.cache, or interp eval --eval-cache), or train with "
            "eval.holdout_tokens"
        )
    if progress and rows is not None:
        print(f"evaluating {run_dir} on {rows.sentence()}")
    sae = load_sae(run_dir, device=cfg.device)
    metrics = evaluate_sae(
        sae,
        model,
        cfg.data.hook,
        source=cfg.data.source,
        context_size=cfg.data.context_size,
        eval_tokens=cfg.eval.tokens,
        ce_windows=cfg.eval.ce_windows,
        batch_windows=cfg.data.batch_windows,
        seed=cfg.data.seed,
        progress=progress,
        rows=rows,
        no_model=no_model,
    )
    metrics["model"] = cfg.data.model
    # the one dtype the clean, spliced and ablated forwards all ran in (None: no model)
    params = getattr(model, "parameters", None)
    metrics["model_dtype"] = dtype_name(next(params()).dtype) if params is not None else None
    add_training_throughput(metrics, folder)
    atomic_write_json(folder.metrics_path, metrics)
    return metrics


def add_training_throughput(metrics: dict[str, Any], folder: RunDir) -> None:
    """The training log's last throughput and token count, into ``metrics`` (when logged)."""
    last = folder.last_log_record()
    if last is not None:
        metrics["train_tokens_per_s"] = last.get("tokens_per_s")
        metrics["train_tokens"] = last.get("tokens")
