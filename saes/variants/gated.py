"""Gated SAE (Rajamanoharan et al. 2024), inference only: opened from SAELens artifacts.

    u     = (x - b_dec) W_enc
    gate  = [u + b_gate > 0]
    z     = gate * ReLU(u * exp(r_mag) + b_mag)

The gate's bias is the SAE's ``b_enc`` (so ``sae.pre_acts`` is the gate pre-activation and a
latent is on only where it is positive); ``b_mag`` and ``r_mag`` [d_sae] are module buffers. In
SAELens's files ``b_enc`` is called ``b_gate``. Training is refused (see
:class:`saes.variants.jumprelu.InferenceOnly`).
"""

from __future__ import annotations

import torch

from saes.variants.base import register
from saes.variants.jumprelu import InferenceOnly


@register
class Gated(InferenceOnly):
    name = "gated"
    saelens_architecture = "gated"
    saelens_names = {"b_enc": "b_gate"}
    step_arrays = 5

    def init_module(self, sae) -> None:
        sae.register_buffer("b_mag", torch.zeros(self.cfg.d_sae))
        sae.register_buffer("r_mag", torch.zeros(self.cfg.d_sae))

    def describe(self) -> str:
        return "gated: (pre_gate > 0) * relu(u * exp(r_mag) + b_mag)"

    def encode(self, sae, x_in: torch.Tensor, grad: torch.Tensor | None = None) -> torch.Tensor:
        u = x_in @ sae.W_enc
        gate = (u + sae.b_enc) > 0
        mag = torch.relu(u * sae.r_mag.exp().to(u.dtype) + sae.b_mag.to(u.dtype))
        return gate * mag
