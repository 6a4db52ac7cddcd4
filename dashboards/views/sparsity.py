"""Sparsity: activation-sparsity laws ("Sparsing Law", Luo, Song et al. 2024).

Top: the published activation-ratio series with our fitted laws (series, linearised view, A0
profile), read from ``fit.json`` written by ``interp sparsity fit --published`` under the root
if there is one, else from the committed benchmark ``bench/results/sparsity.json`` (part
``reproduce``). Bottom: the per-layer PPL-p% activation ratio and threshold of a
``measure.json`` written by ``interp sparsity measure`` anywhere under the root (up to three
folders deep), with its headline numbers (and the held-out ones when it was measured with
``--heldout-tokens``); without one, the page names the command.
"""

from __future__ import annotations

import json
from pathlib import Path

import streamlit as st

from dashboards.context import missing
from interp.sparsity.figures import (
    layers_figure,
    linearised_figure,
    profile_figure,
    series_figure,
)

TITLE = "Sparsity"
ORDER = 70
BENCH = Path(__file__).resolve().parents[2] / "bench" / "results" / "sparsity.json"
FIT_COMMAND = "interp sparsity fit --published --out runs/sparsity"
MEASURE_COMMAND = "interp sparsity measure --model smollm2-135m --out runs/sparsity"
DEPTH = 3


def _find(root: Path, name: str) -> list[Path]:
    """Files called ``name`` in ``root`` and up to DEPTH folders below it, sorted."""
    found: list[Path] = []
    for depth in range(DEPTH + 1):
        found += root.glob("/".join(["*"] * depth + [name]))
    return sorted(p for p in found if p.is_file())


def _load(path: Path) -> dict | None:
    try:
        d = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    return d if isinstance(d, dict) else None


def published_fits(root: Path) -> tuple[dict | None, str]:
    """The fitted published series and where they came from: a ``fit.json`` under the root
    (the first with series), else the benchmark's reproduction."""
    for p in _find(root, "fit.json"):
        d = _load(p)
        if d and d.get("series"):
            return d["series"], str(p)
    d = _load(BENCH) if BENCH.is_file() else None
    fits = ((d or {}).get("reproduce") or {}).get("fits")
    return (fits, str(BENCH)) if fits else (None, "")


def measurements(root: Path) -> dict[str, dict]:
    """Every ``interp sparsity measure`` result under the root, by path relative to it."""
    out = {}
    for p in _find(root, "measure.json"):
        d = _load(p)
        if d and d.get("layers") and "activation_ratio" in d:
            out[str(p.relative_to(root))] = d
    return out


def _headline(m: dict) -> list[dict]:
    rows = [
        ("model", m.get("model_spec") or m.get("model")),
        ("tokens", m.get("tokens")),
        ("activation ratio (mean over tokens and layers)", m["activation_ratio"]),
        ("global CETT", m.get("cett")),
        ("perplexity dense", m.get("ppl_dense")),
        ("perplexity sparse", m.get("ppl_sparse")),
        ("perplexity increase", m.get("ppl_increase")),
        ("dead neurons, all layers", sum(r.get("dead", 0) for r in m["layers"])),
    ]
    held = m.get("heldout")
    if held:
        rows += [
            ("held-out tokens (the windows after the searched ones)", held.get("tokens")),
            ("held-out activation ratio", held.get("activation_ratio")),
            ("held-out perplexity dense", held.get("ppl_dense")),
            ("held-out perplexity sparse", held.get("ppl_sparse")),
            ("held-out perplexity increase", held.get("ppl_increase")),
            (
                "held-out increase SE (log ratio, clustered by document)",
                held.get("log_increase_se"),
            ),
        ]
    return [{"quantity": k, "value": str(v)} for k, v in rows]


def render(ctx) -> None:
    st.title("Activation sparsity")
    fits, source = published_fits(ctx.root)
    st.subheader("Sparsing Law: the published series and our fits")
    if fits:
        st.caption(f"from `{source}`")
        st.plotly_chart(
            series_figure(fits, "Published activation ratio vs tokens"), width="stretch"
        )
        st.plotly_chart(linearised_figure(fits), width="stretch")
        if any("profile" in r for r in fits.values()):
            st.plotly_chart(profile_figure(fits), width="stretch")
    else:
        st.info(f"No fitted published series: `{FIT_COMMAND}` writes them.")

    st.subheader("Per-layer activation ratio at PPL-p%")
    found = measurements(ctx.root)
    if not found:
        missing(
            f"No `interp sparsity measure` result (measure.json) under {ctx.root}.", MEASURE_COMMAND
        )
    name = st.selectbox("measurement", list(found)) if len(found) > 1 else next(iter(found))
    m = found[name]
    st.caption(f"`{name}`")
    st.dataframe(_headline(m), hide_index=True)
    st.plotly_chart(layers_figure(m), width="stretch")
