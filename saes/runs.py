"""Run status records and run listing.

Every training job keeps ``run_status.json`` in its run folder, rewritten atomically at start, at
each checkpoint, every ``heartbeat_s`` seconds of progress, and at the end (finished), on Ctrl-C /
SIGTERM (interrupted) and on exceptions (failed, with the error message). A job killed outright
(SIGKILL, power loss, OOM killer) leaves ``state: running`` with a pid that is gone; ``list_runs``
reports it as ``crashed (resumable)`` when a good checkpoint exists.

``list_runs(root)`` finds the run folders under ``root`` and returns a ``RunInfo`` per folder (status,
tokens trained, headline metrics); ``interp runs`` prints them as a table or JSON.
"""

from __future__ import annotations

import contextvars
import functools
import json
import os
import socket
import sys
import time
import warnings
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal, TypeVar

from interp.io import atomic_write_json

STATUS_FILE = "run_status.json"
FORMAT = "interp-run-status"
VERSION = 1
State = Literal["running", "finished", "failed", "interrupted"]
HEADLINE_METRICS = ("fvu", "l0_mean", "dead_fraction", "ce_loss_recovered")
# a running job rewrites its status at least this often while it makes progress
DEFAULT_HEARTBEAT_S = 30.0
# a live pid whose status has not changed for this long is reported as "stalled"
DEFAULT_STALE_AFTER_S = 30 * 60.0
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
    path = Path(run_dir) / STATUS_FILE
    try:
        data = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError, UnicodeDecodeError):
        return None
    return data if isinstance(data, dict) else None


class RunStatus:
    """Writer of one run folder's ``run_status.json`` (every write is atomic)."""

    def __init__(
        self,
        run_dir: str | Path,
        train_tokens: int | None = None,
        heartbeat_s: float = DEFAULT_HEARTBEAT_S,
    ) -> None:
        self.run_dir = Path(run_dir)
        self.path = self.run_dir / STATUS_FILE
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
            from saes.checkpoint import read_meta

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


# ---------------------------------------------------------------------------------------------
# listing


@dataclass
class RunInfo:
    """What ``interp runs`` shows about one run folder (``to_dict`` for JSON / dashboards)."""

    path: str
    name: str
    status: str  # running, stalled, finished, failed[ (resumable)], interrupted[ (resumable)],
    #              crashed[ (resumable)], resumable, running (other host), unknown
    state: str | None  # the raw state in run_status.json (None without one)
    resumable: bool
    pid: int | None = None
    host: str | None = None
    started: str | None = None
    updated: str | None = None
    seconds_since_update: float | None = None
    attempts: int | None = None
    step: int | None = None
    tokens_trained: int | None = None
    train_tokens: int | None = None
    last_checkpoint: str | None = None
    checkpoint_tokens: int | None = None
    error: str | None = None
    model: str | None = None
    hook: str | None = None
    variant: str | None = None
    d_sae: int | None = None
    k: int | None = None
    metrics: dict[str, Any] = field(default_factory=dict)  # headline metrics from metrics.json
    train_metrics: dict[str, Any] = field(default_factory=dict)  # the last train_log.jsonl record

    @property
    def progress(self) -> float | None:
        if self.tokens_trained is None or not self.train_tokens:
            return None
        return min(1.0, self.tokens_trained / self.train_tokens)

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "progress": self.progress}


def _read_json(path: Path) -> dict[str, Any] | None:
    try:
        data = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError, UnicodeDecodeError):
        return None
    return data if isinstance(data, dict) else None


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


def is_run_dir(path: Path) -> bool:
    """A run folder holds a status record, a run config, an SAE artifact or checkpoints."""
    return (
        (path / STATUS_FILE).exists()
        or (path / "run_config.json").exists()
        or ((path / "cfg.json").exists() and (path / "sae_weights.safetensors").exists())
        or (path / "checkpoints").is_dir()
    )


