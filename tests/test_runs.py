"""Run status records (run_status.json) and run listing (list_runs, `interp runs`)."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from _runs import tiny_config

from saes.rundir import STATUS_FILE, last_log_record
from saes.runs import list_runs, read_run
from saes.training.checkpoint import save_checkpoint
from saes.training.loop import TrainStep, train
from saes.training.run_status import RunInUse, RunStatus, process_alive, read_status, records_status


def _dead_pid() -> int:
    """The pid of a process that has exited and been reaped."""
    p = subprocess.Popen([sys.executable, "-c", "pass"])
    p.wait()
    return p.pid


def _status(folder: Path, **fields) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    now = time.time()
    base = {
        "format": "interp-run-status",
        "version": 1,
        "state": "running",
        "pid": os.getpid(),
        "host": socket.gethostname(),
        "started_ts": now,
        "updated_ts": now,
        "step": 3,
        "tokens_trained": 300,
        "train_tokens": 1000,
        "error": None,
    }
    base.update(fields)
    (folder / STATUS_FILE).write_text(json.dumps(base))


def _checkpoint(folder: Path, step: int = 2, tokens: int = 200) -> None:
    save_checkpoint(
        folder, step, {"w": torch.ones(3)}, {"step": step, "position": {"tokens": tokens}}
    )


# ---------------------------------------------------------------------------------------------
# the writer


def test_status_lifecycle_via_decorator(tmp_path):
    @records_status
    def job(outcome: str):
        s = RunStatus.begin(tmp_path / outcome, train_tokens=1000, heartbeat_s=3600)
        first = read_status(tmp_path / outcome)
        assert first["state"] == "running" and first["pid"] == os.getpid()
        assert first["host"] == socket.gethostname() and first["train_tokens"] == 1000
        s.update(1, 100)  # heartbeat throttled: not written yet
        assert read_status(tmp_path / outcome)["step"] == 0
        s.update(
            2, 200, checkpoint=tmp_path / "checkpoints" / "step_000000002"
        )  # checkpoints are written at once
        assert read_status(tmp_path / outcome)["last_checkpoint"] == "step_000000002"
        if outcome == "failed":
            raise ValueError("activations contain NaN")
        if outcome == "interrupted":
            raise KeyboardInterrupt

    job("finished")
    with pytest.raises(ValueError):
        job("failed")
    with pytest.raises(KeyboardInterrupt):
        job("interrupted")
    for outcome in ("finished", "failed", "interrupted"):
        st = read_status(tmp_path / outcome)
        assert st["state"] == outcome and st["step"] == 2 and st["tokens_trained"] == 200
        assert st["updated_ts"] >= st["started_ts"]
        assert not list((tmp_path / outcome).glob(".*tmp")), (
            "atomic writes leave no temporary files"
        )
    assert read_status(tmp_path / "failed")["error"] == "ValueError: activations contain NaN"
    assert read_status(tmp_path / "finished")["error"] is None


def test_heartbeat_writes_after_interval(tmp_path):
    s = RunStatus.begin(tmp_path, heartbeat_s=0.05)
    s.update(1, 10)
    assert read_status(tmp_path)["step"] == 0
    time.sleep(0.06)
    s.update(2, 20)
    assert read_status(tmp_path)["tokens_trained"] == 20


def test_refuses_a_folder_a_live_process_is_training(tmp_path):
    parent = os.getppid()  # alive, and started before this status record
    _status(tmp_path, pid=parent, started_ts=time.time())
    with pytest.raises(RunInUse, match=f"pid {parent}"):
        RunStatus.begin(tmp_path)
    _status(tmp_path, pid=_dead_pid())  # the writer is gone: a resume may take over
    s = RunStatus.begin(tmp_path)
    assert read_status(tmp_path)["attempts"] == 2 and s.data["pid"] == os.getpid()


@pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="needs /proc")
def test_process_alive_tells_reused_pids_apart():
    assert process_alive(os.getpid(), time.time())
    assert not process_alive(
        os.getpid(), started_ts=1.0
    )  # this process is younger than a 1970 record
    assert not process_alive(_dead_pid())
    zombie = subprocess.Popen([sys.executable, "-c", "pass"])
    deadline = time.monotonic() + 20
    while Path(f"/proc/{zombie.pid}/stat").read_text().split(") ")[1][0] != "Z":
        assert time.monotonic() < deadline
        time.sleep(0.02)
    assert not process_alive(zombie.pid), "an exited, unreaped child is not running"
    zombie.wait()


# ---------------------------------------------------------------------------------------------
# listing


def test_list_runs_classifies_every_state(tmp_path):
    root = tmp_path / "runs"
    host = socket.gethostname()
    old = time.time() - 7200
    _status(root / "a_running")
    _status(root / "b_stalled", updated_ts=old)
    _status(root / "c_crashed_resumable", pid=_dead_pid())
    _checkpoint(root / "c_crashed_resumable")
    _status(root / "d_crashed", pid=_dead_pid())
    _status(root / "e_interrupted", state="interrupted")
    _checkpoint(root / "e_interrupted")
    _status(root / "f_failed", state="failed", error="RuntimeError: CUDA out of memory")
    _status(root / "g_finished", state="finished", step=10, tokens_trained=1000)
    (root / "g_finished" / "metrics.json").write_text(
        json.dumps(
            {
                "fvu": 0.25,
                "l0_mean": 31.5,
                "dead_fraction": 0.01,
                "ce_loss_recovered": 0.93,
                "kl_div": 0.1,
            }
        )
    )
    _status(root / "h_other_host", host=host + "-elsewhere")
    _status(root / "i_other_host_old", host=host + "-elsewhere", updated_ts=old)
    _checkpoint(root / "i_other_host_old")
    legacy = root / "nested" / "j_legacy_finished"  # no status record, an SAE artifact
    legacy.mkdir(parents=True)
    for name in ("cfg.json", "sae_weights.safetensors"):
        (legacy / name).write_text("{}")
    _checkpoint(root / "k_legacy_resumable")
    runs = {r.name: r for r in list_runs(root, stale_after_s=600)}
    assert {k: r.status for k, r in runs.items()} == {
        "a_running": "running",
        "b_stalled": "stalled",
        "c_crashed_resumable": "crashed (resumable)",
        "d_crashed": "crashed",
        "e_interrupted": "interrupted (resumable)",
        "f_failed": "failed",
        "g_finished": "finished",
        "h_other_host": f"running (on {host}-elsewhere)",
        "i_other_host_old": f"unknown (on {host}-elsewhere)",
        "nested/j_legacy_finished": "finished",
        "k_legacy_resumable": "resumable",
    }
    assert [k for k, r in runs.items() if r.resumable] == [
        "c_crashed_resumable",
        "e_interrupted",
        "i_other_host_old",
        "k_legacy_resumable",
    ]
    assert runs["g_finished"].metrics == {
        "fvu": 0.25,
        "l0_mean": 31.5,
        "dead_fraction": 0.01,
        "ce_loss_recovered": 0.93,
    }
    assert runs["f_failed"].error == "RuntimeError: CUDA out of memory"
    assert runs["c_crashed_resumable"].last_checkpoint == "step_000000002"
    assert runs["c_crashed_resumable"].checkpoint_tokens == 200
    assert runs["a_running"].progress == pytest.approx(0.3)
    assert (
        runs["k_legacy_resumable"].tokens_trained == 200
    )  # from the checkpoint when nothing else says


def test_a_corrupt_checkpoint_is_not_resumable(tmp_path):
    _status(tmp_path / "r", pid=_dead_pid())
    _checkpoint(tmp_path / "r")
    state = tmp_path / "r" / "checkpoints" / "step_000000002" / "state.safetensors"
    data = bytearray(state.read_bytes())
    data[-4:] = b"\x00\x00\x00\x00" if data[-4:] != b"\x00\x00\x00\x00" else b"\x01\x01\x01\x01"
    state.write_bytes(bytes(data))
    assert (
        read_run(tmp_path / "r", verify=False).status == "crashed (resumable)"
    )  # sizes only: looks fine
    info = read_run(tmp_path / "r", verify=True)
    assert info.status == "crashed" and not info.resumable and info.last_checkpoint is None
    state.write_bytes(
        bytes(data[: len(data) // 2])
    )  # a truncation is caught by the cheap check too
    assert read_run(tmp_path / "r", verify=False).status == "crashed"


def test_last_log_record_skips_a_torn_line(tmp_path):
    log = tmp_path / "train_log.jsonl"
    log.write_text('{"step": 1, "tokens": 10}\n{"step": 2, "tokens": 20}\n{"step": 3, "tok')
    assert last_log_record(log) == {"step": 2, "tokens": 20}
    assert last_log_record(tmp_path / "absent.jsonl") is None


def test_list_runs_bad_root(tmp_path):
    with pytest.raises(FileNotFoundError, match="does not exist"):
        list_runs(tmp_path / "nope")
    (tmp_path / "file").write_text("x")
    with pytest.raises(NotADirectoryError):
        list_runs(tmp_path / "file")
    assert list_runs(tmp_path) == []


# ---------------------------------------------------------------------------------------------
# with the trainer and the CLI


@pytest.fixture(scope="module")
def trained(tmp_path_factory, tiny, tiny_trained):
    """Three real runs of the trainer in one folder: finished (the common run, evaluated),
    interrupted by Ctrl-C and failed by an exception during step 6 (a checkpoint every 4 steps)."""
    import shutil
    import signal

    root = tmp_path_factory.mktemp("trained") / "runs"
    done = shutil.copytree(tiny_trained, root / "done")
    every4 = {"checkpoint_every_tokens": 256 * 4}
    orig = TrainStep.__call__

    def failing_or_interrupting(self, x, grad=None):
        if self.step_index == 5:
            if self.sae.cfg.d_sae == 64:
                raise RuntimeError("out of memory (simulated)")
            os.kill(os.getpid(), signal.SIGINT)
        return orig(self, x, grad)

    TrainStep.__call__ = failing_or_interrupting
    try:
        with pytest.raises(KeyboardInterrupt):
            train(tiny_config(root, "ctrl_c", log=every4), progress=False, model=tiny)
        oom = tiny_config(root, "oom", sae={"d_sae": 64}, log=every4)
        with pytest.raises(RuntimeError, match="simulated"):
            train(oom, progress=False, model=tiny)
    finally:
        TrainStep.__call__ = orig
    return root, done


def test_trainer_records_finished_failed_interrupted(trained, tiny, tmp_path):
    root, done = trained
    st = read_status(done)
    assert st["state"] == "finished" and st["step"] == 8 and st["tokens_trained"] == 256 * 8
    assert st["last_checkpoint"] == "step_000000008" and st["train_tokens"] == 256 * 8
    with pytest.raises(
        FileExistsError, match="--resume"
    ):  # refused before start: the record is untouched
        train(tiny_config(root, "done"), progress=False, model=tiny)
    assert read_status(done) == st
    with pytest.raises(ValueError, match="unknown hook"):  # bad input fails before the run starts
        cfg = tiny_config(tmp_path, "badhook", data={"hook": "blocks.0.hook_resid_pots"})
        train(cfg, progress=False, model=tiny)
    assert read_status(tmp_path / "badhook") is None

    st = read_status(root / "oom")
    assert st["state"] == "failed" and st["error"] == "RuntimeError: out of memory (simulated)"
    assert (
        st["step"] == 5
        and st["tokens_trained"] == 5 * 256
        and st["last_checkpoint"] == "step_000000004"
    )
    st = read_status(root / "ctrl_c")
    assert (
        st["state"] == "interrupted"
        and st["step"] == 6
        and st["last_checkpoint"] == "step_000000006"
    )


def test_list_runs_on_trainer_runs(trained):
    root, done = trained
    runs = {r.name: r for r in list_runs(root)}
    assert {k: r.status for k, r in runs.items()} == {
        "ctrl_c": "interrupted (resumable)",
        "done": "finished",
        "oom": "failed (resumable)",
    }
    metrics = json.loads((done / "metrics.json").read_text())
    assert runs["done"].metrics["fvu"] == metrics["fvu"]
    assert runs["done"].metrics["ce_loss_recovered"] == metrics["ce_loss_recovered"]
    assert runs["ctrl_c"].train_metrics["step"] == 6 and runs["ctrl_c"].metrics == {}
    assert (runs["done"].variant, runs["done"].k, runs["done"].d_sae) == ("topk", 8, 128)


def test_cli_runs(trained):
    from typer.testing import CliRunner

    from interp.cli import app

    root, done = trained
    metrics = json.loads((done / "metrics.json").read_text())
    runner = CliRunner()
    res = runner.invoke(app, ["runs", str(root), "--json"])
    assert res.exit_code == 0, res.output
    rows = {r["name"]: r for r in json.loads(res.output)}
    assert (
        rows["ctrl_c"]["status"] == "interrupted (resumable)"
        and rows["ctrl_c"]["tokens_trained"] == 6 * 256
    )
    assert (
        rows["done"]["metrics"]["l0_mean"] == metrics["l0_mean"] and rows["done"]["progress"] == 1.0
    )
    res = runner.invoke(app, ["runs", str(root)], env={"COLUMNS": "200"})
    assert res.exit_code == 0, res.output
    for text in (
        "done",
        "finished",
        "ctrl_c",
        "interrupted (resumable)",
        "oom",
        "out of memory",
        f"{metrics['fvu']:.3f}",
    ):
        assert text in res.output, text
    res = runner.invoke(app, ["runs", str(root / "absent")])
    assert res.exit_code == 2 and "does not exist" in res.output
