"""Plotly figures of a saved dark-matter result (the dict ``bench/dark_matter.py`` and
``interp darkmatter`` write), shared by the benchmark, the explorer page and the notebook.

The result holds ``saes``: label -> one SAE's report (``pipeline.analyse_sae``), and optionally
``scaling``, ``previous_layer`` and ``error_saes``. Every function takes that dict and returns a
``plotly.graph_objects.Figure`` (or None when the result lacks that part).
"""

from __future__ import annotations

from typing import Any

import plotly.graph_objects as go

__all__ = [
    "FIGURES",
    "all_figures",
    "decomposition_figure",
    "fit_size_figure",
    "downstream_figure",
    "norm_prediction_figure",
    "pursuit_figure",
    "scaling_figure",
]


def _labels(result: dict[str, Any]) -> list[str]:
    return list(result.get("saes", {}))


def decomposition_figure(result: dict[str, Any]) -> go.Figure:
    """FVU of each SAE split into its linearly predictable and nonlinear parts, with the R^2s."""
    labels = _labels(result)
    decs = [result["saes"][k]["decomposition"] for k in labels]
    nl = [d["fvu_sae_plus_linear"] for d in decs]
    lin = [d["fvu_sae"] - d["fvu_sae_plus_linear"] for d in decs]
    fig = go.Figure()
    fig.add_bar(name="linear part (x a*)", x=labels, y=lin)
    fig.add_bar(name="nonlinear part (e_nl)", x=labels, y=nl)
    for d, label, total in zip(decs, labels, [a + b for a, b in zip(lin, nl)]):
        fig.add_annotation(
            x=label,
            y=total,
            text=f"R² vec {d['r2_vector']:.2f} / per-dim {d['r2_per_dim']:.2f}",
            showarrow=False,
            yshift=12,
        )
    fig.update_layout(
        barmode="stack",
        title="SAE error (FVU) split into linearly predictable and nonlinear parts (held-out tokens)",
        yaxis_title="fraction of the activations' variance",
    )
    return fig


def norm_prediction_figure(result: dict[str, Any]) -> go.Figure:
    """Held-out R^2 of predicting ||e||^2 (and ||e||): linear probe on x vs ||x|| vs a constant."""
    labels = _labels(result)
    fig = go.Figure()
    for target, dash in (("sq_norm", "||e||²"), ("norm", "||e||")):
        for pred, name in (
            ("probe", "linear probe on x"),
            ("x_norm", "from ||x|| alone"),
            ("constant", "constant"),
        ):
            fig.add_bar(
                name=f"{dash}: {name}",
                x=labels,
                y=[result["saes"][k]["norms"][target][pred] for k in labels],
            )
    fig.update_layout(
        barmode="group", title="Predicting the error norm per token (held-out R²)", yaxis_title="R²"
    )
    return fig


def downstream_figure(result: dict[str, Any]) -> go.Figure | None:
    """CE increase over the clean model with x_hat, x_hat + e_lin, x_hat + e_nl spliced."""
    labels = [k for k in _labels(result) if "downstream" in result["saes"][k]]
    if not labels:
        return None
    fig = go.Figure()
    names = {
        "x_hat": "x_hat (both parts missing)",
        "x_hat_plus_e_lin": "x_hat + e_lin (e_nl missing)",
        "x_hat_plus_e_nl": "x_hat + e_nl (e_lin missing)",
    }
    for key, name in names.items():
        fig.add_bar(
            name=name,
            x=labels,
            y=[result["saes"][k]["downstream"]["ce_increase"][key] for k in labels],
        )
    start = result["saes"][labels[0]]["downstream"]["start"]
    fig.update_layout(
        barmode="group",
        title=f"CE increase over the clean model, spliced from position {start} on",
        yaxis_title="nats per token",
    )
    return fig


def scaling_figure(result: dict[str, Any]) -> go.Figure | None:
    """FVU of the SAE, its linear and nonlinear parts against width, with the c + a W^m fits."""
    sc = result.get("scaling")
    if not sc:
        return None
    if "widths" not in sc:  # one scaling block per hook: show the first
        sc = next(iter(sc.values()))
    fig = go.Figure()
    W = sc["widths"]
    lo, hi = min(W), max(W)
    grid = [lo * (hi / lo) ** (i / 50) for i in range(51)]
    for key, name in (
        ("fvu_sae", "SAE error"),
        ("fvu_linear", "linear part"),
        ("fvu_nonlinear", "nonlinear part"),
    ):
        fig.add_scatter(x=W, y=sc[key], mode="markers", name=name)
        p = sc["power_laws"][key]
        fig.add_scatter(
            x=grid,
            y=[p["c"] + p["a"] * w ** p["m"] for w in grid],
            mode="lines",
            name=f"{name}: {p['c']:.3f} + {p['a']:.3g}·W^{p['m']:.2f}",
        )
    fig.update_layout(
        title="Error parts against SAE width",
        xaxis_type="log",
        xaxis_title="d_sae",
        yaxis_title="FVU",
    )
    return fig


