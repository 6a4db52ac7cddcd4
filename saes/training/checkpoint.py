"""Atomic, verified checkpoints: a folder per step (``state.safetensors`` + its manifest ``meta.json``).

A checkpoint is written to a temporary folder, fsynced and renamed, so a crash leaves either the
old set or the new one. Its manifest (``meta.json``) records the training position and, under
``files``, the byte size and sha256 of ``state.safetensors``. On load, a checkpoint whose file is
missing, truncated or corrupted, or whose manifest is unreadable or lacks the file's entry, is
reported by name (a ``UserWarning`` naming the file) and the previous good one is used.
"""

from __future__ import annotations

import json
import os
import shutil
import time
import warnings
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file

from interp.activation_files import sha256_file
from interp.atomic_files import atomic_write, atomic_write_json, fsync_dir

STATE = "state.safetensors"
META = "meta.json"
FORMAT = "interp-checkpoint"
VERSION = 2
PREFIX = "step_"
CHECKPOINTS = "checkpoints"  # the run folder's subfolder holding one folder per checkpoint


class CheckpointWarning(UserWarning):
    """A checkpoint was skipped because it is incomplete or corrupt (the message names the file)."""


def checkpoints_root(run_dir: str | Path) -> Path:
    """The folder holding a run's checkpoints (``<run_dir>/checkpoints``)."""
    return Path(run_dir) / CHECKPOINTS


def checkpoint_name(step: int) -> str:
    """The folder name of the checkpoint at ``step`` (``step_<step:09d>``, sorts by step)."""
    return f"{PREFIX}{step:09d}"


def checkpoint_path(run_dir: str | Path, step: int) -> Path:
    """Where the checkpoint at ``step`` of a run lies (whether or not it exists)."""
    return checkpoints_root(run_dir) / checkpoint_name(step)


def checkpoint_step(path: str | Path) -> int | None:
    """The step of a checkpoint folder, from its name; None if it is not named like one."""
    try:
        return int(Path(path).name[len(PREFIX) :])
    except ValueError:
        return None


def checkpoint_dirs(run_dir: str | Path) -> list[Path]:
    """Checkpoint folders of a run, oldest first (temporary ``.tmp_*`` folders excluded)."""
    root = checkpoints_root(run_dir)
    if not root.is_dir():
        return []
    return sorted(
        p for p in root.glob(f"{PREFIX}*") if p.is_dir() and checkpoint_step(p) is not None
    )


def save_checkpoint(
    run_dir: str | Path,
    step: int,
    tensors: dict[str, torch.Tensor],
    meta: dict[str, Any],
    keep: int = 2,
) -> Path:
    """Write ``checkpoints/step_<step>/`` atomically and keep the ``keep`` newest.

    Checkpoints of later steps than ``step`` are removed: they belong to an abandoned timeline
    (a resume fell back past them because they were corrupt).
    """
    if keep < 1:
        raise ValueError(f"keep must be >= 1, got {keep}")
    root = checkpoints_root(run_dir)
    root.mkdir(parents=True, exist_ok=True)
    final = root / checkpoint_name(step)
    tmp = root / f".tmp_{checkpoint_name(step)}"
    if tmp.exists():
        shutil.rmtree(tmp)
    tmp.mkdir()
    cpu = {k: v.detach().contiguous().cpu() for k, v in tensors.items()}
    atomic_write(tmp / STATE, lambda path: save_file(cpu, path))
    entry = {"bytes": (tmp / STATE).stat().st_size, "sha256": sha256_file(tmp / STATE)}
    manifest = {
        **meta,
        "format": FORMAT,
        "version": VERSION,
        "created": time.time(),
        "files": {STATE: entry},
    }
    atomic_write_json(tmp / META, manifest)
    fsync_dir(tmp)
    if final.exists():
        shutil.rmtree(final)
    os.replace(tmp, final)
    fsync_dir(root)
    for path in checkpoint_dirs(run_dir):
        if (checkpoint_step(path) or 0) > step:
            shutil.rmtree(path, ignore_errors=True)
    for old in checkpoint_dirs(run_dir)[:-keep]:
        shutil.rmtree(old, ignore_errors=True)
    return final


def checkpoint_ok(path: str | Path, verify: bool = True) -> str | None:
    """None if the checkpoint is complete and intact, else what is wrong, naming the file.

    ``verify=False`` checks presence and byte sizes only (cheap, for listings); the default also
    recomputes the sha256.
    """
    path = Path(path)
    meta_path, state = path / META, path / STATE
    if not meta_path.exists():
        return f"{meta_path} is missing"
    try:
        meta = json.loads(meta_path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        return f"{meta_path} is corrupt ({e})"
    if not isinstance(meta, dict):
        return f"{meta_path} is corrupt (not a JSON object)"
    if not state.exists():
        return f"{state} is missing"
    if "files" in meta:  # version 2: a manifest entry per file
        entry = meta["files"].get(STATE) if isinstance(meta["files"], dict) else None
        if not isinstance(entry, dict) or "sha256" not in entry:
            return f"{meta_path} has no checksum entry for {STATE}, so {state} cannot be verified"
        size = state.stat().st_size
        if "bytes" in entry and size != entry["bytes"]:
            return f"{state} is truncated or overwritten ({size:,} bytes, manifest says {entry['bytes']:,})"
        expected = entry["sha256"]
    else:  # version 1 (older runs): a bare sha256
        if "sha256" not in meta:
            return f"{meta_path} has no checksum for {STATE}, so {state} cannot be verified"
        expected = meta["sha256"]
    if verify and sha256_file(state) != expected:
        return f"{state} is corrupted (sha256 differs from {meta_path.name})"
    return None


def latest_checkpoint(run_dir: str | Path, verify: bool = True, warn: bool = True) -> Path | None:
    """The newest intact checkpoint; bad ones are reported by name (``CheckpointWarning``) and skipped."""
    bad = []
    for path in reversed(checkpoint_dirs(run_dir)):
        problem = checkpoint_ok(path, verify=verify)
        if problem is None:
            return path
        bad.append(path)
        if warn:
            warnings.warn(
                f"skipping bad checkpoint {path.name}: {problem}; trying the previous one",
                CheckpointWarning,
                stacklevel=2,
            )
    if bad and warn:
        warnings.warn(
            f"no intact checkpoint in {checkpoints_root(run_dir)} "
            f"({', '.join(p.name for p in bad)} are unusable); training restarts from step 0",
            CheckpointWarning,
            stacklevel=2,
        )
    return None


def intact_checkpoint_steps(run_dir: str | Path, verify: bool = True) -> set[int]:
    """Steps of every intact checkpoint of a run; bad ones are reported by name and left out."""
    good = set()
    for path in checkpoint_dirs(run_dir):
        problem = checkpoint_ok(path, verify=verify)
        if problem is None:
            good.add(checkpoint_step(path))
        else:
            warnings.warn(
                f"skipping bad checkpoint {path.name}: {problem}", CheckpointWarning, stacklevel=3
            )
    return good


def read_meta(path: str | Path) -> dict[str, Any]:
    """The manifest of a checkpoint folder (no verification)."""
    return json.loads((Path(path) / META).read_text())


def load_checkpoint(path: str | Path) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """Verify, then load a checkpoint's tensors and manifest; raises ``ValueError`` naming the bad file."""
    path = Path(path)
    problem = checkpoint_ok(path)
    if problem:
        raise ValueError(f"checkpoint {path} is unusable: {problem}")
    return load_file(str(path / STATE)), read_meta(path)
