"""The run folder as one object (saes.rundir.RunDir): layout, robust readers, checkpoint listing."""

from __future__ import annotations

import json

import pytest
import torch
from _runs import tiny_config

import saes.artifacts
import saes.evaluation.evaluate
from saes.rundir import RunDir, job_run_dir, last_log_record
from saes.runs import read_run
from saes.training.checkpoint import (
    checkpoint_dirs,
    checkpoint_name,
    checkpoint_step,
    latest_checkpoint,
    save_checkpoint,
)
from saes.training.shared_stream import expand_job
from saes.training.sweep import summary_row

TORN_LOG = (
    '{"step": 1, "tokens": 10, "tokens_per_s": 5.0, "fvu": 0.5, "l0": 4.0}\n'
    '{"step": 2, "tokens": 20, "tokens_per_s": 6.0, "fvu": 0.4, "l0": 3.0}\n'
    '{"step": 3, "tokens": 3'  # killed mid-write
)


def test_layout_paths(tmp_path):
    run = RunDir(tmp_path)
    assert run.path == tmp_path
    assert run.config_path == tmp_path / "run_config.json"
    assert run.status_path == tmp_path / "run_status.json"
    assert run.log_path == tmp_path / "train_log.jsonl"
    assert run.metrics_path == tmp_path / "metrics.json"
    assert run.cfg_path == tmp_path / "cfg.json"
    assert run.weights_path == tmp_path / "sae_weights.safetensors"
    assert run.checkpoints_dir == tmp_path / "checkpoints"
    assert run.memory_plan_path == tmp_path / "memory_plan.json"
    assert run.checkpoint_path(7) == tmp_path / "checkpoints" / "step_000000007"
    assert RunDir(str(tmp_path)).path == tmp_path


def test_what_the_folder_holds(tmp_path):
    run = RunDir(tmp_path / "run")
    assert not run.is_run() and not run.has_artifact() and not run.holds_checkpoints()
    run.path.mkdir()
    run.cfg_path.write_text("{}")
    assert not run.has_artifact() and not run.is_run()  # half an artifact is no run
    run.weights_path.write_bytes(b"")
    assert run.has_artifact() and run.is_run()
    other = RunDir(tmp_path / "other")
    other.checkpoints_dir.mkdir(parents=True)
    assert other.is_run() and not other.holds_checkpoints()
    (other.checkpoints_dir / ".tmp_step_000000001").mkdir()  # a partial one still counts
    assert other.holds_checkpoints() and other.checkpoints() == []


def test_torn_last_log_line_is_skipped_by_every_reader(tmp_path, monkeypatch):
    run = RunDir(tmp_path)
    run.log_path.write_text(TORN_LOG)
    assert [r["step"] for r in run.log_records()] == [1, 2]
    assert run.last_log_record() == last_log_record(run.log_path)
    assert run.last_log_record()["step"] == 2
    # the listing
    assert read_run(tmp_path).train_metrics["step"] == 2
    # the sweep's summary (falls back to the log before evaluation)
    cfg = tiny_config(tmp_path.parent, tmp_path.name)  # the run folder is tmp_path
    row = summary_row(cfg)
    assert row["train_tokens"] == 20 and row["fvu"] == 0.4 and row["l0_mean"] == 3.0
    assert row["metrics_from"] == "last training batch"
    # evaluation copies the log's last throughput into metrics.json
    monkeypatch.setattr(saes.artifacts, "load_sae", lambda folder, device="cpu": None)
    monkeypatch.setattr(
        saes.evaluation.evaluate, "load_sae", lambda folder, device="cpu": None, raising=False
    )
    monkeypatch.setattr(saes.evaluation.evaluate, "evaluate_sae", lambda *a, **kw: {"fvu": 0.3})
    metrics = saes.evaluation.evaluate.evaluate_run(tmp_path, cfg=cfg, model=object())
    assert metrics["train_tokens"] == 20 and metrics["train_tokens_per_s"] == 6.0
    assert run.metrics() == metrics
    assert summary_row(cfg)["metrics_from"] == "held-out"


