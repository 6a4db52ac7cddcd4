"""Plotly figures of circuit results (shared by the CLI, the benchmark, the explorer page and the
notebook). Each takes a saved result dict and returns a ``plotly.graph_objects.Figure``.

* :func:`heatmap_figure`: layer x head heatmaps of each method's scores beside the ground truth
  (its single-head patching effects, circuit heads marked);
* :func:`auc_vs_prompts_figure`: ROC AUC against the number of SAE training prompts, per task;
* :func:`ranked_heads`: the top heads of a score as (label, score, in circuit) rows.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import plotly.graph_objects as go
from plotly.subplots import make_subplots

__all__ = ["auc_vs_prompts_figure", "heatmap_figure", "ranked_heads"]

_PANELS = (
    ("node", "discrete codes: node"),
    ("edge", "discrete codes: edge"),
    ("attribution", "attribution patching"),
    ("patching", "ground truth: patching effect"),
)


def heatmap_figure(result: dict[str, Any]) -> go.Figure:
    """One layer x head heatmap per score; circuit heads (the ground truth) marked with x."""
    nl, nh = result["n_layers"], result["n_heads"]
    truth = np.array(result["truth"], dtype=bool).reshape(nl, nh)
    fig = make_subplots(rows=1, cols=len(_PANELS), subplot_titles=[t for _, t in _PANELS])
    ly, hx = np.nonzero(truth)
    for col, (key, _) in enumerate(_PANELS, start=1):
        z = np.array(result["scores"][key], dtype=float).reshape(nl, nh)
        fig.add_trace(
            go.Heatmap(
                z=z,
                x=list(range(nh)),
                y=list(range(nl)),
                colorscale="Blues" if key != "patching" else "RdBu",
                zmid=0 if key == "patching" else None,
                showscale=False,
                hovertemplate="L%{y}H%{x}: %{z:.4g}<extra>" + key + "</extra>",
            ),
            row=1,
            col=col,
        )
        fig.add_trace(
            go.Scatter(
                x=hx,
                y=ly,
                mode="markers",
                marker={"symbol": "x", "color": "crimson", "size": 7},
                name="circuit",
                showlegend=col == 1,
                hoverinfo="skip",
            ),
            row=1,
            col=col,
        )
        fig.update_xaxes(title_text="head", row=1, col=col)
    fig.update_yaxes(title_text="layer", row=1, col=1)
    gt = result["ground_truth"]
    fig.update_layout(
        title=(
            f"{result['task']} on {result['model']}: circuit of {gt['k']} heads "
            f"(joint patch {gt['joint_effect']:.2f} of the metric)"
        ),
        height=520,
        width=1300,
    )
    return fig


def auc_vs_prompts_figure(bench: dict[str, Any]) -> go.Figure:
    """Node and edge ROC AUC against the number of SAE training prompts, one line per task."""
    fig = go.Figure()
    for task, res in bench["tasks"].items():
        sweep = res.get("auc_vs_n_train", {})
        if not sweep:
            continue
        xs = sorted(int(k) for k in sweep)
        for kind, dash in (("node", "solid"), ("edge", "dot")):
            fig.add_trace(
                go.Scatter(
                    x=xs,
                    y=[sweep[str(x)][f"{kind}_mean"] for x in xs],
                    error_y={"array": [sweep[str(x)][f"{kind}_std"] for x in xs]},
                    mode="lines+markers",
                    line={"dash": dash},
                    name=f"{task} {kind}",
                )
            )
    fig.add_hline(y=0.5, line_dash="dash", line_color="gray")
    fig.update_layout(
        xaxis={"type": "log", "title": "SAE training prompts"},
        yaxis={"title": "ROC AUC vs patching ground truth"},
        title="AUC against the number of training prompts",
    )
    return fig


def ranked_heads(result: dict[str, Any], key: str = "node", top: int = 20) -> list[tuple]:
    """(label, score, in the ground-truth circuit) of the ``top`` heads by ``key``."""
    s = np.array(result["scores"][key], dtype=float)
    order = np.lexsort((np.arange(s.size), -s))[:top]
    return [(result["labels"][i], float(s[i]), bool(result["truth"][i])) for i in order]
