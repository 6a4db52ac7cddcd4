"""Streaming per-latent statistics over batches of sparse codes, each exactly mergeable.

A pass feeds every batch's nonzero entries (latent f, global token index g, activation v) to
:class:`Accumulators`. Its state is a few tensors whose size does not depend on the number of
tokens, and two states merge into exactly the state of one pass over both sets of batches,
whatever the split (ranks, or a run resumed from a checkpoint):

* counts, histograms and co-activation counts are integer sums;
* the sum of activations is kept in fixed point (``round(v * 2^20)``, int64), so it is exact;
* the maximum is a maximum;
* the top K by (value descending, then token index ascending) is a total order, so the best K of
  a union is the best K of the parts' best K;
* the quantile sample keeps, per latent, the R entries with the smallest hash of (g, f): a
  uniform sample without replacement of the latent's nonzero activations, and again the best R
  of a union is the best R of the parts' best R.
"""

from __future__ import annotations

import torch

INT64_MAX = torch.iinfo(torch.int64).max
_M62 = (1 << 62) - 1


def _signed(c: int) -> int:
    return c - (1 << 64) if c >= 1 << 63 else c


_C0, _C1, _C2 = (_signed(c) for c in (0x9E3779B97F4A7C15, 0xBF58476D1CE4E5B9, 0x94D049BB133111EB))


def _shr(z: torch.Tensor, s: int) -> torch.Tensor:
    """Logical right shift of int64 (torch's >> is arithmetic)."""
    return (z >> s) & ((1 << (64 - s)) - 1)


def mix64(x: torch.Tensor) -> torch.Tensor:
    """splitmix64's finaliser on int64 (wrapping arithmetic), masked to 62 bits (>= 0)."""
    z = x + _C0
    z = (z ^ _shr(z, 30)) * _C1
    z = (z ^ _shr(z, 27)) * _C2
    return (z ^ _shr(z, 31)) & _M62


def _lexsort(primary: torch.Tensor, secondary: torch.Tensor, dim: int = -1) -> torch.Tensor:
    """The permutation that sorts by (primary, secondary) ascending along ``dim``."""
    o = torch.argsort(secondary, dim=dim, stable=True)
    o2 = torch.argsort(torch.gather(primary, dim, o), dim=dim, stable=True)
    return torch.gather(o, dim, o2)


class BestR:
    """Per latent, the R entries with the smallest (key, token index); ``value`` rides along.

    ``key`` is float32 or int64; padding is (max, INT64_MAX) with index -1.
    """

    def __init__(self, n_latents: int, r: int, key_dtype: torch.dtype) -> None:
        self.r = r
        self.key_pad = torch.finfo(key_dtype).max if key_dtype.is_floating_point else INT64_MAX
        self.key = torch.full((n_latents, r), self.key_pad, dtype=key_dtype)
        self.index = torch.full((n_latents, r), -1, dtype=torch.int64)
        self.value = torch.zeros(n_latents, r, dtype=torch.float32)

    def _sec(self, index: torch.Tensor) -> torch.Tensor:
        return torch.where(index >= 0, index, torch.full_like(index, INT64_MAX))

    def update(self, f: torch.Tensor, key: torch.Tensor, g: torch.Tensor, v: torch.Tensor) -> None:
        """Offer entries (latent f, key, token index g, value v) [E]."""
        # only entries that beat their latent's current R-th best can enter (exact, and most of
        # a batch once the pass is under way)
        last_key, last_index = self.key[f, -1], self._sec(self.index[f, -1])
        better = (key < last_key) | ((key == last_key) & (g < last_index))
        f, key, g, v = f[better], key[better], g[better], v[better]
        if f.numel() == 0:
            return
        rows, inv = torch.unique(f, return_inverse=True)
        o = _lexsort(key, g)
        o = o[torch.argsort(inv[o], stable=True)]
        inv, key, g, v = inv[o], key[o], g[o], v[o]
        counts = torch.bincount(inv, minlength=rows.numel())
        starts = torch.cumsum(counts, 0) - counts
        rank = torch.arange(inv.numel()) - starts[inv]
        keep = rank < self.r
        new = BestR(rows.numel(), self.r, self.key.dtype)
        ik, rk = inv[keep], rank[keep]
        new.key[ik, rk], new.index[ik, rk], new.value[ik, rk] = key[keep], g[keep], v[keep]
        self._merge_rows(rows, new)

    def merge(self, other: BestR) -> None:
        self._merge_rows(torch.arange(self.key.shape[0]), other)

    def _merge_rows(self, rows: torch.Tensor, other: BestR) -> None:
        key = torch.cat([self.key[rows], other.key], 1)
        index = torch.cat([self.index[rows], other.index], 1)
        value = torch.cat([self.value[rows], other.value], 1)
        o = _lexsort(key, self._sec(index), dim=1)[:, : self.r]
        self.key[rows], self.index[rows] = key.gather(1, o), index.gather(1, o)
        self.value[rows] = value.gather(1, o)

    def state(self, prefix: str) -> dict[str, torch.Tensor]:
        return {
            f"{prefix}.key": self.key,
            f"{prefix}.index": self.index,
            f"{prefix}.value": self.value,
        }

    def load(self, prefix: str, state: dict[str, torch.Tensor]) -> None:
        self.key, self.index = state[f"{prefix}.key"], state[f"{prefix}.index"]
        self.value = state[f"{prefix}.value"]


