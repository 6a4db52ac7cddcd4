"""Gradient TopK (g-SAE; Olmo et al. 2024, "Features that Make a Difference").

Selection uses the gradient of the LM's next-token loss with respect to the hooked activation,
g = dL/dx (captured in the same pass as x). For latent i with activation z_i = ReLU(pre_i) and
decoder row d_i, the score is

    s_i = z_i * (1 + beta * |d_i . g_s|),     g_s = g / input_scale,

where g_s is the gradient with respect to the scaled input the SAE reconstructs, so that
|d_i . g_s| = |dL/dz_i| is the first-order change of the loss per unit of z_i. The k latents with
the largest s_i are kept *with their z values* (the score only chooses; it never rescales), so
beta = 0 is exactly TopK. Without a gradient (inference on new text without a backward pass,
or ``grad=None``) the g-SAE runs as a plain TopK SAE on its own weights; evaluation reports both
modes. Dead latents get the same AuxK loss as TopK.
"""

from __future__ import annotations

import torch
from pydantic import Field

from saes.codes import SparseCode, TrainOutput
from saes.kernels import pre_acts, sparse_decode, sparse_select_encode, topk_select
from saes.training.distributed import Comm
from saes.training.losses import aux_k_loss, fvu_loss
from saes.variants.base import register
from saes.variants.topk import TopK, TopKKnobs


class GradientTopKKnobs(TopKKnobs):
    """Keys of g-SAEs (TopK's, plus the gradient weight)."""

    beta: float = Field(1.0, ge=0)
    """Gradient weight of the selection score z_i * (1 + beta * |d_i . dL/dx|); 0 is TopK."""


@register
class GradientTopK(TopK):
    name = "gtopk"
    Knobs = GradientTopKKnobs
    needs_grads = True
    step_arrays = 4

    def __init__(self, cfg) -> None:
        super().__init__(cfg)
        self.beta = cfg.beta

    def describe(self) -> str:
        return f"gradient topk, beta={self.beta}"

    def _select(
        self, sae, x_in: torch.Tensor, grad: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Indices [B, k] of the latents with the largest gradient-weighted scores, and the
        pre-activations they came from (no autograd)."""
        with torch.no_grad():
            pre = pre_acts(x_in.detach(), sae.W_enc.detach(), sae.b_enc.detach())
            g = grad.to(pre.dtype)
            if sae.cfg.input_scale:
                g = g / sae.cfg.input_scale
            effect = (
                g @ sae.W_dec.detach().T
            ).abs_()  # |d_i . g_s| = |dL/dz_i| per (token, latent)
            score = effect.mul_(self.beta).add_(1.0).mul_(pre.clamp_min(0))
            return topk_select(score, self.cfg.k)[1], pre

    def encode(self, sae, x_in: torch.Tensor, grad: torch.Tensor | None = None):
        if grad is None or self.beta == 0:
            return super().encode(sae, x_in)
        indices, pre = self._select(sae, x_in, grad)
        values = sparse_select_encode(x_in, sae.W_enc, sae.b_enc, indices, pre=pre)
        return SparseCode(values, indices)

    def train_forward(
        self,
        sae,
        x: torch.Tensor,
        grad: torch.Tensor | None,
        dead_mask: torch.Tensor | None,
        comm: Comm | None = None,
    ) -> TrainOutput:
        if grad is None or self.beta == 0:
            return super().train_forward(sae, x, grad, dead_mask, comm)
        x_in = x - sae.b_dec
        indices, pre = self._select(sae, x_in, grad)
        values = sparse_select_encode(x_in, sae.W_enc, sae.b_enc, indices, pre=pre)
        x_hat = sparse_decode(values, indices, sae.W_dec, sae.b_dec)
        losses = {"fvu": fvu_loss(x, x_hat, comm)}
        if dead_mask is not None and self.cfg.aux_k_coef > 0:
            with torch.no_grad():
                k_aux = min(self.cfg.k_aux, int(dead_mask.sum()))
                aux_idx = pre.masked_fill_(~dead_mask, float("-inf")).topk(k_aux, dim=-1).indices
            aux_values = sparse_select_encode(x_in, sae.W_enc, sae.b_enc, aux_idx)
            losses["aux_k"] = self.cfg.aux_k_coef * aux_k_loss(
                x, x_hat, aux_values, aux_idx, sae.W_dec, comm
            )
        return TrainOutput(x_hat, SparseCode(values, indices), losses)
