"""Selection rules, one file each, registered by name (the contract: :mod:`saes.variants.base`).

Importing this package registers the built-in variants; a new one is a module with a
``@register``-decorated :class:`Variant` subclass, imported once (here, or by the user's code).
"""

from saes.variants import (  # noqa: E402,F401  (registers them)
    choice,
    gated,
    gtopk,
    jumprelu,
    relu_l1,
    topk,
)
from saes.variants.base import (
    NoKnobs,
    Variant,
    knob_owners,
    register,
    uses_k,
    variant_class,
    variant_names,
)

__all__ = [
    "NoKnobs",
    "Variant",
    "get_variant",
    "knob_owners",
    "register",
    "uses_k",
    "variant_class",
    "variant_names",
]


def get_variant(cfg) -> Variant:
    """The variant object for an SAE config."""
    return variant_class(cfg.variant)(cfg)
