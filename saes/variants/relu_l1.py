"""ReLU SAE with an L1 penalty weighted by decoder norms (the classic baseline).

loss = FVU + l1_coefficient * E_n[sum_i z_i ||W_dec[i]||] / E_n[||x_n - mean(x)||]

The division by the mean centred input norm makes the penalty scale-free like the FVU term.
Decoder rows are not constrained to unit norm: the norm-weighted penalty removes the incentive to
shrink z by growing W_dec (Anthropic's April 2024 update).
"""

from __future__ import annotations

import torch
from pydantic import BaseModel, ConfigDict, Field

from saes.codes import TrainOutput
from saes.training.distributed import Comm, loss_mean, row_mean_of_data
from saes.training.losses import fvu_loss
from saes.variants.base import Variant, register


class ReLUL1Knobs(BaseModel):
    """Keys of ReLU/L1 SAEs."""

    model_config = ConfigDict(extra="forbid", use_attribute_docstrings=True)

    l1_coefficient: float = Field(5.0, ge=0)
    """Weight of the decoder-norm-weighted L1 penalty sum_i z_i ||W_dec[i]|| (scale-free)."""


@register
class ReLUL1(Variant):
    name = "relu_l1"
    Knobs = ReLUL1Knobs
    uses_k = False
    unit_norm_decoder = False
    saelens_architecture = "standard"
    step_arrays = 4
    transcodes = True

    def describe(self) -> str:
        return "relu"

    def encode(self, sae, x_in: torch.Tensor, grad: torch.Tensor | None = None) -> torch.Tensor:
        return torch.relu(torch.addmm(sae.b_enc, x_in, sae.W_enc))

    def train_forward(
        self,
        sae,
        x: torch.Tensor,
        grad: torch.Tensor | None,
        dead_mask: torch.Tensor | None,
        comm: Comm | None = None,
        target: torch.Tensor | None = None,
    ) -> TrainOutput:
        y = x if target is None else target  # a transcoder's output
        z = self.encode(sae, sae.centred(x))
        x_hat = sae.add_skip(torch.addmm(sae.b_dec, z, sae.W_dec), x)
        # batch means over the global batch under data-parallel training (identity otherwise)
        scale = (
            row_mean_of_data((y - row_mean_of_data(y, comm)).norm(dim=-1, keepdim=True), comm)
            .squeeze()
            .clamp_min(1e-12)
        )
        l1 = loss_mean((z * sae.W_dec.norm(dim=-1)).sum(-1), comm) / scale
        return TrainOutput(
            x_hat, z, {"fvu": fvu_loss(y, x_hat, comm), "l1": self.cfg.l1_coefficient * l1}
        )
