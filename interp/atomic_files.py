"""Crash-safe file writing: temporary name in the same folder, fsync, rename, fsync the folder."""

from __future__ import annotations

import contextlib
import json
import os
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any


def fsync_dir(folder: str | Path) -> None:
    """Make a rename inside ``folder`` durable (no-op where directories cannot be opened)."""
    try:
        fd = os.open(str(folder), os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def atomic_write(path: str | Path, write: Callable[[str], None], sync: bool = True) -> None:
    """Call ``write(tmp_path)``, fsync the file, then rename it onto ``path``.

    A crash leaves either the old file or the new one, never a partial file under ``path``;
    the temporary file is removed if ``write`` fails. ``sync=False`` skips both fsyncs (the
    rename is still atomic for a process crash): for many small files that the caller makes
    durable together with :func:`fsync_files` before anything refers to them.
    """
    path = Path(path)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    try:
        write(tmp)
        if sync:
            with open(tmp, "rb+") as f:
                os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
    if sync:
        fsync_dir(path.parent)


def fsync_files(paths: list[Path]) -> None:
    """Make files written with ``atomic_write(..., sync=False)`` and their renames durable."""
    for p in paths:
        with open(p, "rb") as f:
            os.fsync(f.fileno())
    for folder in {Path(p).parent for p in paths}:
        fsync_dir(folder)


def atomic_write_bytes(path: str | Path, data: bytes) -> None:
    atomic_write(path, lambda tmp: Path(tmp).write_bytes(data))


def atomic_write_json(path: str | Path, obj: Any) -> None:
    atomic_write_bytes(path, (json.dumps(obj, indent=2, default=str) + "\n").encode())
