"""Circuits: the layer x head heatmaps and ranked heads of the circuit-discovery runs.

Reads the result JSONs that ``interp circuits --task T --out DIR`` writes (``DIR/<task>.json``),
looking in the runs root itself and in ``<root>/circuits_out`` (the command's default ``--out``
when it is run from the root). A file counts as a result when it holds the per-head scores, the
ground-truth mask and the summary. Per task: the summary table (ROC AUC, balanced F1, wall time
of every method against the patching ground truth), the heatmaps beside the ground truth
(``circuits.figures.heatmap_figure``), every method's AUC against the circuit at each share of
the metric when the result has it, and the heads ranked by a chosen score
(``circuits.figures.ranked_heads``).
"""

from __future__ import annotations

import json
from pathlib import Path

import streamlit as st

from circuits.figures import auc_vs_prompts_figure, heatmap_figure, ranked_heads
from circuits.tasks import TASKS
from dashboards.context import missing

TITLE = "Circuits"
ORDER = 60
FOLDERS = ("", "circuits_out")
REQUIRED = ("task", "n_layers", "n_heads", "labels", "scores", "truth", "summary", "ground_truth")


def find_results(root: Path) -> dict[str, Path]:
    """``{label: path}`` of every circuit result JSON under ``root`` and ``root/circuits_out``."""
    found: dict[str, Path] = {}
    for sub in FOLDERS:
        folder = root / sub
        for task in TASKS:
            path = folder / f"{task}.json"
            if not path.is_file():
                continue
            try:
                d = json.loads(path.read_text())
            except (OSError, ValueError):
                continue
            if isinstance(d, dict) and all(k in d for k in REQUIRED):
                found[f"{task} ({path.parent.name or path.parent})"] = path
    return found


@st.cache_data(show_spinner=False)
def _load(path: str, mtime: float) -> dict:
    return json.loads(Path(path).read_text())


def _summary_rows(res: dict) -> list[dict]:
    return [
        {
            "method": name,
            "ROC AUC": s["auc_mean"],
            "AUC std": s["auc_std"],
            "balanced F1": s["f1_mean"],
            "wall s": s["seconds_mean"],
        }
        for name, s in res["summary"].items()
    ]


def _share_rows(res: dict) -> list[dict]:
    """One row per share: its circuit size and each method's mean AUC (None where a share's
    circuit has no AUC, e.g. every head)."""
    rows = []
    for share, p in res["by_share"].items():
        row: dict = {"share": float(share), "k": p["k"]}
        for name in res["summary"]:
            m = p["methods"].get(name)
            row[name] = None if m is None else m["auc_mean"]
        rows.append(row)
    return rows


def render(ctx) -> None:
    st.title("Circuits")
    found = find_results(ctx.root)
    if not found:
        missing(
            f"No circuit results (`<task>.json`) under {ctx.root} or {ctx.root / 'circuits_out'}.",
            f"interp circuits --task ioi --out {ctx.root / 'circuits_out'}",
        )
    label = st.selectbox("task", list(found))
    path = found[label]
    res = _load(str(path), path.stat().st_mtime)
    gt = res["ground_truth"]
    st.markdown(
        f"**{res['task']}** on `{res.get('model', '?')}`: {res['n_layers']} x {res['n_heads']} "
        f"heads, {res.get('n_prompts', '?')} prompts, {res.get('seeds', '?')} seeds. "
        f"Ground-truth circuit: {gt['k']} heads ({', '.join(gt['circuit'])}), joint patch "
        f"{gt['joint_effect']:.3f} of the metric."
    )
    st.dataframe(_summary_rows(res), width="stretch", hide_index=True)
    if res.get("by_share"):
        st.caption(
            "ROC AUC (mean over seeds) against the circuit at each share of the metric, read off "
            "the ground truth's prefix curve; k: heads in the circuit"
        )
        st.dataframe(_share_rows(res), width="stretch", hide_index=True)
    st.plotly_chart(heatmap_figure(res), width="stretch")
    st.subheader("Ranked heads")
    key = st.selectbox("score", list(res["scores"]))
    n = len(res["labels"])
    top = st.slider("heads shown", 1, n, min(20, n)) if n > 1 else n
    rows = [
        {"rank": i + 1, "head": h, "score": s, "in circuit": c}
        for i, (h, s, c) in enumerate(ranked_heads(res, key, top))
    ]
    st.dataframe(rows, width="stretch", hide_index=True)
    if res.get("auc_vs_n_train"):
        st.plotly_chart(auc_vs_prompts_figure({"tasks": {res["task"]: res}}), width="stretch")
