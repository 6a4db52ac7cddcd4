"""Run listing: what ``interp runs`` shows about the run folders under a root.

``list_runs(root)`` finds the run folders under ``root`` and returns a ``RunInfo`` per folder (status
from ``run_status.json`` and the pid's liveness, tokens trained, headline metrics); ``runs_table``
renders them, ``interp runs`` prints them as a table or JSON.
"""

from __future__ import annotations

import json
import os
import socket
import time
import warnings
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from saes.features.build import store_dir
from saes.headline import HEADLINE, HEADLINE_NAMES, from_log
from saes.rundir import RunDir
from saes.training.checkpoint import CHECKPOINTS, read_meta
from saes.training.run_status import process_alive
from saes.variants import uses_k

# a live pid whose status has not changed for this long is reported as "stalled"
DEFAULT_STALE_AFTER_S = 30 * 60.0


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


def _or_empty(read) -> dict[str, Any]:
    """A listing shows what it can: an unreadable file counts as a missing one."""
    try:
        return read() or {}
    except (OSError, ValueError):
        return {}


def _field(config: dict[str, Any], section: str, key: str) -> Any:
    """A field of a saved run config: nested (``config[section][key]``) or of the old flat layout."""
    nested = config.get(section)
    return nested.get(key) if isinstance(nested, dict) else config.get(key)


def read_run(
    run_dir: str | Path,
    root: str | Path | None = None,
    verify: bool = False,
    stale_after_s: float = DEFAULT_STALE_AFTER_S,
    now: float | None = None,
) -> RunInfo:
    """Describe one run folder. ``verify=True`` also recomputes checkpoint sha256s (slower)."""
    run_dir = Path(run_dir)
    folder = RunDir(run_dir)
    now = time.time() if now is None else now
    try:
        name = str(run_dir.relative_to(root)) if root is not None else run_dir.name
    except ValueError:
        name = str(run_dir)
    if name == ".":
        name = run_dir.name
    status = folder.status()
    config = _or_empty(folder.config)
    sae_cfg = _or_empty(folder.artifact_cfg).get("interp", {}) or {}
    metrics_file = _or_empty(folder.metrics)
    last_log = folder.last_log_record() or {}
    has_artifact = folder.has_artifact()

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ckpt = folder.latest_checkpoint(verify=verify, warn=False)
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
        model=_field(config, "data", "model") or sae_cfg.get("model_name"),
        hook=_field(config, "data", "hook") or sae_cfg.get("hook_name"),
        variant=_field(config, "sae", "variant") or sae_cfg.get("variant"),
        d_sae=_field(config, "sae", "d_sae") or sae_cfg.get("d_sae"),
        k=_field(config, "sae", "k") or sae_cfg.get("k"),
        train_tokens=_field(config, "data", "train_tokens"),
        metrics={k: metrics_file[k] for k in HEADLINE_NAMES if metrics_file.get(k) is not None},
        train_metrics={
            k: last_log[k]
            for k in (
                "step",
                "tokens",
                *(h.log_name for h in HEADLINE if h.log_name),
                "tokens_per_s",
            )
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
        dirnames[:] = sorted(d for d in dirnames if d != CHECKPOINTS and not d.startswith("."))
        path = Path(dirpath)
        if RunDir(path).is_run():
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


def dead_latents(path: str | Path) -> tuple[float | None, str]:
    """(share of latents that never fired, the window it was counted in): one definition, a latent
    with no nonzero activation in a window of held-out tokens. The window is the run's feature
    store where it has a complete one (200k tokens by default), else its evaluation's
    (``metrics.json`` ``n_tokens``, smaller, so it counts more latents dead); (None, "") with
    neither."""
    manifest = store_dir(path) / "manifest.json"
    if manifest.is_file():
        m = json.loads(manifest.read_text())
        if m.get("complete") and m.get("d_sae"):
            return m["dead_latents"] / m["d_sae"], f"{m['n_tokens']:,} store tokens"
    metrics = RunDir(path).metrics() or {}
    if metrics.get("dead_fraction") is None:
        return None, ""
    n = metrics.get("n_tokens")
    return metrics["dead_fraction"], f"{n:,} eval tokens" if n else "eval tokens (count unknown)"


def runs_table(runs: list[RunInfo], title: str = "runs"):
    """A rich Table of runs: status, progress, SAE, headline metrics (training-log values in dim italics
    when the run has no metrics.json yet)."""
    from rich import box
    from rich.table import Table

    table = Table(title=title, box=box.SIMPLE_HEAD, pad_edge=False)
    table.add_column("run", overflow="fold")
    table.add_column("status", no_wrap=True)
    for col, just in (("tokens", "right"), ("step", "right"), ("age", "right"), ("SAE", "left")):
        table.add_column(col, justify=just, no_wrap=col in ("tokens", "age"))  # type: ignore[arg-type]
    for h in HEADLINE:
        table.add_column(h.label, justify="right")
    for r in runs:
        style = STATUS_STYLE.get(r.status.split(" ")[0], "")
        progress = _tokens(r.tokens_trained)
        if r.train_tokens:
            progress += f"/{_tokens(r.train_tokens)}"
        sae = " ".join(
            x
            for x in (
                r.variant or "",
                f"k{r.k}" if r.k and uses_k(r.variant) else "",
                str(r.d_sae) if r.d_sae else "",
                _short_hook(r.hook),
            )
            if x
        )
        if r.metrics:
            vals, fmt = dict(r.metrics), "{}"
            vals["dead_fraction"], window = dead_latents(r.path)
        else:
            vals, fmt = from_log(r.train_metrics), "[dim italic]{}[/]"
            window = "training's dead window"
        cells = []
        for h in HEADLINE:
            v = vals.get(h.name)
            cell = fmt.format(h.format(v)) if isinstance(v, (int, float)) else "-"
            if h.name == "dead_fraction" and isinstance(v, (int, float)) and window:
                cell += f"\n[dim]in {window}[/]"
            cells.append(cell)
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
    table.caption = (
        "age: time since the last status update; dim italics: training-log values (no metrics.json "
        "yet); dead (never fired): share of latents with no nonzero activation in the window named "
        "under it (the feature store's held-out tokens where the run has one, else the evaluation's)"
    )
    return table
