"""Plotly figures of SAEs and their features: the one set the explorer and the notebooks share.

Each function takes plain data (a :class:`~saes.features.Feature`, run-log records, summary rows)
and returns a ``plotly.graph_objects.Figure``; nothing here reads files or knows about Streamlit.
The FVU-vs-L0 frontier is :func:`saes.training.sweep.frontier_figure` with axis ranges padded around the
data (:func:`frontier_ranges`).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import plotly.graph_objects as go

from saes.features.store import Feature
from saes.training.sweep import frontier_figure as _sweep_frontier_figure

__all__ = [
    "activation_histogram",
    "density_histogram",
    "frontier_figure",
    "frontier_ranges",
    "head_attribution_bar",
    "logit_effects_bar",
    "prompt_heatmap",
    "training_curves",
]

TEMPLATE = "plotly_white"


def frontier_ranges(
    l0: Sequence[float], fvu: Sequence[float]
) -> tuple[list[float] | None, list[float]]:
    """Axis ranges for FVU-vs-L0 points: (x range in log10 units, for the log L0 axis; None when
    an L0 is not positive), and the FVU range. Each pads the data by a tenth of its span, and at
    least by a quarter of the largest FVU (0.01 if that is 0) and 0.15 decades of L0, so one point
    sits mid-axis on its own scale (FVU 0.19: 0.14 to 0.24) rather than on Plotly's default
    (-0.5 to 1); the FVU axis never goes below 0."""
    if not len(l0) or len(l0) != len(fvu):
        raise ValueError(f"need as many L0 as FVU values, at least one (got {len(l0)}, {len(fvu)})")
    lo, hi = min(fvu), max(fvu)
    pad = max(0.1 * (hi - lo), 0.25 * abs(hi), 0.01)
    y = [max(0.0, lo - pad), hi + pad]
    if min(l0) <= 0:
        return None, y
    a, b = math.log10(min(l0)), math.log10(max(l0))
    pad_x = max(0.1 * (b - a), 0.15)
    return [a - pad_x, b + pad_x], y


def frontier_figure(rows: Sequence[dict[str, Any]], title: str = "FVU vs L0") -> go.Figure:
    """Every run as a point (per hook) and each hook's Pareto frontier
    (:func:`saes.training.sweep.frontier_figure`), on axes padded around the data (:func:`frontier_ranges`)."""
    fig = _sweep_frontier_figure(rows, title=title)
    pts = [
        (r["l0_mean"], r["fvu"])
        for r in rows
        if r.get("fvu") is not None and r.get("l0_mean") is not None
    ]
    if pts:
        x, y = frontier_ranges([p[0] for p in pts], [p[1] for p in pts])
        fig.update_yaxes(range=y)
        if x is not None:
            fig.update_xaxes(range=x)
    return fig


def activation_histogram(f: Feature, log_counts: bool | None = None) -> go.Figure:
    """The latent's nonzero activations per log-spaced bin (x on a log axis). ``log_counts``:
    counts on a log axis too (default: when the latent is dense, over 1% of tokens)."""
    edges, counts = f.hist_edges, f.hist_counts
    # counts[0] is below edges[0], counts[-1] at or above edges[-1]; inner bin j is [e_j, e_j+1)
    xs, ys, widths = [], [], []
    for j in range(len(edges) - 1):
        c = counts[j + 1]
        if c:
            lo, hi = edges[j], edges[j + 1]
            xs.append(math.sqrt(lo * hi))
            ys.append(c)
            widths.append(hi - lo)
    fig = go.Figure(go.Bar(x=xs, y=ys, width=widths, marker_color="darkorange", name="tokens"))
    dense = f.density > 0.01 if log_counts is None else log_counts
    fig.update_layout(
        title=f"latent {f.index}: activations ({f.count:,} tokens, density {f.density:.3%})",
        xaxis_title="activation",
        yaxis_title="tokens",
        template=TEMPLATE,
        bargap=0.02,
        height=300,
        margin=dict(l=40, r=10, t=40, b=40),
    )
    fig.update_xaxes(type="log")
    if dense:
        fig.update_yaxes(type="log")
    return fig


def logit_effects_bar(f: Feature) -> go.Figure:
    """The decoder row's largest positive and negative direct logit effects."""
    top = list(reversed(f.logit_top))
    bottom = f.logit_bottom
    fig = go.Figure()
    fig.add_trace(
        go.Bar(
            y=[repr(t) for _, t, _ in bottom] + [repr(t) for _, t, _ in top],
            x=[v for _, _, v in bottom] + [v for _, _, v in top],
            orientation="h",
            marker_color=["steelblue"] * len(bottom) + ["darkorange"] * len(top),
        )
    )
    fig.update_layout(
        title="direct logit effect of the decoder direction",
        template=TEMPLATE,
        height=max(250, 22 * (len(top) + len(bottom)) + 60),
        margin=dict(l=10, r=10, t=40, b=30),
        yaxis=dict(automargin=True),
    )
    return fig


