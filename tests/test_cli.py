"""The command line: models, cache (with resume), clear errors instead of stack traces."""

from __future__ import annotations

import json

from typer.testing import CliRunner

from interp.cache import ActivationCache
from interp.cli import app

runner = CliRunner()


def test_models_lists_default_and_tiny():
    res = runner.invoke(app, ["models"])
    assert res.exit_code == 0, res.output
    assert "smollm2-135m" in res.output and "tiny" in res.output


def test_cache_command_writes_and_resumes(tmp_path, tiny):
    args = [
        "cache",
        str(tmp_path / "c"),
        "--model",
        "tiny",
        "--hook",
        "blocks.0.hook_resid_post",
        "--hook",
        "blocks.1.attn.hook_z",
        "--context-size",
        "17",
        "--batch-windows",
        "4",
        "--windows-per-shard",
        "8",
        "--tokens",
        "256",
        "--grads",
    ]
    res = runner.invoke(app, args)
    assert res.exit_code == 0, res.output
    cache = ActivationCache(tmp_path / "c", verify=True)
    manifest = json.loads((tmp_path / "c" / "manifest.json").read_text())
    assert manifest["has_grads"] and manifest["model"] == "tiny" and manifest["source"] == "stdlib"
    assert len(cache) == 16 * 16 and manifest["complete"]
    # asking for more tokens continues the same cache
    res = runner.invoke(app, args[:-3] + ["--tokens", "512", "--grads"])
    assert res.exit_code == 0, res.output
    assert len(ActivationCache(tmp_path / "c")) == 32 * 16


def test_cache_command_errors_are_clean(tmp_path, tiny):
    res = runner.invoke(
        app, ["cache", str(tmp_path / "c"), "--model", "tiny", "--hook", "blocks.9.hook_resid_post"]
    )
    assert res.exit_code == 2 and "unknown hook" in res.output and "Traceback" not in res.output
    res = runner.invoke(app, ["cache", str(tmp_path / "c"), "--model", "no-such-model"])
    assert res.exit_code == 2 and "no-such-model" in res.output


def test_kernels_command_names_the_selection_in_use(monkeypatch):
    from saes import kernels

    monkeypatch.setitem(kernels._native_state, "enabled", False)
    res = runner.invoke(app, ["kernels"])
    assert res.exit_code == 0, res.output
    status = json.loads(res.output[: res.output.rindex("}") + 1])
    assert status["in_use"] is False and "name" in status
    assert "CPU top-k selection: pure torch" in res.output


# `interp demo` reads configs/demo_topk.json (SmolLM2 layer 15, d_sae 4608, 65k-token buffer), which
# takes minutes on 2 cores even for one step; the demo test swaps in the tiny model and small sizes
# after the command has read and checked the committed config.
DEMO_SMALL = {
    "data.model": "tiny",
    "data.hook": "blocks.1.hook_resid_post",
    "data.context_size": 33,
    "data.batch_windows": 8,
    "data.buffer_tokens": 2048,
    "data.batch_tokens": 1024,
    "data.init_sample_tokens": 512,
    "sae.d_sae": 256,
    "log.checkpoint_every_tokens": 2048,
    "log.log_every": 1,
    "eval.tokens": 512,
    "eval.ce_windows": 4,
}


def test_demo_command_runs_resumes_and_reruns(tmp_path, monkeypatch, one_thread):
    """`interp demo --out-dir D --train-tokens N`: the committed demo config with those two
    overrides; Ctrl-C then `interp demo` again resumes from the interrupt checkpoint; a finished demo
    is rerun from scratch."""
    import os
    import signal
    from pathlib import Path

    import saes.train_config as tc
    from saes.run_status import read_status
    from saes.train import TrainStep

    out = tmp_path / "demo"
    orig_load = tc.load_run_config
    loaded = []

    def small(path, overrides=None):
        cfg = orig_load(path, overrides)
        loaded.append((Path(path), list(overrides), cfg))
        return tc.apply_changes(cfg, DEMO_SMALL)

    monkeypatch.setattr(tc, "load_run_config", small)
    calls = {"n": 0, "interrupt_at": 3}
    orig_step = TrainStep.__call__

    def step(self, x, grad=None):
        calls["n"] += 1
        if (
            calls["n"] == calls["interrupt_at"]
        ):  # Ctrl-C during step 3: it completes, then a checkpoint
            os.kill(os.getpid(), signal.SIGINT)
        return orig_step(self, x, grad)

    monkeypatch.setattr(TrainStep, "__call__", step)
    args = ["demo", "--out-dir", str(out), "--train-tokens", "4096", "--store-tokens", "300"]
    # (one batch of the real config; a small feature store)

    res = runner.invoke(app, args)
    assert isinstance(res.exception, (KeyboardInterrupt, SystemExit)), (res.output, res.exception)
    assert not (out / "metrics.json").exists()
    path, _, cfg = loaded[0]
    assert path == Path(__file__).resolve().parent.parent / "configs" / "demo_topk.json"
    committed = json.loads(path.read_text())
    assert cfg == tc.apply_changes(
        tc.RunConfig(**committed), {"log.out_dir": str(out), "data.train_tokens": 4096}
    )
    assert (cfg.data.model, cfg.data.hook, cfg.sae.variant, cfg.sae.k, cfg.sae.d_sae) == (
        "smollm2-135m",
        "blocks.15.hook_resid_post",
        "topk",
        32,
        4608,
    )  # what the README describes
    assert read_status(out)["state"] == "interrupted"
    assert [p.name for p in sorted((out / "checkpoints").glob("step_*"))][-1] == "step_000000003"

    calls.update(n=0, interrupt_at=-1)
    res = runner.invoke(app, args)
    assert res.exit_code == 0, res.output
    assert "resuming" in res.output and "step_000000003" in res.output and calls["n"] == 1
    assert read_status(out)["resumed_from"] == "step_000000003"
    assert "fvu" in res.output and "ce_loss_recovered" in res.output  # the summary table
    assert json.loads((out / "metrics.json").read_text())["train_tokens"] == 4096
    store = json.loads((out / "features" / "manifest.json").read_text())
    assert store["complete"] and store["n_tokens"] >= 300
    assert f"open the explorer: interp dashboard serve {out}" in res.output

    (out / "marker").write_text("from the finished run")
    calls["n"] = 0
    res = runner.invoke(app, args)
    assert res.exit_code == 0, res.output
    assert "resuming" not in res.output and calls["n"] == 4, (
        "a finished demo starts again from step 0"
    )
    assert not (out / "marker").exists()
    status = read_status(out)
    assert (
        status["resumed_from"] is None and status["attempts"] == 1 and status["state"] == "finished"
    )


def test_config_variants_lists_every_rule_the_config_accepts():
    """The option the ``sae.variant`` docstring names exists, and lists exactly the names the
    config accepts, each with a description."""
    import pydantic
    import pytest

    from saes.config import SAEConfig
    from saes.variants import variant_names

    r = runner.invoke(app, ["config", "--variants"])
    assert r.exit_code == 0, r.output
    rows = [line.split(None, 1) for line in r.output.splitlines() if line.strip()]
    assert [row[0] for row in rows] == variant_names() and len(rows) >= 6
    assert all(len(row) == 2 and len(row[1]) > 10 for row in rows), r.output
    for name, _ in rows:
        SAEConfig(variant=name)  # every listed name is a valid sae.variant
    assert "--variants" in (SAEConfig.model_fields["variant"].description or "")
    with pytest.raises((pydantic.ValidationError, ValueError)):
        SAEConfig(variant="not_a_rule")
