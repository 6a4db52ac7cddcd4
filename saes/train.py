"""One training loop for every SAE variant.

``TrainStep`` is one optimisation step (forward, backward, decoder-gradient projection, Adam,
decoder renormalisation, dead-latent bookkeeping). ``train(cfg)`` runs a whole job: activation
source (live capture or an on-disk cache) -> shuffling buffer -> steps, with atomic checkpoints,
a JSONL log, resume, and evaluation at the end.
"""
from __future__ import annotations

import itertools
import json
import math
import signal
import time
from pathlib import Path
from typing import Any

import torch

from saes.config import SAEConfig
from saes.sae import SAE, SparseCode
from saes.train_config import RunConfig
from saes.checkpoint import latest_checkpoint, load_checkpoint, save_checkpoint


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


def make_optimizer(sae: SAE, lr: float, betas: tuple[float, float] = (0.9, 0.999), eps: float = 1e-8):
    kwargs: dict[str, Any] = {"lr": lr, "betas": betas, "eps": eps}
    try:
        return torch.optim.Adam(sae.parameters(), fused=True, **kwargs)
    except (RuntimeError, TypeError):
        return torch.optim.Adam(sae.parameters(), foreach=True, **kwargs)


class TrainStep:
    """One full step on a batch of raw activations x [B, d_in] (and dL/dx for gradient variants)."""

    def __init__(
        self,
        sae: SAE,
        lr: float | None = None,
        total_steps: int = 1,
        warmup_steps: int = 0,
        decay_fraction: float = 0.0,
        dead_tokens: int = 10_000_000,
        betas: tuple[float, float] = (0.9, 0.999),
    ) -> None:
        self.sae = sae
        self.lr = lr if lr is not None else default_lr(sae.cfg.d_sae)
        self.total_steps = total_steps
        self.warmup_steps = warmup_steps
        self.decay_fraction = decay_fraction
        self.dead_tokens = dead_tokens
        self.optimizer = make_optimizer(sae, self.lr, betas)
        self.step_index = 0
        self.tokens_since_fired = torch.zeros(sae.cfg.d_sae, dtype=torch.long, device=sae.device)

    @property
    def dead_mask(self) -> torch.Tensor:
        return self.tokens_since_fired >= self.dead_tokens

    def __call__(self, x: torch.Tensor, grad: torch.Tensor | None = None) -> dict[str, Any]:
        sae = self.sae
        x = sae.scale_input(x.to(sae.device))
        dead = self.dead_mask
        out = sae.variant.train_forward(sae, x, None if grad is None else grad.to(sae.device), dead if dead.any() else None)
        loss = out.loss
        if not torch.isfinite(loss):
            raise TrainingDiverged(
                f"loss became {loss.item()} at step {self.step_index} "
                f"({', '.join(f'{k}={v.item():.4g}' for k, v in out.losses.items())}); "
                "try a lower learning rate or check the activations for NaN/inf"
            )
        for group in self.optimizer.param_groups:
            group["lr"] = self.lr * lr_factor(self.step_index, self.total_steps, self.warmup_steps, self.decay_fraction)
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        if sae.variant.unit_norm_decoder:
            sae.remove_gradient_parallel_to_decoder()
        self.optimizer.step()
        if sae.variant.unit_norm_decoder:
            sae.set_decoder_norm_to_unit_norm()
        fired = self._fired(out.code)
        self.tokens_since_fired += x.shape[0]
        self.tokens_since_fired[fired] = 0
        self.step_index += 1
        return {
            "loss": loss.item(),
            **{k: v.item() for k, v in out.losses.items()},
            "l0": self._l0(out.code),
            "dead_fraction": self.dead_mask.float().mean().item(),
            "lr": self.optimizer.param_groups[0]["lr"],
        }

    @staticmethod
    def _fired(code) -> torch.Tensor:
        if isinstance(code, SparseCode):
            return code.indices[code.values > 0]
        return (code > 0).any(0).nonzero().squeeze(-1)

    @staticmethod
    def _l0(code) -> float:
        if isinstance(code, SparseCode):
            return code.l0.float().mean().item()
        return (code > 0).sum(-1).float().mean().item()

    # state for checkpoints
    def state_tensors(self) -> dict[str, torch.Tensor]:
        tensors = {f"sae.{k}": v for k, v in self.sae.state_dict().items()}
        tensors["tokens_since_fired"] = self.tokens_since_fired
        params = dict(self.sae.named_parameters())
        for name, p in params.items():
            for key, value in self.optimizer.state.get(p, {}).items():
                tensors[f"adam.{name}.{key}"] = value if torch.is_tensor(value) else torch.tensor(value)
        return tensors

    def load_state_tensors(self, tensors: dict[str, torch.Tensor]) -> None:
        self.sae.load_state_dict({k[4:]: v for k, v in tensors.items() if k.startswith("sae.")})
        self.tokens_since_fired.copy_(tensors["tokens_since_fired"])
        for name, p in self.sae.named_parameters():
            state = {key.rsplit(".", 1)[1]: v.clone() for key, v in tensors.items() if key.startswith(f"adam.{name}.")}
            if state:
                self.optimizer.state[p] = state


def initial_statistics(x: torch.Tensor, cfg: RunConfig) -> tuple[float | None, torch.Tensor]:
    """Input scale (E||x|| -> sqrt(d_in)) and the geometric median of the scaled sample (for b_dec)."""
    from saes.geometric_median import geometric_median

    x = x.float()
    scale = None
    if cfg.normalize_input:
        scale = math.sqrt(x.shape[-1]) / x.norm(dim=-1).mean().clamp_min(1e-12).item()
        x = x * scale
    return scale, geometric_median(x)


