"""Streaming per-latent statistics over batches of sparse codes, each exactly mergeable.

A pass feeds every batch's nonzero entries (latent f, global token index g, activation v) to
:class:`Accumulators`. Its state is a few tensors whose size does not depend on the number of
tokens, and two states merge into exactly the state of one pass over both sets of batches,
whatever the split (ranks, or a run resumed from a checkpoint):

* counts, histograms and co-activation counts are integer sums;
* the sum of activations is kept in fixed point (``round(v * 2^20)``, int64), so it is exact;
* the maximum is a maximum;
* the top K and the quantile sample are "the R smallest keys" per latent (:class:`BestR`), with
  keys unique per latent, so the best R of a union is the best R of the parts' best R:

  - top K: ``top_key(v, g)``, largest activation first, ties by token index;
  - sample: ``sample_key(g, f)``, a hash of (token, latent), ties by token index: the R smallest
    are a uniform sample without replacement of the latent's nonzero activations.

Cost (what the feature store's build adds to the model forward): entries that cannot enter a
latent's best R are dropped by one comparison with its current R-th key, and the survivors are
merged into the sorted rows by binary search (no re-sort of the state). Co-activation counts
each unordered pair once: a token's latent ids sorted ascending give the pairs (a < b) as
``a * (F + 1) + b``, counted in the upper triangle of an (F+1) x (F+1) int32 matrix whose last
row and column take the pairs with an absent entry (id F); :meth:`Accumulators.coactivation`
returns the symmetric F x F counts.
"""

from __future__ import annotations

import torch

INT64_MAX = torch.iinfo(torch.int64).max
KEY_PAD = INT64_MAX
MAX_TOKENS = (1 << 32) - 1  # token indices live in a key's low 32 bits
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


def top_key(v: torch.Tensor, g: torch.Tensor) -> torch.Tensor:
    """Key of the top K: smaller for a larger activation ``v`` (> 0), then a smaller token index.

    A positive float32's bit pattern orders as its value, so the key is ``(2^31 - 1 - bits(v))``
    in the high 32 bits and ``g`` in the low 32.
    """
    bits = v.float().contiguous().view(torch.int32).long()
    return ((0x7FFFFFFF - bits) << 32) | g


def sample_key(g: torch.Tensor, f: torch.Tensor, n_latents: int) -> torch.Tensor:
    """Key of the uniform sample: a 31-bit hash of (token, latent) high, the token index low."""
    return ((mix64(g * n_latents + f) >> 31) << 32) | g


