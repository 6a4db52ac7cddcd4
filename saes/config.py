"""Validated configuration of one SAE: its shape, its selection rule and that rule's knobs.

The fields below are common to every variant. Each variant adds its own keys (its ``Knobs``, in
its file under ``saes/variants/``); they are validated by that model, stored flat beside these
(``cfg.beta``, ``cfg.l1_coefficient``), and written flat into ``cfg.json``. A key that belongs to
another variant is an error that says which variants have it.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, field_validator, model_validator

from saes.variants import knob_owners, variant_class, variant_names


class SAEConfig(BaseModel):
    """Shape, selection rule and loss knobs of one SAE. Unknown keys are an error."""

    model_config = ConfigDict(
        extra="allow", validate_assignment=True, use_attribute_docstrings=True
    )

    d_in: int | None = None
    """Input width (the hook's activation width). In a run config, None means "the hook's
    width" (set, it is checked against the hook or cache)."""
    d_sae: int = 4608
    """Number of latents (dictionary size)."""
    variant: str = "topk"
    """Selection rule: one of the registered variants (``interp config --variants`` lists them,
    with the first line of each rule's docstring)."""
    k: int = 32
    """Latents kept per token (TopK, g-SAE) or the mean per token of a batch budget (choice SAEs).
    Ignored by variants without a k (relu_l1)."""
    aux_k: int | None = None
    """Latents in the dead/under-used auxiliary reconstruction (AuxK, aux_zipf); None: d_in // 2
    (OpenAI, Gao et al. 2024)."""
    input_scale: float | None = None
    """Inputs are multiplied by this before encoding (so E||x|| = sqrt(d_in)); folded into the
    weights on export. Set by the trainer from the data."""
    hook_name: str = ""
    """The TransformerLens hook the SAE reads (filled in by the trainer)."""
    model_name: str = ""
    """The model spec the activations came from (filled in by the trainer)."""
    dtype: str = "float32"
    """Parameter dtype of the artifact."""
    encoder_dtype: Literal["float32", "bfloat16"] | None = None
    """"bfloat16": the encoder GEMM and the top-k selection run in bf16 (kept values recomputed
    in fp32, so outputs and gradients stay full precision; only near-ties may pick differently).
    Fast where the CPU has bf16 units (AMX / AVX512-BF16) and on GPUs."""

    @model_validator(mode="before")
    @classmethod
    def _split_knobs(cls, data: Any) -> Any:
        """Validate the variant's own keys with its ``Knobs`` model (defaults filled in)."""
        if not isinstance(data, dict):
            return data
        name = data.get("variant", "topk")
        knobs_model = variant_class(name).Knobs if name in variant_names() else None
        if knobs_model is None:
            return data  # the field validator names the unknown variant
        common = {k: v for k, v in data.items() if k in cls.model_fields}
        rest = {k: v for k, v in data.items() if k not in cls.model_fields}
        unknown = sorted(set(rest) - set(knobs_model.model_fields))
        if unknown:
            hints = []
            for key in unknown:
                owners = knob_owners(key)
                hints.append(
                    f"{key!r} is a key of variant(s) {owners}, not of {name!r}"
                    if owners
                    else f"unknown key {key!r} (no SAE variant has it)"
                )
            raise ValueError(
                f"{'; '.join(hints)}. Keys of {name!r}: "
                f"{sorted(cls.model_fields) + sorted(knobs_model.model_fields)}"
            )
        return {**common, **knobs_model(**rest).model_dump()}

    @field_validator("variant")
    @classmethod
    def _known_variant(cls, v: str) -> str:
        variant_class(v)  # raises, listing the valid names
        return v

    @model_validator(mode="after")
    def _check(self) -> SAEConfig:
        if self.d_in is not None and self.d_in < 1:
            raise ValueError(f"d_in must be positive, got d_in={self.d_in}")
        if self.d_sae < 1:
            raise ValueError(f"d_sae must be positive, got d_sae={self.d_sae}")
        if variant_class(self.variant).uses_k and not 0 < self.k < self.d_sae:
            raise ValueError(f"k must satisfy 0 < k < d_sae; got k={self.k}, d_sae={self.d_sae}")
        if self.aux_k is not None and not 0 < self.aux_k <= self.d_sae:
            raise ValueError(f"aux_k must be in (0, d_sae]; got {self.aux_k}")
        if self.input_scale is not None and not self.input_scale > 0:
            raise ValueError(f"input_scale must be positive, got {self.input_scale}")
        return self

    def __setattr__(self, name: str, value: Any) -> None:
        extra = self.__pydantic_extra__ or {}
        if name in extra:  # a knob: validated by its variant's model, as at construction
            value = getattr(variant_class(self.variant).Knobs(**{**extra, name: value}), name)
        super().__setattr__(name, value)

    @property
    def knobs(self) -> dict[str, Any]:
        """The variant's own keys and their values."""
        return dict(self.__pydantic_extra__ or {})

    @property
    def k_aux(self) -> int:
        d_in = self.d_in or 2
        return min(self.d_sae, self.aux_k if self.aux_k is not None else max(1, d_in // 2))

    @classmethod
    def from_saved(cls, data: dict[str, Any]) -> SAEConfig:
        """Read a config written by an older version, which stored every variant's knobs flat:
        knobs of other variants are dropped; anything else unknown is still an error."""
        name = data.get("variant", "topk")
        own = set(variant_class(name).Knobs.model_fields) if name in variant_names() else set()
        keep = {
            k: v for k, v in data.items() if k in cls.model_fields or k in own or not knob_owners(k)
        }
        return cls(**keep)
