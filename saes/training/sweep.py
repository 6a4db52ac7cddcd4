"""Sweeps: a grid of SAEs (k, width, learning rate, variant, ...) over one or more hooks.

A sweep config (YAML/JSON, :class:`SweepConfig`)::

    base:            # RunConfig fields shared by every run (hook or hooks: [patterns])
      model: smollm2-135m
      hooks: [blocks.15.hook_resid_post]
      train_tokens: 200000
    grid:            # the cartesian product of these per-run overrides
      k: [16, 32, 64]
      d_sae: [2304, 4608]
    mode: parallel   # together | sequential | parallel
    processes: 2
    out_dir: runs/sweep-k-width

Modes: ``together`` trains every SAE in one process from one activation stream (one forward or
cache read per batch; grid keys must be per-SAE settings); ``sequential`` and ``parallel`` train the
runs one after another, or spread over ``processes`` worker processes, all reading one shared
activation cache (``cache``, or one written once to ``out_dir/cache``). Each run has its own folder
``out_dir/<hook>/<name>``. At the end ``summary.json``, ``summary.csv`` and ``frontier.html`` (FVU
versus L0 with the Pareto frontier per hook) are written and the table is printed.
"""

from __future__ import annotations

import csv
import itertools
import os
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, ValidationError, model_validator

from interp.activation_files import ActivationFiles, ActivationFilesWriter
from interp.activations import ActivationCapture
from interp.atomic_files import atomic_write, atomic_write_json
from interp.data import token_windows
from interp.models import load_model
from saes.headline import HEADLINE, HEADLINE_NAMES, from_log
from saes.rundir import RunDir, job_run_dir
from saes.training.config import (
    RunConfig,
    SAEOverride,
    apply_changes,
    check_keys,
    dotted_key_problem,
    read_config_data,
)
from saes.training.loop import train
from saes.training.shared_stream import expand_job, resolve_hooks, spec_name
from saes.variants import variant_class

# settings that define the activation stream itself: a sweep cannot vary them (one shared cache)
STREAM_IDENTITY = frozenset(
    {
        "data.model",
        "data.source",
        "data.cache",
        "data.context_size",
        "data.hook",
        "data.hooks",
        "data.shard_hooks",
        "data.activation_dtype",
        "data.seed",
        "log.out_dir",
        "saes",
    }
)
SUMMARY_COLUMNS = (
    "name",
    "hook",
    "variant",
    "d_sae",
    "k",
    "lr",
    *HEADLINE_NAMES,
    "train_tokens",
    "tokens_per_s",
    "metrics_from",
    "run_dir",
)


class SweepConfig(BaseModel):
    """A grid of runs. Unknown keys are an error."""

    model_config = ConfigDict(extra="forbid")

    base: dict[str, Any] = {}
    grid: dict[str, list[Any]] = {}
    runs: list[dict[str, Any]] = []  # explicit override sets, in addition to the grid's product
    mode: Literal["together", "sequential", "parallel"] = "sequential"
    processes: int = 2
    cache: str | None = None  # a shared activation cache; default: written to out_dir/cache
    cache_tokens: int | None = None  # default: enough for the longest run
    evaluate: bool = True
    out_dir: str = "runs/sweep"

    @model_validator(mode="after")
    def _check(self) -> SweepConfig:
        check_keys(self.base, "the sweep's base")
        varied = set(self.grid) | {k for r in self.runs for k in r} - {"name"}
        problems = [p for p in map(dotted_key_problem, sorted(varied)) if p]
        if problems:
            raise ValueError(
                "unknown run settings in the sweep (grid and runs take dotted keys such as "
                f"sae.k or optim.lr): {'; '.join(problems)}"
            )
        fixed = sorted(varied & STREAM_IDENTITY)
        if fixed:
            raise ValueError(
                f"a sweep cannot vary {fixed}: its runs share one activation stream; "
                "set them in base (hooks: [...] trains every combination on each hook)"
            )
        for key, values in self.grid.items():
            if not isinstance(values, list) or not values:
                raise ValueError(f"grid[{key!r}] must be a non-empty list, got {values!r}")
        if self.processes < 1:
            raise ValueError(f"processes must be >= 1, got {self.processes}")
        if "out_dir" in self.base.get("log", {}):
            raise ValueError("set out_dir at the top level of the sweep, not in base.log")
        return self

    def combinations(self) -> list[dict[str, Any]]:
        keys = list(self.grid)
        combos = [
            dict(zip(keys, values)) for values in itertools.product(*(self.grid[k] for k in keys))
        ]
        return (combos if keys else []) + [dict(r) for r in self.runs] or [{}]


