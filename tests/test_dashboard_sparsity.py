"""The explorer's Sparsity page under Streamlit's AppTest: a root holding a tiny model's
``interp sparsity measure`` result (written by the CLI itself, so the page reads exactly what the
command writes) shows that result's per-layer ratios and headline numbers, and the published
series with the fits of the committed benchmark; a root without a measurement names the
command that builds it."""

from __future__ import annotations

import json

import pytest
from _dashboard_runs import open_page
from streamlit.testing.v1 import AppTest
from typer.testing import CliRunner

from dashboards.registry import pages
from dashboards.views.sparsity import BENCH, MEASURE_COMMAND
from interp.sparsity.cli import app as sparsity_app

pytestmark = pytest.mark.usefixtures("one_thread_module")


@pytest.fixture(scope="module")
def root(tmp_path_factory):
    root = tmp_path_factory.mktemp("sparsity_dash")
    args = ["measure", "--model", "tiny", "--dtype", "float32", "--n-tokens", "1024"]
    args += ["--context-size", "64", "--calib-tokens", "256", "--out", str(root / "sparsity")]
    args += ["--heldout-tokens", "256"]
    res = CliRunner().invoke(sparsity_app, args)
    assert res.exit_code == 0, res.output
    return root


def _specs(at: AppTest) -> list[dict]:
    return [json.loads(c.proto.spec) for c in at.get("plotly_chart")]


def test_page_is_registered():
    page = {p.key: p for p in pages()}["sparsity"]
    assert (page.title, page.order) == ("Sparsity", 70)


def test_page_shows_the_measurement_and_the_published_fits(root, monkeypatch):
    m = json.loads((root / "sparsity" / "measure.json").read_text())
    at = open_page(root, monkeypatch, page="sparsity")
    specs = _specs(at)
    # the per-layer figure is the last one: its bars are the measurement's per-layer ratios
    bars = [t for t in specs[-1]["data"] if t["type"] == "bar"]
    assert [float(y) for y in bars[0]["y"]] == [r["activation_ratio"] for r in m["layers"]]
    table = {r["quantity"]: r["value"] for r in at.dataframe[0].value.to_dict("records")}
    assert table["activation ratio (mean over tokens and layers)"] == str(m["activation_ratio"])
    assert table["global CETT"] == str(m["cett"])
    assert table["held-out activation ratio"] == str(m["heldout"]["activation_ratio"])
    assert table["held-out perplexity increase"] == str(m["heldout"]["ppl_increase"])
    # the published series: every series' points appear as one marker trace in the first figure
    fits = json.loads(BENCH.read_text())["reproduce"]["fits"]
    markers = {t["name"]: t for t in specs[0]["data"] if t.get("mode") == "markers"}
    assert set(markers) == set(fits)
    for name, row in fits.items():
        assert [float(y) for y in markers[name]["y"]] == pytest.approx(row["A"], rel=1e-12)


def test_missing_measurement_names_the_command(tmp_path, monkeypatch):
    at = open_page(tmp_path, monkeypatch, page="sparsity")
    assert "measure.json" in at.info[-1].value
    assert MEASURE_COMMAND in at.info[-1].value
    # the published fits still show above it: the series, the linearised view and the A0 profile
    # of the committed benchmark, and no per-layer figure
    specs = _specs(at)
    fits = json.loads(BENCH.read_text())["reproduce"]["fits"]
    assert len(specs) == 3
    markers = {t["name"] for t in specs[0]["data"] if t.get("mode") == "markers"}
    assert markers == set(fits)
    assert not any(t["type"] == "bar" for spec in specs for t in spec["data"])
