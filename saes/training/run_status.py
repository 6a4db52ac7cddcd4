"""Run status records: the writer of a run folder's ``run_status.json`` and its reader.

Every training job keeps ``run_status.json`` in its run folder, rewritten atomically at start, at
each checkpoint, every ``heartbeat_s`` seconds of progress, and at the end (finished), on Ctrl-C /
SIGTERM (interrupted) and on exceptions (failed, with the error message). A job killed outright
(SIGKILL, power loss, OOM killer) leaves ``state: running`` with a pid that is gone; the listing
(``saes.runs.list_runs``) reports it as ``crashed (resumable)`` when a good checkpoint exists.
"""

from __future__ import annotations

import contextvars
import functools
import os
import socket
import sys
import time
import warnings
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal, TypeVar

from interp.atomic_files import atomic_write_json
from saes.rundir import RunDir
from saes.training.checkpoint import read_meta

FORMAT = "interp-run-status"
VERSION = 1
State = Literal["running", "finished", "failed", "interrupted"]
# a running job rewrites its status at least this often while it makes progress
DEFAULT_HEARTBEAT_S = 30.0
MAX_ERROR_CHARS = 4000

_ACTIVE: contextvars.ContextVar[list[RunStatus] | None] = contextvars.ContextVar(
    "interp_run_status", default=None
)
F = TypeVar("F", bound=Callable[..., Any])


class RunInUse(FileExistsError):
    """Another live process on this host is training into the same run folder."""


def _iso(ts: float) -> str:
    return datetime.fromtimestamp(ts, tz=UTC).isoformat(timespec="seconds").replace("+00:00", "Z")


def _boot_time() -> float | None:
    try:
        for line in Path("/proc/stat").read_text().splitlines():
            if line.startswith("btime "):
                return float(line.split()[1])
    except OSError:
        pass
    return None


def process_alive(pid: int, started_ts: float | None = None) -> bool:
    """Whether ``pid`` is a live (non-zombie) process on this host that started no later than ``started_ts``.

    The start-time check (Linux ``/proc``) tells a reused pid from the process that wrote the status.
    """
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        pass  # exists, owned by someone else
    except OSError:
        return False
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return True  # no /proc (macOS): trust kill(0)
    fields = stat[stat.rfind(")") + 2 :].split()  # after "pid (comm) "
    if fields and fields[0] in ("Z", "X"):
        return False
    boot = _boot_time()
    if started_ts is not None and boot is not None and len(fields) > 19:
        proc_start = boot + int(fields[19]) / os.sysconf("SC_CLK_TCK")
        if proc_start > started_ts + 2.0:  # the pid now belongs to a younger process
            return False
    return True


def read_status(run_dir: str | Path) -> dict[str, Any] | None:
    """The run's status record, or None if there is none or it cannot be parsed."""
    return RunDir(run_dir).status()


