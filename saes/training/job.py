"""A training job's state between steps: its runs, their SAEs and steps, the source, the position.

``Job.open`` checks everything that can be checked before work starts (shared stream settings,
existing checkpoints, hooks, widths, the cache, every SAE config) and plans the memory.
``Job.start`` builds each SAE with its ``TrainStep``, writes the run folders' config and status, and
either restores the newest checkpoint every run shares or initialises (input scale, b_dec at the
geometric median of a sample). The loop in ``saes.training.loop.train_runs`` then asks the job for batches,
steps it, and lets it checkpoint and finish (artifact and evaluation per run folder).

Which process writes what: under data parallel every rank trains every SAE and rank 0 writes the
run folders; under hook sharding each rank trains and writes the SAEs of the hooks it owns.
"""

from __future__ import annotations

import itertools
import signal
import warnings
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

import torch

from interp.activations import ActivationBatch
from interp.atomic_files import atomic_write_json
from interp.models import resolve_spec
from saes.config import SAEConfig
from saes.evaluation.evaluate import evaluate_run
from saes.rundir import MEMORY_PLAN_FILE, RunDir
from saes.sae import SAE
from saes.training.activation_sources import (
    ActivationFilesSource,
    ActivationSource,
    LiveSource,
    holdout_range,
)
from saes.training.checkpoint import (
    CheckpointWarning,
    checkpoint_dirs,
    checkpoint_name,
    checkpoint_step,
    intact_checkpoint_steps,
    latest_checkpoint,
    load_checkpoint,
    save_checkpoint,
)
from saes.training.config import RunConfig
from saes.training.distributed import rank_device
from saes.training.memory import MemoryPlan, SAEItem, plan_memory
from saes.training.run_status import RunStatus
from saes.training.shared_stream import check_shared, hook_owners, job_batches
from saes.training.step import TrainStep, initial_statistics, initialise_transcoder
from saes.transcoders.clt import CrossLayerTranscoder
from saes.transcoders.evaluate import (
    REPLACEMENT_FILE,
    evaluate_transcoder_run,
    evaluate_transcoder_set,
)
from saes.transcoders.files import save_dictionary
from saes.variants import variant_class


@dataclass
class Member:
    """One SAE of a job: its config, run folder, weights and optimiser state, and its log."""

    cfg: RunConfig
    sae: SAE
    step: TrainStep
    writer: bool  # this process writes the run folder (rank 0, or the hook's owner)
    status: RunStatus | None = None
    log: IO[str] | None = None

    @property
    def run_dir(self) -> Path:
        return Path(self.cfg.log.out_dir)

    @property
    def folder(self) -> RunDir:
        return RunDir(self.run_dir)

    def inputs(
        self, batch: ActivationBatch
    ) -> tuple[torch.Tensor, torch.Tensor | None, torch.Tensor | None]:
        """This SAE's activations in a batch, dL/dx if its variant selects with gradients, and a
        transcoder's target (its output hook; a CLT's inputs and targets stacked [B, L, d])."""
        return member_inputs(self.cfg, self.sae, batch)

    def train_step(self, batch: ActivationBatch) -> dict[str, Any]:
        x, grad, target = self.inputs(batch)
        return self.step(x, grad) if target is None else self.step(x, grad, target=target)


def member_inputs(
    cfg: RunConfig, sae, batch: ActivationBatch
) -> tuple[torch.Tensor, torch.Tensor | None, torch.Tensor | None]:
    """(x, dL/dx or None, target or None) of one run in a batch (see :meth:`Member.inputs`)."""
    if cfg.is_clt:
        x = torch.stack([batch.acts[h] for h in cfg.input_hooks], 1)
        return x, None, torch.stack([batch.acts[h] for h in cfg.output_hooks], 1)
    hook = cfg.data.hook
    wants = batch.grads is not None and sae.variant.needs_grads
    target = batch.acts[cfg.output_hooks[0]] if cfg.sae.kind != "sae" else None
    return batch.acts[hook], (batch.grads[hook] if wants else None), target


