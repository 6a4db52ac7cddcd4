"""``interp darkmatter`` (saes.analysis.dark_matter.cli) end to end on a tiny model: SAEs trained for
a few steps (one on the residual stream, one on hook_z), and every number the command writes checked
against a direct call of the library on the same activations (captured again here with the
command's own config); the convergence flag fires and warns on too few fit tokens."""

from __future__ import annotations

import json
from pathlib import Path

import plotly.io as pio
import pytest
from _dashboard_runs import tiny_run
from typer.testing import CliRunner

from saes.analysis.dark_matter.cli import app
from saes.analysis.dark_matter.linear import block_rows_for, decompose_error
from saes.analysis.dark_matter.norms import norm_prediction
from saes.analysis.dark_matter.pipeline import (
    DarkMatterConfig,
    capture_rows,
    chunks,
    reconstruct,
)
from saes.analysis.dark_matter.pursuit import pursuit_vs_sae
from saes.artifacts import load_sae

pytestmark = pytest.mark.usefixtures("one_thread_module")


@pytest.fixture(scope="module")
def runs(tmp_path_factory, tiny):
    root = tmp_path_factory.mktemp("dm_cli")
    out = []
    for name, hook in (("resid", "blocks.0.hook_resid_post"), ("z", "blocks.1.attn.hook_z")):
        out.append(tiny_run(root, tiny, name, hook, with_store=False))
    return root, out


def _invoke(paths, out, tokens, test_tokens, *extra):
    args = [*map(str, paths), "--tokens", str(tokens), "--test-tokens", str(test_tokens)]
    args += ["--ce-windows", "2", "--ce-start", "20", "--model-dtype", "float32"]
    return CliRunner().invoke(app, [*args, *extra, "--out", str(out)])


@pytest.mark.parametrize("estimator", ["ols", "ridge"])
def test_darkmatter_cli_numbers_equal_the_library_on_the_same_tokens(runs, tiny, estimator):
    root, paths = runs
    out = root / f"dm_{estimator}.json"
    res = _invoke(paths, out, 3000, 1500, "--pursuit-tokens", "200", "--estimator", estimator)
    assert res.exit_code == 0, res.output
    result = json.loads(out.read_text())
    cfg = DarkMatterConfig(**result["config"])
    assert cfg.estimator == estimator and cfg.fit_tokens == 3000 and cfg.test_tokens == 1500
    hooks = ["blocks.0.hook_resid_post", "blocks.1.attn.hook_z"]
    fit = capture_rows(tiny, hooks, "train", cfg.fit_tokens, cfg)
    test = capture_rows(tiny, hooks, "validation", cfg.test_tokens, cfg)
    assert len(result["saes"]) == 2
    for label, rep in result["saes"].items():
        folder = result["runs"][label]
        sae = load_sae(folder)
        h = sae.cfg.hook_name
        fp = chunks(fit[h], reconstruct(sae, fit[h]))
        tp = chunks(test[h], reconstruct(sae, test[h]))
        rk = {"block_rows": block_rows_for(cfg.fit_tokens)}
        dec, _ = decompose_error(fp, tp, estimator=estimator, **rk)
        for k, v in dec.to_dict().items():
            want = pytest.approx(v, rel=1e-9, abs=1e-12) if isinstance(v, float) else v
            assert rep["decomposition"][k] == want, (label, k)
        norms = norm_prediction(fp, tp, estimator=estimator, **rk)
        assert rep["norms"]["sq_norm"] == pytest.approx(norms["sq_norm"], rel=1e-9)
        cmp, _ = pursuit_vs_sae(sae, [test[h][:200]])
        assert rep["pursuit"]["test"] == pytest.approx(cmp.to_dict(), rel=1e-6)
        # a trained SAE: its error is far from all of x, and part of it is linear
        assert 0 < rep["decomposition"]["fvu_sae"] < 1
        assert 0 < rep["decomposition"]["linear_norm_share"] < 1
        saved = json.loads((Path(folder) / "dark_matter.json").read_text())
        assert saved["decomposition"] == rep["decomposition"]
    figs = sorted(p.stem for p in (root / f"dm_{estimator}_figures").iterdir())
    assert "decomposition" in figs and "pursuit" in figs
    pio.read_json(root / f"dm_{estimator}_figures" / "decomposition.json")
    assert "FVU x_hat+xa*" in res.output


def test_darkmatter_cli_flags_an_unconverged_fit(runs):
    """On 300 fit tokens (150 vs 300 for a 64 x 64 map) least squares moves by far more than the
    tolerance: the table marks the SAE, a warning names it and the JSON stores the flag; on 6,000
    the same SAE is not flagged."""
    root, paths = runs
    out = root / "few.json"
    res = _invoke(paths[:1], out, 300, 1500, "--pursuit-tokens", "0", "--estimator", "ols")
    assert res.exit_code == 0, res.output
    (rep,) = json.loads(out.read_text())["saes"].values()
    conv = rep["convergence"]
    assert conv["converged"] is False and conv["n_fit_small"] == 150 and conv["n_fit"] == 300
    assert any(abs(conv["changes"][k]) > conv["tolerance"] for k in conv["unconverged"])
    assert "WARNING" in res.output and "not converged" in res.output
    out = root / "many.json"
    res = _invoke(paths[:1], out, 6000, 1500, "--pursuit-tokens", "0")
    assert res.exit_code == 0, res.output
    (rep,) = json.loads(out.read_text())["saes"].values()
    assert rep["convergence"]["converged"] is True, rep["convergence"]
    assert "WARNING" not in res.output


def test_darkmatter_cli_names_a_missing_folder(tmp_path):
    res = CliRunner().invoke(app, [str(tmp_path / "nope")])
    assert res.exit_code == 2
    assert "nope" in res.output


def test_darkmatter_cli_names_a_bad_estimator(runs):
    res = _invoke(runs[1][:1], runs[0] / "x.json", 300, 300, "--estimator", "lasso")
    assert res.exit_code == 2
    assert "estimator" in res.output
