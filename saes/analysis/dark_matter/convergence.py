"""Has the linear fit seen enough tokens? R^2 against the fit size, and a nested-halves check.

The map a* from x [d] to e [d] has d² parameters (d per output), and the error-norm probe d + 1; with
too few fit tokens the held-out R^2 is far below its limit (or negative). :func:`fit_size_curve`
fits on nested prefixes of the fit rows (sizes n_1 < n_2 < ..., each prefix containing the last;
the sums are streamed, so each size adds only its new rows) and scores every fit on the same
held-out rows: R^2 per dimension (the paper's), R^2 of the vector, the linear share of Σ‖e‖² and the
‖e‖² / ‖e‖ probes' R^2, for either estimator (``linear.ESTIMATORS``).

:func:`convergence_check` compares the last two points of such a curve (the CLI uses sizes n / 2
and n): the fit is called *converged* when no R^2 changes by more than ``tolerance`` between them.
:func:`flattens_at` names the first size from which every later step changes a quantity by less
than a tolerance.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch

from saes.analysis.dark_matter.linear import (
    LinearStats,
    R2Stats,
    block_rows_for,
    new_stats,
    score_decomposition,
)
from saes.analysis.dark_matter.norms import TARGETS, norm_features

KEYS = ("r2_per_dim", "r2_vector", "linear_norm_share", "norm_probe_r2")
"""The quantities the curve records and the check compares."""
TOLERANCE = 0.02
"""Default: a fit is unconverged when one of ``KEYS`` moves by more than this from n / 2 to n."""

__all__ = [
    "KEYS",
    "TOLERANCE",
    "convergence_check",
    "fit_diagnostics",
    "fit_size_curve",
    "flattens_at",
]


def _chunks(*ts: torch.Tensor, rows: int = 8192):
    return [tuple(t[i : i + rows] for t in ts) for i in range(0, ts[0].shape[0], rows)]


def fit_size_curve(
    x_fit: torch.Tensor,
    xh_fit: torch.Tensor,
    x_test: torch.Tensor,
    xh_test: torch.Tensor,
    sizes: Sequence[int],
    estimator: str = "ols",
    intercept: bool = False,
    rows: int = 8192,
) -> list[dict[str, Any]]:
    """One point per size (rows of ``x_fit`` from the start): the fit on the first n rows scored on
    all of (``x_test``, ``xh_test``). Sizes over the rows available are an error."""
    sizes = sorted(set(int(s) for s in sizes))
    if not sizes or sizes[0] < 2:
        raise ValueError(f"fit sizes must be >= 2, got {sizes}")
    if sizes[-1] > x_fit.shape[0]:
        raise ValueError(f"fit size {sizes[-1]} is over the {x_fit.shape[0]} fit rows available")
    block = block_rows_for(2 * sizes[0])  # every fold filled at the smallest size
    err_stats = new_stats(estimator, intercept, block_rows=block)
    probe_stats = new_stats(estimator, True, block_rows=block, shared=False)
    test = _chunks(x_test, xh_test, rows=rows)
    feats = [norm_features(x, xh)["targets"] for x, xh in test]
    curve, done = [], 0
    for n in sizes:
        for x, xh in _chunks(x_fit[done:n], xh_fit[done:n], rows=rows):
            err_stats.update(x, x.float() - xh.float())
            probe_stats.update(x, norm_features(x, xh)["targets"])
        done = n
        lmap, probe = err_stats.solve(), probe_stats.solve()
        dec = score_decomposition(test, lmap, estimator)
        r2 = [R2Stats() for _ in TARGETS]
        for (x, _), f in zip(test, feats):
            pred = probe(x.double())
            for j, s in enumerate(r2):
                s.update(f[:, j : j + 1], pred[:, j : j + 1])
        chosen = getattr(probe_stats, "chosen", None)
        curve.append(
            {
                "n_fit": n,
                "estimator": estimator,
                "alpha": lmap.alpha,
                "r2_per_dim": dec.r2_per_dim,
                "r2_vector": dec.r2_vector,
                "linear_norm_share": dec.linear_norm_share,
                "norm_probe_r2": r2[0].r2_vector(),
                "norm_probe_r2_norm": r2[1].r2_vector(),
                "norm_probe_alpha": float(chosen[0]) if chosen is not None else 0.0,
            }
        )
    return curve


def convergence_check(
    curve: Sequence[dict[str, Any]], tolerance: float = TOLERANCE, keys: Sequence[str] = KEYS
) -> dict[str, Any]:
    """Compare the curve's last two points: ``converged`` when every |change| <= ``tolerance``."""
    if len(curve) < 2:
        raise ValueError(f"need at least 2 fit sizes to check convergence, got {len(curve)}")
    if tolerance <= 0:
        raise ValueError(f"the tolerance must be > 0, got {tolerance}")
    a, b = curve[-2], curve[-1]
    changes = {k: b[k] - a[k] for k in keys}
    moved = [k for k, v in changes.items() if not abs(v) <= tolerance]
    return {
        "n_fit_small": a["n_fit"],
        "n_fit": b["n_fit"],
        "estimator": b.get("estimator"),
        "tolerance": tolerance,
        "small": {k: a[k] for k in keys},
        "changes": changes,
        "unconverged": moved,
        "converged": not moved,
    }