def build_dictionary(cfg: SAEConfig, seed: int | None = 0):
    """The module a config describes: an :class:`SAE` (SAEs and per-layer transcoders) or a
    :class:`CrossLayerTranscoder`."""
    return CrossLayerTranscoder(cfg, seed=seed) if cfg.kind == "clt" else SAE(cfg, seed=seed)


def dictionary_params(cfg: SAEConfig) -> int:
    """Parameters of the module a config describes (the memory plan's count)."""
    d_in, F, d_out = cfg.d_in, cfg.d_sae, cfg.width_out
    if cfg.kind == "clt":
        L = len(cfg.layers or [1])
        return L * (d_in * F + F + d_out) + L * (L + 1) // 2 * F * d_out
    skip = d_in * d_out if cfg.kind == "skip_transcoder" else 0
    return d_in * F + F + F * d_out + d_out + skip


@dataclass
class Job:
    cfgs: list[RunConfig]
    source: ActivationSource
    comm: Any
    owners: dict[str, int] | None
    job_dir: Path | None
    sae_cfgs: list[SAEConfig] = field(default_factory=list)  # of my_cfgs, validated
    plan: MemoryPlan | None = None
    members: list[Member] = field(default_factory=list)
    position: dict[str, int] = field(default_factory=lambda: {"block": 0, "batch": 0, "tokens": 0})
    step_index: int = 0
    start_step: int | None = None
    last_checkpoint_tokens: int = 0

    # ---------------------------------------------------------------- setup

    @classmethod
    def open(
        cls,
        cfgs: Sequence[RunConfig],
        resume: bool,
        model=None,
        comm=None,
        shard_hooks: bool = False,
        job_dir: Path | None = None,
    ) -> Job:
        """Check the job and plan its memory; nothing is allocated and no folder is written."""
        cfgs = list(cfgs)
        check_shared(cfgs)
        first = cfgs[0]
        if not resume:
            for c in cfgs:
                if RunDir(c.log.out_dir).holds_checkpoints():
                    raise FileExistsError(
                        f"{c.log.out_dir} already holds checkpoints: pass --resume to continue it, "
                        "or choose another out_dir"
                    )
        if shard_hooks and any(c.sae.kind != "sae" for c in cfgs):
            raise ValueError(
                "shard_hooks trains each hook's SAEs on one rank; transcoders read and predict "
                "two hooks and are trained data-parallel instead (leave shard_hooks off)"
            )
        hooks = list(dict.fromkeys(h for c in cfgs for h in c.stream_hooks))
        owners = hook_owners(hooks, comm.world) if (comm is not None and shard_hooks) else None
        source_hooks = (
            hooks
            if (owners is None or not first.data.cache)
            else [h for h in hooks if owners[h] == comm.rank]
        )
        source = _open_source(cfgs, source_hooks, model, comm)  # validates hooks, d_in, cache
        job = cls(cfgs, source, comm, owners, job_dir)
        mine = job.my_cfgs
        job.sae_cfgs = [_dictionary_config(c, source.dims) for c in mine]  # validates each
        job.plan = plan_memory(
            [
                SAEItem(
                    str(c.log.out_dir),
                    s.d_in,
                    s.d_sae,
                    s.variant,
                    s.encoder_dtype,
                    params=dictionary_params(s) if s.is_transcoder else None,
                    layers=len(s.layers or [1]) if s.kind == "clt" else 1,
                )
                for c, s in zip(mine, job.sae_cfgs)
            ],
            {h: source.dims[h] for h in source_hooks},
            first.data.batch_tokens,
            source.rows_per_block,
            device=job.device,
            with_grads=source.with_grads,
            activation_bytes=torch.empty(
                (), dtype=getattr(torch, first.data.activation_dtype)
            ).element_size(),
            model=source.forward_model,
            batch_windows=first.data.batch_windows,
            context_size=first.data.context_size,
            n_layers_run=source.stop_at_layer,
        )
        return job

    @property
    def first(self) -> RunConfig:
        return self.cfgs[0]

    @property
    def main(self) -> bool:
        return self.comm is None or self.comm.is_main

    @property
    def data_parallel(self) -> bool:
        return self.comm is not None and self.owners is None

    @property
    def device(self) -> str:
        return rank_device(self.first.device, self.comm)

    @property
    def my_cfgs(self) -> list[RunConfig]:
        """The runs this process trains (all of them unless hooks are sharded across ranks)."""
        return [
            c
            for c in self.cfgs
            if self.owners is None or self.owners[c.data.hook] == self.comm.rank
        ]

    @property
    def run_dirs(self) -> list[Path]:
        return [Path(c.log.out_dir) for c in self.cfgs]

    @property
    def where(self) -> Path:
        """The folder a user is pointed to: the job folder, or the one run's folder."""
        return self.job_dir or self.run_dirs[0]

    @property
    def total_steps(self) -> int:
        return self.first.data.train_tokens // self.first.data.batch_tokens

    def write_memory_plan(self, show: bool, always: bool = False) -> None:
        """``memory_plan.json`` for a job of several SAEs (or when asked), printed if ``show``."""
        if self.main and (len(self.cfgs) > 1 or always):
            self.where.mkdir(parents=True, exist_ok=True)
            atomic_write_json(self.where / MEMORY_PLAN_FILE, self.plan.to_dict())
            if show:
                print(self.plan.format())

    def start(self, resume: bool) -> None:
        """Build the SAEs, mark the runs as running, then restore a checkpoint or initialise."""
        self.plan.check()  # a clear error before anything is allocated
        self.start_step = _common_checkpoint(self.run_dirs) if resume else None
        for c, s in zip(self.my_cfgs, self.sae_cfgs):
            sae = build_dictionary(s, seed=c.data.seed).to(self.device)
            step = TrainStep(
                sae,
                lr=c.optim.lr,
                total_steps=self.total_steps,
                warmup_steps=c.optim.warmup_steps,
                decay_fraction=c.optim.decay_fraction,
                dead_tokens=c.resolved_dead_tokens,
                comm=self.comm if self.data_parallel else None,
            )
            self.members.append(Member(c, sae, step, writer=(self.owners is not None) or self.main))
        for m in self.members:
            if m.writer:
                m.run_dir.mkdir(parents=True, exist_ok=True)
                m.folder.config_path.write_text(m.cfg.model_dump_json(indent=2))
                resumed = self.start_step is not None
                m.status = RunStatus.begin(
                    m.run_dir,
                    train_tokens=m.cfg.data.train_tokens,
                    checkpoint=m.folder.checkpoint_path(self.start_step) if resumed else None,
                )
        if self.start_step is not None:
            self._restore(self.start_step)
        else:
            self._initialise()
        if self.data_parallel:  # every rank starts from rank 0's weights
            for m in self.members:
                cfg = m.sae.cfg
                scale = torch.tensor(
                    [cfg.input_scale or 0.0, cfg.output_scale or 0.0], dtype=torch.float64
                )
                scales = [b for n, b in m.sae.named_buffers() if n.endswith("_scales")]  # a CLT's
                self.comm.broadcast_([*m.sae.parameters(), *scales, scale])
                cfg.input_scale = float(scale[0].item()) or None
                if cfg.is_transcoder and cfg.kind != "clt":
                    cfg.output_scale = float(scale[1].item()) or None
        self.step_index = (
            self.members[0].step.step_index if self.members else (self.start_step or 0)
        )
        self.last_checkpoint_tokens = self.position["tokens"]

    def _restore(self, step: int) -> None:
        for m in self.members:
            tensors, meta = load_checkpoint(m.folder.checkpoint_path(step))
            m.sae.cfg.input_scale = meta["input_scale"]
            if m.sae.cfg.is_transcoder and m.sae.cfg.kind != "clt":
                m.sae.cfg.output_scale = meta.get("output_scale")
            m.step.load_state_tensors(tensors)
            m.step.step_index = meta["step"]
            self.position = meta["position"]
        if self.main:
            where = str(self.run_dirs[0]) if len(self.cfgs) == 1 else f"{len(self.cfgs)} runs"
            print(
                f"resuming {where} from {checkpoint_name(step)} "
                f"(step {step}, {self.position['tokens']:,} tokens)"
            )

    def _initialise(self) -> None:
        sample = self.source.sample_batch(self.first.data.init_sample_tokens)
        for m in self.members:
            if m.cfg.sae.kind != "sae":
                x, _, y = m.inputs(sample)
                initialise_transcoder(m.sae, x, y, m.cfg.optim.normalize_input)
                continue
            scale, median = initial_statistics(sample.acts[m.cfg.data.hook], m.cfg)
            m.sae.cfg.input_scale = scale
            with torch.no_grad():
                m.sae.b_dec.copy_(median.to(self.device))

    # ---------------------------------------------------------------- the loop's verbs

    def batches(self) -> Iterator[tuple[int, int, ActivationBatch]]:
        """(block, batch index, batch) from the saved position up to the last step."""
        batches = job_batches(
            self.source,
            self.first,
            comm=self.comm,
            data_parallel=self.data_parallel,
            owners=self.owners,
            start_block=self.position["block"],
            skip_batches=self.position["batch"],
        )
        self._stream = batches  # closed by release_training_state (its block is memory)
        return itertools.islice(batches, max(0, self.total_steps - self.step_index))

    def release_training_state(self) -> None:
        """After the last checkpoint: free what only training needs (the activation stream's
        buffered block, the optimisers' moments and gradients) before the artifacts are written
        and evaluated. A 30-layer CLT's Adam moments alone are twice its weights."""
        stream = getattr(self, "_stream", None)
        if stream is not None:
            stream.close()
            self._stream = None
        for m in self.members:
            m.step.optimizer = None
            for p in m.sae.parameters():
                p.grad = None

    def step(self, batch: ActivationBatch, block: int, index: int) -> list[dict[str, Any]]:
        """One step of every SAE on the batch; advances the position (and the status heartbeat)."""
        stats = [m.train_step(batch) for m in self.members]
        self.step_index += 1
        self.position = {
            "block": block,
            "batch": index + 1,
            "tokens": self.position["tokens"] + self.first.data.batch_tokens,
        }
        for m in self.members:
            if m.status is not None:
                m.status.update(m.step.step_index, self.position["tokens"])  # throttled
        return stats

    def checkpoint_due(self) -> bool:
        due = self.first.log.checkpoint_every_tokens
        return self.position["tokens"] - self.last_checkpoint_tokens >= due

    def checkpoint(self) -> None:
        """An atomic, verified checkpoint per run folder this process writes, at the same step."""
        for m in self.members:
            if m.writer:
                path = save_checkpoint(
                    m.run_dir,
                    m.step.step_index,
                    m.step.state_tensors(),
                    {
                        "step": m.step.step_index,
                        "position": self.position,
                        "input_scale": m.sae.cfg.input_scale,
                        "output_scale": m.sae.cfg.output_scale,
                    },
                    keep=m.cfg.log.keep_checkpoints,
                )
                if m.status is not None:
                    m.status.update(m.step.step_index, self.position["tokens"], checkpoint=path)
        self.last_checkpoint_tokens = self.position["tokens"]

    def stop_requested(self, flag: bool) -> bool:
        """Whether any rank was asked to stop (Ctrl-C / SIGTERM)."""
        return flag if self.comm is None else self.comm.any(flag)

    def finish(self, evaluate: bool) -> None:
        """The SAELens-format artifact per run folder, then its evaluation (metrics.json)."""
        for m in self.members:
            if m.writer:
                save_dictionary(
                    m.sae,
                    m.run_dir,
                    extra_metadata={
                        "context_size": m.cfg.data.context_size,
                        "dataset_path": m.cfg.data.source,
                    },
                )
        if evaluate:
            for m in self.members:
                if m.writer:
                    # a model-free run (data.model null) is evaluated on cached rows only
                    model = self.source.model if m.cfg.data.model is not None else None
                    if m.cfg.sae.kind != "sae":
                        evaluate_transcoder_run(m.run_dir, cfg=m.cfg, model=model)
                    else:
                        evaluate_run(m.run_dir, cfg=m.cfg, model=model)
            self._evaluate_transcoder_sets()

    def _evaluate_transcoder_sets(self) -> None:
        """Per-layer transcoder runs of one job form a set per SAE entry: its all-layers-replaced
        CE/KL goes to ``replacement_metrics.json`` (``replacement_metrics-<name>.json``)."""
        if self.job_dir is None or not self.main or self.owners is not None:
            return
        sets: dict[str, list[Member]] = {}
        for m in self.members:
            if m.cfg.sae.kind in ("transcoder", "skip_transcoder") and m.cfg.data.model:
                name = m.run_dir.name if m.run_dir.parent != self.job_dir else ""
                sets.setdefault(name, []).append(m)
        for name, members in sets.items():
            if len(members) > 1:
                out = self.job_dir / (
                    f"replacement_metrics-{name}.json" if name else REPLACEMENT_FILE
                )
                evaluate_transcoder_set(
                    [m.run_dir for m in members], out, cfg=members[0].cfg, model=self.source.model
                )


