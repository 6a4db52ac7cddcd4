"""One SAE's (or one family of widths') dark-matter report, from activations to a JSON-ready dict.

:func:`capture_rows` reads activations through ``interp.activations.ActivationCapture`` over
``interp.data.token_windows`` (the fit tokens from the train split, the test tokens from the
validation split, BOS and rows over ``max_norm_ratio`` x the batch median norm left out, as
training does). :func:`analyse_sae` then runs, for one SAE:

1. the linear decomposition (``linear.decompose_error``; without an intercept as the paper, and
   with one), with ``cfg.estimator`` (least squares or held-out-selected ridge);
2. the error-norm probe (``norms.norm_prediction``);
2b. the fit-size curve (``convergence``; both estimators on the first 1/8, 1/4, 1/2 and all of the
   fit tokens) and the convergence check: whether any R^2 of ``cfg.estimator`` moves by more than
   ``cfg.convergence_tolerance`` from half the fit tokens to all of them;
3. with a model: the spliced CE (``downstream.spliced_ce``) on validation windows;
4. with ``pursuit_tokens`` > 0: gradient pursuit at the SAE's per-token L0 on test tokens, and the
   nonlinear error of each reconstruction (a fresh linear map fitted on ``pursuit_fit_tokens`` fit
   tokens for each, the SAE's own included, so the three are compared on equal terms).

:func:`scaling_report` compares several widths at one hook (``scaling``).
"""

from __future__ import annotations

from typing import Any, Literal

import torch
from pydantic import BaseModel, ConfigDict, Field
from tqdm.auto import tqdm

from interp.activations import ActivationCapture, capture_stream
from interp.data import token_windows
from saes.analysis.dark_matter.convergence import convergence_check, fit_size_curve
from saes.analysis.dark_matter.downstream import spliced_ce
from saes.analysis.dark_matter.linear import (
    ESTIMATORS,
    LinearMap,
    block_rows_for,
    decompose_error,
)
from saes.analysis.dark_matter.norms import norm_prediction
from saes.analysis.dark_matter.pursuit import pursuit_vs_sae
from saes.analysis.dark_matter.scaling import cross_width_r2, fit_power_law, part_norms

__all__ = [
    "DarkMatterConfig",
    "analyse_sae",
    "capture_rows",
    "chunks",
    "reconstruct",
    "scaling_report",
    "validation_windows",
]


class DarkMatterConfig(BaseModel):
    """What a dark-matter analysis reads and computes. Unknown keys are an error."""

    model_config = ConfigDict(extra="forbid", use_attribute_docstrings=True)

    fit_tokens: int = Field(150_000, ge=16)
    """Tokens (train split) the linear maps and probes are fitted on (the paper: 150k)."""
    test_tokens: int = Field(50_000, ge=16)
    """Held-out tokens (validation split) everything is scored on (the paper: 150k)."""
    source: str = "stdlib"
    """Text source for ``interp.data.token_windows``."""
    context_size: int = Field(128, ge=2)
    """Window length in tokens."""
    batch_windows: int = Field(16, ge=1)
    """Windows per model forward."""
    max_norm_ratio: float | None = Field(10.0, gt=1)
    """Leave out rows whose norm is over this multiple of the batch median (as training does by
    default; SmolLM2's attention-sink tokens would otherwise dominate every sum of squares)."""
    model_dtype: str = "auto"
    """The dtype the model runs in (``float32``, ``bfloat16``, ``auto``)."""
    seed: int = 0
    """Seed of the document order."""
    ce_windows: int = Field(32, ge=0)
    """Validation windows for the spliced CE (0: skip)."""
    ce_start: int = Field(32, ge=0)
    """First position spliced (and first prediction counted) in each window."""
    pursuit_tokens: int = Field(4096, ge=0)
    """Test tokens run through gradient pursuit (0: skip)."""
    pursuit_fit_tokens: int = Field(16384, ge=0)
    """Fit tokens run through pursuit to fit the maps that split its error (0: report FVU only)."""
    refine_steps: int = Field(0, ge=0)
    """Extra pursuit steps on the selected set (0: plain gradient pursuit, as the paper)."""
    estimator: Literal["ols", "ridge"] = "ridge"
    """How every linear map and probe is fitted: ``ols`` (least squares, the paper's) or ``ridge``
    (the penalty chosen on 5 held-out folds of the fit tokens; README: Dark matter, fit size)."""
    convergence_tolerance: float = Field(0.02, gt=0)
    """The fit is flagged unconverged when an R^2 moves by more than this from half the fit tokens
    to all of them."""


