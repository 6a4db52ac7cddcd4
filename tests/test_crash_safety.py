"""Never lose work: SIGKILL then --resume, and corrupt / truncated / unlisted checkpoints fall back."""

from __future__ import annotations

import json
import shutil
import signal
import subprocess
import sys
import textwrap
import time
import warnings
from pathlib import Path

import pytest
import torch
from _runs import tiny_config
from safetensors.torch import load_file

from saes.runs import list_runs
from saes.training.checkpoint import (
    META,
    STATE,
    CheckpointWarning,
    checkpoint_dirs,
    checkpoint_ok,
    latest_checkpoint,
    load_checkpoint,
    save_checkpoint,
)
from saes.training.config import RunConfig
from saes.training.loop import TrainStep, train
from saes.training.run_status import read_status

REPO = Path(__file__).resolve().parent.parent


# the reference, the crashed runs and the child process all train at one thread (compared bit for bit)
pytestmark = pytest.mark.usefixtures("one_thread_module")


# every run here: 12 steps, a checkpoint every 4, each step logged
RUN = {
    "data": {"train_tokens": 256 * 12},
    "log": {"checkpoint_every_tokens": 256 * 4, "log_every": 1},
}


def _assert_same_weights(run_a, run_b) -> None:
    """Bit-identical weights (a resumed run repeats the uninterrupted arithmetic exactly)."""
    a = load_file(str(Path(run_a) / "sae_weights.safetensors"))
    b = load_file(str(Path(run_b) / "sae_weights.safetensors"))
    assert a.keys() == b.keys()
    for key in a:
        assert torch.equal(a[key], b[key]), (key, (a[key] - b[key]).abs().max().item())


def _cli_resume(cfg: RunConfig, tmp_path: Path):
    from typer.testing import CliRunner

    from interp.cli import app

    path = tmp_path / f"{Path(cfg.log.out_dir).name}.json"
    path.write_text(cfg.model_dump_json())
    return CliRunner().invoke(app, ["train", "--config", str(path), "--resume", "--no-eval"])


@pytest.fixture(scope="module")
def reference(tmp_path_factory, tiny):
    """An uninterrupted run (same seed and config as every crashed run below)."""
    ref = tiny_config(tmp_path_factory.mktemp("ref"), "ref", RUN)
    return train(ref, progress=False, evaluate=False)


# The child trains for real; at step 7 (after the checkpoint at step 4, mid-block) it stops making
# progress so that the parent's SIGKILL lands at a known point. Nothing in the child cleans up.
CHILD = textwrap.dedent("""
    import sys, time
    import torch
    torch.set_num_threads(int(sys.argv[2]))
    from saes.training.loop import TrainStep, train
    from saes.training.config import RunConfig

    cfg = RunConfig.model_validate_json(open(sys.argv[1]).read())
    orig = TrainStep.__call__

    def step(self, x, grad=None):
        if self.step_index == 7:
            time.sleep(3600)  # killed here by the test (the parent gives up long before this ends)
            sys.exit(3)
        return orig(self, x, grad)

    TrainStep.__call__ = step
    train(cfg, progress=False, evaluate=False)
""")


def _last_logged_step(log: Path) -> int:
    if not log.exists():
        return -1
    steps = [json.loads(line)["step"] for line in log.read_text().splitlines() if line.strip()]
    return max(steps, default=-1)


