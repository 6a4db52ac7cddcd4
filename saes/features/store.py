"""The feature store: a folder that holds what the explorer shows for every latent of one SAE.

Layout (``RUN_DIR/features/`` by default; docs/formats.md, "The feature store format")::

    manifest.json           what was built from what, the settings, "complete", build costs
    features.safetensors    one row per latent (the arrays below), read one row at a time
    tokens.safetensors      tokens int32 [n_windows, context]: every window the build read
    vocab.safetensors       bytes uint8, offsets int64 [V+1]: each token id's bytes (exact text)
    codes/NNNNNN.safetensors  batch NNNNNN's codes as CSR over its windows' positions:
                              indptr int64 [rows+1], indices int32, values float32
                              (a row's entries in no particular order)

A token's global index is ``window * context + position``; batch b holds windows
``[b * batch_windows, (b + 1) * batch_windows)``. Every position but a window's BOS is scored.

``features.safetensors`` (F latents; -1 pads ids and indices where a latent has fewer entries):

=====================  ==================  =================================================
name                   shape, dtype        meaning
=====================  ==================  =================================================
count                  [F] int64           scored tokens where the latent is nonzero
sum_fixed              [F] int64           sum of its activations x 2^20 (exact under merge)
max                    [F] float32         largest activation
hist                   [F, B+2] int64      nonzero activations per log bin (first: below lo,
                                           last: at or above hi); edges in the manifest
top_index, top_value   [F, K] int64/f32    the K largest activations, ties by token index
sample_index,          [F, R] int64/f32    a uniform sample of its nonzero activations (the R
sample_value                               smallest hashes of (token, latent)): the quantiles
band_edges             [F, Q+1] float32    activation at the manifest's band quantiles
band_index, band_value [F, Q, E]           E sampled examples inside each band
logit_top_ids/values   [F, L] int32/f32    largest direct logit effects of the decoder row
logit_bottom_ids/...   [F, L]              most negative ones
neighbour_ids/cos      [F, N] int32/f32    nearest latents by decoder cosine
coact_ids/counts       [F, C] int32/int64  latents most often nonzero on the same tokens
head_attribution       [F, H] float32      hook_z SAEs: each head's share of the decoder row
=====================  ==================  =================================================
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Any

import numpy as np
import torch

from interp.text import Vocab

FORMAT = "interp.feature_store"
VERSION = 1
SUM_SCALE = 2**20  # fixed-point scale of sum_fixed: integer sums are the same in any order


class StoreError(ValueError):
    """A feature store folder that is missing, incomplete or inconsistent (names the file)."""


def shard_name(batch: int) -> str:
    return f"codes/{batch:06d}.safetensors"


def hist_edges(lo: float, hi: float, per_decade: int) -> torch.Tensor:
    """The log-spaced bin edges [B+1] from lo to hi."""
    n = round(math.log10(hi / lo) * per_decade)
    return torch.logspace(math.log10(lo), math.log10(hi), n + 1, dtype=torch.float64)


@dataclass
class Example:
    """One context: tokens ``[start, stop)`` of a window around the token at ``position``."""

    token_index: int  # global index (window * context + position)
    window: int
    position: int
    value: float  # the latent's activation at ``position``
    start: int
    tokens: list[int]
    acts: list[float]  # the latent's activation at every token of the context
    texts: list[str]  # each token's text (exact: joined they are the context's text)

    @property
    def center(self) -> int:
        """The index of ``position`` inside ``tokens``."""
        return self.position - self.start

    @property
    def text(self) -> str:
        return "".join(self.texts)

    def to_dict(self) -> dict[str, Any]:
        return {**self.__dict__, "center": self.center}


@dataclass
class Band:
    """Examples whose activation lies between two quantiles of the latent's nonzero activations."""

    q_lo: float
    q_hi: float
    lo: float
    hi: float
    examples: list[Example]
    tied_to: float | None = None  # merged ties: quantiles q_lo..tied_to all equal lo

    @property
    def tied(self) -> bool:
        """Both edges are the same activation: the quantiles q_lo and q_hi fall on one tied value."""
        return self.lo == self.hi


