"""Token windows: documents tokenized, packed and cut into fixed-length windows and batches.

Packing: documents are tokenized (no special tokens added by the tokenizer, special-token text
inside documents encoded as plain text), each followed by EOS when the tokenizer has one,
concatenated, and cut into windows of ``context_size - 1`` tokens with BOS prepended (when the
tokenizer has a BOS and ``prepend_bos``), else ``context_size`` tokens. The trailing partial
window (and the last partial batch) is dropped.
"""

from __future__ import annotations

import random
from collections.abc import Iterator
from typing import Any

import numpy as np
import torch

from interp.data.text_sources import TextSource, as_source, buffer_shuffle, check_int


def _resolve_tokenizer(tokenizer: Any) -> Any:
    """Accept a tokenizer or a model carrying one (TransformerLens ``model.tokenizer``)."""
    if not hasattr(tokenizer, "bos_token_id") and hasattr(tokenizer, "tokenizer"):
        tokenizer = tokenizer.tokenizer
    if tokenizer is None or not callable(tokenizer):
        raise ValueError(
            "expected a Hugging Face tokenizer (or a model with .tokenizer), "
            f"got {type(tokenizer).__name__}"
        )
    return tokenizer


def _encode(tokenizer: Any, docs: list[str]) -> list[list[int]]:
    """Token ids of ``docs``: no special tokens added; special-token text stays plain text."""
    kwargs: dict[str, Any] = dict(add_special_tokens=False, verbose=False)
    backend = getattr(tokenizer, "backend_tokenizer", None)
    saved = getattr(backend, "encode_special_tokens", None)
    try:
        out = tokenizer(docs, split_special_tokens=True, **kwargs)
    except TypeError:  # older/other tokenizers without split_special_tokens
        out = tokenizer(docs, **kwargs)
    finally:  # fast tokenizers keep the flag on their backend; leave it as we found it
        if saved is not None and backend.encode_special_tokens != saved:
            backend.encode_special_tokens = saved
    return out["input_ids"]


def _token_chunks(
    tokenizer: Any,
    docs: Iterator[str],
    eos_id: int | None,
    max_docs: int = 64,
    max_chars: int = 1 << 20,
) -> Iterator[np.ndarray]:
    """Flat int64 token arrays, one per tokenizer call; batches grow 1, 2, 4, ... up to ``max_docs``
    (or ``max_chars`` characters), so a small request tokenizes little."""
    target = 1
    batch: list[str] = []
    chars = 0

    def flush() -> np.ndarray:
        ids = _encode(tokenizer, batch)
        sep = 1 if eos_id is not None else 0
        flat = np.empty(sum(len(x) for x in ids) + sep * len(ids), dtype=np.int64)
        pos = 0
        for x in ids:
            n = len(x)
            flat[pos : pos + n] = x
            pos += n
            if sep:
                flat[pos] = eos_id
                pos += 1
        return flat

    for doc in docs:
        batch.append(doc)
        chars += len(doc)
        if len(batch) >= target or chars >= max_chars:
            yield flush()
            batch, chars = [], 0
            target = min(2 * target, max_docs)
    if batch:
        yield flush()