def capture_rows(
    model,
    hooks: list[str],
    split: str,
    n_tokens: int,
    cfg: DarkMatterConfig,
    progress: bool = False,
) -> dict[str, torch.Tensor]:
    """``n_tokens`` activation rows [n, d] per hook (float32) from ``split``."""
    cap = ActivationCapture(model, hooks, max_norm_ratio=cfg.max_norm_ratio)
    wins = token_windows(model.tokenizer, cfg.source, cfg.context_size, split=split, seed=cfg.seed)

    def batches():
        buf = []
        for w in wins:
            buf.append(w)
            if len(buf) == cfg.batch_windows:
                yield torch.stack(buf)
                buf = []
        if buf:
            yield torch.stack(buf)

    parts: dict[str, list[torch.Tensor]] = {h: [] for h in hooks}
    bar = tqdm(total=n_tokens, desc=f"capture {split}", unit="tok", disable=not progress)
    got = 0
    for batch in capture_stream(cap, batches(), n_tokens):
        for h in hooks:
            parts[h].append(batch.acts[h].float())
        got += len(batch)
        bar.update(len(batch))
    bar.close()
    if got < n_tokens:
        raise ValueError(
            f"the {split} split of {cfg.source!r} gave {got} tokens, fewer than {n_tokens}"
        )
    return {h: torch.cat(v) for h, v in parts.items()}


def validation_windows(model, cfg: DarkMatterConfig) -> torch.Tensor:
    wins = token_windows(
        model.tokenizer,
        cfg.source,
        cfg.context_size,
        split="validation",
        seed=cfg.seed + 1,
        max_windows=cfg.ce_windows,
    )
    return torch.stack(list(wins))


def reconstruct(sae, x: torch.Tensor, batch_rows: int = 8192) -> torch.Tensor:
    """x_hat [N, d] of rows x through the SAE interface."""
    out = []
    with torch.no_grad():
        for i in range(0, x.shape[0], batch_rows):
            out.append(sae(x[i : i + batch_rows].float())[0].float())
    return torch.cat(out)


def chunks(*tensors: torch.Tensor, rows: int = 8192) -> list[tuple[torch.Tensor, ...]]:
    n = tensors[0].shape[0]
    return [tuple(t[i : i + rows] for t in tensors) for i in range(0, n, rows)]


def _pursuit_block(
    sae, x_fit, x_test, cfg: DarkMatterConfig, progress: bool, keep: dict | None = None
) -> dict[str, Any]:
    n_test = min(cfg.pursuit_tokens, x_test.shape[0])
    n_fit = min(cfg.pursuit_fit_tokens, x_fit.shape[0])
    cmp_test, rec_test = pursuit_vs_sae(sae, [x_test[:n_test]], cfg.refine_steps, progress=progress)
    out: dict[str, Any] = {"test": cmp_test.to_dict()}
    if n_fit >= 2:
        _, rec_fit = pursuit_vs_sae(sae, [x_fit[:n_fit]], cfg.refine_steps, progress=progress)
        rec = {
            split: {k: torch.cat(r[k]) for k in ("sae", "pursuit", "best")}
            for split, r in (("fit", rec_fit), ("test", rec_test))
        }
        if keep is not None:
            keep.update(rec)
        splits = {}
        for kind in ("sae", "pursuit", "best"):
            dec, _ = decompose_error(
                chunks(x_fit[:n_fit], rec["fit"][kind]),
                chunks(x_test[:n_test], rec["test"][kind]),
                estimator=cfg.estimator,
                block_rows=block_rows_for(n_fit),
            )
            splits[kind] = dec.to_dict()
        out["decomposition"] = splits
        nl_sae = splits["sae"]["nonlinear_sq_mean"]
        out["nonlinear_reduction"] = {
            k: 1.0 - splits[k]["nonlinear_sq_mean"] / nl_sae for k in ("pursuit", "best")
        }
        out["linear_reduction"] = {
            k: 1.0
            - (splits[k]["error_sq_mean"] - splits[k]["nonlinear_sq_mean"])
            / (splits["sae"]["error_sq_mean"] - nl_sae)
            for k in ("pursuit", "best")
        }
    return out


