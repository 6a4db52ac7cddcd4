"""One optimisation step of any SAE variant, and the facts a step needs (learning rate, schedule).

``TrainStep`` does forward, backward, decoder-gradient projection, Adam, decoder renormalisation
and dead-latent bookkeeping on one batch, optionally data-parallel across ranks (``comm``): the
losses' batch statistics are global, gradients are summed, and a latent counts as fired if it fired
on any rank. ``saes.training.loop`` runs the steps of a whole job.
"""

from __future__ import annotations

import math
from typing import Any

import torch

from saes.sae import SAE, SparseCode
from saes.training.config import RunConfig
from saes.training.geometric_median import geometric_median
from saes.training.optim import SAEAdam


class TrainingDiverged(RuntimeError):
    """The loss became NaN or inf; the last good checkpoint is kept."""


def legacy_lr(d_sae: int) -> float:
    """2e-4 at 16k latents, scaled by 1/sqrt(d_sae / 2^14) (Gao et al. 2024's width scaling)."""
    return 2e-4 / math.sqrt(d_sae / 2**14)


# the default's constants, measured by bench/lr.py (bench/results/lr.json; README "Training"),
# stated for a decoder entry of size 1 / sqrt(d_in) (unit-norm rows): see default_lr
LR_STEP_BUDGET = 32.0  # sqrt(d_in) x lr x (the schedule's effective steps) a run needs
LR_CAP = 0.096  # sqrt(d_in) x the largest default (4e-3 at d_in 576; 1.2e-2 at d_in 64)


def effective_steps(total_steps: int, warmup_steps: int = 0, decay_fraction: float = 0.0) -> float:
    """The sum of the schedule's factors over the run: the steps taken at the full rate."""
    warm = min(warmup_steps, total_steps)
    return max(1.0, total_steps - warm / 2 - decay_fraction * total_steps / 2)


