"""Activation sources for training: live capture from a model, or an on-disk activation cache.

Both implement :class:`ActivationSource`: buffer blocks of rows, shuffled into fixed-size batches
by ``interp.activations.shuffled_batches``, resumable at (block, batch) without replaying the
stream. The trainer asks the protocol, never which kind of source it has.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence
from functools import cached_property
from typing import Any, Protocol

import torch

from interp.activation_files import ActivationFiles
from interp.activations import (
    ActivationBatch,
    ActivationCapture,
    capture_blocks,
    shuffled_batches,
)
from interp.data import token_windows
from interp.hooks import hook_dim
from interp.models import load_model
from saes.training.config import RunConfig


class ActivationSource(Protocol):
    """What the training loop reads activations through."""

    hooks: list[str]
    dims: dict[str, int]  # each hook's width
    live: bool  # True: a model forward per block (the model shares the rank's memory)
    with_grads: bool  # batches carry dL/dx

    @property
    def rows_per_block(self) -> int: ...  # rows of one buffer block (the memory plan's unit)

    @property
    def forward_model(self) -> Any: ...  # the model run during training, or None

    @property
    def stop_at_layer(self) -> int | None: ...  # blocks a forward runs (None: all, or no model)

    @property
    def model(self) -> Any: ...  # the model, loaded when first asked (for evaluation)

    def check_width(self, hook: str, d_in: int | None, model_name: str | None) -> None: ...

    def blocks(self, start_block: int = 0) -> Iterator[ActivationBatch]: ...

    def sample_batch(self, n_tokens: int) -> ActivationBatch: ...

    def batches(
        self, batch_tokens: int, start_block: int = 0, skip_batches: int = 0
    ) -> Iterator[tuple[int, int, ActivationBatch]]: ...


class LiveSource:
    """Activations captured from the model as training goes (one forward per batch of windows)."""

    def __init__(
        self, cfg: RunConfig, model=None, with_grads: bool = False, hooks: list[str] | None = None
    ) -> None:
        self.cfg = cfg
        self.hooks = list(hooks or [cfg.data.hook])  # several hooks: one forward serves them all
        self.model = (
            model
            if model is not None
            else load_model(cfg.data.model, device=cfg.device, dtype=cfg.data.model_dtype)
        )
        self.capture = ActivationCapture(
            self.model,
            self.hooks,
            with_grads=with_grads,
            dtype=cfg.data.activation_dtype,
            skip_positions=cfg.data.skip_positions,
            max_norm_ratio=cfg.data.max_norm_ratio,
        )
        self.dims = {h: hook_dim(self.model, h) for h in self.hooks}
        self.d_in = self.dims.get(cfg.data.hook) or self.dims[self.hooks[0]]

    live = True

    @property
    def with_grads(self) -> bool:
        return self.capture.with_grads

    @property
    def rows_per_block(self) -> int:
        return self.cfg.data.windows_per_block * (self.cfg.data.context_size - 1)

    @property
    def forward_model(self):
        return self.model

    @property
    def stop_at_layer(self) -> int | None:
        return self.capture.stop_at_layer

    def check_width(self, hook: str, d_in: int | None, model_name: str | None) -> None:
        if d_in is not None and hook in self.dims and d_in != self.dims[hook]:
            raise ValueError(
                f"d_in mismatch: hook {hook!r} of {model_name!r} has d_in={self.dims[hook]}, "
                f"the config asks for d_in={d_in}"
            )

    def windows(self, split: str = "train") -> Iterator[torch.Tensor]:
        return token_windows(
            self.model.tokenizer,
            source=self.cfg.data.source,
            context_size=self.cfg.data.context_size,
            split=split,
            seed=self.cfg.data.seed,
        )

    def blocks(self, start_block: int = 0) -> Iterator[ActivationBatch]:
        return capture_blocks(
            self.capture,
            self.windows(),
            self.cfg.data.windows_per_block,
            self.cfg.data.batch_windows,
            start_block=start_block,
        )

    def sample_batch(self, n_tokens: int) -> ActivationBatch:
        """The first ``n_tokens`` rows of the stream, for every hook."""
        rows = []
        got = 0
        it = self.windows()
        while got < n_tokens:
            chunk = [w for _, w in zip(range(self.cfg.data.batch_windows), it)]
            if not chunk:
                break
            batch = self.capture(torch.stack(chunk))
            rows.append(batch)
            got += len(batch)
        if not rows:
            raise ValueError(f"source {self.cfg.data.source!r} produced no tokens")
        return ActivationBatch.concat(rows).select(slice(0, n_tokens))

    def batches(self, batch_tokens: int, start_block: int = 0, skip_batches: int = 0):
        return shuffled_batches(
            self.blocks(start_block), batch_tokens, self.cfg.data.seed, start_block, skip_batches
        )


class ActivationFilesSource:
    """Activations read from an on-disk cache (memory-mapped); the model is loaded only to evaluate."""

    def __init__(
        self, cfg: RunConfig, with_grads: bool = False, hooks: list[str] | None = None
    ) -> None:
        self.cfg = cfg
        self.hooks = list(hooks or [cfg.data.hook])
        self.cache = ActivationFiles(
            cfg.data.cache,  # type: ignore[arg-type]
            allow_incomplete=cfg.data.cache_allow_incomplete,
        )
        for h in self.hooks:
            self.cache.check_hook(h)
        if with_grads and not self.cache.manifest.has_grads:
            raise ValueError(
                f"variant {cfg.sae.variant!r} needs gradients but cache {cfg.data.cache} has none"
            )
        self.with_grads = with_grads
        self.dims = {h: self.cache.d_in(h) for h in self.hooks}
        self.d_in = self.dims.get(cfg.data.hook) or self.dims[self.hooks[0]]
        self.train_rows = training_rows(cfg, self.cache)  # None: all; else before the held-out tail

    live = False
    forward_model = None
    stop_at_layer = None

    @cached_property
    def model(self):
        return load_model(
            self.cfg.data.model, device=self.cfg.device, dtype=self.cfg.data.model_dtype
        )

    @property
    def rows_per_block(self) -> int:
        return self.cfg.data.buffer_tokens

    def check_width(self, hook: str, d_in: int | None, model_name: str | None) -> None:
        if hook in self.dims:
            self.cache.check_hook(hook, d_in=d_in)

    def blocks(self, start_block: int = 0) -> Iterator[ActivationBatch]:
        rows = self.cfg.data.buffer_tokens
        skip = start_block * rows
        pending: list[ActivationBatch] = []
        have = 0
        parts = self.cache.batches(self.hooks, with_grads=self.with_grads)
        for part in take_rows(parts, self.train_rows):
            if skip >= len(part):
                skip -= len(part)
                continue
            if skip:
                part, skip = part.select(slice(skip, None)), 0
            pending.append(part)
            have += len(part)
            while have >= rows:
                merged = ActivationBatch.concat(pending)
                yield merged.select(slice(0, rows))
                rest = merged.select(slice(rows, None))
                pending, have = ([rest] if len(rest) else []), len(rest)
        if have >= self.cfg.data.batch_tokens:
            yield ActivationBatch.concat(pending)

    def sample_batch(self, n_tokens: int) -> ActivationBatch:
        return next(self.blocks()).select(slice(0, n_tokens))

    def batches(self, batch_tokens: int, start_block: int = 0, skip_batches: int = 0):
        return shuffled_batches(
            self.blocks(start_block), batch_tokens, self.cfg.data.seed, start_block, skip_batches
        )


# ---- held-out rows of a cache ------------------------------------------------------------------
def take_rows(parts: Iterable[ActivationBatch], n: int | None) -> Iterator[ActivationBatch]:
    """The first ``n`` rows of a stream of batches (None: all of them)."""
    left = n
    for part in parts:
        if left is not None:
            if left <= 0:
                return
            if len(part) > left:
                part = part.select(slice(0, left))
            left -= len(part)
        yield part


def cache_rows(
    cache: ActivationFiles,
    hooks: Sequence[str],
    start: int = 0,
    stop: int | None = None,
    with_grads: bool = False,
) -> Iterator[ActivationBatch]:
    """Rows ``[start, stop)`` of a cache in stream order (shards wholly before ``start`` are not
    read)."""
    stop = len(cache) if stop is None else min(stop, len(cache))
    offset, first = 0, None
    for i, s in enumerate(cache.manifest.shards):
        if offset + s["tokens"] > start:
            first = i
            break
        offset += s["tokens"]
    if first is None or start >= stop:
        return
    shards = range(first, len(cache.manifest.shards))
    for part in cache.batches(hooks, with_grads=with_grads, shard_indices=shards):
        n = len(part)
        a, b = max(start - offset, 0), min(stop - offset, n)
        offset += n
        if a < b:
            yield part if (a, b) == (0, n) else part.select(slice(a, b))
        if offset >= stop:
            return


def usable_rows(rows: int, buffer_tokens: int, batch_tokens: int) -> int:
    """Rows of a stream of ``rows`` that training batches use (each block's remainder under one
    batch is dropped, and a last block under one batch is not served)."""
    full, rest = divmod(rows, buffer_tokens)
    per_block = buffer_tokens // batch_tokens * batch_tokens
    return full * per_block + (rest // batch_tokens * batch_tokens)


def holdout_range(cfg: RunConfig, cache: ActivationFiles) -> tuple[int, int] | None:
    """The rows ``[start, stop)`` at the end of ``data.cache`` held out of training for evaluation
    (``eval.holdout_tokens``), or None when none are."""
    n = cfg.resolved_holdout_tokens
    if not n:
        return None
    total = len(cache)
    if n >= total:
        raise ValueError(
            f"eval.holdout_tokens ({n}) holds out all of cache {cache.folder} ({total} rows): "
            "nothing is left to train on; lower it or pass a separate eval.cache"
        )
    return total - n, total


def training_rows(cfg: RunConfig, cache: ActivationFiles) -> int | None:
    """How many leading rows of ``data.cache`` training may read: those before the held-out tail
    (None: all). ``data.train_tokens`` more than the batches can take from them is an error."""
    held = holdout_range(cfg, cache)
    if held is None:
        return None
    rows = held[0]
    d = cfg.data
    usable = usable_rows(rows, d.buffer_tokens, d.batch_tokens)
    if d.train_tokens > usable:
        raise ValueError(
            f"data.train_tokens ({d.train_tokens}) is more than the {usable} rows training can read "
            f"from cache {cache.folder}: it holds {held[1]} rows, of which the last "
            f"{held[1] - rows} (rows {rows}..{held[1] - 1}) are held out for evaluation "
            f"(eval.holdout_tokens), leaving {rows} (in whole batches of {d.batch_tokens} per "
            f"buffer block of {d.buffer_tokens}: {usable}). Lower data.train_tokens to at most "
            f"{usable}, lower eval.holdout_tokens, or pass a separate eval.cache"
        )
    return rows