class BestR:
    """Per latent, the R entries with the smallest int64 key, each row sorted ascending, and the
    entry's value; the key's low 32 bits are the token index. Padding: key ``KEY_PAD``, value 0.

    Offers are filtered against each row's current R-th key and buffered; the buffer is merged
    into the rows when it holds ``F * R / 4`` entries, and before the rows are read. A stale
    R-th key only lets more offers through, so the result is exact.
    """

    def __init__(self, n_latents: int, r: int) -> None:
        self.r = r
        self._key = torch.full((n_latents, r), KEY_PAD, dtype=torch.int64)
        self._value = torch.zeros(n_latents, r, dtype=torch.float32)
        self._pending: list[tuple[torch.Tensor, torch.Tensor, torch.Tensor]] = []
        self._n_pending = 0

    @property
    def key(self) -> torch.Tensor:
        self.flush()
        return self._key

    @property
    def value(self) -> torch.Tensor:
        self.flush()
        return self._value

    @property
    def index(self) -> torch.Tensor:
        """Token index [F, R] int64 (-1: padding)."""
        key = self.key
        return torch.where(key == KEY_PAD, torch.full_like(key, -1), key & MAX_TOKENS)

    def update(self, f: torch.Tensor, key: torch.Tensor, v: torch.Tensor) -> None:
        """Offer entries (latent f, key, value v) [E]; keys unique per latent."""
        better = key < self._key[f, -1]  # only these can enter
        self._pending.append((f[better], key[better], v[better]))
        self._n_pending += int(better.sum())
        if self._n_pending * 4 >= self._key.numel():
            self.flush()

    def flush(self) -> None:
        """Merge the buffered offers into the rows."""
        if not self._pending:
            return
        f, key, v = (torch.cat(t) for t in zip(*self._pending))
        self._pending, self._n_pending = [], 0
        if f.numel() == 0:
            return
        o = torch.argsort(key)
        o = o[torch.argsort(f[o], stable=True)]  # by (latent, key)
        f, key, v = f[o], key[o], v[o]
        rows, counts = torch.unique_consecutive(f, return_counts=True)
        n = rows.numel()
        row = torch.repeat_interleave(torch.arange(n), counts)
        first = torch.repeat_interleave(torch.cumsum(counts, 0) - counts, counts)
        slot = torch.arange(f.numel()) - first
        keep = slot < self.r  # a latent's (R+1)-th best offer cannot enter
        row, slot = row[keep], slot[keep]
        m = min(int(counts.max()), self.r)
        ck = torch.full((n, m), KEY_PAD, dtype=torch.int64)
        cv = torch.zeros(n, m, dtype=torch.float32)
        ck[row, slot], cv[row, slot] = key[keep], v[keep]
        self._merge_rows(rows, ck, cv)

    def merge(self, other: BestR) -> None:
        self._merge_rows(torch.arange(self.key.shape[0]), other.key, other.value)

    def _merge_rows(self, rows: torch.Tensor, ck: torch.Tensor, cv: torch.Tensor) -> None:
        """Merge sorted candidate rows [n, m] into state rows ``rows``: candidate j of a row goes
        before the state entries at or after its insertion point p_j, so it lands at p_j + j, and
        state entry i lands at i + #{j: p_j <= i}; the first R of the merged row are kept."""
        sk = self._key[rows]
        n, R = sk.shape
        m = ck.shape[1]
        p = torch.searchsorted(sk, ck)
        cpos = p + torch.arange(m)
        i = torch.arange(R).expand(n, R).contiguous()
        spos = i + torch.searchsorted(p, i, right=True)
        for name, cand, pad in (("_key", ck, KEY_PAD), ("_value", cv, 0.0)):
            state = getattr(self, name)
            merged = torch.full((n, R + m), pad, dtype=state.dtype)
            merged.scatter_(1, spos, state[rows])
            merged.scatter_(1, cpos, cand)
            state[rows] = merged[:, :R]

    def state(self, prefix: str) -> dict[str, torch.Tensor]:
        return {f"{prefix}.key": self.key, f"{prefix}.value": self.value}

    def load(self, prefix: str, state: dict[str, torch.Tensor]) -> None:
        self._pending, self._n_pending = [], 0
        self._key, self._value = state[f"{prefix}.key"], state[f"{prefix}.value"]


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
        self.top = BestR(F, top_k)
        self.sample = BestR(F, sample)
        self.coact_per_token = coact_per_token
        self.coact = torch.zeros(F + 1, F + 1, dtype=torch.int32) if coactivation else None
        self._ones = torch.ones(0, dtype=torch.int32)

    def update(self, values: torch.Tensor, indices: torch.Tensor, rows: torch.Tensor,
               n_scored: int) -> None:  # fmt: skip
        """One batch: a padded code (values, indices [N, k], zero values are absent entries) and
        each row's global token index ``rows`` [N] (-1: not scored, e.g. a BOS position)."""
        if int(rows.max()) > MAX_TOKENS:
            raise ValueError(f"token index {int(rows.max()):,} is over {MAX_TOKENS:,}")
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
        self.top.update(f, top_key(v, g), v)
        self.sample.update(f, sample_key(g, f, F), v)
        if self.coact is not None:
            self._coact(values, indices, present)

    def _coact(self, values: torch.Tensor, indices: torch.Tensor, present: torch.Tensor) -> None:
        m, F = self.coact_per_token, self.n_latents
        if indices.shape[1] > m:  # only each token's m largest activations are paired
            top = torch.where(present, values, torch.full_like(values, -1.0)).topk(m, dim=1)
            indices, present = indices.gather(1, top.indices), top.values > 0
        small = (F + 1) ** 2 < 2**31  # int32 keys: half the memory traffic
        if indices.shape[1] < 2:  # one latent per token: no pairs
            return
        ids = torch.where(present, indices, torch.full_like(indices, F)).sort(1).values
        ids = ids.int() if small else ids
        row = ids * (F + 1)  # pairs (ids[i], ids[j]) for i < j, one slice per i
        flat = torch.cat([row[:, i : i + 1] + ids[:, i + 1 :] for i in range(ids.shape[1] - 1)], 1)
        flat = flat.flatten()
        if self._ones.numel() < flat.numel():
            self._ones = torch.ones(flat.numel(), dtype=torch.int32)
        self.coact.view(-1).index_add_(0, flat, self._ones[: flat.numel()])

    def coactivation(self, latents: torch.Tensor) -> torch.Tensor:
        """Co-activation counts [len(latents), F] int64 of the given latents with every latent
        (symmetric; zero on the diagonal)."""
        F = self.n_latents
        upper = self.coact[latents, :F].long()
        return upper + self.coact[:F, latents].T.long()

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