def test_a_torn_line_mid_log_is_skipped(tmp_path):
    """A resume appends after a torn line: the next record lands on the same line."""
    run = RunDir(tmp_path)
    run.log_path.write_text(TORN_LOG + '{"step": 3, "tokens": 30}\n{"step": 4, "tokens": 40}\n\n')
    assert [r["step"] for r in run.log_records()] == [1, 2, 4]
    assert run.last_log_record() == {"step": 4, "tokens": 40}


def test_readers_on_missing_and_corrupt_files(tmp_path):
    run = RunDir(tmp_path / "absent")
    assert run.config() is None and run.metrics() is None and run.artifact_cfg() is None
    assert run.status() is None and run.log_records() == [] and run.last_log_record() is None
    with pytest.raises(FileNotFoundError, match="run_config.json is missing"):
        run.config(required=True)
    with pytest.raises(FileNotFoundError, match="metrics.json"):
        run.metrics(required=True)
    with pytest.raises(FileNotFoundError, match="run_config.json is missing"):
        saes.evaluation.evaluate.evaluate_run(run.path)

    run = RunDir(tmp_path)
    run.config_path.write_text('{"model": "tiny"')
    run.metrics_path.write_text("[1, 2]")
    run.status_path.write_text("{")
    with pytest.raises(ValueError, match="run_config.json is not valid JSON"):
        run.config()
    with pytest.raises(ValueError, match="metrics.json is not a JSON object"):
        run.metrics()
    assert run.status() is None  # a status record is advisory: unreadable reads as none
    assert read_run(tmp_path).model is None  # the listing shows what it can
    run.config_path.write_text(json.dumps({"model": "tiny", "k": 4}))
    run.metrics_path.write_text(json.dumps({"fvu": 0.2}))
    assert run.config() == {"model": "tiny", "k": 4} and run.metrics() == {"fvu": 0.2}


def test_checkpoints_agree_with_saes_checkpoint(tmp_path):
    run = RunDir(tmp_path)
    tensors = {"w": torch.zeros(3)}
    for step in (2, 4, 6):
        path = save_checkpoint(tmp_path, step, tensors, {"step": step}, keep=3)
        assert path == run.checkpoint_path(step) and path.name == checkpoint_name(step)
        assert checkpoint_step(path) == step
    assert (
        run.checkpoints()
        == checkpoint_dirs(tmp_path)
        == [run.checkpoint_path(s) for s in (2, 4, 6)]
    )
    assert run.latest_checkpoint() == latest_checkpoint(tmp_path) == run.checkpoint_path(6)
    assert run.holds_checkpoints()
    (run.checkpoint_path(6) / "state.safetensors").write_bytes(b"x")  # corrupt the newest
    with pytest.warns(UserWarning, match="step_000000006"):
        assert run.latest_checkpoint() == run.checkpoint_path(4)
    assert checkpoint_step(tmp_path / "checkpoints" / "not_a_step") is None


def test_job_run_dirs(tmp_path):
    hooks = ["blocks.0.hook_resid_post", "blocks.1.hook_resid_post"]
    one = tiny_config(tmp_path.parent, tmp_path.name, data={"hooks": hooks})
    assert [r.log.out_dir for r in expand_job(one, hooks)] == [
        job_run_dir(str(tmp_path), h) for h in hooks
    ]
    per_sae = [{"name": "a", "sae": {"k": 4}}, {"name": "b", "sae": {"k": 8}}]
    many = tiny_config(tmp_path.parent, tmp_path.name, data={"hooks": hooks[:1]}, saes=per_sae)
    assert [r.log.out_dir for r in expand_job(many, hooks)] == [
        job_run_dir(str(tmp_path), hooks[0], n) for n in ("a", "b")
    ]
    assert job_run_dir("runs/job", "h", "a") == "runs/job/h/a"
