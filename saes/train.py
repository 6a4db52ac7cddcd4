"""One training loop for every SAE variant, for one SAE or many from the same activations.

``TrainStep`` is one optimisation step (forward, backward, decoder-gradient projection, Adam,
decoder renormalisation, dead-latent bookkeeping), optionally data-parallel across ranks.
``train(cfg)`` runs a whole job: activation source (live capture or an on-disk cache) -> shuffling
buffer -> steps, with atomic checkpoints, a JSONL log, resume, and evaluation at the end. A job
with ``hooks`` and/or ``saes`` (saes.multi) trains many SAEs from one forward pass per batch, each
with its own run folder; under ``torchrun`` the job runs data-parallel or hook-sharded
(saes.distributed).
"""

from __future__ import annotations

import itertools
import json
import math
import signal
import time
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

import torch

from interp.cache import ActivationCache
from interp.io import atomic_write_json
from interp.models import load_model
from saes.artifacts import save_sae
from saes.checkpoint import (
    CheckpointWarning,
    checkpoint_dirs,
    checkpoint_name,
    checkpoint_step,
    intact_checkpoint_steps,
    latest_checkpoint,
    load_checkpoint,
    save_checkpoint,
)
from saes.distributed import init_from_env, rank_device
from saes.evals import evaluate_run
from saes.geometric_median import geometric_median
from saes.kernels import selection_kernel
from saes.memory import SAEItem, plan_memory
from saes.multi import check_shared, expand_job, hook_owners, is_job, job_batches
from saes.optim import SAEAdam
from saes.run_status import RunStatus, records_status
from saes.rundir import MEMORY_PLAN_FILE, RunDir
from saes.sae import SAE, SparseCode
from saes.sources import ActivationSource, CacheSource, LiveSource
from saes.train_config import RunConfig
from saes.variants import variant_class


class TrainingDiverged(RuntimeError):
    """The loss became NaN or inf; the last good checkpoint is kept."""


def default_lr(d_sae: int) -> float:
    """2e-4 at 16k latents, scaled by 1/sqrt(d_sae / 2^14) (Gao et al. 2024's width scaling)."""
    return 2e-4 / math.sqrt(d_sae / 2**14)


def lr_factor(step: int, total_steps: int, warmup_steps: int, decay_fraction: float) -> float:
    """Linear warm-up, constant, then linear decay to 0 over the last ``decay_fraction`` of steps."""
    if warmup_steps and step < warmup_steps:
        return (step + 1) / warmup_steps
    decay_steps = int(total_steps * decay_fraction)
    if decay_steps and step >= total_steps - decay_steps:
        return max(0.0, (total_steps - step) / decay_steps)
    return 1.0


def make_optimizer(
    sae: SAE, lr: float, betas: tuple[float, float] = (0.9, 0.999), eps: float = 1e-8
) -> SAEAdam:
    return SAEAdam(sae.named_parameters(), lr, betas, eps)