def flattens_at(curve: Sequence[dict[str, Any]], key: str, tolerance: float) -> int | None:
    """The smallest fit size from which every step to the next size changes ``key`` by less than
    ``tolerance`` (None: the curve is still moving at its last step, or has one point)."""
    if len(curve) < 2:
        return None
    steps = [abs(b[key] - a[key]) < tolerance for a, b in zip(curve, curve[1:])]
    if not steps[-1]:
        return None
    i = len(steps) - 1
    while i > 0 and steps[i - 1]:
        i -= 1
    return int(curve[i]["n_fit"])


def _ols_r2(x: torch.Tensor, e: torch.Tensor, x_te: torch.Tensor, e_te: torch.Tensor):
    """(map, held-out R² of the vector) of least squares x -> e (no intercept), float64."""
    stats = LinearStats()
    for xc, ec in _chunks(x, e):
        stats.update(xc, ec)
    lmap = stats.solve()
    r2 = R2Stats()
    for xc, ec in _chunks(x_te, e_te):
        r2.update(ec, lmap(xc.double()))
    return lmap, stats, r2.r2_vector()


def fit_diagnostics(
    x_fit: torch.Tensor,
    xh_fit: torch.Tensor,
    x_test: torch.Tensor,
    xh_test: torch.Tensor,
    sizes: Sequence[int],
    ratio: float = 5.0,
    seed: int = 0,
) -> list[dict[str, Any]]:
    """Why a least-squares fit on few tokens fails, per fit size n (the first n fit rows, OLS, no
    intercept as the paper):

    * ``cond``: condition number of XᵀX;
    * ``r2_in_sample`` / ``r2_held_out``: R² of the error vector on the fit rows themselves and on
      the held-out rows (the gap is the overfitting);
    * ``leverage_max`` and ``leverage_share_large``: the largest leverage h_t = x_t (XᵀX)⁻¹ x_tᵀ
      (they sum to d) and the share of Σ h carried by the rows with ‖x‖ over ``ratio`` times the
      median (``rows_share_large`` of the rows): are a few big rows deciding the fit?
    * ``r2_held_out_without_large``: the same fit with those rows left out;
    * ``r2_held_out_random_rows``: n rows drawn at random from all fit rows (so from many more
      documents than the first n) instead of the first n: is it the count of rows, or how many
      documents they come from?"""
    e_fit = (x_fit.double() - xh_fit.double()).float()
    e_test = (x_test.double() - xh_test.double()).float()
    norms = x_fit.double().norm(dim=1)
    large_all = norms > ratio * norms.median()
    g = torch.Generator().manual_seed(seed)
    out = []
    for n in sorted(set(int(s) for s in sizes)):
        x, e, large = x_fit[:n], e_fit[:n], large_all[:n]
        lmap, stats, held = _ols_r2(x, e, x_test, e_test)
        r2_in = R2Stats()
        for xc, ec in _chunks(x, e):
            r2_in.update(ec, lmap(xc.double()))
        A = stats.xtx
        ev = torch.linalg.eigvalsh(A)  # type: ignore[arg-type]
        Ainv = torch.linalg.pinv(A, hermitian=True)  # type: ignore[arg-type]
        lev = torch.cat([((xc.double() @ Ainv) * xc.double()).sum(1) for (xc,) in _chunks(x)])
        _, _, without = _ols_r2(x[~large], e[~large], x_test, e_test)
        pick = torch.randperm(x_fit.shape[0], generator=g)[:n].sort().values
        _, _, rand = _ols_r2(x_fit[pick], e_fit[pick], x_test, e_test)
        out.append(
            {
                "n_fit": n,
                "cond": float(ev.max() / ev.min().clamp_min(1e-300)),
                "r2_in_sample": r2_in.r2_vector(),
                "r2_held_out": held,
                "leverage_max": float(lev.max()),
                "leverage_mean": float(lev.mean()),
                "leverage_share_large": float(lev[large].sum() / lev.sum()),
                "rows_share_large": float(large.double().mean()),
                "r2_held_out_without_large": without,
                "r2_held_out_random_rows": rand,
                "ratio": ratio,
            }
        )
    return out
