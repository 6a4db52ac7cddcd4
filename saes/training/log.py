"""What a training job reports while it runs: one JSONL record per logged step per run folder
(``train_log.jsonl``), the progress bar, and optionally Weights & Biases (which never fails a run).

A record holds ``step``, ``tokens``, ``tokens_per_s`` and every statistic the step returned (the
loss, each named loss term, ``l0``, ``dead_fraction``, ``lr``). It is written every
``log.log_every`` steps and at the last step, and flushed at once, so a crash loses nothing logged.
"""

from __future__ import annotations

import json
import time
from typing import Any

from tqdm.auto import tqdm

from saes.training.config import RunConfig
from saes.training.job import Job


class TrainLog:
    """Context manager around a job's loop: opens the logs on entry, closes them on exit."""

    def __init__(self, job: Job, progress: bool) -> None:
        self.job = job
        first = job.first
        self.many = len(job.cfgs) > 1
        self.wandb = _maybe_wandb(first) if job.main else None
        self.bar = tqdm(
            total=job.total_steps,
            initial=job.step_index,
            desc="train" if not self.many else f"train {len(job.cfgs)} SAEs",
            unit="step",
            disable=not (progress and job.main),
        )
        self.t0, self.tokens0 = time.perf_counter(), job.position["tokens"]

    def __enter__(self) -> TrainLog:
        for m in self.job.members:
            if m.writer:
                m.log = open(m.folder.log_path, "a")
        return self

    def __exit__(self, *exc: Any) -> None:
        for m in self.job.members:
            if m.log is not None:
                m.log.close()
                m.log = None
        self.bar.close()

    def after_step(self, stats: list[dict[str, Any]]) -> None:
        """Log the step just taken (every ``log_every`` steps and the last) and move the bar."""
        job = self.job
        step, tokens = job.step_index, job.position["tokens"]
        if step % job.first.log.log_every == 0 or step == job.total_steps:
            tps = (tokens - self.tokens0) / max(1e-9, time.perf_counter() - self.t0)
            for m, s in zip(job.members, stats):
                record = {"step": step, "tokens": tokens, "tokens_per_s": tps, **s}
                if m.log is not None:
                    m.log.write(json.dumps(record) + "\n")
                    m.log.flush()
                if self.wandb is not None:
                    prefix = f"{m.cfg.data.hook}/{m.run_dir.name}/" if self.many else ""
                    _safe(
                        lambda r=record, p=prefix: self.wandb.log({p + k: v for k, v in r.items()})
                    )
            if stats:
                s0 = stats[0]
                self.bar.set_postfix(
                    tok_s=f"{tps:,.0f}",
                    fvu=f"{s0['fvu']:.3f}",
                    l0=f"{s0['l0']:.1f}",
                    dead=f"{s0['dead_fraction']:.3f}",
                )
        self.bar.update(1)

    def finish(self) -> None:
        if self.wandb is not None:
            _safe(self.wandb.finish)


def _safe(fn) -> None:
    try:
        fn()
    except Exception as e:  # noqa: BLE001 - logging must never fail a run
        print(f"wandb: {e}")


def _maybe_wandb(cfg: RunConfig):
    if not cfg.log.wandb:
        return None
    try:
        import wandb  # deferred: optional third-party dependency

        return wandb.init(
            project=cfg.log.wandb_project,
            config=cfg.model_dump(),
            mode="offline" if not cfg.log.wandb_online else "online",
        )
    except Exception as e:  # noqa: BLE001 - wandb never fails a run
        print(f"wandb disabled: {e}")
        return None