def head_attribution_bar(shares: Sequence[float], layer: int | None = None) -> go.Figure:
    """A hook_z latent's decoder norm share per head."""
    name = f"L{layer}H" if layer is not None else "H"
    fig = go.Figure(go.Bar(x=[f"{name}{h}" for h in range(len(shares))], y=list(shares)))
    fig.update_layout(
        title="share of the decoder row per head",
        yaxis_title="share",
        template=TEMPLATE,
        height=280,
        margin=dict(l=40, r=10, t=40, b=30),
    )
    return fig


def density_histogram(densities: Sequence[float]) -> go.Figure:
    """How many latents fire at each log10 density (dead latents counted in the title)."""
    live = [d for d in densities if d > 0]
    dead = len(densities) - len(live)
    fig = go.Figure(go.Histogram(x=[math.log10(d) for d in live], nbinsx=40))
    fig.update_layout(
        title=f"latent densities ({len(live):,} live, {dead:,} dead)",
        xaxis_title="log10 density",
        yaxis_title="latents",
        template=TEMPLATE,
        height=280,
        margin=dict(l=40, r=10, t=40, b=40),
    )
    return fig


def training_curves(
    records: Sequence[dict[str, Any]],
    keys: Sequence[str] = ("loss", "fvu", "l0", "dead_fraction"),
    titles: dict[str, str] | None = None,
) -> go.Figure:
    """The training log's curves against tokens, one row per key present in the records;
    ``titles``: a subplot title per key (default: the key)."""
    from plotly.subplots import make_subplots

    present = [k for k in keys if any(k in r for r in records)]
    names = [(titles or {}).get(k, k) for k in present]
    fig = make_subplots(rows=max(1, len(present)), cols=1, shared_xaxes=True, subplot_titles=names)
    for row, k in enumerate(present, 1):
        pts = [(r.get("tokens", r.get("step")), r[k]) for r in records if k in r]
        fig.add_trace(
            go.Scatter(x=[p[0] for p in pts], y=[p[1] for p in pts], mode="lines", name=k),
            row=row,
            col=1,
        )
    fig.update_layout(
        template=TEMPLATE,
        height=180 * max(1, len(present)) + 40,
        showlegend=False,
        margin=dict(l=40, r=10, t=30, b=30),
    )
    fig.update_xaxes(title_text="tokens", row=max(1, len(present)), col=1)
    return fig


def prompt_heatmap(
    texts: Sequence[str],
    latents: Sequence[int],
    acts: Sequence[Sequence[float]],
    left_out: Sequence[bool] | None = None,
):
    """Latents (rows) x tokens (columns): each latent's activation at each token of a prompt.
    ``left_out``: tokens drawn blank (no value, so no part of the colour scale), their column
    labelled "(left out)", e.g. tokens over the training norm limit."""
    out = list(left_out) if left_out is not None else [False] * len(texts)
    fig = go.Figure(
        go.Heatmap(
            z=[[None if o else v for v, o in zip(a, out)] for a in acts],
            x=[
                f"{i}:{t!r}" + (" (left out)" if o else "")
                for i, (t, o) in enumerate(zip(texts, out))
            ],
            y=[f"latent {i}" for i in latents],
            colorscale="Oranges",
            hovertemplate="%{y} at %{x}: %{z:.3g}<extra></extra>",
        )
    )
    fig.update_layout(
        template=TEMPLATE,
        height=120 + 22 * len(latents),
        margin=dict(l=10, r=10, t=30, b=10),
        xaxis=dict(showticklabels=len(texts) <= 48),
    )
    return fig
