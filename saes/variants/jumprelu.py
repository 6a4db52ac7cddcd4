"""JumpReLU (Rajamanoharan et al. 2024), inference only: opened from SAELens / dictionary_learning.

    pre = (x - b_dec) W_enc + b_enc
    z_i = ReLU(pre_i) * [pre_i > threshold_i]

with one ``threshold`` per latent (a module buffer, exported as ``threshold`` [d_sae]). This is
SAELens's ``jumprelu`` inference function, which SAELens also writes for its BatchTopK and
Matryoshka BatchTopK SAEs (their one batch threshold copied to every latent), and
dictionary_learning's JumpReLU / BatchTopK / Matryoshka BatchTopK at inference. The ReLU matters
only for negative thresholds (a latent with threshold_i < pre_i < 0 stays off).

Training is refused (``trainable = False``): the straight-through threshold estimator is not
implemented here. :class:`InferenceOnly` is the base of every variant that only opens artifacts.
"""

from __future__ import annotations

from typing import ClassVar

import torch

from saes.codes import TrainOutput
from saes.training.distributed import Comm
from saes.variants.base import Variant, register


class InferenceOnly(Variant):
    """A variant that only encodes: training it raises an error naming it (the one check)."""

    trainable = False
    uses_k = False
    unit_norm_decoder = False
    # names SAELens gives our tensors in its artifacts (ours -> theirs) where they differ
    saelens_names: ClassVar[dict[str, str]] = {}

    def train_forward(
        self,
        sae,
        x: torch.Tensor,
        grad: torch.Tensor | None,
        dead_mask: torch.Tensor | None,
        comm: Comm | None = None,
    ) -> TrainOutput:
        raise ValueError(
            f"variant {self.name!r} is inference-only (it opens other libraries' artifacts) and "
            f"cannot be trained here; train e.g. 'topk' or 'relu_l1' instead"
        )


@register
class JumpReLU(InferenceOnly):
    name = "jumprelu"
    saelens_architecture = "jumprelu"
    step_arrays = 4

    def init_module(self, sae) -> None:
        sae.register_buffer("threshold", torch.zeros(self.cfg.d_sae))

    def describe(self) -> str:
        return "jumprelu: relu(pre) * (pre > threshold)"

    def encode(self, sae, x_in: torch.Tensor, grad: torch.Tensor | None = None) -> torch.Tensor:
        pre = torch.addmm(sae.b_enc, x_in, sae.W_enc)
        return torch.relu(pre) * (pre > sae.threshold.to(pre.dtype))
