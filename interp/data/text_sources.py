"""Text sources: :class:`TextSource` turns a source spec into the documents of a split.

Sources (all deterministic, all yielding documents as ``str``):

* ``"stdlib"`` (default): the running Python's standard-library ``.py`` files (code) plus the
  pydoc topic texts from ``pydoc_data.topics`` (English prose), about 31 MB. ``site-packages`` is
  excluded; files that are not valid UTF-8 (a handful of deliberate encoding fixtures in
  ``test/``) are *skipped*; ``pydoc_data/topics.py`` itself is left out as code because its
  strings are added as prose, one document per topic.
* a local path, directory (recursive; hidden entries skipped) or glob of ``.txt``/``.md``/``.py``
  (one document per file, decoded as UTF-8 with ``errors="replace"``), ``.jsonl`` (one document
  per line, field ``text_field``; blank lines skipped) and ``.parquet`` (column ``text_field``, via
  pyarrow). Empty and null texts are skipped everywhere.
* ``"hf:NAME"`` / ``"hf:NAME:CONFIG"``: ``datasets.load_dataset(NAME, CONFIG, streaming=True)``;
  NAME may be a hub name or a local dataset folder; a folder written by ``save_to_disk`` is read
  with ``datasets.load_from_disk``.

Train/validation split rule: a key is in *validation* iff
``int.from_bytes(sha256(key.encode()).digest()[:8], "big") % 100 < val_percent``.
The key is the file's path relative to the source root (POSIX form) for the stdlib and for
multi-file local sources (split **by file**); ``"pydoc_data/topics.py::<topic>"`` for the stdlib
prose; the document's index (``str(i)``) for a single local file and for a Hugging Face dataset
that has no ``validation`` split of its own (its ``train`` split is divided by index). A Hugging
Face dataset that has the requested split is used as is.
"""

from __future__ import annotations

import hashlib
import random
import sys
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from interp.data.readers import (
    TEXT_SUFFIXES,
    TOPICS_REL,
    Unit,
    file_unit,
    hf_docs,
    hf_open,
    is_saved_to_disk,
    parse_hf,
    pydoc_topics,
    resolve_files,
    stdlib_files,
    stdlib_root,
    stdlib_units,
)

SPLITS: tuple[str, ...] = ("train", "validation")
_SPLIT_ALIASES = {"val": "validation", "valid": "validation"}
SPLIT_RULE = "sha256(key)[:8] as big-endian int % 100 < val_percent -> validation"


# ----------------------------------------------------------------------------- split rule


def in_validation(key: str, val_percent: int) -> bool:
    """The split rule: whether ``key`` belongs to the validation split."""
    digest = hashlib.sha256(key.encode("utf-8")).digest()
    return int.from_bytes(digest[:8], "big") % 100 < val_percent


def _normalize_split(split: str, valid: Sequence[str] = SPLITS) -> str:
    if not isinstance(split, str):
        raise ValueError(f"split must be a string, one of {list(valid)}; got {split!r}")
    s = _SPLIT_ALIASES.get(split, split)
    if s not in valid:
        raise ValueError(f"unknown split {split!r}; valid splits: {', '.join(map(repr, valid))}")
    return s


def _check_val_percent(val_percent: int) -> int:
    if isinstance(val_percent, bool) or not isinstance(val_percent, int):
        raise ValueError(f"val_percent must be an int in [0, 100], got {val_percent!r}")
    if not 0 <= val_percent <= 100:
        raise ValueError(f"val_percent must be in [0, 100], got {val_percent}")
    return val_percent


def stdlib_info(val_percent: int = 5) -> dict[str, Any]:
    """Counts for the stdlib source: files, prose docs and UTF-8 bytes per split.

    Reads every file once (~0.1 s) to find the non-UTF-8 ones, which are skipped.
    """
    _check_val_percent(val_percent)
    root = stdlib_root()
    info: dict[str, Any] = {
        "python": sys.version.split()[0],
        "stdlib_path": str(root),
        "skipped_non_utf8": [],
        "split_rule": SPLIT_RULE,
        "val_percent": val_percent,
    }
    per = {s: {"files": 0, "prose_docs": 0, "bytes": 0} for s in SPLITS}
    for rel, path in stdlib_files(str(root)):
        data = Path(path).read_bytes()
        try:
            data.decode("utf-8")
        except UnicodeDecodeError:
            info["skipped_non_utf8"].append(rel)
            continue
        s = per["validation" if in_validation(rel, val_percent) else "train"]
        s["files"] += 1
        s["bytes"] += len(data)
    for name, text in pydoc_topics().items():
        s = per["validation" if in_validation(f"{TOPICS_REL}::{name}", val_percent) else "train"]
        s["prose_docs"] += 1
        s["bytes"] += len(text.encode("utf-8"))
    info["splits"] = per
    info["total_bytes"] = sum(s["bytes"] for s in per.values())
    return info