def default_lr(
    d_sae: int,
    total_steps: int | None = None,
    warmup_steps: int = 0,
    decay_fraction: float = 0.0,
    d_in: int | None = None,
) -> float:
    """max(legacy_lr(d_sae), min(LR_CAP, LR_STEP_BUDGET / effective_steps) / sqrt(d_in)).

    Adam moves every weight by about lr per step, and a unit-norm decoder row of d_in entries has
    entries of about 1 / sqrt(d_in): a step changes a row by about lr x sqrt(d_in) of its own size.
    A run must take sqrt(d_in) x lr x (effective steps) of order LR_STEP_BUDGET before its decoder
    rows reach the dictionary's directions, so a short run needs a larger rate than the width rule
    gives (that rule, 2e-4 / sqrt(d_sae / 2^14), is Gao et al. 2024's for runs of 10^5+ steps, and
    stays the floor); and no step may move a row by more than about LR_CAP of itself (SmolLM2 layer
    15 at lr 8e-3, 0.19 of a row per step, left 7% of its latents dead on held-out tokens and a 60%
    worse FVU than 4e-3). Measured in bench/lr.py: on synthetic dictionaries (d_in 64-128, 250-1,760
    steps) the width rule recovered 0-94% of the true directions and this one >= 90%; on SmolLM2
    layer 15 (97 steps) see the README's table. ``total_steps`` None: the width rule alone.
    """
    width = legacy_lr(d_sae)
    if total_steps is None:
        return width
    if d_in is None:
        raise TypeError("default_lr: a run's length (total_steps) needs its d_in as well")
    root = math.sqrt(d_in)
    budget = LR_STEP_BUDGET / effective_steps(total_steps, warmup_steps, decay_fraction)
    return max(width, min(LR_CAP, budget) / root)


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

    With ``comm`` (a :class:`saes.training.distributed.Comm`), x is this rank's slice of the global batch:
    the losses' batch statistics are global, gradients are summed across ranks, and a latent counts
    as fired if it fired on any rank; every rank then holds the same weights.
    """

    def __init__(
        self,
        sae: SAE,
        lr: float | None = None,
        total_steps: int | None = None,
        warmup_steps: int = 0,
        decay_fraction: float = 0.0,
        dead_tokens: int = 10_000_000,
        betas: tuple[float, float] = (0.9, 0.999),
        comm=None,
    ) -> None:
        self.sae = sae
        self.lr = (
            lr
            if lr is not None
            else default_lr(
                sae.cfg.d_sae, total_steps, warmup_steps, decay_fraction, d_in=sae.cfg.d_in
            )
        )
        self.total_steps = total_steps
        self.warmup_steps = warmup_steps
        self.decay_fraction = decay_fraction
        self.dead_tokens = dead_tokens
        self.optimizer = make_optimizer(sae, self.lr, betas)
        self.step_index = 0
        self.comm = comm
        self.tokens_since_fired = torch.zeros(sae.n_latents, dtype=torch.long, device=sae.device)

    @property
    def dead_mask(self) -> torch.Tensor:
        return self.tokens_since_fired >= self.dead_tokens

    def __call__(
        self,
        x: torch.Tensor,
        grad: torch.Tensor | None = None,
        target: torch.Tensor | None = None,
    ) -> dict[str, Any]:
        """One step on raw inputs x (``target``: a transcoder's raw output, the hook it predicts)."""
        sae, comm = self.sae, self.comm
        x = sae.scale_input(x.to(sae.device))
        y = None if target is None else sae.scale_target(target.to(sae.device))
        dead = self.dead_mask
        g = None if grad is None else grad.to(sae.device)
        out = sae.train_forward(x, g, dead if dead.any() else None, comm, target=y)
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
                self.step_index, self.total_steps or 0, self.warmup_steps, self.decay_fraction
            )
        self.optimizer.zero_grad()
        loss.backward()
        if comm is not None:
            comm.all_reduce_sum_([p.grad for p in sae.parameters() if p.grad is not None])
        if sae.keeps_unit_decoder:
            sae.remove_gradient_parallel_to_decoder()
        self.optimizer.step()
        if sae.keeps_unit_decoder:
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
                minlength=self.sae.n_latents,
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


def norm_scale(x: torch.Tensor) -> float:
    """The factor that makes E||x|| = sqrt(width) over a sample's rows."""
    x = x.float()
    return math.sqrt(x.shape[-1]) / x.norm(dim=-1).mean().clamp_min(1e-12).item()


def initial_statistics(x: torch.Tensor, cfg: RunConfig) -> tuple[float | None, torch.Tensor]:
    """Input scale (E||x|| -> sqrt(d_in)) and the geometric median of the scaled sample (for b_dec)."""

    x = x.float()
    scale = None
    if cfg.optim.normalize_input:
        scale = norm_scale(x)
        x = x * scale
    return scale, geometric_median(x)


@torch.no_grad()
def initialise_transcoder(sae, x: torch.Tensor, y: torch.Tensor, normalize: bool) -> None:
    """A transcoder's start from a sample of inputs x and outputs y (raw; for a CLT [N, L, d]):
    the scales (E||x|| = sqrt(d_in), E||y|| = sqrt(d_out), per layer for a CLT), then the
    references' biases, b_dec = mean(y) and b_enc = -mean(x) W_enc (sparsify: pre-activations
    centred at the start), and with ``transcoder_init`` "sparsify" W_dec = 0."""
    sae.set_scales(
        norm_scale_per(x) if normalize else None, norm_scale_per(y) if normalize else None
    )
    sae.init_biases(sae.scale_input(x.to(sae.device)), sae.scale_target(y.to(sae.device)))


def norm_scale_per(x: torch.Tensor) -> float | list[float]:
    """``norm_scale`` of [N, d] rows, or one per layer of [N, L, d]."""
    if x.dim() == 2:
        return norm_scale(x)
    return [norm_scale(x[:, i]) for i in range(x.shape[1])]
