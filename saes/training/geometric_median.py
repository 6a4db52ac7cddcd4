"""Geometric median by Weiszfeld's algorithm (the b_dec initialisation)."""

from __future__ import annotations

import torch


@torch.no_grad()
def geometric_median(
    x: torch.Tensor, max_iter: int = 100, tol: float = 1e-6, eps: float = 1e-8
) -> torch.Tensor:
    """The point minimising the sum of Euclidean distances to the rows of x [N, d]."""
    y = x.mean(0)
    for _ in range(max_iter):
        w = 1.0 / (x - y).norm(dim=-1).clamp_min(eps)
        y_new = (w[:, None] * x).sum(0) / w.sum()
        if (y_new - y).norm() <= tol * max(1.0, y.norm().item()):
            return y_new
        y = y_new
    return y
