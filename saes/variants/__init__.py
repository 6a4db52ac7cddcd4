"""Selection rules. A variant is one small module: how latents are selected, plus its extra losses.

Every variant provides::

    name: str
    unit_norm_decoder: bool                  # decoder rows kept at unit norm by the trainer
    needs_grads: bool                        # training/inference use dL/dx from the capture
    encode(sae, x_in, grad) -> Code          # inference; x_in is the scaled, b_dec-centred input
    train_forward(sae, x, grad, dead_mask) -> TrainOutput
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
import torch.nn.functional as F

from saes.config import SAEConfig


@dataclass
class TrainOutput:
    """What one training forward produced: reconstruction (scaled space), code, and named losses."""

    x_hat: torch.Tensor
    code: object
    losses: dict[str, torch.Tensor] = field(default_factory=dict)

    @property
    def loss(self) -> torch.Tensor:
        return sum(self.losses.values())  # type: ignore[return-value]


def fvu_loss(x: torch.Tensor, x_hat: torch.Tensor) -> torch.Tensor:
    """sum ||x - x_hat||^2 / sum ||x - mean(x)||^2 over the batch (scale-free reconstruction loss).

    Under data-parallel training the denominator is the whole global batch's (saes.distributed).
    """
    from saes.distributed import centred_sum_sq

    total = centred_sum_sq(x).clamp_min(1e-12)
    return F.mse_loss(x_hat, x, reduction="sum") / total  # fused forward and backward


def variant_class(name: str):
    """The class implementing variant ``name`` (clear error listing the valid ones)."""
    from saes.variants.choice import FeatureChoice, MutualChoice
    from saes.variants.gtopk import GradientTopK
    from saes.variants.relu_l1 import ReLUL1
    from saes.variants.topk import TopK

    registry = {
        "topk": TopK,
        "gtopk": GradientTopK,
        "relu_l1": ReLUL1,
        "mutual_choice": MutualChoice,
        "feature_choice": FeatureChoice,
    }
    if name not in registry:
        raise ValueError(f"unknown SAE variant {name!r}; valid: {sorted(registry)}")
    return registry[name]


def get_variant(cfg: SAEConfig):
    return variant_class(cfg.variant)(cfg)
