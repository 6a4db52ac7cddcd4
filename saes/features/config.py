"""How a feature store is built: :class:`StoreConfig` (every field is recorded in its manifest)."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field


class StoreConfig(BaseModel):
    """How a feature store is built (every field is in its manifest)."""

    model_config = ConfigDict(extra="forbid")

    tokens: int = Field(200_000, ge=1)
    """Tokens to read (rounded up to whole windows); every position but a window's BOS is scored."""
    batch_windows: int = Field(32, ge=1)
    """Windows per forward (and per codes shard)."""
    top_k: int = Field(20, ge=1)
    """Max-activating examples kept per latent."""
    radius: int = Field(16, ge=0)
    """Tokens of context shown on each side of an example."""
    sample: int = Field(256, ge=8)
    """Size of each latent's uniform sample of nonzero activations (its quantiles and bands)."""
    band_quantiles: list[float] = [0.0, 0.25, 0.5, 0.75, 0.9, 1.0]
    """Edges of the quantile bands of the nonzero activations, from 0 to 1."""
    examples_per_band: int = Field(5, ge=1)
    """Examples shown per band."""
    hist_lo: float = Field(1e-4, gt=0)
    """Lowest histogram edge (activations below it go to the first bin)."""
    hist_hi: float = Field(1e5, gt=0)
    """Highest histogram edge (activations at or above it go to the last bin)."""
    hist_per_decade: int = Field(10, ge=1)
    """Log-spaced histogram bins per factor of 10."""
    logits: int = Field(10, ge=1)
    """Top and bottom logit effects kept per latent."""
    neighbours: int = Field(10, ge=1)
    """Nearest latents by decoder cosine kept per latent."""
    coactivation: int = Field(10, ge=0)
    """Co-activating latents kept per latent (0: not counted)."""
    coact_per_token: int = Field(64, ge=2)
    """Co-activation pairs are counted among each token's largest this-many activations (all of
    them for a TopK SAE with k below it)."""
    coact_max_latents: int = Field(16_384, ge=1)
    """Co-activation is counted only up to this many latents (an F x F int32 matrix: 1 GiB at
    16,384); wider SAEs skip it, and the manifest says so."""
    checkpoint_every_s: float = Field(60.0, ge=0)
    """Seconds of pass between saves of its state (resume points; a crash loses at most this
    much work); 0 saves after every batch."""
    encoder_gemm: Literal["auto", "float32", "bfloat16"] = "auto"
    """Dtype of the SAE encoder's GEMM in the pass. "bfloat16": a TopK SAE selects k + 8
    candidates in bf16 and keeps the top k of their exact float32 values (other variants encode
    in float32); "auto": bfloat16 when the model runs in bf16, else float32. The manifest
    records the choice."""
    source: str | None = None
    """Text source; None: the run's ``data.source``."""
    context_size: int | None = Field(None, ge=2)
    """Window length; None: the run's ``data.context_size``."""
    seed: int | None = None
    """Shuffle seed of the validation split; None: the run's ``data.seed``."""
