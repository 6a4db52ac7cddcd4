"""Memory planning for a training job, before anything is allocated.

Estimate (bytes), per device:

- each SAE: parameters P = 2 d_in d_sae + d_sae + d_in in fp32, plus their gradients and Adam's
  two moments: 16 P (plus a bf16 copy of W_enc with ``encoder_dtype: bfloat16``);
- per-step temporaries: the dense [batch, d_sae] arrays of one step (pre-activations, selection
  workspace, AuxK masking, ...; a per-variant count) plus a few [batch, d_in] ones. SAEs step one
  after another, so only the largest SAE's temporaries count;
- activation buffers: the shuffling block (rows x sum of hook widths, doubled with gradients) held
  three times over (the block being served, the next being built, its parts);
- the model for live capture: its parameters plus the forward's working set (with gradients, the
  activations autograd keeps for every layer).

``plan_memory`` returns a :class:`MemoryPlan` with a table of what fits at which batch size;
``MemoryPlan.check()`` raises :class:`MemoryPlanError` naming the big consumers when it does not fit.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import torch

from saes.variants import variant_class

GiB = 1024**3
SAFETY = 0.9  # plan to use at most 90% of what is free
BATCH_SIZES = (1024, 2048, 4096, 8192, 16384, 32768, 65536)


class MemoryPlanError(ValueError):
    """The job will not fit in the memory available; raised before training starts."""


def sae_state_bytes(d_in: int, d_sae: int, encoder_dtype: str | None = None) -> int:
    """Parameters, gradients and Adam moments of one SAE (fp32)."""
    params = 2 * d_in * d_sae + d_sae + d_in
    extra = 2 * d_in * d_sae if encoder_dtype == "bfloat16" else 0
    return 16 * params + extra


def step_temp_bytes(d_in: int, d_sae: int, variant: str, batch_tokens: int) -> int:
    """Temporaries of one training step at ``batch_tokens`` rows."""
    dense = variant_class(variant).step_arrays  # dense [batch, d_sae] fp32 arrays of one step
    return 4 * batch_tokens * (dense * d_sae + 8 * d_in)


def model_bytes(
    model, batch_windows: int, context_size: int, with_grads: bool, n_layers_run: int | None
) -> int:
    """A loaded TransformerLens model's parameters plus the working set of one forward (+ backward)."""
    cfg = model.cfg
    params = sum(p.numel() * p.element_size() for p in model.parameters())
    width = max(cfg.d_model, cfg.d_mlp or cfg.d_model)
    rows = batch_windows * context_size
    layers = n_layers_run or cfg.n_layers
    per_layer = rows * (6 * cfg.d_model + 3 * width) * 4
    attn = batch_windows * cfg.n_heads * context_size * context_size * 4
    logits = rows * cfg.d_vocab * 4 * 2 if with_grads or n_layers_run is None else 0
    working = (layers if with_grads else 2) * (per_layer + attn) + logits
    return params + working


def available_bytes(device: str) -> int:
    """Free memory on ``device`` (a CUDA device's free memory, else this machine's available RAM
    shared by the ranks on this node)."""
    if str(device).startswith("cuda"):
        free, _ = torch.cuda.mem_get_info(torch.device(device))
        return int(free)
    try:
        import psutil

        avail = int(psutil.virtual_memory().available)
    except ImportError:  # pragma: no cover - /proc fallback
        with open("/proc/meminfo") as f:
            info = {line.split(":")[0]: int(line.split()[1]) * 1024 for line in f}
        avail = info.get("MemAvailable", info["MemFree"])
    return avail // max(1, int(os.environ.get("LOCAL_WORLD_SIZE", "1")))


@dataclass
class SAEItem:
    name: str
    d_in: int
    d_sae: int
    variant: str
    encoder_dtype: str | None = None
    params: int | None = None  # a transcoder's parameter count (None: an SAE's, 2 d_in d_sae + ...)
    layers: int = 1  # a CLT's layers: its step holds each layer's temporaries in turn, its
    # outputs [batch, layers, d] at once

    @property
    def state(self) -> int:
        if self.params is not None:
            return 16 * self.params
        return sae_state_bytes(self.d_in, self.d_sae, self.encoder_dtype)


