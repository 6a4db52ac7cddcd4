"""Dark matter: the selected run's ``dark_matter.json`` (written by ``interp darkmatter RUN``).

How much of the SAE's error e = x - x_hat a linear map of x predicts (the linear part x a*, the
rest the nonlinear error e_nl), how well a linear probe predicts the error's norm, what each part
costs in CE when spliced back, and how much gradient pursuit removes (Engels et al. 2024). The
headline numbers as a table (with a warning where the fit has not converged: an R² that moved by
more than the report's tolerance from half the fit tokens to all of them), then the figures of
``saes.analysis.dark_matter.figures``, the held-out R² against the fit tokens first; above them,
links to every run under the root that has a report.
"""

from __future__ import annotations

import json
from pathlib import Path

import streamlit as st

from dashboards.context import missing
from saes.analysis.dark_matter.figures import all_figures

TITLE = "Dark matter"
ORDER = 50
REPORT = "dark_matter.json"
COMMAND = "interp darkmatter {run} --tokens 150000"

# (label, path into one SAE's report): the headline numbers, in the README's order
HEADLINE = (
    ("FVU of x_hat", ("decomposition", "fvu_sae")),
    ("FVU of x_hat + x a*", ("decomposition", "fvu_sae_plus_linear")),
    ("R² of e, per dimension (the paper's)", ("decomposition", "r2_per_dim")),
    ("R² of e, whole vector", ("decomposition", "r2_vector")),
    ("nonlinear share of Σ‖e‖²", ("decomposition", "nonlinear_norm_share")),
    ("‖e‖² probe R²", ("norms", "sq_norm", "probe")),
    ("‖e‖² from ‖x‖² alone, R²", ("norms", "sq_norm", "x_norm")),
    ("‖e‖ probe R²", ("norms", "norm", "probe")),
    ("‖e‖ from ‖x‖ alone, R²", ("norms", "norm", "x_norm")),
    ("clean CE", ("downstream", "ce_clean")),
    ("ΔCE, x_hat", ("downstream", "ce_increase", "x_hat")),
    ("ΔCE, x_hat + e_lin (e_nl missing)", ("downstream", "ce_increase", "x_hat_plus_e_lin")),
    ("ΔCE, x_hat + e_nl (e_lin missing)", ("downstream", "ce_increase", "x_hat_plus_e_nl")),
    ("FVU, SAE code (pursuit tokens)", ("pursuit", "test", "fvu_sae")),
    ("FVU, gradient pursuit (same L0)", ("pursuit", "test", "fvu_pursuit")),
    ("nonlinear error removed by pursuit", ("pursuit", "nonlinear_reduction", "pursuit")),
)


def _get(d, path):
    for key in path:
        if not isinstance(d, dict) or key not in d:
            return None
        d = d[key]
    return d


def headline_rows(rep: dict) -> list[dict]:
    """The headline numbers one report has (a part left out, e.g. no CE windows, is skipped)."""
    rows = [{"quantity": label, "value": _get(rep, path)} for label, path in HEADLINE]
    return [r for r in rows if isinstance(r["value"], (int, float))]


def _label(rep: dict, name: str) -> str:
    sae = rep.get("sae") or {}
    return f"{sae['variant']} d_sae={sae['d_sae']}" if "variant" in sae else name


def render(ctx) -> None:
    st.title("Dark matter")
    with_report = [r for r in ctx.runs if (Path(r.path) / REPORT).is_file()]
    if with_report:
        st.markdown(
            "Runs with a dark-matter report: "
            + ", ".join(f"[{r.name}]({ctx.link('dark_matter', run=r.name)})" for r in with_report)
        )
    run = ctx.require_run()
    path = run / REPORT
    if not path.is_file():
        missing(f"No dark-matter report ({REPORT}) for {ctx.run_name}.", COMMAND.format(run=run))
    rep = json.loads(path.read_text())
    sae, dec = rep.get("sae") or {}, rep.get("decomposition") or {}
    st.caption(
        f"{ctx.run_name}: `{sae.get('hook', '?')}`, {sae.get('variant', '?')} d_sae "
        f"{sae.get('d_sae', '?')}; a* fitted ({dec.get('estimator', 'ols')}) on "
        f"{dec.get('n_fit', '?')} tokens, scored on {dec.get('n_test', '?')} held-out tokens "
        "(Engels et al. 2024, README: Dark matter)"
    )
    conv = rep.get("convergence") or {}
    if conv and not conv.get("converged", True):
        moved = ", ".join(f"{k} {conv['changes'][k]:+.3f}" for k in conv.get("unconverged", []))
        st.warning(
            f"Not converged: from {conv['n_fit_small']:,} to {conv['n_fit']:,} fit tokens {moved} "
            f"(tolerance {conv['tolerance']}). These R² are not their limit: rerun with more "
            "--tokens."
        )
    st.dataframe(headline_rows(rep), width="stretch", hide_index=True)
    for fig in all_figures({"saes": {_label(rep, ctx.run_name): rep}}).values():
        st.plotly_chart(fig, width="stretch")