def merge_tied_bands(bands: list[Band]) -> list[Band]:
    """The bands as a reader should see them: a tied band (lo == hi) merged into the band above
    it, and consecutive empty bands merged into one.

    A band holds the sampled activations in [lo, hi) (the last one [lo, hi]), so a tied band of
    any but the top quantiles is empty by construction: its tied values lie in the band above,
    whose lower edge is that same value. Merging keeps each example where it is and makes the
    quantile range cover the tie (``25%-75%`` when the 25% and 50% quantiles are equal). A band
    can also be empty with distinct edges when the sample is small (the edges interpolate between
    two neighbouring sampled values); a run of such bands is shown as one. The result covers the
    same quantiles, in order, with the same examples; a latent whose sample is one value (e.g.
    one that fired once) is one band from 0% to 100% with lo == hi.
    """
    out: list[Band] = []
    pending: Band | None = None  # a tied band waiting for the band above it
    for j, b in enumerate(bands):
        if pending is not None:
            b = Band(pending.q_lo, b.q_hi, pending.lo, b.hi, b.examples, tied_to=pending.q_hi)
            pending = None
        if b.tied and j < len(bands) - 1:
            pending = b
            continue
        last = out[-1] if out else None
        if last is not None and not last.examples and not b.examples and last.tied_to is None:
            if b.tied_to is None:
                out[-1] = Band(last.q_lo, b.q_hi, last.lo, b.hi, [])
                continue
        out.append(b)
    return out


@dataclass
class Feature:
    """Everything the store holds for one latent."""

    index: int
    count: int
    n_tokens: int
    max: float
    mean: float  # of the nonzero activations
    hist_edges: list[float]
    hist_counts: list[int]  # len(hist_edges) + 1: below the first edge ... at/above the last
    top: list[Example]
    bands: list[Band]
    logit_top: list[tuple[int, str, float]]  # (token id, text, effect)
    logit_bottom: list[tuple[int, str, float]]
    neighbours: list[tuple[int, float]]  # (latent, decoder cosine)
    coactivation: list[tuple[int, int]]  # (latent, tokens where both are nonzero)
    head_attribution: list[float] | None = None
    n_sample: int = 0  # nonzero activations in the latent's sample (what the bands are cut from)
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def shown_bands(self) -> list[Band]:
        """The bands with tied ones merged (:func:`merge_tied_bands`): what the explorer shows."""
        return merge_tied_bands(self.bands)

    @property
    def density(self) -> float:
        return self.count / self.n_tokens if self.n_tokens else 0.0

    @property
    def dead(self) -> bool:
        return self.count == 0