def pursuit_figure(result: dict[str, Any]) -> go.Figure | None:
    """How much of the nonlinear error gradient pursuit and previous-layer maps remove (on the same
    tokens, with the bootstrap interval of their difference, where the result has that
    comparison)."""
    same = result.get("pursuit_vs_previous_layer") or {}
    if same:
        fig = go.Figure()
        for source in dict.fromkeys(s for block in same.values() for s in block):
            rows = [(lab, b[source]) for lab, b in same.items() if source in b]
            fig.add_bar(
                name=f"map from {source} minus pursuit",
                x=[lab for lab, _ in rows],
                y=[r["difference"] for _, r in rows],
                error_y={
                    "type": "data",
                    "symmetric": False,
                    "array": [r["interval"][1] - r["difference"] for _, r in rows],
                    "arrayminus": [r["difference"] - r["interval"][0] for _, r in rows],
                },
            )
        fig.update_layout(
            barmode="group",
            title="Nonlinear error removed: previous-layer map minus pursuit, same tokens "
            "(bars: bootstrap interval)",
            yaxis_title="difference of removed fractions",
        )
        return fig
    bars: dict[str, float] = {}
    for label, rep in result.get("saes", {}).items():
        red = rep.get("pursuit", {}).get("nonlinear_reduction")
        if red:
            bars[f"{label}: pursuit"] = red["pursuit"]
            bars[f"{label}: best of pursuit / SAE"] = red["best"]
    for label, rep in (result.get("previous_layer") or {}).items():
        for source, r in rep.items():
            bars[f"{label}: map from {source}"] = r["nonlinear_removed"]
    if not bars:
        return None
    fig = go.Figure(go.Bar(x=list(bars), y=list(bars.values())))
    fig.update_layout(
        title="Fraction of the nonlinear error removed (held-out tokens)", yaxis_title="fraction"
    )
    return fig


CURVE_KEYS = {
    "r2_per_dim": "R² of e per dimension",
    "r2_vector": "R² of e, whole vector",
    "linear_norm_share": "linear share of Σ‖e‖²",
    "norm_probe_r2": "‖e‖² probe R²",
}


def fit_size_figure(result: dict[str, Any]) -> go.Figure | None:
    """Held-out R² against the number of fit tokens, per SAE and estimator (``fit_size`` in a
    report: ``{"curves": {estimator: [points]}}``, see ``convergence.fit_size_curve``)."""
    fig = go.Figure()
    for label, rep in result.get("saes", {}).items():
        for est, pts in ((rep.get("fit_size") or {}).get("curves") or {}).items():
            if not pts:
                continue
            for key, name in CURVE_KEYS.items():
                fig.add_scatter(
                    x=[p["n_fit"] for p in pts],
                    y=[p[key] for p in pts],
                    mode="lines+markers",
                    name=f"{label}, {est}: {name}",
                    line={"dash": "solid" if est == "ridge" else "dot"},
                )
    if not fig.data:
        return None
    ys = [y for tr in fig.data for y in tr.y]
    fig.update_layout(
        title="Held-out R² against the fit tokens (dotted: least squares; solid: ridge)",
        xaxis_type="log",
        xaxis_title="fit tokens",
        yaxis_title="held-out R²",
        yaxis_range=[max(-0.5, min(ys) - 0.05), min(1.0, max(ys) + 0.05)],
    )
    return fig


FIGURES = {
    "fit_size": fit_size_figure,
    "decomposition": decomposition_figure,
    "norm_prediction": norm_prediction_figure,
    "downstream": downstream_figure,
    "scaling": scaling_figure,
    "pursuit": pursuit_figure,
}


def all_figures(result: dict[str, Any]) -> dict[str, go.Figure]:
    """Every figure the result has data for, by name."""
    figs = {name: fn(result) for name, fn in FIGURES.items()}
    return {k: v for k, v in figs.items() if v is not None}
