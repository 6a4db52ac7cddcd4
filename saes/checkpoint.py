"""Atomic checkpoints: a folder per step (state.safetensors + meta.json with its sha256).

A checkpoint is written to a temporary folder, fsynced and renamed, so a crash leaves either the
old set or the new one. On load, a checkpoint whose file is truncated or whose checksum does not
match is reported by name and the previous good one is used.
"""
from __future__ import annotations

import json
import os
import shutil
import warnings
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file

from interp.cache import sha256_file
from interp.io import atomic_write, atomic_write_json, fsync_dir

STATE = "state.safetensors"
META = "meta.json"


def save_checkpoint(run_dir: str | Path, step: int, tensors: dict[str, torch.Tensor],
                    meta: dict[str, Any], keep: int = 2) -> Path:
    root = Path(run_dir) / "checkpoints"
    root.mkdir(parents=True, exist_ok=True)
    final = root / f"step_{step:09d}"
    tmp = root / f".tmp_step_{step:09d}"
    if tmp.exists():
        shutil.rmtree(tmp)
    tmp.mkdir()
    cpu = {k: v.detach().contiguous().cpu() for k, v in tensors.items()}
    atomic_write(tmp / STATE, lambda path: save_file(cpu, path))
    atomic_write_json(tmp / META, {**meta, "sha256": sha256_file(tmp / STATE)})
    if final.exists():
        shutil.rmtree(final)
    os.replace(tmp, final)
    fsync_dir(root)
    for old in sorted(p for p in root.glob("step_*") if p.is_dir())[:-keep]:
        shutil.rmtree(old, ignore_errors=True)
    return final


def checkpoint_ok(path: Path) -> str | None:
    """None if the checkpoint is complete and intact, else why not."""
    meta_path, state = path / META, path / STATE
    if not meta_path.exists() or not state.exists():
        return "missing files"
    try:
        meta = json.loads(meta_path.read_text())
    except json.JSONDecodeError:
        return "corrupt meta.json"
    if sha256_file(state) != meta.get("sha256"):
        return "checksum mismatch (truncated or corrupted state.safetensors)"
    return None


def latest_checkpoint(run_dir: str | Path) -> Path | None:
    """The newest intact checkpoint; bad ones are reported by name and skipped."""
    root = Path(run_dir) / "checkpoints"
    for path in sorted((p for p in root.glob("step_*") if p.is_dir()), reverse=True):
        problem = checkpoint_ok(path)
        if problem is None:
            return path
        warnings.warn(f"skipping bad checkpoint {path}: {problem}", stacklevel=2)
    return None


def load_checkpoint(path: str | Path) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    path = Path(path)
    problem = checkpoint_ok(path)
    if problem:
        raise ValueError(f"checkpoint {path} is unusable: {problem}")
    return load_file(str(path / STATE)), json.loads((path / META).read_text())
