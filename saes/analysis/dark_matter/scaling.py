"""Dark matter across SAE widths: per-token error norms, and power laws of each error part.

**Cross-width norm prediction** (the paper's "larger SAEs struggle on the same tokens"): for two
widths W_small < W_large trained on the same activations, least squares with an intercept on the
fit tokens predicts the larger SAE's per-token error norm ||e_large|| from

* ``small``: ||e_small|| (the paper's R^2);
* ``small_plus_nl``: ||e_small|| and the small SAE's nonlinear error norm ||e_nl,small||;
* ``small_plus_lin``: ||e_small|| and its linear error norm ||e_lin,small|| (the control: the
  paper's claim is that the nonlinear norm adds more);

each scored by R^2 on held-out tokens.

**Power laws**: each part's FVU (sum ||e_part||^2 / sum ||x - mean x||^2) against the width W is fit
by FVU ≈ c + a W^m (least squares in (c, a) for each m on a grid of exponents, the best m kept).
With three widths and three parameters the curve passes through every point: the fit then
describes, it does not test; ``n_points`` and ``rmse`` are reported with it.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import torch

from saes.analysis.dark_matter.linear import LinearStats, R2Stats

PREDICTORS = ("small", "small_plus_nl", "small_plus_lin")

__all__ = ["PREDICTORS", "cross_width_r2", "fit_power_law", "part_norms"]


def part_norms(
    x: torch.Tensor, x_hat: torch.Tensor, e_lin: torch.Tensor
) -> dict[str, torch.Tensor]:
    """Per-token norms [N] of e, e_lin and e_nl = e - e_lin."""
    e = x.double() - x_hat.double()
    lin = e_lin.double()
    return {"e": e.norm(dim=-1), "e_lin": lin.norm(dim=-1), "e_nl": (e - lin).norm(dim=-1)}


def _features(norms: Mapping[str, torch.Tensor], which: str) -> torch.Tensor:
    cols = [norms["e"]]
    if which == "small_plus_nl":
        cols.append(norms["e_nl"])
    elif which == "small_plus_lin":
        cols.append(norms["e_lin"])
    return torch.stack(cols, 1)


def cross_width_r2(
    fit: Mapping[int, Mapping[str, torch.Tensor]], test: Mapping[int, Mapping[str, torch.Tensor]]
) -> list[dict[str, float | int]]:
    """For every pair of widths (small < large): held-out R^2 of each predictor of ||e_large||.
    ``fit`` / ``test``: width -> :func:`part_norms` on the same tokens for every width."""
    widths = sorted(fit)
    rows = []
    for i, small in enumerate(widths):
        for large in widths[i + 1 :]:
            row: dict[str, float | int] = {"small_width": small, "large_width": large}
            for which in PREDICTORS:
                stats = LinearStats(intercept=True)
                stats.update(_features(fit[small], which), fit[large]["e"][:, None])
                lmap = stats.solve()
                r2 = R2Stats()
                r2.update(test[large]["e"][:, None], lmap(_features(test[small], which)))
                row[which] = r2.r2_vector()
            rows.append(row)
    return rows


def fit_power_law(
    widths: Sequence[float], values: Sequence[float], exponents: torch.Tensor | None = None
) -> dict[str, float | int]:
    """values ≈ c + a * W^m: the exponent m from a grid (default -2 .. -0.001), (c, a) by least
    squares for each; returns c, a, m, the fit's rmse, the number of points and whether m is at
    the grid's end (then the data do not follow a decaying power law in the grid's range)."""
    if len(widths) != len(values) or len(widths) < 2:
        raise ValueError(
            f"need >= 2 (width, value) points of equal count, got {len(widths)} / {len(values)}"
        )
    W = torch.as_tensor(widths, dtype=torch.float64)
    y = torch.as_tensor(values, dtype=torch.float64)
    ms = (
        exponents
        if exponents is not None
        else torch.linspace(-2.0, -0.001, 2000, dtype=torch.float64)
    )
    best = None
    for m in ms.tolist():
        A = torch.stack([torch.ones_like(W), (W / W[0]) ** m], 1)  # W / W_0: well scaled
        sol = torch.linalg.lstsq(A, y[:, None]).solution[:, 0]
        sse = float(((A @ sol - y) ** 2).sum())
        if best is None or sse < best[0]:
            best = (sse, m, float(sol[0]), float(sol[1]) * float(W[0]) ** (-m))
    sse, m, c, a = best  # type: ignore[misc]
    edge = m in (
        ms[0].item(),
        ms[-1].item(),
    )  # the best exponent is the grid's end: no real optimum
    return {
        "c": c,
        "a": a,
        "m": m,
        "rmse": (sse / len(W)) ** 0.5,
        "n_points": len(W),
        "m_at_grid_edge": edge,
    }
