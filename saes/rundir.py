"""The run folder as one object: where each of a run's files lies, and robust readers for them.

A run folder (one SAE's training run, ``RunConfig.out_dir``) holds:

| path | written by | what |
|---|---|---|
| `run_config.json` | `saes.training.loop`, each start | the resolved `RunConfig` (defaults filled in) |
| `run_status.json` | `saes.training.run_status` | state, pid, host, progress, error |
| `train_log.jsonl` | `saes.training.loop` | a JSON record per `log_every` steps; appended on resume |
| `checkpoints/step_<step:09d>/` | `saes.training.checkpoint` | `state.safetensors` + manifest `meta.json` |
| `cfg.json`, `sae_weights.safetensors` | `saes.artifacts.save_sae` | the SAE (SAELens's layout) |
| `metrics.json` | `saes.evaluation.evaluate.evaluate_run` | held-out metrics, the log's last throughput |
| `memory_plan.json` | `saes.training.loop --plan` | the memory plan (a job's is in its job folder) |

A job folder (a config with ``hooks`` / ``saes``) holds ``memory_plan.json`` and one run folder per
SAE: ``<hook>`` (one SAE per hook) or ``<hook>/<name>`` (``job_run_dir``).

Checkpoint naming belongs to ``saes.training.checkpoint`` and the artifact's file names to
``saes.artifacts``; ``RunDir`` delegates to them.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from saes.artifacts import CFG, WEIGHTS
from saes.training import checkpoint as ckpt

CONFIG_FILE = "run_config.json"
STATUS_FILE = "run_status.json"
LOG_FILE = "train_log.jsonl"
METRICS_FILE = "metrics.json"
MEMORY_PLAN_FILE = "memory_plan.json"


def job_run_dir(job_dir: str, hook: str, name: str | None = None) -> str:
    """The run folder of one SAE of a job: ``<job_dir>/<hook>``, or ``<job_dir>/<hook>/<name>``
    when the job trains several SAEs per hook (a string, as ``RunConfig.out_dir`` holds it)."""
    return f"{job_dir}/{hook}" if name is None else f"{job_dir}/{hook}/{name}"


def last_log_record(path: str | Path, max_bytes: int = 1 << 16) -> dict[str, Any] | None:
    """The last complete JSON line of a JSONL log, read from its end (logs can be large)."""
    path = Path(path)
    try:
        with open(path, "rb") as f:
            f.seek(0, os.SEEK_END)
            size = f.tell()
            f.seek(max(0, size - max_bytes))
            tail = f.read()
    except OSError:
        return None
    for line in reversed(tail.splitlines()):
        try:
            record = json.loads(line)
        except (json.JSONDecodeError, UnicodeDecodeError):
            continue  # a partial last line (killed mid-write) or a cut first line
        if isinstance(record, dict):
            return record
    return None


def _read_object(path: Path, required: str | None = None) -> dict[str, Any] | None:
    """A JSON object file: None when missing (``FileNotFoundError`` with ``required``'s message
    instead, if given); a file that is not a JSON object is a ``ValueError`` naming it."""
    try:
        text = path.read_text()
    except FileNotFoundError:
        if required is not None:
            raise FileNotFoundError(required) from None
        return None
    try:
        data = json.loads(text)
    except ValueError as e:  # JSONDecodeError
        raise ValueError(f"{path} is not valid JSON ({e})") from None
    if not isinstance(data, dict):
        raise ValueError(f"{path} is not a JSON object")
    return data


class RunDir:
    """One run folder: the path of each file (see the module's table) and readers for them.

    Readers never need the run to be complete: a missing file reads as None (or an empty list),
    a torn last log line (a job killed mid-write) is skipped.
    """

    __slots__ = ("path",)

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)

    def __repr__(self) -> str:
        return f"RunDir({str(self.path)!r})"

    def __fspath__(self) -> str:
        return str(self.path)

    # ---- paths
    @property
    def config_path(self) -> Path:
        return self.path / CONFIG_FILE

    @property
    def status_path(self) -> Path:
        return self.path / STATUS_FILE

    @property
    def log_path(self) -> Path:
        return self.path / LOG_FILE

    @property
    def metrics_path(self) -> Path:
        return self.path / METRICS_FILE

    @property
    def cfg_path(self) -> Path:
        """The SAE artifact's config (SAELens's ``cfg.json``)."""
        return self.path / CFG

    @property
    def weights_path(self) -> Path:
        """The SAE artifact's weights (``sae_weights.safetensors``)."""
        return self.path / WEIGHTS

    @property
    def checkpoints_dir(self) -> Path:
        return ckpt.checkpoints_root(self.path)

    @property
    def memory_plan_path(self) -> Path:
        return self.path / MEMORY_PLAN_FILE

    def checkpoint_path(self, step: int) -> Path:
        """Where the checkpoint at ``step`` lies (whether or not it exists)."""
        return ckpt.checkpoint_path(self.path, step)

    # ---- what the folder holds
    def is_run(self) -> bool:
        """A run folder holds a status record, a run config, an SAE artifact or checkpoints."""
        return (
            self.status_path.exists()
            or self.config_path.exists()
            or self.has_artifact()
            or self.checkpoints_dir.is_dir()
        )

    def has_artifact(self) -> bool:
        """Both files of the SAE artifact exist (training finished and saved the SAE)."""
        return self.cfg_path.exists() and self.weights_path.exists()

    def holds_checkpoints(self) -> bool:
        """Anything at all in ``checkpoints/`` (a partial ``.tmp_*`` one too): a run to resume,
        not to start afresh over."""
        return self.checkpoints_dir.exists() and any(self.checkpoints_dir.iterdir())

    def checkpoints(self) -> list[Path]:
        """Checkpoint folders, oldest first (``saes.training.checkpoint.checkpoint_dirs``)."""
        return ckpt.checkpoint_dirs(self.path)

    def latest_checkpoint(self, verify: bool = True, warn: bool = True) -> Path | None:
        """The newest intact checkpoint (``saes.training.checkpoint.latest_checkpoint``)."""
        return ckpt.latest_checkpoint(self.path, verify=verify, warn=warn)

    # ---- readers
    def config(self, required: bool = False) -> dict[str, Any] | None:
        """The resolved run config (``run_config.json``) as a dict; None if there is none
        (``FileNotFoundError`` with ``required``). Build a ``RunConfig`` from it to validate."""
        missing = f"{self.path} is not a run folder: {CONFIG_FILE} is missing"
        return _read_object(self.config_path, missing if required else None)

    def metrics(self, required: bool = False) -> dict[str, Any] | None:
        """The held-out metrics (``metrics.json``); None before evaluation
        (``FileNotFoundError`` with ``required``)."""
        missing = f"{self.path} has no {METRICS_FILE}: the run has not been evaluated"
        return _read_object(self.metrics_path, missing if required else None)

    def artifact_cfg(self) -> dict[str, Any] | None:
        """The SAE artifact's ``cfg.json``; None before training saved the SAE."""
        return _read_object(self.cfg_path)

    def status(self) -> dict[str, Any] | None:
        """The run's status record, or None if there is none or it cannot be parsed."""
        try:
            data = json.loads(self.status_path.read_text())
        except (OSError, json.JSONDecodeError, UnicodeDecodeError):
            return None
        return data if isinstance(data, dict) else None

    def log_records(self) -> list[dict[str, Any]]:
        """Every training-log record, oldest first ([] without a log).

        Lines that do not parse are skipped: a job killed mid-write leaves a torn line, and a resume
        appends after it, so a torn line can sit in the middle of the log too.
        """
        try:
            lines = self.log_path.read_bytes().splitlines()
        except FileNotFoundError:
            return []
        records = []
        for line in lines:
            try:
                record = json.loads(line)
            except (json.JSONDecodeError, UnicodeDecodeError):
                continue
            if isinstance(record, dict):
                records.append(record)
        return records

    def last_log_record(self) -> dict[str, Any] | None:
        """The last complete training-log record (read from the log's end), None without one."""
        return last_log_record(self.log_path)