def test_sigkill_mid_training_then_resume_matches_uninterrupted(tmp_path, reference):
    cfg = tiny_config(tmp_path, "killed", RUN)
    cfg_path = tmp_path / "killed.json"
    cfg_path.write_text(cfg.model_dump_json())
    child = subprocess.Popen(
        [sys.executable, "-c", CHILD, str(cfg_path), str(torch.get_num_threads())],
        cwd=REPO,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )
    run = Path(cfg.log.out_dir)
    try:
        # wait for the condition (checkpoint 4 written, step 6 logged), not for a speed: the timeout
        # only keeps a hung child from hanging the suite
        give_up = time.monotonic() + 600
        while not (
            (run / "checkpoints" / "step_000000004" / META).exists()
            and _last_logged_step(run / "train_log.jsonl") >= 6
        ):
            if child.poll() is not None:
                pytest.fail(
                    f"child exited early ({child.returncode}): {child.stdout.read().decode()[-2000:]}"
                )
            if time.monotonic() > give_up:
                pytest.fail(
                    f"the child never reached step 7 (checkpoint step_000000004 written: "
                    f"{(run / 'checkpoints' / 'step_000000004' / META).exists()}, last logged step: "
                    f"{_last_logged_step(run / 'train_log.jsonl')}); is it hung?"
                )
            time.sleep(0.05)
        status = read_status(run)
        assert status["state"] == "running" and status["pid"] == child.pid
        assert [r.status for r in list_runs(tmp_path)] == ["running"]
        child.send_signal(signal.SIGKILL)
        child.wait(timeout=30)
    finally:
        if child.poll() is None:
            child.kill()
            child.wait()
    assert child.returncode == -signal.SIGKILL

    # the record still says "running", but its pid is gone: crashed, resumable from step 4
    assert read_status(run)["state"] == "running"
    (info,) = list_runs(tmp_path)
    assert info.status == "crashed (resumable)" and info.resumable
    assert info.last_checkpoint == "step_000000004" and info.checkpoint_tokens == 4 * 256
    assert info.tokens_trained >= 6 * 256  # progress past the checkpoint, from the log
    assert not (run / "sae_weights.safetensors").exists()

    res = _cli_resume(cfg, tmp_path)
    assert res.exit_code == 0, res.output
    assert "from step_000000004" in res.output
    _assert_same_weights(reference, run)
    status = read_status(run)
    assert (
        status["state"] == "finished"
        and status["attempts"] == 2
        and status["resumed_from"] == "step_000000004"
    )
    assert status["tokens_trained"] == cfg.data.train_tokens and status["step"] == 12
    assert [r.status for r in list_runs(tmp_path)] == ["finished"]


@pytest.fixture(scope="module")
def crashed(tmp_path_factory, tiny):
    """A run that died during step 11, with good checkpoints at steps 4 and 8."""
    run = tmp_path_factory.mktemp("crashed") / "run"
    orig = TrainStep.__call__

    def crashing(self, x, grad=None):
        if self.step_index == 10:
            raise RuntimeError("simulated crash")
        return orig(self, x, grad)

    TrainStep.__call__ = crashing
    try:
        with pytest.raises(RuntimeError, match="simulated crash"):
            train(tiny_config(run.parent, run.name, RUN), progress=False, evaluate=False)
    finally:
        TrainStep.__call__ = orig
    assert [p.name for p in checkpoint_dirs(run)] == ["step_000000004", "step_000000008"]
    return run


def _flip_bytes(path: Path) -> None:
    data = bytearray(path.read_bytes())
    mid = len(data) // 2
    data[mid : mid + 16] = bytes(b ^ 0xFF for b in data[mid : mid + 16])
    path.write_bytes(bytes(data))


def _truncate(path: Path) -> None:
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 3])


def _drop_manifest_entry(path: Path) -> None:
    meta_path = path.parent / META
    meta = json.loads(meta_path.read_text())
    del meta["files"][STATE]
    meta_path.write_text(json.dumps(meta))


@pytest.mark.parametrize(
    "damage, reason",
    [
        (_flip_bytes, "corrupted"),
        (_truncate, "truncated"),
        (_drop_manifest_entry, "no checksum entry"),
    ],
)
def test_damaged_newest_checkpoint_resume_uses_previous(
    tmp_path, reference, crashed, damage, reason
):
    run = tmp_path / "run"
    shutil.copytree(crashed, run)
    newest = run / "checkpoints" / "step_000000008" / STATE
    damage(newest)
    (info,) = list_runs(tmp_path, verify=True)
    assert info.status == "failed (resumable)" and "simulated crash" in info.error
    assert info.last_checkpoint == "step_000000004"

    with pytest.warns(CheckpointWarning, match=rf"step_000000008.*{reason}") as caught:
        res = _cli_resume(tiny_config(tmp_path, "run", RUN), tmp_path)
    assert res.exit_code == 0, res.output
    assert any(str(newest) in str(w.message) for w in caught), "the warning names the bad file"
    assert "from step_000000004" in res.output
    _assert_same_weights(reference, run)
    # the bad checkpoint was replaced by a good one of the resumed timeline
    assert [p.name for p in checkpoint_dirs(run)] == ["step_000000008", "step_000000012"]
    assert all(checkpoint_ok(p) is None for p in checkpoint_dirs(run))


