"""Synthetic activations from a known sparse dictionary: a toy model with ground truth.

x = sum_{i active} m_i * d_i + noise, where the d_i are unit directions in R^d_in, feature i is
active with probability p_i following a power law over features (p_i proportional to
(i+1)^-alpha, scaled so that on average ``mean_active`` features fire per token), and magnitudes
m_i are drawn from an exponential distribution around 1. Use it to check that an SAE recovers
the true directions (``direction_recovery``).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch


@dataclass
class SyntheticDictionary:
    d_in: int = 64
    n_features: int = 256
    mean_active: float = 5.0
    alpha: float = 0.5
    noise_std: float = 0.01
    min_magnitude: float = 0.5
    seed: int = 0

    def __post_init__(self) -> None:
        if self.mean_active <= 0 or self.mean_active > self.n_features:
            raise ValueError(f"mean_active must be in (0, n_features]; got {self.mean_active}")
        g = torch.Generator().manual_seed(self.seed)
        d = torch.randn(self.n_features, self.d_in, generator=g)
        self.directions = d / d.norm(dim=-1, keepdim=True)
        ranks = torch.arange(1, self.n_features + 1, dtype=torch.float64)
        p = ranks.pow(-self.alpha)
        p = p / p.sum() * self.mean_active
        self.probabilities = p.clamp(max=1.0).float()
        self._gen = torch.Generator().manual_seed(self.seed + 1)

    def sample(self, n: int) -> tuple[torch.Tensor, torch.Tensor]:
        """n activations [n, d_in] and their true sparse codes [n, n_features]."""
        g = self._gen
        active = torch.rand(n, self.n_features, generator=g) < self.probabilities
        mags = self.min_magnitude + torch.empty(n, self.n_features).exponential_(1.0, generator=g)
        codes = active * mags
        x = codes @ self.directions + self.noise_std * torch.randn(n, self.d_in, generator=g)
        return x, codes

    def batches(self, n_batches: int, batch_size: int):
        for _ in range(n_batches):
            yield self.sample(batch_size)[0]


def max_cosines(true_directions: torch.Tensor, learned: torch.Tensor) -> torch.Tensor:
    """For each true direction [F, d], its best cosine with any learned direction [M, d]."""
    t = true_directions / true_directions.norm(dim=-1, keepdim=True)
    w = learned / learned.norm(dim=-1, keepdim=True).clamp_min(1e-12)
    return (t @ w.T).max(dim=-1).values


def direction_recovery(
    true_directions: torch.Tensor, learned: torch.Tensor, threshold: float = 0.9
) -> float:
    """Fraction of true directions matched by a learned one with cosine above ``threshold``."""
    return (max_cosines(true_directions, learned) > threshold).float().mean().item()