def read_run(
    run_dir: str | Path,
    root: str | Path | None = None,
    verify: bool = False,
    stale_after_s: float = DEFAULT_STALE_AFTER_S,
    now: float | None = None,
) -> RunInfo:
    """Describe one run folder. ``verify=True`` also recomputes checkpoint sha256s (slower)."""
    from saes.checkpoint import latest_checkpoint, read_meta

    run_dir = Path(run_dir)
    now = time.time() if now is None else now
    try:
        name = str(run_dir.relative_to(root)) if root is not None else run_dir.name
    except ValueError:
        name = str(run_dir)
    if name == ".":
        name = run_dir.name
    status = read_status(run_dir)
    config = _read_json(run_dir / "run_config.json") or {}
    sae_cfg = (_read_json(run_dir / "cfg.json") or {}).get("interp", {}) or {}
    metrics_file = _read_json(run_dir / "metrics.json") or {}
    last_log = last_log_record(run_dir / "train_log.jsonl") or {}
    has_artifact = (run_dir / "cfg.json").exists() and (
        run_dir / "sae_weights.safetensors"
    ).exists()

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ckpt = latest_checkpoint(run_dir, verify=verify, warn=False)
    checkpoint_tokens = None
    if ckpt is not None:
        try:
            checkpoint_tokens = int(read_meta(ckpt).get("position", {}).get("tokens", 0))
        except (OSError, ValueError, AttributeError):
            checkpoint_tokens = None

    info = RunInfo(
        path=str(run_dir),
        name=name,
        status="unknown",
        state=None,
        resumable=False,
        last_checkpoint=ckpt.name if ckpt is not None else None,
        checkpoint_tokens=checkpoint_tokens,
        model=config.get("model") or sae_cfg.get("model_name"),
        hook=config.get("hook") or sae_cfg.get("hook_name"),
        variant=config.get("variant") or sae_cfg.get("variant"),
        d_sae=config.get("d_sae") or sae_cfg.get("d_sae"),
        k=config.get("k") or sae_cfg.get("k"),
        train_tokens=config.get("train_tokens"),
        metrics={k: metrics_file[k] for k in HEADLINE_METRICS if metrics_file.get(k) is not None},
        train_metrics={
            k: last_log[k]
            for k in ("step", "tokens", "fvu", "l0", "dead_fraction", "tokens_per_s")
            if k in last_log
        },
    )
    info.tokens_trained = last_log.get("tokens", checkpoint_tokens)
    info.step = last_log.get("step")

    if status is not None:
        info.state = status.get("state")
        info.pid, info.host = status.get("pid"), status.get("host")
        info.started, info.updated, info.attempts = (
            status.get("started"),
            status.get("updated"),
            status.get("attempts"),
        )
        info.error = status.get("error")
        if status.get("train_tokens"):
            info.train_tokens = status["train_tokens"]
        if status.get("tokens_trained") is not None:
            info.tokens_trained = max(int(status["tokens_trained"]), int(info.tokens_trained or 0))
        if status.get("step") is not None:
            info.step = max(int(status["step"]), int(info.step or 0))
        if status.get("updated_ts") is not None:
            info.seconds_since_update = max(0.0, now - float(status["updated_ts"]))

    state = info.state
    resumable_ckpt = ckpt is not None
    if state == "finished":
        info.status = "finished"
    elif state == "running":
        if info.host == socket.gethostname():
            if process_alive(int(info.pid or 0), status.get("started_ts") if status else None):
                recent = (
                    info.seconds_since_update is None or info.seconds_since_update <= stale_after_s
                )
                info.status = "running" if recent else "stalled"
            else:
                info.resumable = resumable_ckpt
                info.status = "crashed (resumable)" if resumable_ckpt else "crashed"
        else:
            recent = (
                info.seconds_since_update is not None and info.seconds_since_update <= stale_after_s
            )
            info.status = f"running (on {info.host})" if recent else f"unknown (on {info.host})"
            info.resumable = resumable_ckpt and not recent
    elif state in ("failed", "interrupted"):
        info.resumable = resumable_ckpt
        info.status = f"{state} (resumable)" if resumable_ckpt else state
    elif has_artifact:  # no status record (older runs): an artifact means training finished
        info.status = "finished"
    elif resumable_ckpt:
        info.status = "resumable"
        info.resumable = True
    return info