class _Interrupt:
    """Turns SIGINT/SIGTERM into a flag checked between steps (the step in flight completes)."""

    def __init__(self) -> None:
        self.flag = False
        self._old: dict[int, Any] = {}

    def __enter__(self) -> "_Interrupt":
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


def train(cfg: RunConfig, resume: bool = False, progress: bool = True, evaluate: bool = True,
          model=None) -> Path:
    """Run a training job described by ``cfg``; returns the run folder (``model``: reuse a loaded one)."""
    from tqdm.auto import tqdm

    from saes.artifacts import save_sae
    from saes.sources import open_source

    run_dir = Path(cfg.out_dir)
    ckpt = latest_checkpoint(run_dir) if resume else None
    if not resume and (run_dir / "checkpoints").exists() and any((run_dir / "checkpoints").iterdir()):
        raise FileExistsError(
            f"{run_dir} already holds checkpoints: pass --resume to continue it, or choose another out_dir"
        )
    run_dir.mkdir(parents=True, exist_ok=True)
    (run_dir / "run_config.json").write_text(cfg.model_dump_json(indent=2))

    source = open_source(cfg, model=model)  # validates hook, d_in, cache before any work
    sae_cfg = cfg.sae_config(source.d_in)
    sae = SAE(sae_cfg, seed=cfg.seed).to(cfg.device)
    total_steps = cfg.train_tokens // cfg.batch_tokens
    step = TrainStep(
        sae, lr=cfg.lr, total_steps=total_steps, warmup_steps=cfg.warmup_steps,
        decay_fraction=cfg.decay_fraction, dead_tokens=cfg.resolved_dead_tokens,
    )
    position = {"block": 0, "batch": 0, "tokens": 0}
    if ckpt is not None:
        tensors, meta = load_checkpoint(ckpt)
        sae.cfg.input_scale = meta["input_scale"]
        step.load_state_tensors(tensors)
        step.step_index = meta["step"]
        position = meta["position"]
        print(f"resuming {run_dir} from {ckpt.name} (step {meta['step']}, {position['tokens']:,} tokens)")
    else:
        sample = source.sample(cfg.init_sample_tokens)
        scale, median = initial_statistics(sample, cfg)
        sae.cfg.input_scale = scale
        with torch.no_grad():
            sae.b_dec.copy_(median)

    def checkpoint() -> None:
        save_checkpoint(run_dir, step.step_index, step.state_tensors(),
                        {"step": step.step_index, "position": position, "input_scale": sae.cfg.input_scale},
                        keep=cfg.keep_checkpoints)

    log_path = run_dir / "train_log.jsonl"
    wandb_run = _maybe_wandb(cfg)
    batches = source.batches(cfg.batch_tokens, start_block=position["block"], skip_batches=position["batch"])
    bar = tqdm(total=total_steps, initial=step.step_index, desc="train", unit="step", disable=not progress)
    last_ckpt_tokens = position["tokens"]
    t0, tok0 = time.perf_counter(), position["tokens"]
    with _Interrupt() as interrupt, open(log_path, "a") as log:
        for block, i, batch in itertools.islice(batches, max(0, total_steps - step.step_index)):
            x = batch.acts[cfg.hook]
            g = batch.grads[cfg.hook] if (batch.grads is not None and sae.variant.needs_grads) else None
            stats = step(x, g)
            position = {"block": block, "batch": i + 1, "tokens": position["tokens"] + x.shape[0]}
            if step.step_index % cfg.log_every == 0 or step.step_index == total_steps:
                tps = (position["tokens"] - tok0) / max(1e-9, time.perf_counter() - t0)
                record = {"step": step.step_index, "tokens": position["tokens"], "tokens_per_s": tps, **stats}
                log.write(json.dumps(record) + "\n")
                log.flush()
                bar.set_postfix(tok_s=f"{tps:,.0f}", fvu=f"{stats['fvu']:.3f}", l0=f"{stats['l0']:.1f}",
                                dead=f"{stats['dead_fraction']:.3f}")
                if wandb_run is not None:
                    _safe(lambda: wandb_run.log(record))
            bar.update(1)
            if position["tokens"] - last_ckpt_tokens >= cfg.checkpoint_every_tokens:
                checkpoint()
                last_ckpt_tokens = position["tokens"]
            if interrupt.flag:
                checkpoint()
                bar.close()
                print(f"interrupted: checkpoint written to {run_dir}; continue with --resume")
                raise KeyboardInterrupt
    bar.close()
    checkpoint()
    save_sae(sae, run_dir, extra_metadata={"context_size": cfg.context_size, "dataset_path": cfg.source})
    if evaluate:
        from saes.evals import evaluate_run

        evaluate_run(run_dir, cfg=cfg, model=source.model)
    if wandb_run is not None:
        _safe(wandb_run.finish)
    return run_dir


def _safe(fn) -> None:
    try:
        fn()
    except Exception as e:  # noqa: BLE001 - logging must never fail a run
        print(f"wandb: {e}")


def _maybe_wandb(cfg: RunConfig):
    if not cfg.wandb:
        return None
    try:
        import wandb

        return wandb.init(project=cfg.wandb_project, config=cfg.model_dump(), mode="offline"
                          if not cfg.wandb_online else "online")
    except Exception as e:  # noqa: BLE001 - wandb never fails a run
        print(f"wandb disabled: {e}")
        return None
