"""Runs: every run under the root (status, tokens, metrics), training curves, FVU-vs-L0 frontier.

Dead latents have one definition, a latent that never fired in a window of held-out tokens, and
the window is always shown: the run's feature store where it has one (200k tokens by default),
else its evaluation (metrics.json ``n_tokens``), whose window is smaller and so counts more
latents dead.
"""

from __future__ import annotations

import streamlit as st

from dashboards.context import missing
from saes import figures
from saes.headline import HEADLINE
from saes.rundir import RunDir
from saes.runs import dead_latents
from saes.training.config import RunConfig

TITLE = "Runs"
ORDER = 40


def _row(r) -> dict:
    m = dict(r.metrics or {})
    m["dead_fraction"], window = dead_latents(r.path)
    row = {
        "run": r.name,
        "status": r.status,
        "variant": r.variant,
        "hook": r.hook,
        "d_sae": r.d_sae,
        "k": r.k,
        "tokens": r.tokens_trained,
    }
    for h in HEADLINE:
        row[h.label] = m.get(h.name)
        if h.name == "dead_fraction":
            row["dead: in"] = window
    return row


def render(ctx) -> None:
    st.title("Runs")
    if not ctx.runs:
        missing(f"No run folders under {ctx.root}.", "interp demo")
    st.dataframe(
        [_row(r) for r in ctx.runs],
        width="stretch",
        hide_index=True,
        column_config={
            # a share (format ".1%") as Streamlit's percent preset, which multiplies by 100
            h.label: st.column_config.NumberColumn(
                format="percent" if h.fmt.endswith("%") else f"%{h.fmt}"
            )
            for h in HEADLINE
        },
    )
    st.caption(
        "dead (never fired): the share of latents with no nonzero activation in the window shown, "
        "held-out tokens of the run's feature store where it has one, else of its evaluation; a "
        "larger window finds fewer dead latents"
    )
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
            st.plotly_chart(
                figures.training_curves(records, titles=_curve_titles(ctx.run)), width="stretch"
            )
        else:
            st.info(f"{ctx.run_name} has no training log (train_log.jsonl)")


def _curve_titles(run) -> dict[str, str]:
    """The training log's dead fraction has its own window (optim.dead_tokens): say it."""
    cfg = RunDir(run).config()
    try:
        n = RunConfig.from_saved(cfg).resolved_dead_tokens if cfg else None
    except (ValueError, TypeError):
        n = None
    window = f"the last {n:,} training tokens" if n else "the training window (optim.dead_tokens)"
    return {"dead_fraction": f"dead_fraction (training: never fired in {window})"}