def test_no_intact_checkpoint_restarts_from_zero(tmp_path, reference, crashed):
    run = tmp_path / "run"
    shutil.copytree(crashed, run)
    for path in checkpoint_dirs(run):
        _truncate(path / STATE)
    with pytest.warns(CheckpointWarning) as caught:
        out = train(tiny_config(tmp_path, "run", RUN), resume=True, progress=False, evaluate=False)
    messages = [str(w.message) for w in caught]
    assert any("step_000000008" in m and "truncated" in m for m in messages)
    assert any("step_000000004" in m and "truncated" in m for m in messages)
    assert "no intact checkpoint" in messages[-1]
    _assert_same_weights(reference, out)


# ---------------------------------------------------------------------------------------------
# checkpoint.py on its own (no training)


def _tensors(seed: int) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return {"w": torch.randn(64, 8, generator=g), "n": torch.arange(5)}


def test_save_load_roundtrip_and_manifest(tmp_path):
    path = save_checkpoint(tmp_path, 3, _tensors(0), {"step": 3, "position": {"tokens": 30}})
    tensors, meta = load_checkpoint(path)
    torch.testing.assert_close(tensors["w"], _tensors(0)["w"])
    assert meta["step"] == 3 and meta["position"] == {"tokens": 30}
    entry = meta["files"][STATE]
    assert entry["bytes"] == (path / STATE).stat().st_size and len(entry["sha256"]) == 64
    assert not list((tmp_path / "checkpoints").glob(".tmp*")), "no temporary folders left behind"


def test_keep_and_abandoned_timeline(tmp_path):
    for s in (1, 2, 3, 4):
        save_checkpoint(tmp_path, s, _tensors(s), {"step": s}, keep=2)
    assert [p.name for p in checkpoint_dirs(tmp_path)] == ["step_000000003", "step_000000004"]
    save_checkpoint(tmp_path, 2, _tensors(2), {"step": 2}, keep=2)  # resumed from before 3 and 4
    assert [p.name for p in checkpoint_dirs(tmp_path)] == ["step_000000002"]
    with pytest.raises(ValueError, match="keep"):
        save_checkpoint(tmp_path, 5, _tensors(5), {"step": 5}, keep=0)


def test_every_kind_of_damage_is_named(tmp_path):
    good = save_checkpoint(tmp_path, 1, _tensors(1), {"step": 1}, keep=10)
    cases = {
        "missing_state": lambda p: (p / STATE).unlink(),
        "missing_meta": lambda p: (p / META).unlink(),
        "bad_meta_json": lambda p: (p / META).write_text("{not json"),
        "flipped": lambda p: _flip_bytes(p / STATE),
        "truncated": lambda p: _truncate(p / STATE),
        "no_entry": lambda p: _drop_manifest_entry(p / STATE),
    }
    expected = {
        "missing_state": f"{STATE} is missing",
        "missing_meta": f"{META} is missing",
        "bad_meta_json": f"{META} is corrupt",
        "flipped": f"{STATE} is corrupted",
        "truncated": f"{STATE} is truncated",
        "no_entry": f"no checksum entry for {STATE}",
    }
    for i, (name, damage) in enumerate(cases.items(), start=2):
        path = save_checkpoint(tmp_path, i, _tensors(i), {"step": i}, keep=10)
        assert checkpoint_ok(path) is None
        damage(path)
        problem = checkpoint_ok(path)
        assert problem is not None and expected[name] in problem and str(path) in problem, (
            name,
            problem,
        )
        with pytest.raises(ValueError, match="unusable"):
            load_checkpoint(path)
    # the cheap check (sizes only) misses a same-size bit flip; the default full check does not
    assert checkpoint_ok(tmp_path / "checkpoints" / "step_000000005", verify=False) is None
    with pytest.warns(CheckpointWarning) as caught:
        assert latest_checkpoint(tmp_path) == good
    assert len(caught) == len(cases)


def test_version_1_checkpoints_still_verify(tmp_path):
    """Checkpoints written before the per-file manifest (a bare sha256) are still read and checked."""
    from interp.activation_files import sha256_file

    path = save_checkpoint(tmp_path, 7, _tensors(7), {"step": 7})
    meta = json.loads((path / META).read_text())
    legacy = {"step": 7, "sha256": sha256_file(path / STATE)}
    (path / META).write_text(json.dumps(legacy))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert latest_checkpoint(tmp_path) == path
    _flip_bytes(path / STATE)
    assert "corrupted" in checkpoint_ok(path)
    assert meta["format"] == "interp-checkpoint"
