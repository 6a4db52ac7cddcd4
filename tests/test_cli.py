"""The command line: models, cache (with resume), clear errors instead of stack traces; the
commands the packages add through the ``interp.commands`` entry points."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from importlib.metadata import EntryPoint
from pathlib import Path

import typer
from typer.testing import CliRunner

from interp.activation_files import ActivationFiles
from interp.cli import app

ROOT = Path(__file__).resolve().parents[1]
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
    cache = ActivationFiles(tmp_path / "c", verify=True)
    manifest = json.loads((tmp_path / "c" / "manifest.json").read_text())
    assert manifest["has_grads"] and manifest["model"] == "tiny" and manifest["source"] == "stdlib"
    assert len(cache) == 16 * 16 and manifest["complete"]
    # asking for more tokens continues the same cache
    res = runner.invoke(app, args[:-3] + ["--tokens", "512", "--grads"])
    assert res.exit_code == 0, res.output
    assert len(ActivationFiles(tmp_path / "c")) == 32 * 16


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

    import saes.training.config as tc
    from saes.training.loop import TrainStep
    from saes.training.run_status import read_status

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


# `interp --help` before the commands moved into the packages that own them (issue 30), in its order
COMMANDS_BEFORE = (
    "models",
    "kernels",
    "cache",
    "config",
    "train",
    "sweep",
    "eval",
    "runs",
    "demo",
    "steer",
    "induction",
    "darkmatter",
    "circuits",
    "sparsity",
    "dashboard",
)


def _names(app: typer.Typer) -> tuple[list[str], list[str]]:
    """(commands, sub-apps) registered on ``app``, in order."""
    return [c.name for c in app.registered_commands], [g.name for g in app.registered_groups]


def test_every_command_entry_point_is_installed_loads_and_registers():
    """The installed ``interp.commands`` entry points are pyproject.toml's (else the venv predates
    them: ``pip install -e . --no-deps``), each loads and adds its own commands."""
    import tomllib

    from interp.commands import GROUP, command_entry_points

    declared = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["entry-points"][
        GROUP
    ]
    eps = command_entry_points()
    assert {ep.name: ep.value for ep in eps} == declared, (
        "stale install: pip install -e . --no-deps"
    )
    commands, groups = ["models", "cache"], []
    for ep in eps:
        sub = typer.Typer()
        ep.load()(sub)
        cmds, subs = _names(sub)
        assert cmds or subs, f"{ep.name} registered no command"
        commands, groups = commands + cmds, groups + subs
    assert len(set(commands + groups)) == len(commands + groups)  # no name registered twice
    assert (commands, groups) == _names(app)


def test_help_lists_every_command_there_was():
    res = runner.invoke(app, ["--help"], env={"COLUMNS": "200"})
    assert res.exit_code == 0 and "pip install" not in res.output, res.output
    listed = [line.split()[1] for line in res.output.splitlines() if re.match(r"│ [a-z]", line)]
    assert set(COMMANDS_BEFORE) <= set(listed), set(COMMANDS_BEFORE) - set(listed)
    assert listed == typer.main.get_command(app).list_commands(None)
    # the model side first, then the packages' commands: the SAE workflow, the analyses, the explorer
    assert listed[:2] == ["models", "cache"] and listed[-1] == "dashboard"
    for name in COMMANDS_BEFORE:
        res = runner.invoke(app, [name, "--help"])
        assert res.exit_code == 0 and "Usage:" in res.output, (name, res.output)


def test_help_imports_no_package_behind_the_commands():
    """``interp --help`` loads the entry points' modules only: no torch, no analysis, no UI."""
    code = (
        "import sys; from typer.testing import CliRunner; from interp.cli import app; "
        "r = CliRunner().invoke(app, ['--help']); assert r.exit_code == 0, r.output; "
        "print(sorted(m for m in sys.modules if m.split('.')[0] in "
        "('torch', 'numpy', 'streamlit', 'dashboards') or m.startswith(('saes.analysis.dark_matter.cli', "
        "'saes.training.loop', 'circuits.cli', 'interp.sparsity.cli', 'interp.models'))))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]", out.stdout


def test_missing_or_broken_entry_points_say_how_to_repair(monkeypatch):
    import interp.commands as commands

    monkeypatch.setattr(commands, "_problems", [])  # this test's, not the installed app's
    for found in ([], [EntryPoint("10-saes", "saes.no_such_module:register", commands.GROUP)]):
        monkeypatch.setattr(commands, "command_entry_points", lambda found=found: found)
        root = typer.Typer(cls=commands.Root, no_args_is_help=True)
        root.command("models")(lambda: None)
        root.command("cache")(lambda: None)
        assert commands.discover(root) == []
        res = runner.invoke(root, ["train"])
        assert res.exit_code == 2 and "pip install -e ." in res.output, res.output
        assert ("saes.no_such_module" if found else "interp.commands") in res.output
        res = runner.invoke(root, ["models"])  # the model side still runs, after the error line
        assert res.exit_code == 0 and "pip install -e ." in res.output


def test_a_stale_egg_info_first_on_the_path_does_not_hide_the_commands(tmp_path, monkeypatch):
    """A checkout's leftover ``interp.egg-info`` (no ``interp.commands`` group) sits in the working
    directory, which is first on ``sys.path``: ``importlib.metadata.entry_points`` then sees only it.
    The CLI reads every ``interp`` metadata on the path, so the install's group still loads."""
    from importlib.metadata import entry_points

    from interp.commands import GROUP, command_entry_points

    stale = tmp_path / "interp.egg-info"
    stale.mkdir()
    (stale / "PKG-INFO").write_text("Metadata-Version: 2.1\nName: interp\nVersion: 0.0.1\n")
    (stale / "entry_points.txt").write_text("[console_scripts]\ninterp = interp.cli:app\n")
    installed = sorted(ep.name for ep in entry_points(group=GROUP))
    monkeypatch.syspath_prepend(str(tmp_path))
    assert installed and not entry_points(group=GROUP)  # the stale metadata hides the group
    assert [ep.name for ep in command_entry_points()] == installed
