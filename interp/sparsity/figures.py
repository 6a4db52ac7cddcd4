"""Plotly figures of the sparsity results, each taking a saved result dict and returning a Figure
(shared by the CLI, the benchmark, the explorer page and the notebook).

* :func:`series_figure`: activation ratio against data, the points with our fitted curve (solid)
  and, where known, the paper's constants (dashed); ReLU and SiLU series side by side;
* :func:`linearised_figure`: the paper's straight-line view (see :func:`laws.linearised`);
* :func:`profile_figure`: the A0 profile, best MAE relative to the optimum against A0, with the
  near-optimal interval's level;
* :func:`layers_figure`: a PPL-p% measurement, the activation ratio and threshold per layer (and the
  lazy-neuron fraction nonzero when present).
"""

from __future__ import annotations

from typing import Any

import numpy as np
import plotly.graph_objects as go
from plotly.colors import qualitative
from plotly.subplots import make_subplots

from interp.sparsity.laws import predict

__all__ = ["layers_figure", "linearised_figure", "profile_figure", "series_figure"]

_COLORS = qualitative.Plotly + qualitative.D3


def _laws(fits: dict[str, Any]) -> list[str]:
    return [law for law in ("relu", "silu") if any(r["law"] == law for r in fits.values())]


def series_figure(
    fits: dict[str, Any], title: str = "Activation ratio vs training data"
) -> go.Figure:
    """``fits``: :func:`laws.fit_series`'s output. One panel per law, one colour per series."""
    laws = _laws(fits)
    fig = make_subplots(
        rows=1, cols=len(laws), subplot_titles=[f"{law.upper()} series" for law in laws]
    )
    for i, (name, row) in enumerate(fits.items()):
        col = laws.index(row["law"]) + 1
        color = _COLORS[i % len(_COLORS)]
        d = np.asarray(row["D"])
        xs = np.geomspace(d.min(), d.max(), 200)
        fig.add_trace(
            go.Scatter(
                x=d,
                y=row["A"],
                mode="markers",
                name=name,
                legendgroup=name,
                marker={"color": color},
            ),
            row=1,
            col=col,
        )
        fit = row["fit"]
        fig.add_trace(
            go.Scatter(
                x=xs,
                y=predict(row["law"], fit["params"], xs),
                mode="lines",
                name=f"{name} fit (MAE {fit['mae']:.2e}, A0 {fit['params']['A0']:.4f})",
                legendgroup=name,
                line={"color": color},
            ),
            row=1,
            col=col,
        )
        if "paper" in row:
            fig.add_trace(
                go.Scatter(
                    x=xs,
                    y=predict(row["law"], row["paper"]["params"], xs),
                    mode="lines",
                    name=f"{name} paper (MAE {row['paper']['mae']:.2e})",
                    legendgroup=name,
                    line={"color": color, "dash": "dash"},
                ),
                row=1,
                col=col,
            )
    fig.update_xaxes(title_text="D (billions of tokens)")
    fig.update_yaxes(title_text="activation ratio", col=1)
    fig.update_layout(title=title, height=500)
    return fig


def linearised_figure(fits: dict[str, Any]) -> go.Figure:
    """ReLU: log(b - log(A - A0)) vs log D (slope alpha); SiLU: log(A0 - A) vs log D (slope
    -alpha). Points are the data under our fit's b and A0; lines the fitted law."""
    laws = _laws(fits)
    titles = {"relu": "ReLU: log(b - log(A - A0))", "silu": "SiLU: log(A0 - A)"}
    fig = make_subplots(rows=1, cols=len(laws), subplot_titles=[titles[law] for law in laws])
    for i, (name, row) in enumerate(fits.items()):
        col = laws.index(row["law"]) + 1
        view = row["linearised"]
        color = _COLORS[i % len(_COLORS)]
        fig.add_trace(
            go.Scatter(
                x=view["x"],
                y=view["y"],
                mode="markers",
                name=name,
                legendgroup=name,
                marker={"color": color},
            ),
            row=1,
            col=col,
        )
        fig.add_trace(
            go.Scatter(
                x=view["line_x"],
                y=view["line_y"],
                mode="lines",
                showlegend=False,
                legendgroup=name,
                line={"color": color},
            ),
            row=1,
            col=col,
        )
    fig.update_xaxes(title_text="log D")
    fig.update_layout(title="Linearised view (straight lines if the law holds)", height=500)
    return fig


def profile_figure(fits: dict[str, Any]) -> go.Figure:
    """Best MAE at fixed A0 divided by the profile's minimum, against A0; the dotted line is the
    near-optimal level (1 + tol)."""
    laws = _laws(fits)
    fig = make_subplots(
        rows=1, cols=len(laws), subplot_titles=[f"{law.upper()}: A0 profile" for law in laws]
    )
    tol = None
    for i, (name, row) in enumerate(fits.items()):
        prof = row.get("profile")
        if not prof:
            continue
        tol = prof["tol"]
        col = laws.index(row["law"]) + 1
        lo, hi = prof["interval"]
        fig.add_trace(
            go.Scatter(
                x=prof["a0"],
                y=np.asarray(prof["mae"]) / prof["best_mae"],
                mode="lines+markers",
                name=f"{name}: A0 in [{lo:.4f}, {hi:.4f}]",
                line={"color": _COLORS[i % len(_COLORS)]},
            ),
            row=1,
            col=col,
        )
    if tol is not None:
        fig.add_hline(y=1 + tol, line_dash="dot")
    fig.update_xaxes(title_text="A0 (held fixed)")
    fig.update_yaxes(title_text="best MAE / minimum", type="log", col=1)
    fig.update_layout(title="How well the data determine the limit A0", height=500)
    return fig


def layers_figure(result: dict[str, Any]) -> go.Figure:
    """A PPL-p% measurement (``measure.ppl_sparsity``'s dict, optionally with a ``"lazy"`` entry
    from ``measure.lazy_metrics``): per-layer activation ratio (bars) and threshold (line)."""
    rows = result["layers"]
    layers = [r["layer"] for r in rows]
    fig = make_subplots(specs=[[{"secondary_y": True}]])
    fig.add_trace(
        go.Bar(x=layers, y=[r["activation_ratio"] for r in rows], name="activation ratio (PPL-p%)")
    )
    if "lazy" in result:
        fig.add_trace(
            go.Scatter(
                x=layers,
                y=[r["frac_nonzero"] for r in result["lazy"]["layers"]],
                mode="lines+markers",
                name="fraction nonzero",
            )
        )
    fig.add_trace(
        go.Scatter(
            x=layers, y=[r["threshold"] for r in rows], mode="lines+markers", name="threshold eps"
        ),
        secondary_y=True,
    )
    p = result["config"]["ppl_increase"]
    fig.update_layout(
        title=(
            f"{result['model']}: PPL-{100 * p:g}% activation ratio {result['activation_ratio']:.3f} "
            f"(CETT {result['cett']:.3f}, PPL {result['ppl_dense']:.3f} -> {result['ppl_sparse']:.3f})"
        ),
        height=450,
    )
    fig.update_xaxes(title_text="layer")
    fig.update_yaxes(title_text="fraction of neurons", secondary_y=False)
    fig.update_yaxes(title_text="threshold", secondary_y=True)
    return fig
