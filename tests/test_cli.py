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
    args = ["cache", str(tmp_path / "c"), "--model", "tiny", "--hook", "blocks.0.hook_resid_post",
            "--hook", "blocks.1.attn.hook_z", "--context-size", "17", "--batch-windows", "4",
            "--windows-per-shard", "8", "--tokens", "256", "--grads"]
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
    res = runner.invoke(app, ["cache", str(tmp_path / "c"), "--model", "tiny", "--hook", "blocks.9.hook_resid_post"])
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