class TrainStep:
    """One full step on a batch of raw activations x [B, d_in] (and dL/dx for gradient variants).

    With ``comm`` (a :class:`saes.distributed.Comm`), x is this rank's slice of the global batch:
    the losses' batch statistics are global, gradients are summed across ranks, and a latent counts
    as fired if it fired on any rank; every rank then holds the same weights.
    """

    def __init__(
        self,
        sae: SAE,
        lr: float | None = None,
        total_steps: int = 1,
        warmup_steps: int = 0,
        decay_fraction: float = 0.0,
        dead_tokens: int = 10_000_000,
        betas: tuple[float, float] = (0.9, 0.999),
        comm=None,
    ) -> None:
        self.sae = sae
        self.lr = lr if lr is not None else default_lr(sae.cfg.d_sae)
        self.total_steps = total_steps
        self.warmup_steps = warmup_steps
        self.decay_fraction = decay_fraction
        self.dead_tokens = dead_tokens
        self.optimizer = make_optimizer(sae, self.lr, betas)
        self.step_index = 0
        self.comm = comm
        self.tokens_since_fired = torch.zeros(sae.cfg.d_sae, dtype=torch.long, device=sae.device)

    @property
    def dead_mask(self) -> torch.Tensor:
        return self.tokens_since_fired >= self.dead_tokens

    def __call__(self, x: torch.Tensor, grad: torch.Tensor | None = None) -> dict[str, Any]:

        sae, comm = self.sae, self.comm
        x = sae.scale_input(x.to(sae.device))
        dead = self.dead_mask
        g = None if grad is None else grad.to(sae.device)
        out = sae.variant.train_forward(sae, x, g, dead if dead.any() else None, comm)
        loss = out.loss
        names = list(out.losses)
        l0 = self._l0(out.code)
        if comm is None:
            loss_value, values, n_rows = (
                loss.item(),
                [out.losses[k].item() for k in names],
                x.shape[0],
            )
        else:  # each rank's loss is its share of the global loss: the sum is the global value
            sums = comm.sum(
                [loss.item(), *(out.losses[k].item() for k in names), l0 * x.shape[0], x.shape[0]]
            )
            loss_value, values, n_rows = sums[0], sums[1:-2], int(sums[-1])
            l0 = sums[-2] / max(1, n_rows)
        if not math.isfinite(loss_value):
            raise TrainingDiverged(
                f"loss became {loss_value} at step {self.step_index} "
                f"({', '.join(f'{k}={v:.4g}' for k, v in zip(names, values))}); "
                "try a lower learning rate or check the activations for NaN/inf"
            )
        for group in self.optimizer.param_groups:
            group["lr"] = self.lr * lr_factor(
                self.step_index, self.total_steps, self.warmup_steps, self.decay_fraction
            )
        self.optimizer.zero_grad()
        loss.backward()
        if comm is not None:
            comm.all_reduce_sum_([p.grad for p in sae.parameters() if p.grad is not None])
        if sae.variant.unit_norm_decoder:
            sae.remove_gradient_parallel_to_decoder()
        self.optimizer.step()
        if sae.variant.unit_norm_decoder:
            sae.set_decoder_norm_to_unit_norm()
        fired = self._fired(out.code)
        if comm is not None:
            # variant state kept in buffers (e.g. inference thresholds, usage EMAs): the rank average
            floats = [b for b in sae.buffers() if b.is_floating_point()]
            if floats:
                comm.all_reduce_sum_(floats)
                for b in floats:
                    b.div_(comm.world)
            fired = comm.union_(fired)
        self.tokens_since_fired += n_rows
        self.tokens_since_fired.masked_fill_(fired, 0)
        self.step_index += 1
        return {
            "loss": loss_value,
            **dict(zip(names, values)),
            "l0": l0,
            "dead_fraction": self.dead_mask.float().mean().item(),
            "lr": self.optimizer.param_groups[0]["lr"],
        }

    def _fired(self, code) -> torch.Tensor:
        """Boolean [d_sae]: which latents fired in this batch (a weighted bincount, no boolean indexing)."""
        if isinstance(code, SparseCode):
            # kept values are ReLU outputs (>= 0): a latent fired iff its summed values are > 0
            counts = torch.bincount(
                code.indices.reshape(-1),
                weights=code.values.detach().reshape(-1).float(),
                minlength=self.sae.cfg.d_sae,
            )
            return counts > 0
        return (code > 0).any(0)

    @staticmethod
    def _l0(code) -> float:
        if isinstance(code, SparseCode):
            return code.l0.float().mean().item()
        return (code > 0).sum(-1).float().mean().item()

    # state for checkpoints
    def state_tensors(self) -> dict[str, torch.Tensor]:
        tensors = {f"sae.{k}": v for k, v in self.sae.state_dict().items()}
        tensors["tokens_since_fired"] = self.tokens_since_fired
        tensors.update({f"adam.{k}": v for k, v in self.optimizer.state_tensors().items()})
        return tensors

    def load_state_tensors(self, tensors: dict[str, torch.Tensor]) -> None:
        self.sae.load_state_dict({k[4:]: v for k, v in tensors.items() if k.startswith("sae.")})
        self.tokens_since_fired.copy_(tensors["tokens_since_fired"])
        self.optimizer.load_state_tensors(
            {k[5:]: v for k, v in tensors.items() if k.startswith("adam.")}
        )


def initial_statistics(x: torch.Tensor, cfg: RunConfig) -> tuple[float | None, torch.Tensor]:
    """Input scale (E||x|| -> sqrt(d_in)) and the geometric median of the scaled sample (for b_dec)."""

    x = x.float()
    scale = None
    if cfg.optim.normalize_input:
        scale = math.sqrt(x.shape[-1]) / x.norm(dim=-1).mean().clamp_min(1e-12).item()
        x = x * scale
    return scale, geometric_median(x)


