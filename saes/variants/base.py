"""The variant contract and its registry: everything the rest of the code knows about a variant.

A variant is one class, registered with :func:`register`, that carries every per-variant fact::

    name: str                        # the config's ``variant`` value
    Knobs: type[pydantic.BaseModel]  # its own config keys, with defaults and docstrings
    uses_k: bool                     # ``k`` (latents per token) means something for it
    unit_norm_decoder: bool          # the trainer keeps decoder rows at unit norm
    needs_grads: bool                # training/inference select with dL/dx from the capture
    training_buffers: tuple[str, ...]  # module buffers that are training state (checkpointed,
                                     # not exported in artifacts)
    saelens_architecture: str | None # SAELens architecture with the same inference function
    step_arrays: int                 # dense [batch, d_sae] fp32 arrays alive in one training step
                                     # (the memory planner's factor)

    init_module(sae)                 # register variant state (buffers) on a new SAE
    describe() -> str                # the selection rule in words (written into cfg.json)
    encode(sae, x_in, grad) -> Code  # inference; x_in is the scaled, b_dec-centred input [N, d_in]
    encode_in(sae, x_in, dtype) -> Code  # inference with the encoder GEMM in ``dtype`` where the
                                     # variant can select there and recompute exactly (TopK);
                                     # by default the plain encode
    train_forward(sae, x, grad, dead_mask, comm[, target]) -> TrainOutput
                                     # x: scaled, uncentred [B, d_in]; comm: the data-parallel
                                     # saes.training.distributed.Comm (None: one process), passed to the
                                     # losses' batch statistics; target (rules with
                                     # ``transcodes``): the scaled output a transcoder predicts

``SAEConfig`` reads ``Knobs`` to validate a config's variant-specific keys, so adding a variant is
one file: subclass :class:`Variant`, decorate it with ``@register``, import the module.
"""

from __future__ import annotations

from typing import Any, ClassVar

from pydantic import BaseModel, ConfigDict
from torch import Tensor

from saes.codes import Code, TrainOutput
from saes.training.distributed import Comm


class NoKnobs(BaseModel):
    """A variant with no keys of its own."""

    model_config = ConfigDict(extra="forbid", use_attribute_docstrings=True)


class Variant:
    """Base of every selection rule (see the module docstring for the contract)."""

    name: ClassVar[str] = ""
    Knobs: ClassVar[type[BaseModel]] = NoKnobs
    uses_k: ClassVar[bool] = True
    unit_norm_decoder: ClassVar[bool] = True
    needs_grads: ClassVar[bool] = False
    training_buffers: ClassVar[tuple[str, ...]] = ()
    saelens_architecture: ClassVar[str | None] = None
    step_arrays: ClassVar[int] = 4
    # True: the rule can train a transcoder (``train_forward`` takes ``target``, the hook it predicts,
    # and centres its input with ``sae.input_bias``, None for a transcoder)
    transcodes: ClassVar[bool] = False
    # False: the variant only encodes (loaded from other libraries' artifacts); a run config that
    # trains it is refused (saes.training.config.RunConfig)
    trainable: ClassVar[bool] = True

    def __init__(self, cfg: Any) -> None:
        self.cfg = cfg  # the SAE's SAEConfig (saes.config, which imports this module)

    def init_module(self, sae) -> None:
        """Register variant state on a new SAE (module buffers); none by default."""

    def describe(self) -> str:
        """The selection rule in words, for ``cfg.json``'s ``selection_rule``."""
        return self.name

    def encode(self, sae, x_in: Tensor, grad: Tensor | None = None) -> Code:
        raise NotImplementedError(f"variant {self.name!r} must define encode()")

    def encode_in(self, sae, x_in: Tensor, dtype) -> Code:
        """Inference with the encoder GEMM in ``dtype`` (e.g. bf16) where the variant selects
        entries and can recompute them exactly; others ignore ``dtype`` and encode as usual."""
        return self.encode(sae, x_in)

    def train_forward(
        self,
        sae,
        x: Tensor,
        grad: Tensor | None,
        dead_mask: Tensor | None,
        comm: Comm | None = None,
    ) -> TrainOutput:
        raise NotImplementedError(f"variant {self.name!r} must define train_forward()")


_REGISTRY: dict[str, type[Variant]] = {}


def register(cls: type[Variant]) -> type[Variant]:
    """Class decorator: make ``cls`` the variant named ``cls.name``."""
    if not cls.name:
        raise ValueError(f"{cls.__name__} needs a non-empty class attribute `name`")
    if not (isinstance(cls.Knobs, type) and issubclass(cls.Knobs, BaseModel)):
        raise TypeError(f"{cls.__name__}.Knobs must be a pydantic BaseModel subclass")
    previous = _REGISTRY.get(cls.name)
    if previous is not None and previous.__qualname__ != cls.__qualname__:
        raise ValueError(f"variant name {cls.name!r} is taken by {previous.__qualname__}")
    _REGISTRY[cls.name] = cls
    return cls


def variant_names() -> list[str]:
    return sorted(_REGISTRY)


def variant_class(name: str) -> type[Variant]:
    """The class implementing variant ``name`` (a clear error listing the valid ones)."""
    try:
        return _REGISTRY[name]
    except KeyError:
        raise ValueError(f"unknown SAE variant {name!r}; valid: {variant_names()}") from None


def knob_owners(key: str) -> list[str]:
    """The registered variants that have a knob called ``key``."""
    return sorted(n for n, c in _REGISTRY.items() if key in c.Knobs.model_fields)


def all_knob_defaults() -> dict[str, Any]:
    """Every registered variant's knobs with their defaults (the flat legacy key set)."""
    out: dict[str, Any] = {}
    for cls in _REGISTRY.values():
        for key, f in cls.Knobs.model_fields.items():
            out.setdefault(key, f.default)
    return out


def uses_k(name: str | None) -> bool:
    """Whether variant ``name`` has a meaningful ``k`` (unknown names, e.g. from old runs: True)."""
    return _REGISTRY[name].uses_k if name in _REGISTRY else True
