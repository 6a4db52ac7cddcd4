"""TopK selection (Gao et al. 2024): ReLU the pre-activations, then keep the k largest per token.

ReLU-then-top-k and top-k-then-ReLU give the same values (ReLU is monotone); when fewer than k
latents are positive, the kept zeros contribute nothing and get no gradient. Dead latents are
revived by the AuxK loss: the top ``k_aux`` pre-activations among dead latents reconstruct the
residual error x - x_hat, normalised by that error's variance, weighted by ``aux_k_coef``.

As a transcoder the same rule reads x uncentred and predicts the target y: the FVU and AuxK are
of y (sparsify's ``transcode``).
"""

from __future__ import annotations

import torch
from pydantic import BaseModel, ConfigDict, Field

from saes.codes import SparseCode, TrainOutput
from saes.kernels import sparse_decode, topk_encode, topk_encode_with_aux
from saes.training.distributed import Comm
from saes.training.losses import aux_k_loss, fvu_loss
from saes.variants.base import Variant, register

#: Extra candidates a low-precision GEMM selects before the exact top k is taken (encode_in).
SELECT_MARGIN = 8


class TopKKnobs(BaseModel):
    """Keys of TopK SAEs."""

    model_config = ConfigDict(extra="forbid", use_attribute_docstrings=True)

    aux_k_coef: float = Field(1 / 32, ge=0)
    """Weight of the AuxK dead-latent loss (1/32: OpenAI, Gao et al. 2024); 0 turns it off."""


@register
class TopK(Variant):
    name = "topk"
    Knobs = TopKKnobs
    saelens_architecture = "topk"
    step_arrays = 3
    transcodes = True

    def __init__(self, cfg) -> None:
        super().__init__(cfg)
        self.gemm_dtype = torch.bfloat16 if cfg.encoder_dtype == "bfloat16" else None

    def encode(self, sae, x_in: torch.Tensor, grad: torch.Tensor | None = None) -> SparseCode:
        values, indices = topk_encode(x_in, sae.W_enc, sae.b_enc, self.cfg.k, dtype=self.gemm_dtype)
        return SparseCode(values, indices)

    def encode_in(self, sae, x_in: torch.Tensor, dtype) -> SparseCode:
        """Top k + ``SELECT_MARGIN`` chosen by a GEMM in ``dtype``, the top k of their exact
        values kept (:func:`saes.kernels.topk_encode`)."""
        values, indices = topk_encode(
            x_in, sae.W_enc, sae.b_enc, self.cfg.k, dtype=dtype, margin=SELECT_MARGIN
        )
        return SparseCode(values, indices)

    def train_forward(
        self,
        sae,
        x: torch.Tensor,
        grad: torch.Tensor | None,
        dead_mask: torch.Tensor | None,
        comm: Comm | None = None,
        target: torch.Tensor | None = None,
    ) -> TrainOutput:
        if self.cfg.aux_k_coef == 0:
            dead_mask = None
        y = x if target is None else target
        # centring by b_dec happens inside the kernel (cheaper b_dec gradient than centring here)
        values, indices, aux_values, aux_indices = topk_encode_with_aux(
            x,
            sae.W_enc,
            sae.b_enc,
            self.cfg.k,
            dead_mask,
            self.cfg.k_aux,
            b_dec=sae.input_bias,
            dtype=self.gemm_dtype,
        )
        x_hat = sae.add_skip(sparse_decode(values, indices, sae.W_dec, sae.b_dec), x)
        losses = {"fvu": fvu_loss(y, x_hat, comm)}
        if aux_values is not None:
            losses["aux_k"] = self.cfg.aux_k_coef * aux_k_loss(
                y, x_hat, aux_values, aux_indices, sae.W_dec, comm
            )
        return TrainOutput(x_hat, SparseCode(values, indices), losses)