class _Interrupt:
    """Turns SIGINT/SIGTERM into a flag checked between steps (the step in flight completes)."""

    def __init__(self) -> None:
        self.flag = False
        self._old: dict[int, Any] = {}

    def __enter__(self) -> _Interrupt:
        for sig in (signal.SIGINT, signal.SIGTERM):
            try:
                self._old[sig] = signal.signal(sig, self._handler)
            except ValueError:  # not the main thread
                pass
        return self

    def _handler(self, signum, frame) -> None:  # noqa: ARG002
        if self.flag:  # second Ctrl-C: give up at once
            raise KeyboardInterrupt
        self.flag = True

    def __exit__(self, *exc) -> None:
        for sig, handler in self._old.items():
            signal.signal(sig, handler)


@dataclass
class _Member:
    """One SAE of a job: its config, run folder, weights and optimiser state, and its log."""

    cfg: RunConfig
    run_dir: Path
    sae: SAE
    step: TrainStep
    writer: bool  # this process writes the run folder (rank 0, or the hook's owner)
    status: RunStatus | None = None
    log: IO[str] | None = None

    @property
    def name(self) -> str:
        return str(self.run_dir)

    @property
    def folder(self) -> RunDir:
        return RunDir(self.run_dir)


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
        available, where = list(ActivationCache(cfg.data.cache).hooks), f"cache {cfg.data.cache}"
    else:
        if model is None:
            model = load_model(cfg.data.model, device=rank_device(cfg.device, comm))
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


def _common_checkpoint(run_dirs: Sequence[Path]) -> int | None:
    """The newest step with an intact checkpoint in every run folder (bad ones reported by name).

    A job writes its SAEs' checkpoints one after another, so a crash can leave them one step apart;
    all resume from the newest step they share. None when there is none (start afresh).
    """

    if len(run_dirs) == 1:
        path = latest_checkpoint(run_dirs[0])
        return None if path is None else checkpoint_step(path)
    steps: set[int] | None = None
    for d in run_dirs:
        good = intact_checkpoint_steps(d)
        steps = good if steps is None else steps & good
    if not steps and any(checkpoint_dirs(d) for d in run_dirs):
        warnings.warn(
            "the job's run folders share no intact checkpoint step; training restarts from step 0",
            CheckpointWarning,
            stacklevel=3,
        )
    return max(steps) if steps else None


