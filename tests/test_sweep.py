"""Sweeps: grid expansion, one shared cache, parallel workers equal to in-process runs, summary + frontier."""
from __future__ import annotations

import csv
import json

import pytest
import torch
from safetensors.torch import load_file

from saes.sweep import SweepConfig, pareto_frontier, plan_runs
from saes.train import train
from saes.train_config import RunConfig

BASE = dict(model="tiny", hook="blocks.0.hook_resid_post", context_size=33, batch_windows=8, buffer_tokens=1024,
            d_sae=128, k=8, train_tokens=256 * 6, batch_tokens=256, checkpoint_every_tokens=256 * 3,
            warmup_steps=2, log_every=1, init_sample_tokens=512)


def test_pareto_frontier_by_hand():
    # (L0, FVU): (8, .5) beaten by (8, .4); (32, .3) beaten by (16, .2)
    pts = [(8, 0.5), (8, 0.4), (16, 0.2), (32, 0.3), (64, 0.1), (4, 0.9)]
    assert pareto_frontier(pts) == [5, 1, 2, 4]


def test_sweep_config_errors(tmp_path):
    with pytest.raises(ValueError, match="cannot vary.*model"):
        SweepConfig(base=BASE, grid={"model": ["tiny", "smollm2-135m"]})
    with pytest.raises(ValueError, match="unknown run settings.*kk"):
        SweepConfig(base=BASE, grid={"kk": [1]})
    with pytest.raises(ValueError, match="non-empty list"):
        SweepConfig(base=BASE, grid={"k": []})
    sweep = SweepConfig(base=BASE, grid={"k": [4, 8], "d_sae": [64, 96]}, runs=[{"name": "relu", "variant": "relu_l1"}],
                        out_dir=str(tmp_path / "s"))
    runs = plan_runs(sweep, ["blocks.0.hook_resid_post", "blocks.1.hook_resid_post"], cache=None)
    assert len(runs) == 10
    assert runs[0].out_dir.endswith("blocks.0.hook_resid_post/k4-d_sae64") and runs[0].k == 4 and runs[0].d_sae == 64
    assert runs[4].variant == "relu_l1" and runs[9].hook == "blocks.1.hook_resid_post"
    with pytest.raises(ValueError, match="k must satisfy"):
        plan_runs(SweepConfig(base=BASE, grid={"k": [200]}), ["blocks.0.hook_resid_post"], None)


def test_parallel_sweep_one_cache_matches_in_process_runs(tmp_path, tiny):
    from saes.sweep import run_sweep

    sweep = SweepConfig(base=BASE, grid={"k": [4, 8]}, mode="parallel", processes=2, evaluate=False,
                        out_dir=str(tmp_path / "sweep"))
    rows = run_sweep(sweep, progress=False)
    out = tmp_path / "sweep"
    assert [p.name for p in out.glob("cache/manifest.json")] == ["manifest.json"]
    logs = sorted((out / "configs").glob("worker*.log"))
    assert len(logs) == 2 and all("done" in p.read_text() for p in logs), "two worker processes"
    assert [r["name"] for r in rows] == ["k4", "k8"]
    for r in rows:
        assert r["l0_mean"] <= r["k"] + 1e-9 and 0 < r["fvu"] < 1.5 and r["train_tokens"] == 256 * 6
        assert r["metrics_from"] == "last training batch"
    assert json.loads((out / "summary.json").read_text())["runs"][0]["name"] == "k4"
    with open(out / "summary.csv") as f:
        assert len(list(csv.DictReader(f))) == 2
    assert "plotly" in (out / "frontier.html").read_text()
    # the worker's run equals the same run trained here from the same shared cache
    here = train(RunConfig(**{**BASE, "k": 4, "cache": str(out / "cache"), "out_dir": str(tmp_path / "here")}),
                 progress=False, evaluate=False)
    a = load_file(str(out / "blocks.0.hook_resid_post" / "k4" / "sae_weights.safetensors"))
    b = load_file(str(here / "sae_weights.safetensors"))
    for key in a:
        torch.testing.assert_close(a[key], b[key], rtol=1e-4, atol=1e-5)
    # a finished sweep rerun with --resume trains nothing and rewrites the same summary
    again = run_sweep(sweep.model_copy(update={"mode": "sequential"}), resume=True, progress=False)
    assert [r["fvu"] for r in again] == [r["fvu"] for r in rows]


def test_cli_sweep_together(tmp_path, tiny):
    import yaml
    from typer.testing import CliRunner

    from interp.cli import app

    cfg = {"base": {**BASE, "hooks": ["blocks.*.hook_resid_post"]}, "grid": {"k": [2, 16]}, "mode": "together",
           "evaluate": False, "out_dir": str(tmp_path / "sw")}
    (tmp_path / "sweep.yaml").write_text(yaml.safe_dump(cfg))
    res = CliRunner().invoke(app, ["sweep", "--config", str(tmp_path / "sweep.yaml")])
    assert res.exit_code == 0, res.output
    rows = json.loads((tmp_path / "sw" / "summary.json").read_text())["runs"]
    assert [(r["hook"], r["name"]) for r in rows] == [
        ("blocks.0.hook_resid_post", "k2"), ("blocks.0.hook_resid_post", "k16"),
        ("blocks.1.hook_resid_post", "k2"), ("blocks.1.hook_resid_post", "k16")]
    assert all(r["on_frontier"] for r in rows), "more latents, lower FVU: both runs of each hook are on the frontier"
    assert "frontier.html" in res.output
    res = CliRunner().invoke(app, ["sweep", "--config", str(tmp_path / "sweep.yaml"), "--set", "mode=diagonal"])
    assert res.exit_code == 2 and "mode" in res.output