def list_runs(
    root: str | Path = "runs", verify: bool = False, stale_after_s: float = DEFAULT_STALE_AFTER_S
) -> list[RunInfo]:
    """Every run folder under ``root`` (``root`` itself included), sorted by path.

    Checkpoints are checked for presence and byte size (``verify=True``: sha256 too) to decide
    whether a run can be resumed.
    """
    root = Path(root)
    if not root.exists():
        raise FileNotFoundError(f"runs folder {root} does not exist")
    if not root.is_dir():
        raise NotADirectoryError(f"{root} is not a folder")
    found = []
    now = time.time()
    for dirpath, dirnames, _ in os.walk(root):
        dirnames[:] = sorted(d for d in dirnames if d != "checkpoints" and not d.startswith("."))
        path = Path(dirpath)
        if is_run_dir(path):
            found.append(
                read_run(path, root=root, verify=verify, stale_after_s=stale_after_s, now=now)
            )
    return sorted(found, key=lambda r: r.name)


# ---------------------------------------------------------------------------------------------
# display

STATUS_STYLE = {
    "running": "cyan",
    "finished": "green",
    "failed": "red",
    "crashed": "yellow",
    "interrupted": "yellow",
    "resumable": "yellow",
    "stalled": "magenta",
    "unknown": "dim",
}


def _tokens(n: int | None) -> str:
    if n is None:
        return "-"
    for unit, size in (("G", 1e9), ("M", 1e6), ("k", 1e3)):
        if n >= size:
            return f"{n / size:.3g}{unit}"
    return str(n)


def _ago(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= size:
            return f"{seconds / size:.0f}{unit}"
    return f"{seconds:.0f}s"


def _short_hook(hook: str | None) -> str:
    return (hook or "").replace("blocks.", "L").replace(".hook_", ".")


def runs_table(runs: list[RunInfo], title: str = "runs"):
    """A rich Table of runs: status, progress, SAE, headline metrics (training-log values in dim italics
    when the run has no metrics.json yet)."""
    from rich import box
    from rich.table import Table

    table = Table(title=title, box=box.SIMPLE_HEAD, pad_edge=False)
    table.add_column("run", overflow="fold")
    table.add_column("status", no_wrap=True)
    for col, just in (
        ("tokens", "right"),
        ("step", "right"),
        ("age", "right"),
        ("SAE", "left"),
        ("fvu", "right"),
        ("L0", "right"),
        ("dead", "right"),
        ("CE rec", "right"),
    ):
        table.add_column(col, justify=just, no_wrap=col in ("tokens", "age"))  # type: ignore[arg-type]
    for r in runs:
        style = STATUS_STYLE.get(r.status.split(" ")[0], "")
        progress = _tokens(r.tokens_trained)
        if r.train_tokens:
            progress += f"/{_tokens(r.train_tokens)}"
        sae = " ".join(
            x
            for x in (
                r.variant or "",
                f"k{r.k}" if r.k and r.variant != "relu_l1" else "",
                str(r.d_sae) if r.d_sae else "",
                _short_hook(r.hook),
            )
            if x
        )
        if r.metrics:
            m, fmt = r.metrics, "{}"
            vals = [
                m.get("fvu"),
                m.get("l0_mean"),
                m.get("dead_fraction"),
                m.get("ce_loss_recovered"),
            ]
        else:
            m, fmt = r.train_metrics, "[dim italic]{}[/]"
            vals = [m.get("fvu"), m.get("l0"), m.get("dead_fraction"), None]
        cells = [
            fmt.format(f"{v:.3f}" if i != 1 else f"{v:.1f}") if isinstance(v, (int, float)) else "-"
            for i, v in enumerate(vals)
        ]
        status = f"[{style}]{r.status}[/]" if style else r.status
        if r.error and r.state == "failed":
            status += f"\n[dim]{r.error[:60]}[/]"
        table.add_row(
            r.name,
            status,
            progress,
            "-" if r.step is None else str(r.step),
            _ago(r.seconds_since_update),
            sae or "-",
            *cells,
        )
    table.caption = "age: time since the last status update; dim italics: training-log values (no metrics.json yet)"
    return table