def _open_job_source(cfgs: Sequence[RunConfig], hooks: list[str], model, comm) -> ActivationSource:
    """One source for all of a job's hooks (validates hooks, widths, the cache, before any work)."""
    grads_cfg = next((c for c in cfgs if variant_class(c.sae.variant).needs_grads), None)
    first = cfgs[0]
    src_cfg = grads_cfg or first
    with_grads = grads_cfg is not None
    if first.data.cache:
        source: ActivationSource = CacheSource(src_cfg, with_grads=with_grads, hooks=hooks)
    else:
        src_cfg = src_cfg.model_copy(update={"device": rank_device(first.device, comm)})
        source = LiveSource(src_cfg, model=model, with_grads=with_grads, hooks=hooks)
    for c in cfgs:
        source.check_width(c.data.hook, c.sae.d_in, c.data.model)
    return source


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

    The runs must share the stream settings (``saes.multi.check_shared``); each has its own hook,
    variant, width, k, learning rate, ... and run folder. Data parallel under ``comm`` unless
    ``shard_hooks`` (each rank owns the SAEs of some hooks). Returns the run folders.
    """
    from tqdm.auto import tqdm

    cfgs = list(cfgs)
    check_shared(cfgs)
    first = cfgs[0]
    run_dirs = [Path(c.log.out_dir) for c in cfgs]
    main = comm is None or comm.is_main
    if not resume:
        for d in run_dirs:
            if RunDir(d).holds_checkpoints():
                raise FileExistsError(
                    f"{d} already holds checkpoints: pass --resume to continue it, or choose another out_dir"
                )
    hooks = list(dict.fromkeys(c.data.hook for c in cfgs))
    owners = hook_owners(hooks, comm.world) if (comm is not None and shard_hooks) else None
    data_parallel = comm is not None and owners is None
    mine = [c for c in cfgs if owners is None or owners[c.data.hook] == comm.rank]
    source_hooks = (
        hooks
        if (owners is None or not first.data.cache)
        else [h for h in hooks if owners[h] == comm.rank]
    )
    source = _open_job_source(cfgs, source_hooks, model, comm)  # validates hooks, d_in, cache

    device = rank_device(first.device, comm)
    sae_cfgs = [c.sae_config(source.dims[c.data.hook]) for c in mine]  # validates every SAE config
    plan = plan_memory(
        [
            SAEItem(str(c.log.out_dir), s.d_in, s.d_sae, s.variant, s.encoder_dtype)
            for c, s in zip(mine, sae_cfgs)
        ],
        {h: source.dims[h] for h in source_hooks},
        first.data.batch_tokens,
        source.rows_per_block,
        device=device,
        with_grads=source.with_grads,
        activation_bytes=torch.empty(
            (), dtype=getattr(torch, first.data.activation_dtype)
        ).element_size(),
        model=source.forward_model,
        batch_windows=first.data.batch_windows,
        context_size=first.data.context_size,
        n_layers_run=source.stop_at_layer,
    )
    if main and (len(cfgs) > 1 or plan_only):
        (job_dir or run_dirs[0]).mkdir(parents=True, exist_ok=True)
        atomic_write_json((job_dir or run_dirs[0]) / MEMORY_PLAN_FILE, plan.to_dict())
        if progress or plan_only:
            print(plan.format())
    if plan_only:
        return []
    plan.check()  # a clear error before anything is allocated

    start_step = _common_checkpoint(run_dirs) if resume else None
    total_steps = first.data.train_tokens // first.data.batch_tokens
    members: list[_Member] = []
    for c, s in zip(mine, sae_cfgs):
        d = Path(c.log.out_dir)
        writer = (owners is not None) or main
        sae = SAE(s, seed=c.data.seed).to(device)
        step = TrainStep(
            sae,
            lr=c.optim.lr,
            total_steps=total_steps,
            warmup_steps=c.optim.warmup_steps,
            decay_fraction=c.optim.decay_fraction,
            dead_tokens=c.resolved_dead_tokens,
            comm=comm if data_parallel else None,
        )
        members.append(_Member(c, d, sae, step, writer))
    for m in members:
        if m.writer:
            m.run_dir.mkdir(parents=True, exist_ok=True)
            m.folder.config_path.write_text(m.cfg.model_dump_json(indent=2))
            m.status = RunStatus.begin(
                m.run_dir,
                train_tokens=m.cfg.data.train_tokens,
                checkpoint=m.folder.checkpoint_path(start_step) if start_step is not None else None,
            )

    position = {"block": 0, "batch": 0, "tokens": 0}
    if start_step is not None:
        for m in members:
            tensors, meta = load_checkpoint(m.folder.checkpoint_path(start_step))
            m.sae.cfg.input_scale = meta["input_scale"]
            m.step.load_state_tensors(tensors)
            m.step.step_index = meta["step"]
            position = meta["position"]
        if main:
            where = str(run_dirs[0]) if len(run_dirs) == 1 else f"{len(run_dirs)} runs"
            print(
                f"resuming {where} from {checkpoint_name(start_step)} "
                f"(step {start_step}, {position['tokens']:,} tokens)"
            )
    else:
        sample = source.sample_batch(first.data.init_sample_tokens)
        for m in members:
            scale, median = initial_statistics(sample.acts[m.cfg.data.hook], m.cfg)
            m.sae.cfg.input_scale = scale
            with torch.no_grad():
                m.sae.b_dec.copy_(median.to(device))
    if data_parallel:  # every rank starts from rank 0's weights
        for m in members:
            scale = torch.tensor([m.sae.cfg.input_scale or 0.0], dtype=torch.float64)
            comm.broadcast_([*m.sae.parameters(), scale])
            m.sae.cfg.input_scale = float(scale.item()) or None

    def checkpoint() -> None:
        for m in members:
            if m.writer:
                path = save_checkpoint(
                    m.run_dir,
                    m.step.step_index,
                    m.step.state_tensors(),
                    {
                        "step": m.step.step_index,
                        "position": position,
                        "input_scale": m.sae.cfg.input_scale,
                    },
                    keep=m.cfg.log.keep_checkpoints,
                )
                if m.status is not None:
                    m.status.update(m.step.step_index, position["tokens"], checkpoint=path)

    if main and progress and torch.device(device).type == "cpu":
        print(f"CPU top-k selection: {selection_kernel()}")
    wandb_run = _maybe_wandb(first) if main else None
    step_index = members[0].step.step_index if members else (start_step or 0)
    batches = job_batches(
        source,
        first,
        comm=comm,
        data_parallel=data_parallel,
        owners=owners,
        start_block=position["block"],
        skip_batches=position["batch"],
    )
    bar = tqdm(
        total=total_steps,
        initial=step_index,
        desc="train" if len(cfgs) == 1 else f"train {len(cfgs)} SAEs",
        unit="step",
        disable=not (progress and main),
    )
    last_ckpt_tokens = position["tokens"]
    t0, tok0 = time.perf_counter(), position["tokens"]
    many = len(cfgs) > 1
    try:
        for m in members:
            if m.writer:
                m.log = open(m.folder.log_path, "a")
        with _Interrupt() as interrupt:
            for block, i, batch in itertools.islice(batches, max(0, total_steps - step_index)):
                all_stats = []
                for m in members:
                    x = batch.acts[m.cfg.data.hook]
                    g = (
                        batch.grads[m.cfg.data.hook]
                        if (batch.grads is not None and m.sae.variant.needs_grads)
                        else None
                    )
                    all_stats.append(m.step(x, g))
                step_index += 1
                position = {
                    "block": block,
                    "batch": i + 1,
                    "tokens": position["tokens"] + first.data.batch_tokens,
                }
                if step_index % first.log.log_every == 0 or step_index == total_steps:
                    tps = (position["tokens"] - tok0) / max(1e-9, time.perf_counter() - t0)
                    for m, stats in zip(members, all_stats):
                        record = {
                            "step": step_index,
                            "tokens": position["tokens"],
                            "tokens_per_s": tps,
                            **stats,
                        }
                        if m.log is not None:
                            m.log.write(json.dumps(record) + "\n")
                            m.log.flush()
                        if wandb_run is not None:
                            _safe(
                                lambda m=m, record=record: wandb_run.log(
                                    {
                                        f"{m.cfg.data.hook}/{m.run_dir.name}/{k}": v
                                        for k, v in record.items()
                                    }
                                    if many
                                    else record
                                )
                            )
                    if all_stats:
                        s0 = all_stats[0]
                        bar.set_postfix(
                            tok_s=f"{tps:,.0f}",
                            fvu=f"{s0['fvu']:.3f}",
                            l0=f"{s0['l0']:.1f}",
                            dead=f"{s0['dead_fraction']:.3f}",
                        )
                bar.update(1)
                for m in members:
                    if m.status is not None:
                        m.status.update(
                            m.step.step_index, position["tokens"]
                        )  # heartbeat, throttled
                if position["tokens"] - last_ckpt_tokens >= first.log.checkpoint_every_tokens:
                    checkpoint()
                    last_ckpt_tokens = position["tokens"]
                stop = interrupt.flag if comm is None else comm.any(interrupt.flag)
                if stop:
                    checkpoint()
                    bar.close()
                    if main:
                        print(
                            f"interrupted: checkpoint written to {job_dir or run_dirs[0]}; continue with --resume"
                        )
                    raise KeyboardInterrupt
    finally:
        for m in members:
            if m.log is not None:
                m.log.close()
    bar.close()
    checkpoint()
    for m in members:
        if m.writer:
            save_sae(
                m.sae,
                m.run_dir,
                extra_metadata={
                    "context_size": m.cfg.data.context_size,
                    "dataset_path": m.cfg.data.source,
                },
            )
    if evaluate:
        for m in members:
            if m.writer:
                evaluate_run(m.run_dir, cfg=m.cfg, model=source.model)
    if wandb_run is not None:
        _safe(wandb_run.finish)
    return run_dirs


def _safe(fn) -> None:
    try:
        fn()
    except Exception as e:  # noqa: BLE001 - logging must never fail a run
        print(f"wandb: {e}")


def _maybe_wandb(cfg: RunConfig):
    if not cfg.log.wandb:
        return None
    try:
        import wandb

        return wandb.init(
            project=cfg.log.wandb_project,
            config=cfg.model_dump(),
            mode="offline" if not cfg.log.wandb_online else "online",
        )
    except Exception as e:  # noqa: BLE001 - wandb never fails a run
        print(f"wandb disabled: {e}")
        return None
