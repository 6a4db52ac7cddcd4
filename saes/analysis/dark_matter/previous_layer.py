"""How much of an SAE's nonlinear error a linear map from the previous layer removes.

With x this layer's activation, e = x - x_hat the SAE's error and z a previous-layer source (the
previous layer's residual stream, or the previous layer's SAE reconstruction), least squares fits
e from x alone (the nonlinear error e_nl is what it leaves) and from [x, z] jointly, both with the
same intercept choice, on the fit tokens; on held-out tokens

    removed = 1 - sum ||e - ê_[x, z]||^2 / sum ||e - ê_x||^2

is the fraction of the nonlinear error's squared norm that z's linear information removes (fitting
[x, z] jointly rather than z -> e_nl alone, because x and z are correlated). The paper (Engels et
al. 2024) reports this as "larger" than what gradient pursuit achieves, without numbers.

:func:`compare_with_pursuit` puts the two on the same tokens: the SAE's nonlinear error, pursuit's
nonlinear error (its own error split by its own map from x) and what the [x, z] map leaves, all
fitted on the same fit tokens with the same estimator and scored per token on the same held-out
tokens; the difference of the two removed shares gets a block-bootstrap interval over the held-out
tokens (blocks of consecutive rows, since neighbouring tokens are correlated), and the comparison
is called resolved only when that interval excludes 0 and the maps fitted on half the fit tokens
give the difference the same sign.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable

import torch

from saes.analysis.dark_matter.linear import R2Stats, block_rows_for, fit_linear, new_stats

Triples = Iterable[tuple[torch.Tensor, torch.Tensor, torch.Tensor]]

__all__ = ["compare_with_pursuit", "nonlinear_error_removed"]


def nonlinear_error_removed(
    fit: Triples, test: Triples, intercept: bool = False, estimator: str = "ols", **ridge
) -> dict[str, float]:
    """Fit on (x, z, e) triples ``fit``, score on ``test`` (see the module doc)."""
    base = new_stats(estimator, intercept, **ridge)
    joint = new_stats(estimator, intercept, **ridge)
    for x, z, e in fit:
        base.update(x, e)
        joint.update(torch.cat([x.float(), z.float()], 1), e)
    base_map, joint_map = base.solve(), joint.solve()
    s_base, s_joint = R2Stats(), R2Stats()
    for x, z, e in test:
        s_base.update(e, base_map(x.float()))
        s_joint.update(e, joint_map(torch.cat([x.float(), z.float()], 1)))
    nl, nl_joint = s_base.residual_sq, s_joint.residual_sq
    return {
        "n_fit": base.n,
        "n_test": s_base.n,
        "error_sq_mean": s_base.target_sq / s_base.n,
        "nonlinear_sq_mean": nl / s_base.n,
        "remaining_sq_mean": nl_joint / s_base.n,
        "nonlinear_removed": 1.0 - nl_joint / nl,
        "r2_vector_x": s_base.r2_vector(),
        "r2_vector_x_and_source": s_joint.r2_vector(),
        "estimator": estimator,
    }


def _residual_sq(x: torch.Tensor, y: torch.Tensor, estimator: str) -> tuple[Callable, int]:
    lmap = fit_linear([(x, y)], estimator=estimator, block_rows=block_rows_for(x.shape[0]))
    return lambda xt, yt: ((yt.double() - lmap(xt.double())) ** 2).sum(1), lmap.n_rows


def compare_with_pursuit(
    fit: dict[str, torch.Tensor],
    test: dict[str, torch.Tensor],
    estimator: str = "ols",
    block_rows: int = 128,
    n_boot: int = 2000,
    level: float = 0.95,
    seed: int = 0,
    min_blocks: int = 10,
) -> dict[str, float | int | str]:
    """The share of the SAE's nonlinear error that pursuit removes and that a map from the previous
    layer removes, on the same tokens (see the module doc).

    ``fit`` / ``test``: ``x`` (this layer), ``z`` (the previous-layer source), ``x_hat`` (the SAE's
    reconstruction) and ``x_gp`` (pursuit's), rows aligned. Returns both shares, their difference
    (previous layer minus pursuit), its bootstrap interval at ``level``, the same three with every
    map fitted on the first half of the fit rows (``*_half_fit``: has the fit converged?) and
    ``verdict``:
    ``"previous layer"`` / ``"pursuit"`` (the interval excludes 0 on that side) or ``"not
    resolved"`` (always, with fewer than ``min_blocks`` blocks of test rows, or when the maps fitted
    on half the fit rows give the difference the other sign)."""
    for part in (fit, test):
        missing = {"x", "z", "x_hat", "x_gp"} - set(part)
        if missing:
            raise ValueError(f"missing {sorted(missing)}; need x, z, x_hat and x_gp")
        if len({v.shape[0] for v in part.values()}) != 1:
            raise ValueError("x, z, x_hat and x_gp must have one row per token each")
    if not 0 < level < 1:
        raise ValueError(f"level must lie in (0, 1), got {level}")

    def e(p, key):
        return p["x"].double() - p[key].double()

    xz_fit = torch.cat([fit["x"].double(), fit["z"].double()], 1)
    xz_test = torch.cat([test["x"].double(), test["z"].double()], 1)

    def residuals(rows: int) -> torch.Tensor:
        """[n_test, 3]: nonlinear error of the SAE, of pursuit, and what the previous-layer map
        leaves, per test token, with every map fitted on the first ``rows`` fit rows."""
        r_sae, _ = _residual_sq(fit["x"][:rows], e(fit, "x_hat")[:rows], estimator)
        r_gp, _ = _residual_sq(fit["x"][:rows], e(fit, "x_gp")[:rows], estimator)
        r_prev, _ = _residual_sq(xz_fit[:rows], e(fit, "x_hat")[:rows], estimator)
        return torch.stack(
            [
                r_sae(test["x"], e(test, "x_hat")),
                r_gp(test["x"], e(test, "x_gp")),
                r_prev(xz_test, e(test, "x_hat")),
            ],
            1,
        )

    n_fit = fit["x"].shape[0]
    per_token = residuals(n_fit)
    half = residuals(n_fit // 2).sum(0)
    n = per_token.shape[0]
    n_blocks = -(-n // block_rows)
    if n_blocks < 2:
        raise ValueError(f"{n} test rows make {n_blocks} block of {block_rows}; need at least 2")
    blocks = torch.zeros(n_blocks, 3, dtype=torch.float64)
    blocks.index_add_(0, torch.arange(n) // block_rows, per_token)

    def diff(sums: torch.Tensor) -> torch.Tensor:  # [..., 3] -> removed(prev) - removed(pursuit)
        return (sums[..., 1] - sums[..., 2]) / sums[..., 0]

    g = torch.Generator().manual_seed(seed)
    pick = torch.randint(0, n_blocks, (n_boot, n_blocks), generator=g)
    boot = diff(blocks[pick].sum(1))
    lo, hi = torch.quantile(
        boot, torch.tensor([(1 - level) / 2, (1 + level) / 2], dtype=torch.float64)
    )
    tot = per_token.sum(0)
    verdict = "previous layer" if lo > 0 else "pursuit" if hi < 0 else "not resolved"
    if n_blocks < min_blocks:  # too few blocks for the bootstrap to mean anything
        verdict = "not resolved"
    if (float(diff(half)) > 0) != (float(diff(tot)) > 0):  # the fit has not settled the sign
        verdict = "not resolved"
    return {
        "n_fit": n_fit,
        "n_test": n,
        "estimator": estimator,
        "removed_by_pursuit": float(1 - tot[1] / tot[0]),
        "removed_by_previous_layer": float(1 - tot[2] / tot[0]),
        "difference": float(diff(tot)),
        "difference_half_fit": float(diff(half)),
        "removed_by_pursuit_half_fit": float(1 - half[1] / half[0]),
        "removed_by_previous_layer_half_fit": float(1 - half[2] / half[0]),
        "interval": [float(lo), float(hi)],
        "level": level,
        "block_rows": block_rows,
        "n_boot": n_boot,
        "n_blocks": n_blocks,
        "verdict": verdict,
    }
