"""SAE codes and training outputs: the leaf types every variant, kernel caller and analysis shares.

A :class:`SparseCode` holds the kept (value, latent) entries of a batch of N tokens in one of two
layouts:

* **padded** (``rows is None``): ``values`` and ``indices`` are [N, k], row n holding token n's
  entries. Values may be 0 when fewer than k latents fire, or as padding of rows with fewer
  entries; a padding entry may repeat an index, with value 0, so densifying *adds*.
* **flat COO** (``rows`` given): ``values``, ``indices`` and ``rows`` are [E], entry e being
  (token ``rows[e]``, latent ``indices[e]``, ``values[e]``) of ``n_rows`` tokens. Batch-level
  selection (mutual and feature choice) keeps a different number of latents per token, and this
  layout needs no padding; the sparse decoder reads ``rows`` directly.

Dense codes are plain [N, d_sae] tensors; :data:`Code` is either.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
from torch import Tensor


@dataclass
class SparseCode:
    """Kept entries of a batch: padded [N, k] (``rows`` None) or flat COO [E] with ``rows``."""

    values: Tensor
    indices: Tensor
    rows: Tensor | None = None
    n_rows: int | None = None

    def __post_init__(self) -> None:
        if self.values.shape != self.indices.shape:
            raise ValueError(
                f"SparseCode values {tuple(self.values.shape)} and indices "
                f"{tuple(self.indices.shape)} must have the same shape"
            )
        if self.rows is not None:
            if self.n_rows is None:
                raise ValueError("a flat SparseCode (rows given) needs n_rows, the token count")
            if self.rows.shape != self.values.shape:
                raise ValueError(
                    f"SparseCode rows {tuple(self.rows.shape)} must match values "
                    f"{tuple(self.values.shape)}"
                )

    @classmethod
    def flat(cls, rows: Tensor, cols: Tensor, values: Tensor, n_rows: int) -> SparseCode:
        """A flat COO code: entry e is (token rows[e], latent cols[e], values[e])."""
        return cls(values, cols, rows=rows, n_rows=n_rows)

    @property
    def is_flat(self) -> bool:
        return self.rows is not None

    @property
    def n_tokens(self) -> int:
        return self.n_rows if self.rows is not None else self.values.shape[0]  # type: ignore[return-value]

    def to_dense(self, d_sae: int) -> Tensor:
        """Dense codes [N, d_sae] (entries added, so repeated padding indices are harmless)."""
        z = self.values.new_zeros(self.n_tokens, d_sae)
        if self.rows is not None:
            return z.index_put_((self.rows, self.indices), self.values, accumulate=True)
        return z.scatter_add_(1, self.indices, self.values)

    def padded(self) -> SparseCode:
        """This code in the padded layout [N, max L0] (padding: value 0, index 0). A flat code's
        entries must be sorted by token (as the choice selections produce them)."""
        if self.rows is None:
            return self
        rows, n = self.rows, self.n_tokens
        counts = torch.bincount(rows, minlength=n)
        width = max(1, int(counts.max())) if rows.numel() else 1
        starts = torch.cumsum(counts, 0) - counts
        pos = torch.arange(rows.numel(), device=rows.device) - starts[rows]
        v = self.values.new_zeros(n, width)
        i = torch.zeros(n, width, dtype=torch.long, device=rows.device)
        v[rows, pos] = self.values
        i[rows, pos] = self.indices
        return SparseCode(v, i)

    @property
    def l0(self) -> Tensor:
        """Number of nonzero latents per token [N]."""
        if self.rows is not None:
            return torch.bincount(self.rows[self.values != 0], minlength=self.n_tokens)
        return (self.values != 0).sum(-1)


Code = SparseCode | Tensor


def to_dense(code: Code, d_sae: int) -> Tensor:
    """Dense codes [N, d_sae] of a sparse or dense code."""
    return code.to_dense(d_sae) if isinstance(code, SparseCode) else code


@dataclass
class TrainOutput:
    """What one training forward produced: the reconstruction (scaled input space), the code, and
    the named loss terms (each already weighted by its coefficient); ``loss`` is their sum."""

    x_hat: Tensor
    code: Code
    losses: dict[str, Tensor] = field(default_factory=dict)

    @property
    def loss(self) -> Tensor:
        return sum(self.losses.values())  # type: ignore[return-value]