def load_sweep_config(path: str | Path, overrides: Sequence[str] = ()) -> SweepConfig:
    """Read a sweep config (YAML or JSON); ``key=value`` overrides apply to the top level."""
    p = Path(path)
    if not p.exists():
        raise FileNotFoundError(f"sweep config {p} does not exist")
    data = read_config_data(p, overrides, what="sweep config")
    try:
        return SweepConfig(**data)
    except ValidationError as e:
        raise ValueError(f"invalid sweep config {p}: {e}") from None


def _base(sweep: SweepConfig) -> RunConfig:
    try:
        base = RunConfig(**{**sweep.base, "saes": None})
    except ValidationError as e:
        raise ValueError(f"invalid base run config: {e}") from None
    return apply_changes(base, {"log.out_dir": sweep.out_dir, "data.shard_hooks": False})


def _hooks(base: RunConfig, available: Sequence[str], where: str) -> list[str]:
    return resolve_hooks(base.data.hooks or [base.data.hook], available, where)


def plan_runs(sweep: SweepConfig, hooks: Sequence[str], cache: str | None) -> list[RunConfig]:
    """One RunConfig per (hook, combination), each with its own folder (names from the overrides)."""
    base = apply_changes(_base(sweep), {"data.hooks": None})
    combos = sweep.combinations()
    names = [spec_name(c) for c in combos]
    if len(set(names)) != len(names):
        raise ValueError(f"the sweep's runs need distinct names; got {names}")
    runs = []
    for hook in hooks:
        for combo, name in zip(combos, names):
            fields = {k: v for k, v in combo.items() if k != "name"}
            try:
                runs.append(
                    apply_changes(
                        base,
                        {
                            **fields,
                            "data.hook": hook,
                            "data.cache": cache,
                            "log.out_dir": job_run_dir(sweep.out_dir, hook, name),
                        },
                    )
                )
            except ValidationError as e:
                raise ValueError(f"run {name!r} on {hook}: {e}") from None
    return runs