class FeatureStore:
    """A built store, opened lazily: ``FeatureStore.open(path).feature(i)`` reads latent i only."""

    def __init__(self, folder: str | Path) -> None:
        self.folder = Path(folder)
        path = self.folder / "manifest.json"
        if not path.is_file():
            raise StoreError(
                f"no feature store at {self.folder} ({path.name} is missing); build one with "
                f"`interp dashboard build RUN_DIR`"
            )
        try:
            self.manifest: dict[str, Any] = json.loads(path.read_text())
        except json.JSONDecodeError as e:
            raise StoreError(f"{path}: not valid JSON ({e})") from e
        if self.manifest.get("format") != FORMAT:
            raise StoreError(f"{path}: format {self.manifest.get('format')!r}, expected {FORMAT!r}")
        if self.manifest.get("version") != VERSION:
            raise StoreError(f"{path}: version {self.manifest.get('version')}, expected {VERSION}")
        if not self.manifest.get("complete"):
            raise StoreError(
                f"{path}: the build did not finish (complete: false); run "
                f"`interp dashboard build` again and it resumes"
            )
        self._handles: dict[str, Any] = {}

    @classmethod
    def open(cls, folder: str | Path) -> FeatureStore:
        return cls(folder)

    # ---- the manifest's facts ------------------------------------------------------------------
    @property
    def d_sae(self) -> int:
        return int(self.manifest["d_sae"])

    @property
    def n_tokens(self) -> int:
        """Tokens scored (every position but each window's BOS)."""
        return int(self.manifest["n_tokens"])

    @property
    def context(self) -> int:
        return int(self.manifest["context_size"])

    @property
    def radius(self) -> int:
        return int(self.manifest["radius"])

    @property
    def n_windows(self) -> int:
        return int(self.manifest["n_windows"])

    @property
    def alive(self) -> torch.Tensor:
        """Indices of the latents that fired at least once."""
        return torch.nonzero(self.array("count") > 0).flatten()

    # ---- lazy reads ----------------------------------------------------------------------------
    def _open(self, name: str):
        if name not in self._handles:
            from safetensors import safe_open

            path = self.folder / name
            if not path.is_file():
                raise StoreError(f"{path} is missing from the feature store")
            self._handles[name] = safe_open(str(path), framework="pt")
        return self._handles[name]

    def array(self, name: str) -> torch.Tensor:
        """A whole per-latent array (e.g. ``count`` [F] for densities)."""
        return self._open("features.safetensors").get_tensor(name)

    def has(self, name: str) -> bool:
        return name in self._open("features.safetensors").keys()

    def row(self, name: str, i: int) -> torch.Tensor:
        return self._open("features.safetensors").get_slice(name)[i]

    @cached_property
    def vocab(self) -> Vocab:
        h = self._open("vocab.safetensors")
        return Vocab.from_tensors(h.get_tensor("bytes"), h.get_tensor("offsets"))

    def window_tokens(self, window: int) -> list[int]:
        return self._open("tokens.safetensors").get_slice("tokens")[window].tolist()

    @cached_property
    def all_tokens(self) -> torch.Tensor:
        """tokens [n_windows, context] (int32), read once (4 bytes a token)."""
        return self._open("tokens.safetensors").get_tensor("tokens")

    def token_at(self, token_index: torch.Tensor) -> torch.Tensor:
        """Token ids at global indices (any shape; -1 stays -1)."""
        flat = self.all_tokens.reshape(-1).long()
        out = flat[token_index.clamp(min=0)]
        return torch.where(token_index >= 0, out, torch.full_like(out, -1))

    def activations(self, window: int, start: int, stop: int, latent: int) -> list[float]:
        """The latent's activation at positions [start, stop) of a window (from the codes)."""
        bw = int(self.manifest["batch_windows"])
        batch, local = divmod(window, bw)
        h = self._open(shard_name(batch))
        r0 = local * self.context + start
        r1 = local * self.context + stop
        indptr = h.get_slice("indptr")[r0 : r1 + 1]
        a, b = int(indptr[0]), int(indptr[-1])
        idx = h.get_slice("indices")[a:b]
        val = h.get_slice("values")[a:b]
        # numpy, not torch: torch's repeat_interleave / searchsorted here took 7-23 ms a call on
        # a busy 2-core machine (its thread pool), 0.35 s of a page's 45 examples; numpy ~0.05 ms
        hit = idx.numpy() == latent
        rows = np.repeat(np.arange(stop - start), np.diff(indptr.numpy()))
        out = np.zeros(stop - start, dtype=np.float32)
        np.add.at(out, rows[hit], val.numpy()[hit].astype(np.float32))
        return out.tolist()

    def code_at(self, token_index: int) -> list[tuple[int, float]]:
        """Every (latent, activation) nonzero at one token, largest first."""
        window, pos = divmod(token_index, self.context)
        bw = int(self.manifest["batch_windows"])
        batch, local = divmod(window, bw)
        h = self._open(shard_name(batch))
        r = local * self.context + pos
        indptr = h.get_slice("indptr")[r : r + 2]
        a, b = int(indptr[0]), int(indptr[1])
        idx = h.get_slice("indices")[a:b].tolist()
        val = h.get_slice("values")[a:b].tolist()
        return sorted(zip(idx, val), key=lambda p: -p[1])

    def example(self, token_index: int, latent: int, radius: int | None = None) -> Example:
        """The context of one token (±radius, clipped to its window) with the latent's activations."""
        r = self.radius if radius is None else radius
        window, pos = divmod(int(token_index), self.context)
        start, stop = max(0, pos - r), min(self.context, pos + r + 1)
        toks = self.window_tokens(window)[start:stop]
        acts = self.activations(window, start, stop, latent)
        return Example(
            token_index=int(token_index),
            window=window,
            position=pos,
            value=acts[pos - start],
            start=start,
            tokens=toks,
            acts=acts,
            texts=self.vocab.token_texts(toks),
        )

    def _examples(self, index: torch.Tensor, latent: int) -> list[Example]:
        return [self.example(int(g), latent) for g in index.tolist() if g >= 0]

    def _id_list(self, ids: str, vals: str, i: int) -> list[tuple[int, float]]:
        if not self.has(ids):
            return []
        a, b = self.row(ids, i).tolist(), self.row(vals, i).tolist()
        return [(int(x), y) for x, y in zip(a, b) if x >= 0]

    def feature(self, i: int) -> Feature:
        """Latent i, read from disk (one row of each array and the codes of its examples)."""
        if not 0 <= i < self.d_sae:
            raise IndexError(f"latent {i} is outside this store (d_sae {self.d_sae})")
        count = int(self.row("count", i))
        mean = int(self.row("sum_fixed", i)) / SUM_SCALE / count if count else 0.0
        q = self.manifest["bands"]["quantiles"]
        bands = []
        if count:
            edges = self.row("band_edges", i).tolist()
            bidx = self.row("band_index", i)
            for j in range(len(q) - 1):
                examples = self._examples(bidx[j], i)
                bands.append(Band(q[j], q[j + 1], edges[j], edges[j + 1], examples))

        def logits(kind: str) -> list[tuple[int, str, float]]:
            pairs = self._id_list(f"logit_{kind}_ids", f"logit_{kind}_values", i)
            return [(t, self.vocab.label(t), v) for t, v in pairs]

        head = self.row("head_attribution", i).tolist() if self.has("head_attribution") else None
        return Feature(
            index=i,
            count=count,
            n_tokens=self.n_tokens,
            max=float(self.row("max", i)),
            mean=mean,
            hist_edges=self.manifest["hist"]["edges"],
            hist_counts=self.row("hist", i).tolist(),
            top=self._examples(self.row("top_index", i), i),
            bands=bands,
            logit_top=logits("top"),
            logit_bottom=logits("bottom"),
            neighbours=self._id_list("neighbour_ids", "neighbour_cos", i),
            coactivation=[(a, int(b)) for a, b in self._id_list("coact_ids", "coact_counts", i)],
            head_attribution=head,
            n_sample=int((self.row("sample_index", i) >= 0).sum()) if count else 0,
        )

    def densities(self) -> torch.Tensor:
        return self.array("count").double() / max(1, self.n_tokens)

    def top_token_of(self, i: int) -> int | None:
        """The token id at latent i's largest activation (None for a dead latent)."""
        t = int(self.token_at(self.row("top_index", i)[:1])[0])
        return None if t < 0 else t

    def latents_with_top_token(self, token: int) -> list[int]:
        """Latents whose largest activation is on token id ``token``, most frequent first."""
        top = self.token_at(self.array("top_index")[:, 0])
        hits = torch.nonzero(top == token).flatten()
        return hits[torch.argsort(self.array("count")[hits], descending=True)].tolist()

    def search(self, text: str, limit: int = 50, radius: int = 4) -> list[int]:
        """Latents one of whose 5 top examples (±radius tokens) contains ``text``, most frequent
        first. Reads only the token ids (no codes)."""
        if not text:
            return []
        top = self.array("top_index")[:, :5]
        flat = self.all_tokens.reshape(-1).tolist()
        vocab, found = self.vocab, []
        for i in torch.argsort(self.array("count"), descending=True).tolist():
            for g in top[i].tolist():
                if g < 0:
                    break
                w0 = g - g % self.context
                lo, hi = max(w0, g - radius), min(w0 + self.context, g + radius + 1)
                if text in vocab.text(flat[lo:hi]):
                    found.append(i)
                    break
            if len(found) >= limit:
                break
        return found