class RunStatus:
    """Writer of one run folder's ``run_status.json`` (every write is atomic)."""

    def __init__(
        self,
        run_dir: str | Path,
        train_tokens: int | None = None,
        heartbeat_s: float = DEFAULT_HEARTBEAT_S,
    ) -> None:
        self.run_dir = Path(run_dir)
        self.path = RunDir(self.run_dir).status_path
        self.heartbeat_s = heartbeat_s
        self._last_write = 0.0
        now = time.time()
        self.data: dict[str, Any] = {
            "format": FORMAT,
            "version": VERSION,
            "state": "running",
            "pid": os.getpid(),
            "host": socket.gethostname(),
            "started": _iso(now),
            "started_ts": now,
            "updated": _iso(now),
            "updated_ts": now,
            "first_started": _iso(now),
            "attempts": 1,
            "step": 0,
            "tokens_trained": 0,
            "train_tokens": train_tokens,
            "last_checkpoint": None,
            "resumed_from": None,
            "error": None,
            "command": " ".join(sys.argv),
        }

    @classmethod
    def begin(
        cls,
        run_dir: str | Path,
        train_tokens: int | None = None,
        checkpoint: str | Path | None = None,
        heartbeat_s: float = DEFAULT_HEARTBEAT_S,
    ) -> RunStatus:
        """Mark the run as running (resumed from ``checkpoint`` if given) and register it with an
        enclosing ``@records_status`` call, which records how the run ends.

        Raises ``RunInUse`` if a live process on this host is already training into ``run_dir``.
        """
        status = cls(run_dir, train_tokens=train_tokens, heartbeat_s=heartbeat_s)
        status.run_dir.mkdir(parents=True, exist_ok=True)
        previous = read_status(run_dir)
        if previous is not None:
            if (
                previous.get("state") == "running"
                and previous.get("host") == status.data["host"]
                and previous.get("pid") != os.getpid()
                and process_alive(int(previous.get("pid") or 0), previous.get("started_ts"))
            ):
                raise RunInUse(
                    f"{run_dir} is being trained by pid {previous['pid']} on this host (started "
                    f"{previous.get('started')}); stop it first, or choose another out_dir"
                )
            status.data["first_started"] = previous.get("first_started", previous.get("started"))
            status.data["attempts"] = int(previous.get("attempts", 1)) + 1
        if checkpoint is not None:
            meta = read_meta(checkpoint)
            status.data.update(
                step=int(meta.get("step", 0)),
                resumed_from=Path(checkpoint).name,
                last_checkpoint=Path(checkpoint).name,
                tokens_trained=int(meta.get("position", {}).get("tokens", 0)),
            )
        status.write()
        active = _ACTIVE.get()
        if active is not None:
            active.append(status)
        return status

    def write(self) -> None:
        now = time.time()
        self.data.update(updated=_iso(now), updated_ts=now)
        atomic_write_json(self.path, self.data)
        self._last_write = time.monotonic()

    def _write_quietly(self) -> None:
        """Status writes during and after training never fail the run (nor mask its exception)."""
        try:
            self.write()
        except OSError as e:
            warnings.warn(f"could not write {self.path}: {e}", RuntimeWarning, stacklevel=3)

    def update(self, step: int, tokens: int, checkpoint: str | Path | None = None) -> None:
        """Record progress; written at once for a checkpoint, else at most every ``heartbeat_s`` seconds."""
        self.data.update(step=int(step), tokens_trained=int(tokens))
        if checkpoint is not None:
            self.data["last_checkpoint"] = Path(checkpoint).name
        if checkpoint is not None or time.monotonic() - self._last_write >= self.heartbeat_s:
            self._write_quietly()

    def end(self, state: State, error: BaseException | str | None = None) -> None:
        """Record how the run ended: finished, failed (with the error message) or interrupted."""
        self.data["state"] = state
        if error is not None:
            text = error if isinstance(error, str) else f"{type(error).__name__}: {error}"
            self.data["error"] = text[:MAX_ERROR_CHARS]
        elif state == "finished":
            self.data["error"] = None
        self._write_quietly()

    def __enter__(self) -> RunStatus:
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is None:
            self.end("finished")
        elif issubclass(exc_type, KeyboardInterrupt):
            self.end("interrupted")
        else:
            self.end("failed", exc)


def records_status(fn: F) -> F:
    """Decorator: every ``RunStatus.begin`` inside ``fn`` ends as finished, interrupted (Ctrl-C,
    SIGTERM) or failed (any other exception, message recorded) with ``fn``."""

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        started: list[RunStatus] = []
        token = _ACTIVE.set(started)
        try:
            result = fn(*args, **kwargs)
        except KeyboardInterrupt:
            for s in started:
                s.end("interrupted")
            raise
        except BaseException as e:
            for s in started:
                s.end("failed", e)
            raise
        finally:
            _ACTIVE.reset(token)
        for s in started:
            s.end("finished")
        return result

    return wrapper  # type: ignore[return-value]