def ensure_cache(
    sweep: SweepConfig, base: RunConfig, progress: bool = True
) -> tuple[str, list[str]]:
    """The sweep's shared activation cache (written once, resumably, if not given) and its hooks."""
    given = sweep.cache or base.data.cache  # the sweep's, else the base run's (model-free runs)
    if given:
        cache = ActivationFiles(given, allow_incomplete=base.data.cache_allow_incomplete)
        return given, _hooks(base, list(cache.hooks), f"cache {given}")
    d = base.data
    model = load_model(d.model, device=base.device, dtype=d.model_dtype)
    hooks = _hooks(base, list(model.hook_dict), f"model {d.model!r}")
    variants = {
        base.sae.variant,
        *sweep.grid.get("sae.variant", []),
        *(r.get("sae.variant", base.sae.variant) for r in sweep.runs),
    }
    grads = any(variant_class(v).needs_grads for v in variants)
    longest = max(
        [
            d.train_tokens,
            *sweep.grid.get("data.train_tokens", []),
            *(r.get("data.train_tokens", 0) for r in sweep.runs),
        ]
    )
    tokens = sweep.cache_tokens or longest + d.buffer_tokens + d.init_sample_tokens
    folder = Path(sweep.out_dir) / "cache"
    capture = ActivationCapture(
        model,
        hooks,
        with_grads=grads,
        dtype=d.activation_dtype,
        skip_positions=d.skip_positions,
        max_norm_ratio=d.max_norm_ratio,
    )
    meta = {
        "model": d.model,
        "source": d.source,
        "split": "train",
        "seed": d.seed,
        "context_size": d.context_size,
    }
    writer = ActivationFilesWriter(folder, capture, meta, windows_per_shard=d.batch_windows * 16)
    windows = token_windows(
        model.tokenizer,
        source=d.source,
        context_size=d.context_size,
        split="train",
        seed=d.seed,
    )
    writer.write(
        windows,
        d.batch_windows,
        max_windows=-(-tokens // (d.context_size - 1)),
        progress=progress,
    )
    return str(folder), hooks


def _done(run: RunConfig, evaluate: bool) -> bool:
    folder = RunDir(run.log.out_dir)
    return (folder.metrics_path if evaluate else folder.weights_path).exists()


def _train_one(run: RunConfig, resume: bool, evaluate: bool, progress: bool) -> None:
    has_ckpt = RunDir(run.log.out_dir).holds_checkpoints()
    train(run, resume=resume or has_ckpt, progress=progress, evaluate=evaluate)


def run_sweep(
    sweep: SweepConfig, resume: bool = False, progress: bool = True
) -> list[dict[str, Any]]:
    """Train the grid and write the summary table and frontier figure; returns the summary rows.

    Runs that already finished are skipped; runs with checkpoints continue from them.
    """
    base = _base(sweep)
    out = Path(sweep.out_dir)
    out.mkdir(parents=True, exist_ok=True)
    if sweep.mode == "together":
        bad = sorted(k for k in sweep.grid if not k.startswith(("sae.", "optim.")))
        if bad:
            raise ValueError(
                f"mode 'together' trains every SAE from one stream: it cannot vary {bad}; "
                "use mode sequential or parallel"
            )
        job = apply_changes(
            base,
            {
                "data.cache": sweep.cache or base.data.cache,
                "data.hooks": base.data.hooks or [base.data.hook],
            },
        ).model_copy(update={"saes": [as_override(c) for c in sweep.combinations()]})
        if not (resume and all(_done(r, sweep.evaluate) for r in _together_runs(job))):
            train(job, resume=resume, progress=progress, evaluate=sweep.evaluate)
        runs = _together_runs(job)
    else:
        cache, hooks = ensure_cache(sweep, base, progress)
        runs = plan_runs(sweep, hooks, cache)
        todo = [r for r in runs if not _done(r, sweep.evaluate)]
        configs = out / "configs"
        configs.mkdir(exist_ok=True)
        if sweep.mode == "sequential" or sweep.processes == 1 or len(todo) <= 1:
            for r in todo:
                _train_one(r, resume, sweep.evaluate, progress)
        else:
            _run_parallel(todo, sweep, configs, resume)
    rows = summarize(runs, out)
    return rows


def as_override(combo: dict[str, Any]) -> SAEOverride:
    """A sweep point (dotted sae./optim. keys, optional name) as one SAE of a multi-SAE job."""
    sections: dict[str, dict[str, Any]] = {"sae": {}, "optim": {}}
    for key, value in combo.items():
        if key != "name":
            section, field = key.split(".", 1)
            sections[section][field] = value
    return SAEOverride(name=combo.get("name", spec_name(combo)), **sections)


def _together_runs(job: RunConfig) -> list[RunConfig]:
    if job.data.cache:
        available = list(
            ActivationFiles(job.data.cache, allow_incomplete=job.data.cache_allow_incomplete).hooks
        )
    else:
        available = list(load_model(job.data.model).hook_dict)
    return expand_job(job, available)


def _run_parallel(runs: list[RunConfig], sweep: SweepConfig, configs: Path, resume: bool) -> None:
    """Spread runs over worker processes (round-robin), each with its share of the CPU threads."""
    n = min(sweep.processes, len(runs))
    threads = max(1, (os.cpu_count() or 1) // n)
    procs = []
    for w in range(n):
        paths = []
        for i, r in enumerate(runs[w::n]):
            p = configs / f"worker{w}_{i}.json"
            p.write_text(r.model_dump_json(indent=2))
            paths.append(str(p))
        env = {**os.environ, "OMP_NUM_THREADS": str(threads), "MKL_NUM_THREADS": str(threads)}
        cmd = [
            sys.executable,
            "-m",
            "saes.training.sweep",
            "--threads",
            str(threads),
            *(["--resume"] if resume else []),
            *(["--no-eval"] if not sweep.evaluate else []),
            *paths,
        ]
        log = open(configs / f"worker{w}.log", "w")
        procs.append((subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env=env), log, w))
    failed = []
    for proc, log, w in procs:
        proc.wait()
        log.close()
        if proc.returncode != 0:
            tail = (configs / f"worker{w}.log").read_text()[-2000:]
            failed.append(f"worker {w} exited with {proc.returncode}:\n{tail}")
    if failed:
        raise RuntimeError(
            "sweep workers failed (finished runs are kept; rerun with --resume):\n"
            + "\n".join(failed)
        )


# ---- summary ---------------------------------------------------------------------------------
def summary_row(run: RunConfig) -> dict[str, Any]:
    """Headline numbers of one run: held-out metrics when evaluated, else the last training batch's."""
    d = Path(run.log.out_dir)
    folder = RunDir(d)
    last = folder.last_log_record() or {}
    row: dict[str, Any] = {
        "name": d.name,
        "hook": run.data.hook,
        "variant": run.sae.variant,
        "d_sae": run.sae.d_sae,
        "k": run.sae.k if variant_class(run.sae.variant).uses_k else None,
        "lr": run.optim.lr,
        "train_tokens": last.get("tokens"),
        "tokens_per_s": last.get("tokens_per_s"),
        "run_dir": str(d),
    }
    m = folder.metrics()
    if m is not None:
        row.update({k: m.get(k) for k in HEADLINE_NAMES}, metrics_from="held-out")
    else:
        row.update(from_log(last), metrics_from="last training batch" if last else "missing")
    return row


def pareto_frontier(points: Sequence[tuple[float, float]]) -> list[int]:
    """Indices of the points no other point beats on both L0 (x) and FVU (y), lowest L0 first."""
    order = sorted(range(len(points)), key=lambda i: (points[i][0], points[i][1]))
    best, out = float("inf"), []
    for i in order:
        if points[i][1] < best:
            out.append(i)
            best = points[i][1]
    return out


def frontier_figure(rows: Sequence[dict[str, Any]], title: str = "FVU vs L0"):
    """Plotly figure: every run as a point (per hook), and each hook's Pareto frontier as a line."""
    import plotly.graph_objects as go

    fig = go.Figure()
    for hook in dict.fromkeys(r["hook"] for r in rows):
        pts = [
            r
            for r in rows
            if r["hook"] == hook and r["fvu"] is not None and r["l0_mean"] is not None
        ]
        if not pts:
            continue
        fig.add_trace(
            go.Scatter(
                x=[r["l0_mean"] for r in pts],
                y=[r["fvu"] for r in pts],
                mode="markers",
                name=f"{hook} runs",
                text=[f"{r['name']} ({r['variant']}, d_sae={r['d_sae']})" for r in pts],
                hoverinfo="text+x+y",
            )
        )
        front = [pts[i] for i in pareto_frontier([(r["l0_mean"], r["fvu"]) for r in pts])]
        fig.add_trace(
            go.Scatter(
                x=[r["l0_mean"] for r in front],
                y=[r["fvu"] for r in front],
                mode="lines",
                name=f"{hook} frontier",
            )
        )
    fig.update_layout(
        title=title,
        xaxis_title="L0 (mean active latents per token)",
        yaxis_title="FVU (fraction of variance unexplained)",
        template="plotly_white",
    )
    fig.update_xaxes(type="log")
    return fig


def summarize(
    runs: Sequence[RunConfig], out_dir: str | Path, print_table: bool = True
) -> list[dict[str, Any]]:
    """Write summary.json, summary.csv and frontier.html for ``runs``; print the table."""

    out = Path(out_dir)
    rows = [summary_row(r) for r in runs]
    front_ids = set()
    for hook in dict.fromkeys(r["hook"] for r in rows):
        idx = [
            i
            for i, r in enumerate(rows)
            if r["hook"] == hook and r["fvu"] is not None and r["l0_mean"] is not None
        ]
        front_ids |= {
            idx[j] for j in pareto_frontier([(rows[i]["l0_mean"], rows[i]["fvu"]) for i in idx])
        }
    for i, r in enumerate(rows):
        r["on_frontier"] = i in front_ids
    atomic_write_json(out / "summary.json", {"runs": rows})

    def write_csv(tmp: str) -> None:
        with open(tmp, "w", newline="") as f:
            w = csv.DictWriter(f, fieldnames=[*SUMMARY_COLUMNS, "on_frontier"])
            w.writeheader()
            w.writerows(rows)

    atomic_write(out / "summary.csv", write_csv)
    fig = frontier_figure(rows, title=f"FVU vs L0: {out.name}")
    atomic_write(out / "frontier.html", lambda tmp: fig.write_html(tmp, include_plotlyjs="cdn"))
    if print_table:
        from rich.console import Console
        from rich.table import Table

        table = Table(title=f"sweep {out} ({len(rows)} runs; * = on the FVU-L0 frontier)")
        for col in ("name", "hook", "variant", "d_sae", "k", *(h.label for h in HEADLINE)):
            table.add_column(col, justify="left" if col in ("name", "hook", "variant") else "right")
        table.add_column("tokens_per_s", justify="right")
        for r in rows:
            table.add_row(
                r["name"] + (" *" if r["on_frontier"] else ""),
                r["hook"],
                r["variant"],
                str(r["d_sae"]),
                str(r["k"] if r["k"] is not None else "-"),
                *(h.format(r[h.name]) for h in HEADLINE),
                f"{r['tokens_per_s']:,.0f}" if r["tokens_per_s"] else "-",
            )
        Console(width=max(140, Console().width)).print(table)
    return rows


def _worker(argv: Sequence[str]) -> None:
    """``python -m saes.training.sweep [--threads N] [--resume] [--no-eval] CFG.json...``: train runs in order."""
    import argparse

    import torch

    ap = argparse.ArgumentParser(prog="python -m saes.training.sweep")
    ap.add_argument("configs", nargs="+")
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--resume", action="store_true")
    ap.add_argument("--no-eval", action="store_true")
    args = ap.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    for path in args.configs:
        run = RunConfig.model_validate_json(Path(path).read_text())
        _train_one(run, args.resume, not args.no_eval, progress=False)
        print(f"done {run.log.out_dir}", flush=True)


if __name__ == "__main__":  # pragma: no cover - the parallel workers
    _worker(sys.argv[1:])
