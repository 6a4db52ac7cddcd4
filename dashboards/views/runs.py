"""Runs: every run under the root (status, tokens, metrics), training curves, FVU-vs-L0 frontier."""

from __future__ import annotations

import streamlit as st

from dashboards.context import missing
from saes import figures
from saes.rundir import RunDir

TITLE = "Runs"
ORDER = 40


def _row(r) -> dict:
    m = r.metrics or {}
    return {
        "run": r.name,
        "status": r.status,
        "variant": r.variant,
        "hook": r.hook,
        "d_sae": r.d_sae,
        "k": r.k,
        "tokens": r.tokens_trained,
        "fvu": m.get("fvu"),
        "l0": m.get("l0_mean"),
        "dead": m.get("dead_fraction"),
        "CE recovered": m.get("ce_loss_recovered"),
    }


def render(ctx) -> None:
    st.title("Runs")
    if not ctx.runs:
        missing(f"No run folders under {ctx.root}.", "interp demo")
    st.dataframe([_row(r) for r in ctx.runs], width="stretch", hide_index=True)
    points = [
        {
            "hook": r.hook,
            "name": r.name,
            "variant": r.variant,
            "d_sae": r.d_sae,
            "fvu": (r.metrics or {}).get("fvu"),
            "l0_mean": (r.metrics or {}).get("l0_mean"),
        }
        for r in ctx.runs
        if (r.metrics or {}).get("fvu") is not None
    ]
    if points:
        st.plotly_chart(figures.frontier_figure(points), width="stretch")
    else:
        st.info("no run has metrics yet: `interp eval RUN` writes them")
    if ctx.run is not None:
        st.subheader(f"Training curves: {ctx.run_name}")
        records = RunDir(ctx.run).log_records()
        if records:
            st.plotly_chart(figures.training_curves(records), width="stretch")
        else:
            st.info(f"{ctx.run_name} has no training log (train_log.jsonl)")