class Accumulators:
    """Every streaming statistic of one pass (see the module docstring)."""

    SUM_SCALE = 2**20

    def __init__(
        self,
        n_latents: int,
        top_k: int,
        sample: int,
        hist_edges: torch.Tensor,
        coactivation: bool,
        coact_per_token: int,
    ) -> None:
        F = n_latents
        self.n_latents = F
        self.edges = hist_edges.double()
        self.n_tokens = torch.zeros((), dtype=torch.int64)
        self.count = torch.zeros(F, dtype=torch.int64)
        self.sum_fixed = torch.zeros(F, dtype=torch.int64)
        self.max = torch.zeros(F, dtype=torch.float32)
        self.hist = torch.zeros(F, len(hist_edges) + 1, dtype=torch.int64)
        self.top = BestR(F, top_k, torch.float32)
        self.sample = BestR(F, sample, torch.int64)
        self.coact_per_token = coact_per_token
        self.coact = torch.zeros(F, F, dtype=torch.int32) if coactivation else None

    def update(self, values: torch.Tensor, indices: torch.Tensor, rows: torch.Tensor,
               n_scored: int) -> None:  # fmt: skip
        """One batch: a padded code (values, indices [N, k], zero values are absent entries) and
        each row's global token index ``rows`` [N] (-1: not scored, e.g. a BOS position)."""
        values, indices = values.float(), indices.long()
        present = (values > 0) & (rows >= 0)[:, None]
        self.n_tokens += n_scored
        f = indices[present]
        v = values[present]
        g = rows[:, None].expand_as(indices)[present]
        F = self.n_latents
        self.count += torch.bincount(f, minlength=F)
        self.sum_fixed.index_add_(0, f, torch.round(v.double() * self.SUM_SCALE).long())
        self.max.scatter_reduce_(0, f, v, reduce="amax")
        bins = torch.bucketize(v.double(), self.edges, right=True)
        width = self.hist.shape[1]
        self.hist.view(-1).index_add_(0, f * width + bins, torch.ones_like(f))
        self.top.update(f, -v, g, v)
        self.sample.update(f, mix64(g * F + f), g, v)
        if self.coact is not None:
            self._coact(values, indices, present)

    def _coact(self, values: torch.Tensor, indices: torch.Tensor, present: torch.Tensor) -> None:
        m = self.coact_per_token
        if indices.shape[1] > m:  # only each token's m largest activations are paired
            v = torch.where(present, values, torch.full_like(values, -1.0))
            top = v.topk(m, dim=1)
            indices, present = indices.gather(1, top.indices), top.values > 0
        rows = torch.nonzero(present.any(1)).flatten()
        idx, ok = indices[rows], present[rows]
        n = idx.shape[1]
        pair_ok = ok[:, :, None] & ok[:, None, :] & ~torch.eye(n, dtype=torch.bool)
        flat = (idx[:, :, None] * self.n_latents + idx[:, None, :])[pair_ok]
        self.coact.view(-1).index_add_(0, flat, torch.ones_like(flat, dtype=torch.int32))

    def merge(self, other: Accumulators) -> None:
        self.n_tokens += other.n_tokens
        self.count += other.count
        self.sum_fixed += other.sum_fixed
        self.max = torch.maximum(self.max, other.max)
        self.hist += other.hist
        self.top.merge(other.top)
        self.sample.merge(other.sample)
        if self.coact is not None and other.coact is not None:
            self.coact += other.coact

    def state(self) -> dict[str, torch.Tensor]:
        s = {
            "n_tokens": self.n_tokens.reshape(1),
            "count": self.count,
            "sum_fixed": self.sum_fixed,
            "max": self.max,
            "hist": self.hist,
            **self.top.state("top"),
            **self.sample.state("sample"),
        }
        if self.coact is not None:
            s["coact"] = self.coact
        return {k: v.contiguous() for k, v in s.items()}

    def load(self, state: dict[str, torch.Tensor]) -> None:
        self.n_tokens = state["n_tokens"].reshape(())
        self.count, self.sum_fixed = state["count"], state["sum_fixed"]
        self.max, self.hist = state["max"], state["hist"]
        self.top.load("top", state)
        self.sample.load("sample", state)
        if self.coact is not None:
            self.coact = state["coact"]
