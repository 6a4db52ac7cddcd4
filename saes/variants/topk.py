"""TopK selection (Gao et al. 2024): ReLU the pre-activations, then keep the k largest per token.

ReLU-then-top-k and top-k-then-ReLU give the same values (ReLU is monotone); when fewer than k
latents are positive, the kept zeros contribute nothing and get no gradient. Dead latents are
revived by the AuxK loss: the top ``k_aux`` pre-activations among dead latents reconstruct the
residual error x - x_hat, normalised by that error's variance, weighted by ``aux_k_coef``.
"""

from __future__ import annotations

import torch

from saes.config import SAEConfig
from saes.kernels import sparse_decode, topk_encode, topk_encode_with_aux
from saes.variants import TrainOutput, fvu_loss


class TopK:
    name = "topk"
    unit_norm_decoder = True
    needs_grads = False

    def __init__(self, cfg: SAEConfig) -> None:
        self.cfg = cfg
        self.gemm_dtype = torch.bfloat16 if cfg.encoder_dtype == "bfloat16" else None

    def encode(self, sae, x_in: torch.Tensor, grad: torch.Tensor | None = None):
        from saes.sae import SparseCode

        values, indices = topk_encode(x_in, sae.W_enc, sae.b_enc, self.cfg.k, dtype=self.gemm_dtype)
        return SparseCode(values, indices)

    def train_forward(
        self, sae, x: torch.Tensor, grad: torch.Tensor | None, dead_mask: torch.Tensor | None
    ) -> TrainOutput:
        from saes.sae import SparseCode

        if self.cfg.aux_k_coef == 0:
            dead_mask = None
        # centring by b_dec happens inside the kernel (cheaper b_dec gradient than centring here)
        values, indices, aux_values, aux_indices = topk_encode_with_aux(
            x,
            sae.W_enc,
            sae.b_enc,
            self.cfg.k,
            dead_mask,
            self.cfg.k_aux,
            b_dec=sae.b_dec,
            dtype=self.gemm_dtype,
        )
        x_hat = sparse_decode(values, indices, sae.W_dec, sae.b_dec)
        losses = {"fvu": fvu_loss(x, x_hat)}
        if aux_values is not None:
            losses["aux_k"] = self.cfg.aux_k_coef * aux_k_loss(
                x, x_hat, aux_values, aux_indices, sae.W_dec
            )
        return TrainOutput(x_hat, SparseCode(values, indices), losses)


def aux_k_loss(
    x: torch.Tensor,
    x_hat: torch.Tensor,
    aux_values: torch.Tensor,
    aux_indices: torch.Tensor,
    W_dec: torch.Tensor,
) -> torch.Tensor:
    """Normalised MSE of the dead latents' reconstruction of the (detached) residual error."""
    error = (x - x_hat).detach()
    error_hat = sparse_decode(aux_values, aux_indices, W_dec)
    return fvu_loss(error, error_hat).nan_to_num(0.0)
