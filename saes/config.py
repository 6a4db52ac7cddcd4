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


def check_contiguous_layers(layers: list[int], what: str = "a CLT's layers") -> None:
    """A cross-layer transcoder spans contiguous, ascending layers (an error names the gap)."""
    if not layers:
        raise ValueError(f"{what}: no layers")
    for a, b in zip(layers, layers[1:]):
        if b != a + 1:
            raise ValueError(
                f"{what} must be contiguous and ascending (layer l's latents write to every "
                f"layer >= l): got {layers}, which jumps from {a} to {b}"
            )


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
    kind: Literal["sae", "transcoder", "skip_transcoder", "clt"] = "sae"
    """What the dictionary maps. "sae": it reconstructs its input hook. "transcoder": it predicts
    another hook (``output_hook_name``, e.g. an MLP's output) from its input hook, whose input is
    not centred by b_dec (b_dec is the output's bias). "skip_transcoder": a transcoder plus a linear
    skip ``x W_skip^T`` (sparsify's ``skip_connection``, SAELens's ``SkipTranscoder``). "clt": a
    cross-layer transcoder over ``layers``, layer l's latents writing to the outputs of every layer
    >= l (:class:`saes.transcoders.CrossLayerTranscoder`)."""
    d_out: int | None = None
    """Output width of a transcoder (the output hook's width); None: d_in (an SAE's)."""
    output_hook_name: str = ""
    """The hook a transcoder predicts (filled in by the trainer); "" for an SAE. A CLT's is a
    template with ``{layer}``, as its ``hook_name`` is."""
    output_scale: float | None = None
    """A transcoder's targets are multiplied by this during training (E||y|| = sqrt(d_out)); folded
    into the weights on export, as ``input_scale`` is. Set by the trainer from the data."""
    layers: list[int] | None = None
    """A CLT's layers, contiguous and ascending (``hook_name.format(layer=l)`` for each)."""
    transcoder_init: Literal["sparsify", "tied"] = "sparsify"
    """How a transcoder starts. "sparsify" (sparsify's and the issue's reference): W_dec zero and
    free (no unit-norm constraint), b_dec = mean(y), b_enc = -mean(x) W_enc. "tied": the SAE start,
    W_enc = W_dec^T with unit-norm decoder rows kept at unit norm (rules with a unit-norm decoder),
    with the same biases."""
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
        rule = variant_class(self.variant)
        if self.kind != "sae" and rule.trainable and not rule.transcodes:
            able = [n for n in variant_names() if variant_class(n).transcodes]
            raise ValueError(
                f"sae.kind {self.kind!r} needs a rule that can predict another hook; "
                f"{self.variant!r} cannot (rules that can: {able})"
            )
        if self.kind == "clt" and self.layers is not None:
            check_contiguous_layers(self.layers)
        return self

    @property
    def is_transcoder(self) -> bool:
        """Predicts another hook than it reads (a transcoder, skip transcoder or CLT)."""
        return self.kind != "sae"

    @property
    def width_out(self) -> int | None:
        """The output width: ``d_out``, or ``d_in`` when unset."""
        return self.d_out if self.d_out is not None else self.d_in

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
        d_in = self.width_out or 2
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
