"""ReLU SAE with an L1 penalty weighted by decoder norms (the classic baseline).

loss = FVU + l1_coefficient * E_n[sum_i z_i ||W_dec[i]||] / E_n[||x_n - mean(x)||]

The division by the mean centred input norm makes the penalty scale-free like the FVU term.
Decoder rows are not constrained to unit norm: the norm-weighted penalty removes the incentive to
shrink z by growing W_dec (Anthropic's April 2024 update).
"""

from __future__ import annotations

import torch

from saes.config import SAEConfig
from saes.variants import TrainOutput, fvu_loss


class ReLUL1:
    name = "relu_l1"
    unit_norm_decoder = False
    needs_grads = False

    def __init__(self, cfg: SAEConfig) -> None:
        self.cfg = cfg

    def encode(self, sae, x_in: torch.Tensor, grad: torch.Tensor | None = None) -> torch.Tensor:
        return torch.relu(torch.addmm(sae.b_enc, x_in, sae.W_enc))

    def train_forward(
        self, sae, x: torch.Tensor, grad: torch.Tensor | None, dead_mask: torch.Tensor | None
    ) -> TrainOutput:
        z = self.encode(sae, x - sae.b_dec)
        x_hat = torch.addmm(sae.b_dec, z, sae.W_dec)
        from saes.distributed import loss_mean, row_mean_of_data

        # batch means over the global batch under data-parallel training (identity otherwise)
        scale = (
            row_mean_of_data((x - row_mean_of_data(x)).norm(dim=-1, keepdim=True))
            .squeeze()
            .clamp_min(1e-12)
        )
        l1 = loss_mean((z * sae.W_dec.norm(dim=-1)).sum(-1)) / scale
        return TrainOutput(
            x_hat, z, {"fvu": fvu_loss(x, x_hat), "l1": self.cfg.l1_coefficient * l1}
        )
