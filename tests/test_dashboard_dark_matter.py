"""The explorer's Dark matter page under Streamlit's AppTest: a tiny run analysed by
``interp darkmatter`` (its CLI, so the page reads exactly what the command writes) shows that
report's numbers in its table and figures, and links every run that has a report; a run without
one names the command that builds it."""

from __future__ import annotations

import json

import pytest
from _dashboard_runs import open_page, tiny_run
from typer.testing import CliRunner

from dashboards.registry import pages
from dashboards.views.dark_matter import HEADLINE
from saes.analysis.dark_matter.cli import app as darkmatter_app

pytestmark = pytest.mark.usefixtures("one_thread_module")


@pytest.fixture(scope="module")
def root(tmp_path_factory, tiny):
    root = tmp_path_factory.mktemp("dm_dash")
    run = tiny_run(root, tiny, "resid", "blocks.0.hook_resid_post", with_store=False)
    tiny_run(root, tiny, "plain", "blocks.0.hook_resid_post", with_store=False)
    args = [str(run), "--tokens", "1200", "--test-tokens", "600", "--ce-windows", "2"]
    args += ["--ce-start", "100", "--pursuit-tokens", "64", "--model-dtype", "float32"]
    res = CliRunner().invoke(darkmatter_app, [*args, "--out", str(root / "combined.json")])
    assert res.exit_code == 0, res.output
    return root


def _at(d: dict, path: tuple[str, ...]):
    for key in path:
        d = d[key]
    return d


def test_page_is_registered():
    page = {p.key: p for p in pages()}["dark_matter"]
    assert (page.title, page.order) == ("Dark matter", 50)


def test_page_shows_the_runs_report(root, monkeypatch):
    rep = json.loads((root / "resid" / "dark_matter.json").read_text())
    at = open_page(root, monkeypatch, page="dark_matter", run="resid")
    table = at.dataframe[0].value
    shown = dict(zip(table["quantity"], table["value"]))
    # every headline number of the report, exactly (the CLI wrote all parts: CE and pursuit too)
    assert len(shown) == len(HEADLINE)
    for label, path in HEADLINE:
        assert shown[label] == pytest.approx(_at(rep, path), rel=1e-12), label
    charts = [json.loads(c.proto.spec) for c in at.get("plotly_chart")]
    titles = [c["layout"]["title"]["text"] for c in charts]
    # fit size, decomposition, norms, downstream, pursuit (one run: no scaling)
    assert len(charts) == 5
    size = charts[titles.index(next(t for t in titles if t.startswith("Held-out R² against")))]
    for est, pts in rep["fit_size"]["curves"].items():
        trace = next(t for t in size["data"] if t["name"].endswith(f"{est}: ‖e‖² probe R²"))
        assert trace["x"] == [p["n_fit"] for p in pts]
        assert trace["y"] == pytest.approx([p["norm_probe_r2"] for p in pts])
    dec = charts[titles.index(next(t for t in titles if t.startswith("SAE error (FVU)")))]
    lin, nl = (trace["y"][0] for trace in dec["data"])
    d = rep["decomposition"]
    assert nl == pytest.approx(d["fvu_sae_plus_linear"])
    assert lin + nl == pytest.approx(d["fvu_sae"])
    down = charts[titles.index(next(t for t in titles if t.startswith("CE increase")))]
    ce = [trace["y"][0] for trace in down["data"]]
    assert ce == pytest.approx(list(rep["downstream"]["ce_increase"].values()))
    # the runs with a report are linked (and only those)
    md = " ".join(m.value for m in at.markdown)
    assert "(?page=dark_matter&run=resid)" in md
    assert "run=plain" not in md


def test_unconverged_report_shows_a_warning(root, monkeypatch):
    """The page warns exactly when the report's convergence flag is down, naming what moved."""
    path = root / "resid" / "dark_matter.json"
    original = path.read_text()
    rep = json.loads(original)
    at = open_page(root, monkeypatch, page="dark_matter", run="resid")
    assert len(at.warning) == (0 if rep["convergence"]["converged"] else 1)
    conv = rep["convergence"]
    conv.update(converged=False, unconverged=["r2_vector"])
    conv["changes"]["r2_vector"] = 0.25
    path.write_text(json.dumps(rep))
    try:
        at = open_page(root, monkeypatch, page="dark_matter", run="resid")
        (warning,) = at.warning
        assert "Not converged" in warning.value and "r2_vector +0.250" in warning.value
    finally:
        path.write_text(original)


def test_run_without_a_report_names_the_command(root, monkeypatch):
    at = open_page(root, monkeypatch, page="dark_matter", run="plain")
    info = at.info[0].value
    assert "No dark-matter report" in info
    assert f"interp darkmatter {(root / 'plain').resolve()} --tokens 150000" in info
    md = " ".join(m.value for m in at.markdown)
    assert "(?page=dark_matter&run=resid)" in md  # the link to the run that has one
