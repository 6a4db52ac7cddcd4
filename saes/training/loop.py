"""One training loop for every SAE variant, for one SAE or many from the same activations.

``train(cfg)`` runs a whole job: activation source (live capture or an on-disk cache) -> shuffling
buffer -> steps, with atomic checkpoints, a JSONL log, resume, and evaluation at the end. A job
with ``hooks`` and/or ``saes`` (saes.training.shared_stream) trains many SAEs from one forward pass per batch, each
with its own run folder; under ``torchrun`` the job runs data-parallel or hook-sharded
(saes.training.distributed). The rooms: ``saes.training.step`` (one optimisation step), ``saes.training.job`` (a job's state:
setup, checkpoints, finishing), ``saes.training.log`` (logs and progress), and the loop below.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import torch

from interp.activation_files import ActivationFiles
from interp.models import load_model
from saes.kernels import selection_kernel
from saes.training.config import RunConfig
from saes.training.distributed import init_from_env, rank_device
from saes.training.job import Job, StopFlag
from saes.training.log import TrainLog
from saes.training.run_status import records_status
from saes.training.shared_stream import expand_job, is_job
from saes.training.step import (
    TrainingDiverged,
    TrainStep,
    default_lr,
    initial_statistics,
    lr_factor,
    make_optimizer,
)

__all__ = [
    "TrainStep",
    "TrainingDiverged",
    "default_lr",
    "initial_statistics",
    "lr_factor",
    "make_optimizer",
    "train",
    "train_runs",
]


def train(
    cfg: RunConfig,
    resume: bool = False,
    progress: bool = True,
    evaluate: bool = True,
    model=None,
    comm=None,
    plan_only: bool = False,
) -> Path:
    """Run a training job described by ``cfg``; returns its folder (``model``: reuse a loaded one).

    One SAE: the run folder. A job (``cfg.data.hooks`` / ``cfg.saes``): the job folder ``cfg.log.out_dir``,
    which holds one run folder per SAE. Under torchrun (WORLD_SIZE > 1) the process group is set up
    from the environment unless ``comm`` is given. ``plan_only``: print and write the memory plan
    (``memory_plan.json``), then stop before allocating anything.
    """

    if comm is None:
        comm = init_from_env(cfg.device)
    if not is_job(cfg):
        if cfg.data.shard_hooks:
            raise ValueError("shard_hooks needs a job with several hooks (set hooks: [...])")
        runs = train_runs(
            [cfg],
            resume=resume,
            progress=progress,
            evaluate=evaluate,
            model=model,
            comm=comm,
            plan_only=plan_only,
        )
        return runs[0] if runs else Path(cfg.log.out_dir)
    if cfg.data.cache:
        available, where = (
            list(
                ActivationFiles(
                    cfg.data.cache, allow_incomplete=cfg.data.cache_allow_incomplete
                ).hooks
            ),
            f"cache {cfg.data.cache}",
        )
    else:
        if model is None:
            model = load_model(
                cfg.data.model,
                device=rank_device(cfg.device, comm),
                dtype=cfg.data.model_dtype,
            )
        available, where = list(model.hook_dict), f"model {cfg.data.model!r}"
    runs = expand_job(cfg, available, where)
    train_runs(
        runs,
        resume=resume,
        progress=progress,
        evaluate=evaluate,
        model=model,
        comm=comm,
        shard_hooks=cfg.data.shard_hooks,
        job_dir=Path(cfg.log.out_dir),
        plan_only=plan_only,
    )
    return Path(cfg.log.out_dir)


@records_status  # run_status.json per run folder: finished / interrupted / failed
def train_runs(
    cfgs: Sequence[RunConfig],
    resume: bool = False,
    progress: bool = True,
    evaluate: bool = True,
    model=None,
    comm=None,
    shard_hooks: bool = False,
    job_dir: Path | None = None,
    plan_only: bool = False,
) -> list[Path]:
    """Train several SAEs from one activation stream (one forward or cache read per batch).

    The runs must share the stream settings (``saes.training.shared_stream.check_shared``); each has its own hook,
    variant, width, k, learning rate, ... and run folder. Data parallel under ``comm`` unless
    ``shard_hooks`` (each rank owns the SAEs of some hooks). Returns the run folders.
    """
    job = Job.open(cfgs, resume, model=model, comm=comm, shard_hooks=shard_hooks, job_dir=job_dir)
    job.write_memory_plan(show=progress or plan_only, always=plan_only)
    if plan_only:
        return []
    job.start(resume)
    if job.main and progress and torch.device(job.device).type == "cpu":
        print(f"CPU top-k selection: {selection_kernel()}")
    log = TrainLog(job, progress)
    with log, StopFlag() as stop:
        for block, index, batch in job.batches():
            log.after_step(job.step(batch, block, index))
            if job.checkpoint_due():
                job.checkpoint()
            if job.stop_requested(stop.flag):
                job.checkpoint()
                log.bar.close()
                if job.main:
                    print(f"interrupted: checkpoint written to {job.where}; continue with --resume")
                raise KeyboardInterrupt
    batch = None  # the last batch (every hook's rows): not needed past the last step
    job.checkpoint()
    job.release_training_state()
    job.finish(evaluate)
    log.finish()
    return job.run_dirs
