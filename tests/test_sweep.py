"""Sweeps: grid expansion, one shared cache, parallel workers equal to in-process runs, summary + frontier."""

from __future__ import annotations

import csv
import json
import os
import shutil

import pytest
import torch
from _runs import tiny_config, tiny_sections
from safetensors.torch import load_file

from saes.training.loop import train
from saes.training.sweep import SweepConfig, pareto_frontier, plan_runs

# every run here: 6 steps, a checkpoint every 3, each step logged
STEPS6 = {
    "data": {"train_tokens": 256 * 6, "init_sample_tokens": 512},
    "log": {"checkpoint_every_tokens": 256 * 3, "log_every": 1},
}
BASE = tiny_sections(STEPS6)  # a sweep's base is a nested run config

pytestmark = pytest.mark.usefixtures("one_thread_module")


WORKER_THREADS = max(
    1, (os.cpu_count() or 1) // 2
)  # what each of a 2-process parallel sweep's workers uses


def test_pareto_frontier_by_hand():
    # (L0, FVU): (8, .5) beaten by (8, .4); (32, .3) beaten by (16, .2)
    pts = [(8, 0.5), (8, 0.4), (16, 0.2), (32, 0.3), (64, 0.1), (4, 0.9)]
    assert pareto_frontier(pts) == [5, 1, 2, 4]


def test_sweep_config_errors(tmp_path):
    with pytest.raises(ValueError, match="cannot vary.*model"):
        SweepConfig(base=BASE, grid={"data.model": ["tiny", "smollm2-135m"]})
    with pytest.raises(ValueError, match="unknown run settings.*kk"):
        SweepConfig(base=BASE, grid={"sae.kk": [1]})
    with pytest.raises(ValueError, match="unknown run settings.*'k' belongs in section 'sae'"):
        SweepConfig(base=BASE, grid={"k": [1]})
    with pytest.raises(ValueError, match="'k' belongs in section 'sae'"):
        SweepConfig(base={"k": 8}, grid={"sae.k": [1]})  # a flat base names the new places too
    with pytest.raises(ValueError, match="non-empty list"):
        SweepConfig(base=BASE, grid={"sae.k": []})
    sweep = SweepConfig(
        base=BASE,
        grid={"sae.k": [4, 8], "sae.d_sae": [64, 96]},
        runs=[{"name": "relu", "sae.variant": "relu_l1"}],
        out_dir=str(tmp_path / "s"),
    )
    runs = plan_runs(sweep, ["blocks.0.hook_resid_post", "blocks.1.hook_resid_post"], cache=None)
    assert len(runs) == 10
    assert (
        runs[0].log.out_dir.endswith("blocks.0.hook_resid_post/k4-d_sae64")
        and runs[0].sae.k == 4
        and runs[0].sae.d_sae == 64
    )
    assert runs[4].sae.variant == "relu_l1" and runs[9].data.hook == "blocks.1.hook_resid_post"
    with pytest.raises(ValueError, match="k must satisfy"):
        plan_runs(SweepConfig(base=BASE, grid={"sae.k": [200]}), ["blocks.0.hook_resid_post"], None)


def _snapshot(folder):
    """Every file under ``folder``: (mtime_ns, bytes)."""
    return {
        str(p.relative_to(folder)): (p.stat().st_mtime_ns, p.read_bytes())
        for p in sorted(folder.rglob("*"))
        if p.is_file()
    }


def _logged(run_dir, key="step"):
    return [json.loads(x)[key] for x in (run_dir / "train_log.jsonl").read_text().splitlines()]