@dataclass
class MemoryPlan:
    """The estimate for one job on one device, and what fits at other batch sizes."""

    device: str
    available: int
    batch_tokens: int
    saes: list[SAEItem]
    buffer_bytes: int
    model_bytes: int
    rows_per_block: int
    notes: list[str] = field(default_factory=list)

    @property
    def sae_state(self) -> int:
        return sum(s.state for s in self.saes)

    def step_temps(self, batch_tokens: int | None = None) -> int:
        b = batch_tokens or self.batch_tokens
        return max(
            (
                step_temp_bytes(s.d_in, s.d_sae, s.variant, b) + 4 * b * s.layers * s.d_in * 4
                if s.layers > 1
                else step_temp_bytes(s.d_in, s.d_sae, s.variant, b)
                for s in self.saes
            ),
            default=0,
        )

    def total(self, batch_tokens: int | None = None) -> int:
        return self.sae_state + self.step_temps(batch_tokens) + self.buffer_bytes + self.model_bytes

    @property
    def budget(self) -> int:
        return int(self.available * SAFETY)

    @property
    def fits(self) -> bool:
        return self.total() <= self.budget

    def by_batch_size(self) -> list[dict[str, Any]]:
        """Total estimate at each standard batch size (the buffer must hold one batch)."""
        return [
            {
                "batch_tokens": b,
                "total_gib": self.total(b) / GiB,
                "fits": self.total(b) <= self.budget,
            }
            for b in BATCH_SIZES
            if b <= max(self.rows_per_block, self.batch_tokens)
        ]

    def largest_batch(self) -> int | None:
        ok = [r["batch_tokens"] for r in self.by_batch_size() if r["fits"]]
        return max(ok) if ok else None

    def to_dict(self) -> dict[str, Any]:
        return {
            "device": self.device,
            "available_gib": self.available / GiB,
            "budget_gib": self.budget / GiB,
            "batch_tokens": self.batch_tokens,
            "total_gib": self.total() / GiB,
            "fits": self.fits,
            "sae_state_gib": self.sae_state / GiB,
            "step_temporaries_gib": self.step_temps() / GiB,
            "activation_buffers_gib": self.buffer_bytes / GiB,
            "model_gib": self.model_bytes / GiB,
            "saes": [
                {
                    "name": s.name,
                    "d_in": s.d_in,
                    "d_sae": s.d_sae,
                    "variant": s.variant,
                    "state_gib": s.state / GiB,
                }
                for s in self.saes
            ],
            "by_batch_size": self.by_batch_size(),
            "largest_fitting_batch": self.largest_batch(),
            "notes": self.notes,
        }

    def format(self) -> str:
        lines = [
            f"memory plan on {self.device}: {self.total() / GiB:.2f} GiB needed at batch_tokens={self.batch_tokens}, "
            f"{self.available / GiB:.2f} GiB free (budget {SAFETY:.0%}: {self.budget / GiB:.2f} GiB) -> "
            + ("fits" if self.fits else "DOES NOT FIT"),
            f"  {len(self.saes)} SAEs (params + grads + Adam): {self.sae_state / GiB:.3f} GiB; "
            f"step temporaries: {self.step_temps() / GiB:.3f} GiB; activation buffers: "
            f"{self.buffer_bytes / GiB:.3f} GiB; model: {self.model_bytes / GiB:.3f} GiB",
            "  batch_tokens -> total GiB: "
            + ", ".join(
                f"{r['batch_tokens']}: {r['total_gib']:.2f}{'' if r['fits'] else ' (no)'}"
                for r in self.by_batch_size()
            ),
        ]
        return "\n".join(lines + [f"  note: {n}" for n in self.notes])

    def check(self) -> None:
        """Raise :class:`MemoryPlanError` (before any work) when the job does not fit."""
        if self.fits:
            return
        biggest = sorted(self.saes, key=lambda s: -s.state)[:3]
        fixed = self.sae_state + self.buffer_bytes + self.model_bytes
        hint = (
            f"the largest batch_tokens that fits is {self.largest_batch()}"
            if self.largest_batch()
            else "no batch size fits: "
            + (
                "the SAEs alone (params + grads + Adam) exceed the budget; "
                "use fewer or narrower SAEs, or shard hooks across ranks"
                if fixed > self.budget
                else "reduce buffer_tokens or the SAEs"
            )
        )
        raise MemoryPlanError(
            f"this job needs about {self.total() / GiB:.2f} GiB on {self.device} but only "
            f"{self.budget / GiB:.2f} GiB can be used ({self.available / GiB:.2f} GiB free): "
            f"SAE parameters + gradients + Adam {self.sae_state / GiB:.2f} GiB (largest: "
            + ", ".join(f"{s.name} d_sae={s.d_sae} {s.state / GiB:.2f} GiB" for s in biggest)
            + f"), step temporaries at batch_tokens={self.batch_tokens} {self.step_temps() / GiB:.2f} GiB, "
            f"activation buffers {self.buffer_bytes / GiB:.2f} GiB, model {self.model_bytes / GiB:.2f} GiB; {hint}"
        )


def plan_memory(
    saes: Sequence[SAEItem],
    dims: dict[str, int],
    batch_tokens: int,
    rows_per_block: int,
    device: str = "cpu",
    with_grads: bool = False,
    activation_bytes: int = 4,
    model=None,
    batch_windows: int = 16,
    context_size: int = 128,
    n_layers_run: int | None = None,
    available: int | None = None,
) -> MemoryPlan:
    """Estimate a job's memory (``dims``: the widths of the hooks this process buffers)."""
    per_row = sum(dims.values()) * activation_bytes * (2 if with_grads else 1)
    buffers = 3 * rows_per_block * per_row
    notes = []
    mbytes = 0
    if model is not None:
        mbytes = model_bytes(model, batch_windows, context_size, with_grads, n_layers_run)
    else:
        notes.append(
            "activations come from a cache: the model is loaded only to evaluate, after training"
        )
    return MemoryPlan(
        device=str(device),
        available=available if available is not None else available_bytes(device),
        batch_tokens=batch_tokens,
        saes=list(saes),
        buffer_bytes=buffers,
        model_bytes=mbytes,
        rows_per_block=rows_per_block,
        notes=notes,
    )