def token_windows(
    tokenizer: Any,
    source: str | TextSource = "stdlib",
    context_size: int = 128,
    split: str = "train",
    seed: int | None = 0,
    prepend_bos: bool = True,
    max_windows: int | None = None,
    show_progress: bool = False,
    *,
    window_pool: int = 0,
    docs_per_call: int = 64,
    **source_kwargs: Any,
) -> Iterator[torch.Tensor]:
    """Fixed-length LongTensor windows ``[context_size]`` of the tokenized, packed source.

    ``seed`` shuffles the documents' order (``None``: sorted order, no shuffling) and, with
    ``window_pool > 0``, the windows within a pool of that many windows. ``source_kwargs`` go to
    :class:`TextSource` (``text_field``, ``val_percent``, ``shuffle_buffer``). Stops after
    ``max_windows`` windows or when the source is exhausted (the trailing partial window is
    dropped); ``ValueError`` if the source is too small for a single window.
    """
    tok = _resolve_tokenizer(tokenizer)
    check_int("context_size", context_size, 2)
    check_int("max_windows", max_windows, 1, allow_none=True)
    check_int("window_pool", window_pool, 0)
    check_int("docs_per_call", docs_per_call, 1)
    if window_pool > 0 and seed is None:
        raise ValueError("window_pool > 0 shuffles windows and needs a seed (got seed=None)")
    src = as_source(source, source_kwargs)
    docs = src.documents(split, seed)
    bos_id = getattr(tok, "bos_token_id", None) if prepend_bos else None
    eos_id = getattr(tok, "eos_token_id", None)
    return _windows(
        tok,
        docs,
        src,
        context_size,
        seed,
        bos_id,
        eos_id,
        max_windows,
        show_progress,
        window_pool,
        docs_per_call,
    )


def _windows(
    tok: Any,
    docs: Iterator[str],
    src: TextSource,
    context_size: int,
    seed: int | None,
    bos_id: int | None,
    eos_id: int | None,
    max_windows: int | None,
    show_progress: bool,
    window_pool: int,
    docs_per_call: int,
) -> Iterator[torch.Tensor]:
    from tqdm.auto import tqdm

    body = context_size - 1 if bos_id is not None else context_size

    def raw() -> Iterator[torch.Tensor]:
        carry = np.empty(0, dtype=np.int64)
        for chunk in _token_chunks(tok, docs, eos_id, max_docs=docs_per_call):
            buf = np.concatenate([carry, chunk]) if carry.size else chunk
            n = buf.size // body
            if n:
                rows = torch.from_numpy(buf[: n * body].reshape(n, body))
                if bos_id is not None:
                    rows = torch.cat([torch.full((n, 1), bos_id, dtype=torch.long), rows], dim=1)
                for row in rows:
                    yield row.clone()  # own memory: a kept window pins no chunk buffer
            carry = buf[n * body :].copy()

    stream: Iterator[torch.Tensor] = raw()
    if window_pool > 0:
        stream = buffer_shuffle(stream, window_pool, random.Random(f"windows:{seed}"))
    n = 0
    desc = f"tokenizing {src.spec}"
    with tqdm(total=max_windows, unit="win", desc=desc, disable=not show_progress) as bar:
        for w in stream:
            yield w
            n += 1
            bar.update(1)
            if max_windows is not None and n >= max_windows:
                return
    if n == 0:
        raise ValueError(
            f"source {src.spec!r} is too small for one window of {context_size} tokens"
        )


def token_batches(
    tokenizer: Any,
    source: str | TextSource = "stdlib",
    context_size: int = 128,
    split: str = "train",
    seed: int | None = 0,
    prepend_bos: bool = True,
    max_windows: int | None = None,
    show_progress: bool = False,
    *,
    batch_size: int = 32,
    max_batches: int | None = None,
    **kwargs: Any,
) -> Iterator[torch.Tensor]:
    """LongTensor batches ``[batch_size, context_size]`` of :func:`token_windows`.

    The last partial batch is dropped. ``max_batches`` limits the number of batches;
    other keyword arguments go to :func:`token_windows`.
    """
    check_int("batch_size", batch_size, 1)
    check_int("max_batches", max_batches, 1, allow_none=True)
    limit = max_batches * batch_size if max_batches is not None else None
    if max_windows is not None:
        limit = max_windows if limit is None else min(limit, max_windows)
    windows = token_windows(
        tokenizer, source, context_size, split, seed, prepend_bos, limit, show_progress, **kwargs
    )

    def gen() -> Iterator[torch.Tensor]:
        group: list[torch.Tensor] = []
        for w in windows:
            group.append(w)
            if len(group) == batch_size:
                yield torch.stack(group)
                group = []

    return gen()