def test_parallel_sweep_one_cache_matches_in_process_runs(
    tmp_path, tiny, monkeypatch, count_train_steps
):
    from saes.training.run_status import read_status
    from saes.training.sweep import run_sweep

    sweep = SweepConfig(
        base=BASE,
        grid={"sae.k": [4, 8]},
        mode="parallel",
        processes=2,
        evaluate=False,
        out_dir=str(tmp_path / "sweep"),
    )
    rows = run_sweep(sweep, progress=False)
    out = tmp_path / "sweep"
    assert [p.name for p in out.glob("cache/manifest.json")] == ["manifest.json"]
    logs = sorted((out / "configs").glob("worker*.log"))
    assert len(logs) == 2 and all("done" in p.read_text() for p in logs), "two worker processes"
    assert [r["name"] for r in rows] == ["k4", "k8"]
    runs = {r["name"]: out / "blocks.0.hook_resid_post" / r["name"] for r in rows}
    for r in rows:
        assert r["l0_mean"] <= r["k"] + 1e-9 and r["train_tokens"] == 256 * 6
        assert (
            r["metrics_from"] == "last training batch"
            and r["fvu"] == _logged(runs[r["name"]], "fvu")[-1]
        )
        # the same SAE untrained (lr = 0) on the same batches: the trained one beats it on the last
        # batch by 5% or more (rounding alone would move it by ~1e-9), and beats the batch mean (FVU 1)
        untrained = tiny_config(
            tmp_path,
            f"untrained-k{r['k']}",
            STEPS6,
            data={"cache": str(out / "cache")},
            sae={"k": r["k"]},
            optim={"lr": 0.0},
        )
        lr0 = train(untrained, progress=False, evaluate=False)
        assert r["fvu"] < 1.0 and r["fvu"] < 0.95 * _logged(lr0, "fvu")[-1], (
            r,
            _logged(lr0, "fvu"),
        )
    assert rows[1]["fvu"] < rows[0]["fvu"]  # same batches, twice the latents per token
    assert json.loads((out / "summary.json").read_text())["runs"][0]["name"] == "k4"
    with open(out / "summary.csv") as f:
        assert len(list(csv.DictReader(f))) == 2
    assert "plotly" in (out / "frontier.html").read_text()
    # the worker's run equals, bit for bit, the same run trained here from the same shared cache with
    # the workers' thread count (the GEMMs' rounding depends on it)
    threads = torch.get_num_threads()
    torch.set_num_threads(WORKER_THREADS)
    try:
        here = tiny_config(
            tmp_path, "here", STEPS6, data={"cache": str(out / "cache")}, sae={"k": 4}
        )
        here = train(here, progress=False, evaluate=False)
    finally:
        torch.set_num_threads(threads)
    a = load_file(str(runs["k4"] / "sae_weights.safetensors"))
    b = load_file(str(here / "sae_weights.safetensors"))
    for key in a:
        assert torch.equal(a[key], b[key]), key

    # --resume: k8 as if it crashed during step 6 after its step-3 checkpoint; k4 finished
    finished_k8 = load_file(str(runs["k8"] / "sae_weights.safetensors"))
    (runs["k8"] / "sae_weights.safetensors").unlink()
    shutil.rmtree(runs["k8"] / "checkpoints" / "step_000000006")
    log = (runs["k8"] / "train_log.jsonl").read_text().splitlines()
    (runs["k8"] / "train_log.jsonl").write_text("\n".join(log[:5]) + "\n")
    k4_files = _snapshot(runs["k4"])
    calls = count_train_steps()
    threads = torch.get_num_threads()
    torch.set_num_threads(
        WORKER_THREADS
    )  # the resumed k8 then repeats the worker's arithmetic exactly
    try:
        again = run_sweep(
            sweep.model_copy(update={"mode": "sequential"}), resume=True, progress=False
        )
    finally:
        torch.set_num_threads(threads)
    assert calls["n"] == 3, "only k8's steps 4-6 run"
    assert _snapshot(runs["k4"]) == k4_files, "the finished run's files are untouched"
    assert read_status(runs["k8"])["resumed_from"] == "step_000000003"
    assert _logged(runs["k8"]) == [1, 2, 3, 4, 5, 4, 5, 6]
    resumed = load_file(str(runs["k8"] / "sae_weights.safetensors"))
    for key in finished_k8:
        assert torch.equal(resumed[key], finished_k8[key]), key
    assert [r["fvu"] for r in again] == [r["fvu"] for r in rows]
    # a finished sweep rerun with --resume trains nothing, touches no run file, rewrites the same summary
    everything = {name: _snapshot(run) for name, run in runs.items()}
    calls["n"] = 0
    assert (
        run_sweep(sweep.model_copy(update={"mode": "sequential"}), resume=True, progress=False)
        == again
    )
    assert calls["n"] == 0
    assert {name: _snapshot(run) for name, run in runs.items()} == everything


def test_cli_sweep_together(tmp_path, tiny):
    import yaml
    from typer.testing import CliRunner

    from interp.cli import app

    cfg = {
        "base": tiny_sections(STEPS6, data={"hooks": ["blocks.*.hook_resid_post"]}),
        "grid": {"sae.k": [2, 16]},
        "mode": "together",
        "evaluate": False,
        "out_dir": str(tmp_path / "sw"),
    }
    (tmp_path / "sweep.yaml").write_text(yaml.safe_dump(cfg))
    res = CliRunner().invoke(app, ["sweep", "--config", str(tmp_path / "sweep.yaml")])
    assert res.exit_code == 0, res.output
    rows = json.loads((tmp_path / "sw" / "summary.json").read_text())["runs"]
    assert [(r["hook"], r["name"]) for r in rows] == [
        ("blocks.0.hook_resid_post", "k2"),
        ("blocks.0.hook_resid_post", "k16"),
        ("blocks.1.hook_resid_post", "k2"),
        ("blocks.1.hook_resid_post", "k16"),
    ]
    assert all(r["on_frontier"] for r in rows), (
        "more latents, lower FVU: both runs of each hook are on the frontier"
    )
    assert "frontier.html" in res.output
    res = CliRunner().invoke(
        app, ["sweep", "--config", str(tmp_path / "sweep.yaml"), "--set", "mode=diagonal"]
    )
    assert res.exit_code == 2 and "mode" in res.output
