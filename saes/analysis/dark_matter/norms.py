"""Error-norm prediction: how well a linear probe on x predicts the size of the SAE's error.

For each token the targets are ||e||^2 (the issue's target) and ||e|| (the paper's plots), with
e = x - x_hat. Three predictors, each fitted by least squares (with an intercept) on the fit
tokens and scored by R^2 = 1 - sum (t - t̂)^2 / sum (t - mean t)^2 on held-out tokens:

* ``probe``: a linear function of the whole vector x (d + 1 parameters);
* ``x_norm``: a linear function of the input's own size alone (||x||^2 for ||e||^2, ||x|| for
  ||e||): the baseline that says "big activations have big errors";
* ``constant``: the fit tokens' mean (R^2 slightly below 0 on other tokens).

The paper (Engels et al. 2024, Gemma Scope SAEs on Gemma 2 9B) finds the probe's R^2 above 0.9.
"""

from __future__ import annotations

import torch

from saes.analysis.dark_matter.linear import LinearStats, Pairs, R2Stats, new_stats

TARGETS = ("sq_norm", "norm")
PREDICTORS = ("probe", "x_norm", "constant")

__all__ = ["PREDICTORS", "TARGETS", "norm_features", "norm_prediction"]


def norm_features(x: torch.Tensor, x_hat: torch.Tensor) -> dict[str, torch.Tensor]:
    """Per-token targets [n, 2] (||e||^2, ||e||) and the baseline features [n, 2] (||x||^2, ||x||)."""
    x, x_hat = x.to(torch.float64), x_hat.to(torch.float64)
    e_sq = ((x - x_hat) ** 2).sum(-1)
    x_sq = (x * x).sum(-1)
    return {
        "targets": torch.stack([e_sq, e_sq.sqrt()], 1),
        "x_norms": torch.stack([x_sq, x_sq.sqrt()], 1),
    }


def norm_prediction(fit: Pairs, test: Pairs, estimator: str = "ols", **ridge) -> dict[str, object]:
    """R^2 on ``test`` of each predictor (fitted on ``fit``) of each target; streams of (x, x_hat).
    ``estimator`` fits the probe (``"ols"``, or ``"ridge"``: its penalty chosen per target on
    held-out folds of the fit rows); the two one-feature baselines are always least squares.

    Returns ``{"n_fit", "n_test", "estimator", "alpha": {target: α}, "sq_norm": {"probe",
    "x_norm", "constant"}, "norm": {...}}``.
    """
    if estimator == "ridge":
        ridge["shared"] = False
    probe = new_stats(estimator, intercept=True, **ridge)
    base = [LinearStats(intercept=True) for _ in TARGETS]
    for x, x_hat in fit:
        f = norm_features(x, x_hat)
        probe.update(x, f["targets"])
        for j, stats in enumerate(base):
            stats.update(f["x_norms"][:, j : j + 1], f["targets"][:, j : j + 1])
    if probe.n < 2:
        raise ValueError(f"the fit stream holds {probe.n} rows; need at least 2")
    probe_map = probe.solve()
    base_maps = [s.solve() for s in base]
    chosen = getattr(probe, "chosen", None)
    alphas = chosen.tolist() if chosen is not None else [0.0] * len(TARGETS)
    const = base[0].xty[-1, 0] / base[0].n, base[1].xty[-1, 0] / base[1].n  # type: ignore[index]
    scores = {t: {p: R2Stats() for p in PREDICTORS} for t in TARGETS}
    for x, x_hat in test:
        f = norm_features(x, x_hat)
        pred = probe_map(x.to(torch.float64))
        for j, t in enumerate(TARGETS):
            y = f["targets"][:, j : j + 1]
            scores[t]["probe"].update(y, pred[:, j : j + 1])
            scores[t]["x_norm"].update(y, base_maps[j](f["x_norms"][:, j : j + 1]))
            scores[t]["constant"].update(y, const[j].expand_as(y))
    out: dict[str, object] = {
        "n_fit": probe.n,
        "n_test": scores["norm"]["probe"].n,
        "estimator": estimator,
        "alpha": dict(zip(TARGETS, alphas)),
    }
    for t in TARGETS:
        out[t] = {p: scores[t][p].r2_vector() for p in PREDICTORS}
    return out