def count_stdlib_bytes(split: str | None = None, val_percent: int = 5) -> int:
    """UTF-8 bytes of the stdlib source, of one split or (``split=None``) of both."""
    info = stdlib_info(val_percent)
    if split is None:
        return int(info["total_bytes"])
    return int(info["splits"][_normalize_split(split)]["bytes"])


# ----------------------------------------------------------------------------- shuffling


def buffer_shuffle(items: Iterable[Any], size: int, rng: random.Random) -> Iterator[Any]:
    """Deterministic approximate shuffle with a pool of ``size`` items (lazy)."""
    if size <= 1:
        yield from items
        return
    pool: list[Any] = []
    for item in items:
        if len(pool) < size:
            pool.append(item)
            continue
        i = rng.randrange(size)
        yield pool[i]
        pool[i] = item
    rng.shuffle(pool)
    yield from pool


# ----------------------------------------------------------------------------- TextSource


@dataclass(frozen=True)
class TextSource:
    """A text source: ``"stdlib"``, a local path/directory/glob, or ``"hf:NAME[:CONFIG]"``.

    Local paths are resolved at construction (``FileNotFoundError`` if nothing matches).
    ``shuffle_buffer`` is the pool size of the seeded document shuffle for sources whose
    documents are not one per file (JSONL/parquet, Hugging Face); file-level sources are
    shuffled exactly by permuting their files.
    """

    spec: str = "stdlib"
    text_field: str = "text"
    val_percent: int = 5
    shuffle_buffer: int = 1000
    _base: Path | None = field(default=None, init=False, repr=False, compare=False)
    _files: tuple[tuple[str, Path], ...] = field(default=(), init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        if not isinstance(self.spec, str) or not self.spec:
            raise ValueError(f"source must be a non-empty string, got {self.spec!r}")
        if not isinstance(self.text_field, str) or not self.text_field:
            raise ValueError(f"text_field must be a non-empty string, got {self.text_field!r}")
        _check_val_percent(self.val_percent)
        check_int("shuffle_buffer", self.shuffle_buffer, 1)
        if self.kind == "hf":
            parse_hf(self.spec)
        elif self.kind == "files":
            base, files = resolve_files(self.spec)
            object.__setattr__(self, "_base", base)
            object.__setattr__(self, "_files", tuple(files))

    @property
    def kind(self) -> str:
        """``"stdlib"``, ``"hf"`` or ``"files"``."""
        if self.spec == "stdlib":
            return "stdlib"
        if self.spec.startswith("hf:"):
            return "hf"
        return "files"

    @property
    def split_by(self) -> str:
        """What the split hashes: ``"file"``, ``"document"`` (index) or ``"dataset"`` (hf)."""
        if self.kind == "stdlib":
            return "file"
        if self.kind == "files":
            return "file" if len(self._files) > 1 else "document"
        return "dataset"

    def describe(self) -> dict[str, Any]:
        """A JSON-able description for manifests (cheap: reads no document)."""
        d: dict[str, Any] = {
            "kind": self.kind,
            "source": self.spec,
            "text_field": self.text_field,
            "val_percent": self.val_percent,
            "split_rule": SPLIT_RULE,
            "split_by": self.split_by,
            "shuffle_buffer": self.shuffle_buffer,
        }
        if self.kind == "stdlib":
            root = stdlib_root()
            d.update(
                python=sys.version.split()[0],
                stdlib_path=str(root),
                n_files=len(stdlib_files(str(root))),
                n_prose_docs=len(pydoc_topics()),
                skips="site-packages excluded; non-UTF-8 files skipped when read (still counted "
                "in n_files); pydoc_data/topics.py read as prose, one document per topic",
            )
        elif self.kind == "files":
            d.update(base=str(self._base), n_files=len(self._files))
        else:
            name, config = parse_hf(self.spec)
            d.update(
                name=name,
                config=config,
                loader=(
                    "load_from_disk" if is_saved_to_disk(name) else "load_dataset(streaming=True)"
                ),
                split_note="a split the dataset has is used as is; a missing 'validation' is "
                "carved out of 'train' by document index",
            )
        return d

    # -- unit-level access (stdlib, local files)

    def _units(self) -> list[Unit]:
        if self.kind == "stdlib":
            return stdlib_units()
        return [file_unit(key, path, self.text_field) for key, path in self._files]

    def keys(self, split: str = "train") -> list[str]:
        """The files (relative keys) in ``split``, sorted; for file-split sources only."""
        split = _normalize_split(split)
        if self.split_by != "file":
            raise ValueError(f"source {self.spec!r} is split by {self.split_by}, not by file")
        want_val = split == "validation"
        return [u.key for u in self._units() if in_validation(u.key, self.val_percent) == want_val]

    def documents(self, split: str = "train", seed: int | None = None) -> Iterator[str]:
        """Documents of ``split`` in sorted order, or shuffled with ``seed``.

        Arguments are checked (and a Hugging Face dataset opened) now; documents are read lazily.
        ``ValueError`` at the end of iteration if the split produced no document at all.
        """
        if seed is not None and (isinstance(seed, bool) or not isinstance(seed, int)):
            raise ValueError(f"seed must be an int or None, got {seed!r}")
        if self.kind == "hf":
            gen = self._hf_documents(split, seed)
        else:
            split = _normalize_split(split)
            gen = self._unit_documents(split, seed)
        return self._nonempty(gen, split)

    def _nonempty(self, gen: Iterator[str], split: str) -> Iterator[str]:
        n = 0
        for doc in gen:
            n += 1
            yield doc
        if n == 0:
            raise ValueError(
                f"source {self.spec!r}, split {split!r} produced no documents "
                f"(val_percent={self.val_percent}, split by {self.split_by})"
            )

    def _unit_documents(self, split: str, seed: int | None) -> Iterator[str]:
        want_val = split == "validation"
        pct = self.val_percent
        units = self._units()
        if self.split_by == "file":
            units = [u for u in units if in_validation(u.key, pct) == want_val]
            if seed is not None:
                random.Random(seed).shuffle(units)
            docs: Iterator[str] = (doc for u in units for doc in u.read())
            multi = self.kind == "files" and any(
                not k.lower().endswith(TEXT_SUFFIXES) for k, _ in self._files
            )
        else:  # a single file: split by document index
            docs = (
                d for i, d in enumerate(units[0].read()) if in_validation(str(i), pct) == want_val
            )
            multi = True
        if seed is not None and multi:
            docs = buffer_shuffle(docs, self.shuffle_buffer, random.Random(seed))
        return docs

    def _hf_documents(self, split: str, seed: int | None) -> Iterator[str]:
        name, config = parse_hf(self.spec)
        splits = hf_open(name, config)
        s = _SPLIT_ALIASES.get(split, split)
        derive = "validation" not in splits and "train" in splits
        valid = sorted(set(splits) | ({"validation"} if derive else set()))
        if s not in valid:
            names = ", ".join(map(repr, valid))
            raise ValueError(f"unknown split {split!r} for {self.spec}; valid splits: {names}")
        where = f"{self.spec} [{s}]"
        if s in ("train", "validation") and derive:
            want_val = s == "validation"
            pct = self.val_percent
            docs: Iterator[str] = (
                d
                for i, d in enumerate(hf_docs(splits["train"], self.text_field, where))
                if in_validation(str(i), pct) == want_val
            )
        else:
            docs = hf_docs(splits[s], self.text_field, where)
        if seed is not None:
            docs = buffer_shuffle(docs, self.shuffle_buffer, random.Random(seed))
        return docs


def as_source(source: str | TextSource, source_kwargs: dict[str, Any]) -> TextSource:
    if isinstance(source, TextSource):
        if source_kwargs:
            raise TypeError(
                f"source options {sorted(source_kwargs)} given with a TextSource; set them on it"
            )
        return source
    return TextSource(source, **source_kwargs)


def iter_documents(
    source: str | TextSource = "stdlib",
    split: str = "train",
    text_field: str = "text",
    val_percent: int = 5,
    *,
    seed: int | None = None,
    shuffle_buffer: int = 1000,
) -> Iterator[str]:
    """Documents (str) of ``source``'s ``split``: sorted order, or shuffled with ``seed``."""
    if isinstance(source, TextSource):
        return source.documents(split, seed)
    src = TextSource(
        source, text_field=text_field, val_percent=val_percent, shuffle_buffer=shuffle_buffer
    )
    return src.documents(split, seed)


def check_int(name: str, value: Any, minimum: int, allow_none: bool = False) -> None:
    if value is None and allow_none:
        return
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        alt = " or None" if allow_none else ""
        raise ValueError(f"{name} must be an int >= {minimum}{alt}, got {value!r}")