def analyse_sae(
    sae,
    x_fit: torch.Tensor,
    x_test: torch.Tensor,
    cfg: DarkMatterConfig,
    model=None,
    windows: torch.Tensor | None = None,
    progress: bool = False,
) -> tuple[dict[str, Any], dict[str, Any]]:
    """The report of one SAE (see the module doc) and its intermediates (x_hat of both sets, the
    fitted map, per-token norms) for the scaling and follow-up analyses."""
    xh_fit, xh_test = reconstruct(sae, x_fit), reconstruct(sae, x_test)
    fit_pairs, test_pairs = chunks(x_fit, xh_fit), chunks(x_test, xh_test)
    est, n = cfg.estimator, x_fit.shape[0]
    rk = {"block_rows": block_rows_for(n)}  # (ignored by OLS)
    dec, lmap = decompose_error(fit_pairs, test_pairs, intercept=False, estimator=est, **rk)
    dec_b, _ = decompose_error(fit_pairs, test_pairs, intercept=True, estimator=est, **rk)
    sizes = [s for s in (n // 8, n // 4, n // 2, n) if s >= 4]
    curves = {e: fit_size_curve(x_fit, xh_fit, x_test, xh_test, sizes, e) for e in ESTIMATORS}
    report: dict[str, Any] = {
        "sae": {
            "variant": sae.cfg.variant,
            "d_sae": sae.cfg.d_sae,
            "k": sae.cfg.k,
            "hook": sae.cfg.hook_name,
            "d_in": sae.cfg.d_in,
        },
        "decomposition": dec.to_dict(),
        "decomposition_intercept": dec_b.to_dict(),
        "norms": norm_prediction(fit_pairs, test_pairs, estimator=est, **rk),
        "convergence": convergence_check(curves[est], cfg.convergence_tolerance),
        "fit_size": {"curves": curves},
        "l0_test": float(
            torch.cat(
                [(sae.encode_sparse(x).values != 0).sum(1).float() for (x,) in chunks(x_test)]
            ).mean()
        ),
    }
    if model is not None and windows is not None and len(windows):
        report["downstream"] = spliced_ce(
            model, sae, lmap, windows, start=cfg.ce_start, progress=progress
        )
        report["downstream"]["nonlinear_norm_share"] = dec.nonlinear_norm_share
    pursued: dict[str, Any] = {}
    if cfg.pursuit_tokens > 0:
        report["pursuit"] = _pursuit_block(sae, x_fit, x_test, cfg, progress, keep=pursued)
    inter = {
        "pursuit": pursued,
        "x_hat_fit": xh_fit,
        "x_hat_test": xh_test,
        "lmap": lmap,
        "norms_fit": part_norms(x_fit, xh_fit, _apply(lmap, x_fit)),
        "norms_test": part_norms(x_test, xh_test, _apply(lmap, x_test)),
    }
    return report, inter


def _apply(lmap: LinearMap, x: torch.Tensor) -> torch.Tensor:
    return torch.cat([lmap(c) for (c,) in chunks(x)])


def scaling_report(
    reports: dict[int, dict[str, Any]], inters: dict[int, dict[str, Any]]
) -> dict[str, Any]:
    """Width scaling of SAEs on one hook: cross-width norm R^2 and a power law per error part."""
    widths = sorted(reports)
    parts = {
        "fvu_sae": [reports[w]["decomposition"]["fvu_sae"] for w in widths],
        "fvu_nonlinear": [reports[w]["decomposition"]["fvu_sae_plus_linear"] for w in widths],
    }
    parts["fvu_linear"] = [a - b for a, b in zip(parts["fvu_sae"], parts["fvu_nonlinear"])]
    return {
        "widths": widths,
        **parts,
        "power_laws": {k: fit_power_law(widths, v) for k, v in parts.items()},
        "cross_width": cross_width_r2(
            {w: inters[w]["norms_fit"] for w in widths},
            {w: inters[w]["norms_test"] for w in widths},
        ),
    }