class StopFlag:
    """Turns SIGINT/SIGTERM into a flag checked between steps (the step in flight completes)."""

    def __init__(self) -> None:
        self.flag = False
        self._old: dict[int, Any] = {}

    def __enter__(self) -> StopFlag:
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
            stacklevel=4,
        )
    return max(steps) if steps else None


def _open_source(cfgs: Sequence[RunConfig], hooks: list[str], model, comm) -> ActivationSource:
    """One source for all of a job's hooks (validates hooks, widths, the cache, before any work)."""
    grads_cfg = next((c for c in cfgs if variant_class(c.sae.variant).needs_grads), None)
    first = cfgs[0]
    src_cfg = grads_cfg or first
    with_grads = grads_cfg is not None
    if first.data.cache:
        if first.data.model is not None:  # loaded only to evaluate: a bad spec fails now, not then
            try:
                resolve_spec(first.data.model)
            except (ValueError, FileNotFoundError) as e:
                raise ValueError(
                    f"data.model {first.data.model!r} is not a model spec: a run from cache "
                    f"{first.data.cache} needs its model only for the CE/KL evaluation; set "
                    f"data.model: null to train and evaluate without one. ({e})"
                ) from None
        holdouts = sorted({c.resolved_holdout_tokens for c in cfgs})
        if len(holdouts) > 1:
            raise ValueError(
                f"the job's runs hold out different numbers of rows {holdouts} of one stream: "
                "set the same eval.holdout_tokens (and eval.cache) for all"
            )
        source: ActivationSource = ActivationFilesSource(
            src_cfg, with_grads=with_grads, hooks=hooks
        )
        held = holdout_range(src_cfg, source.cache)
        if held is not None and (comm is None or comm.is_main):
            print(
                f"held out for evaluation: rows {held[0]}..{held[1] - 1} of cache "
                f"{first.data.cache} (the last {held[1] - held[0]}); training reads rows "
                f"0..{held[0] - 1} only"
            )
    else:
        src_cfg = src_cfg.model_copy(update={"device": rank_device(first.device, comm)})
        source = LiveSource(src_cfg, model=model, with_grads=with_grads, hooks=hooks)
    for c in cfgs:
        for h in c.input_hooks:
            source.check_width(h, c.sae.d_in, c.data.model)
        if c.sae.kind != "sae":
            for h in c.output_hooks:
                source.check_width(h, c.sae.d_out, c.data.model)
    return source


def _dictionary_config(c: RunConfig, dims: dict[str, int]) -> SAEConfig:
    """A run's SAE section completed from the stream's widths (a CLT's layers must agree)."""
    widths = {dims[h] for h in c.input_hooks}
    outs = {dims[h] for h in c.output_hooks}
    if len(widths) > 1 or len(outs) > 1:
        raise ValueError(
            f"{c.log.out_dir}: a CLT's hooks must share one width; inputs {sorted(widths)}, "
            f"outputs {sorted(outs)}"
        )
    return c.sae_config(widths.pop(), outs.pop() if c.sae.kind != "sae" else None)
