"""Validated configuration of an SAE (its shape and selection rule), shared by training and loading."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, model_validator

Variant = Literal["topk", "gtopk", "relu_l1", "mutual_choice", "feature_choice"]


class SAEConfig(BaseModel):
    """Shape, selection rule and loss knobs of one SAE. Unknown keys are an error."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True)

    d_in: int
    d_sae: int
    variant: Variant = "topk"
    k: int = 32
    # AuxK (dead latents): k_aux defaults to d_in // 2, coefficient 1/32 (OpenAI, Gao et al. 2024)
    aux_k: int | None = None
    aux_k_coef: float = 1 / 32
    # g-SAE: selection score z_i * (1 + beta * |d_i . dL/dx|); beta = 0 is TopK
    beta: float = 1.0
    # ReLU/L1 baseline: penalty weight on sum_i z_i * ||W_dec[i]||
    l1_coefficient: float = 5.0
    # mutual / feature choice (saes/variants/choice.py): feature choice's per-latent capacities
    # ("uniform", or Zipf over usage ranks with this exponent; also aux_zipf's usage target), the
    # EMA decay of the inference thresholds and usage, and the aux_zipf_loss weight
    allocation: Literal["uniform", "zipf"] = "zipf"
    zipf_exponent: float = 1.0
    threshold_decay: float = 0.99
    aux_zipf_coef: float = 1 / 32
    # inputs are multiplied by this before encoding (E||x|| = sqrt(d_in)); folded into weights on save
    input_scale: float | None = None
    hook_name: str = ""
    model_name: str = ""
    dtype: str = "float32"
    # "bfloat16": the encoder GEMM and the top-k selection run in bf16 (kept values recomputed in
    # fp32, so outputs and gradients stay full precision; only near-ties may pick differently)
    encoder_dtype: Literal["float32", "bfloat16"] | None = None

    @model_validator(mode="after")
    def _check(self) -> SAEConfig:
        if self.d_in < 1 or self.d_sae < 1:
            raise ValueError(
                f"d_in and d_sae must be positive, got d_in={self.d_in}, d_sae={self.d_sae}"
            )
        if self.variant != "relu_l1" and not 0 < self.k < self.d_sae:
            raise ValueError(f"k must satisfy 0 < k < d_sae; got k={self.k}, d_sae={self.d_sae}")
        if self.aux_k is not None and not 0 < self.aux_k <= self.d_sae:
            raise ValueError(f"aux_k must be in (0, d_sae]; got {self.aux_k}")
        if self.beta < 0:
            raise ValueError(f"beta must be >= 0, got {self.beta}")
        if self.zipf_exponent < 0:
            raise ValueError(f"zipf_exponent must be >= 0, got {self.zipf_exponent}")
        if not 0 <= self.threshold_decay < 1:
            raise ValueError(f"threshold_decay must be in [0, 1), got {self.threshold_decay}")
        if self.aux_zipf_coef < 0:
            raise ValueError(f"aux_zipf_coef must be >= 0, got {self.aux_zipf_coef}")
        if self.input_scale is not None and not self.input_scale > 0:
            raise ValueError(f"input_scale must be positive, got {self.input_scale}")
        return self

    @property
    def k_aux(self) -> int:
        return min(self.d_sae, self.aux_k if self.aux_k is not None else max(1, self.d_in // 2))
