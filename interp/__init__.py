"""interp: a mechanistic-interpretability toolkit (activation capture, SAE training, analyses)."""

__version__ = "0.1.0"
