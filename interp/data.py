"""Text sources and fixed-length token windows.

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

Packing: documents are tokenized (no special tokens added by the tokenizer, special-token text
inside documents encoded as plain text), each followed by EOS when the tokenizer has one,
concatenated, and cut into windows of ``context_size - 1`` tokens with BOS prepended (when the
tokenizer has a BOS and ``prepend_bos``), else ``context_size`` tokens. The trailing partial
window (and the last partial batch) is dropped.
"""

from __future__ import annotations

import glob as _glob
import hashlib
import json
import os
import random
import sys
import sysconfig
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Any

import numpy as np
import torch

__all__ = [
    "SPLITS",
    "TEXT_SUFFIXES",
    "SUPPORTED_SUFFIXES",
    "TextSource",
    "in_validation",
    "iter_documents",
    "token_windows",
    "token_batches",
    "count_stdlib_bytes",
    "stdlib_info",
]

SPLITS: tuple[str, ...] = ("train", "validation")
_SPLIT_ALIASES = {"val": "validation", "valid": "validation"}
TEXT_SUFFIXES: tuple[str, ...] = (".txt", ".md", ".py")
SUPPORTED_SUFFIXES: tuple[str, ...] = TEXT_SUFFIXES + (".jsonl", ".parquet")
SPLIT_RULE = "sha256(key)[:8] as big-endian int % 100 < val_percent -> validation"
_TOPICS_REL = "pydoc_data/topics.py"


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


# ----------------------------------------------------------------------------- units


@dataclass(frozen=True)
class _Unit:
    """One file (or one prose topic): ``key`` for sorting/splitting, ``read`` yields its docs."""

    key: str
    read: Callable[[], Iterator[str]]


def _read_text_strict(path: Path) -> Iterator[str]:
    """A stdlib file: skipped when it is not valid UTF-8."""
    try:
        text = path.read_bytes().decode("utf-8")
    except (UnicodeDecodeError, OSError):
        return
    if text:
        yield text


def _read_text(path: Path) -> Iterator[str]:
    text = path.read_bytes().decode("utf-8", errors="replace")
    if text:
        yield text


def _check_value(value: Any, where: str, text_field: str) -> str | None:
    if value is None or isinstance(value, str):
        return value or None
    raise ValueError(f"{where}: field {text_field!r} is {type(value).__name__}, expected a string")


def _read_jsonl(path: Path, text_field: str) -> Iterator[str]:
    with open(path, encoding="utf-8", errors="replace") as f:
        for lineno, line in enumerate(f, 1):
            line = line.strip()
            if not line:
                continue
            try:
                record = json.loads(line)
            except json.JSONDecodeError as e:
                raise ValueError(f"{path}:{lineno}: invalid JSON ({e})") from None
            if not isinstance(record, dict):
                kind = type(record).__name__
                raise ValueError(f"{path}:{lineno}: expected a JSON object, got {kind}")
            if text_field not in record:
                raise ValueError(
                    f"{path}:{lineno}: no field {text_field!r}; available fields: "
                    f"{sorted(record)} (choose one with text_field=...)"
                )
            text = _check_value(record[text_field], f"{path}:{lineno}", text_field)
            if text is not None:
                yield text


def _read_parquet(path: Path, text_field: str) -> Iterator[str]:
    import pyarrow.parquet as pq

    pf = pq.ParquetFile(path)
    names = pf.schema_arrow.names
    if text_field not in names:
        raise ValueError(
            f"{path}: no column {text_field!r}; available fields: {names} "
            "(choose one with text_field=...)"
        )
    for batch in pf.iter_batches(columns=[text_field], batch_size=1024):
        for value in batch.column(0).to_pylist():
            text = _check_value(value, str(path), text_field)
            if text is not None:
                yield text


def _file_unit(key: str, path: Path, text_field: str) -> _Unit:
    suffix = path.suffix.lower()
    if suffix == ".jsonl":
        return _Unit(key, lambda: _read_jsonl(path, text_field))
    if suffix == ".parquet":
        return _Unit(key, lambda: _read_parquet(path, text_field))
    return _Unit(key, lambda: _read_text(path))


# ----------------------------------------------------------------------------- stdlib


def _stdlib_root() -> Path:
    return Path(sysconfig.get_paths()["stdlib"]).resolve()


@lru_cache(maxsize=4)
def _stdlib_files(root: str) -> tuple[tuple[str, str], ...]:
    """(relative POSIX path, absolute path) of the stdlib's ``.py`` files, sorted by path."""
    out: list[tuple[str, str]] = []
    for dirpath, dirnames, filenames in os.walk(root):
        rel_dir = os.path.relpath(dirpath, root)
        if rel_dir == ".":
            dirnames[:] = [d for d in dirnames if d != "site-packages"]
        dirnames.sort()
        for name in filenames:
            if not name.endswith(".py"):
                continue
            rel = Path(rel_dir, name).as_posix() if rel_dir != "." else name
            if rel == _TOPICS_REL:
                continue  # added as prose documents instead
            out.append((rel, os.path.join(dirpath, name)))
    out.sort()
    return tuple(out)


def _pydoc_topics() -> dict[str, str]:
    try:
        from pydoc_data.topics import topics
    except ImportError:  # some distributions strip pydoc_data
        return {}
    return {k: v for k, v in topics.items() if isinstance(v, str) and v}


def _stdlib_units() -> list[_Unit]:
    files = _stdlib_files(str(_stdlib_root()))
    units = [_Unit(rel, (lambda p=Path(p): _read_text_strict(p))) for rel, p in files]
    for name, text in _pydoc_topics().items():
        units.append(_Unit(f"{_TOPICS_REL}::{name}", (lambda t=text: iter((t,)))))
    units.sort(key=lambda u: u.key)
    return units


def stdlib_info(val_percent: int = 5) -> dict[str, Any]:
    """Counts for the stdlib source: files, prose docs and UTF-8 bytes per split.

    Reads every file once (~0.1 s) to find the non-UTF-8 ones, which are skipped.
    """
    _check_val_percent(val_percent)
    root = _stdlib_root()
    info: dict[str, Any] = {
        "python": sys.version.split()[0],
        "stdlib_path": str(root),
        "skipped_non_utf8": [],
        "split_rule": SPLIT_RULE,
        "val_percent": val_percent,
    }
    per = {s: {"files": 0, "prose_docs": 0, "bytes": 0} for s in SPLITS}
    for rel, path in _stdlib_files(str(root)):
        data = Path(path).read_bytes()
        try:
            data.decode("utf-8")
        except UnicodeDecodeError:
            info["skipped_non_utf8"].append(rel)
            continue
        s = per["validation" if in_validation(rel, val_percent) else "train"]
        s["files"] += 1
        s["bytes"] += len(data)
    for name, text in _pydoc_topics().items():
        s = per["validation" if in_validation(f"{_TOPICS_REL}::{name}", val_percent) else "train"]
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


# ----------------------------------------------------------------------------- local files


def _supported(path: Path) -> bool:
    return path.suffix.lower() in SUPPORTED_SUFFIXES


def _walk_dir(root: Path) -> list[Path]:
    out: list[Path] = []
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
        for name in filenames:
            p = Path(dirpath, name)
            if not name.startswith(".") and _supported(p):
                out.append(p)
    return out


def _glob_base(pattern: str) -> Path:
    """The longest leading run of path components without glob magic."""
    parts = Path(pattern).parts
    base: list[str] = []
    for part in parts[:-1]:
        if _glob.has_magic(part):
            break
        base.append(part)
    return Path(*base) if base else Path(".")


def _resolve_files(spec: str) -> tuple[Path, list[tuple[str, Path]]]:
    """(base folder, sorted [(relative key, path)]) for a file, directory or glob."""
    kinds = ", ".join(SUPPORTED_SUFFIXES)
    expanded = os.path.expanduser(spec)
    p = Path(expanded)
    if p.is_file():
        if not _supported(p):
            raise ValueError(f"unsupported file type {p.suffix!r} for {spec!r}; supported: {kinds}")
        return p.parent, [(p.name, p)]
    if p.is_dir():
        base, files = p, _walk_dir(p)
        if not files:
            raise FileNotFoundError(f"directory {spec!r} contains no {kinds} files")
    elif _glob.has_magic(expanded):
        base = _glob_base(expanded)
        matches = [Path(m) for m in _glob.glob(expanded, recursive=True)]
        files = [m for m in matches if m.is_file() and _supported(m)]
        if not files:
            extra = f" ({len(matches)} matches, none of them {kinds} files)" if matches else ""
            raise FileNotFoundError(f"glob {spec!r} matches no files{extra}")
    else:
        raise FileNotFoundError(
            f"no such file, directory or glob match: {spec!r} "
            "(a source is 'stdlib', 'hf:NAME[:CONFIG]', or a local path/directory/glob)"
        )
    keyed = sorted((Path(os.path.relpath(f, base)).as_posix(), f) for f in files)
    return base, keyed


# ----------------------------------------------------------------------------- Hugging Face


def _parse_hf(spec: str) -> tuple[str, str | None]:
    rest = spec[3:]
    if not rest:
        raise ValueError("empty Hugging Face dataset name; use 'hf:NAME' or 'hf:NAME:CONFIG'")
    if os.path.exists(os.path.expanduser(rest)) or ":" not in rest:
        return os.path.expanduser(rest), None
    name, config = rest.rsplit(":", 1)
    if not name or not config:
        raise ValueError(f"bad Hugging Face source {spec!r}; use 'hf:NAME' or 'hf:NAME:CONFIG'")
    return os.path.expanduser(name), config


def _is_saved_to_disk(name: str) -> bool:
    p = Path(name)
    return p.is_dir() and (
        (p / "dataset_dict.json").is_file()
        or ((p / "state.json").is_file() and (p / "dataset_info.json").is_file())
    )


def _hf_open(name: str, config: str | None) -> dict[str, Any]:
    """The dataset's splits: ``{split name: Dataset | IterableDataset}``."""
    import datasets

    if _is_saved_to_disk(name):
        if config is not None:
            raise ValueError(
                f"{name!r} is a save_to_disk folder; it takes no config (got {config!r})"
            )
        ds = datasets.load_from_disk(name)
        return dict(ds) if isinstance(ds, datasets.DatasetDict) else {"train": ds}
    ds = datasets.load_dataset(name, config, streaming=True)
    if isinstance(ds, (datasets.IterableDatasetDict, datasets.DatasetDict)):
        return dict(ds)
    return {"train": ds}


def _hf_docs(ds: Any, text_field: str, where: str) -> Iterator[str]:
    cols = getattr(ds, "column_names", None)
    if cols is not None and text_field not in cols:
        raise ValueError(
            f"{where}: no field {text_field!r}; available fields: {list(cols)} "
            "(choose one with text_field=...)"
        )
    if cols is not None and len(cols) > 1:
        ds = ds.select_columns([text_field])
    for batch in ds.iter(batch_size=256):
        if text_field not in batch:
            raise ValueError(f"{where}: no field {text_field!r}; available fields: {sorted(batch)}")
        for value in batch[text_field]:
            text = _check_value(value, where, text_field)
            if text is not None:
                yield text


# ----------------------------------------------------------------------------- shuffling


def _buffer_shuffle(items: Iterable[Any], size: int, rng: random.Random) -> Iterator[Any]:
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
        _check_int("shuffle_buffer", self.shuffle_buffer, 1)
        if self.kind == "hf":
            _parse_hf(self.spec)
        elif self.kind == "files":
            base, files = _resolve_files(self.spec)
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
            root = _stdlib_root()
            d.update(
                python=sys.version.split()[0],
                stdlib_path=str(root),
                n_files=len(_stdlib_files(str(root))),
                n_prose_docs=len(_pydoc_topics()),
                skips="site-packages excluded; non-UTF-8 files skipped when read (still counted "
                "in n_files); pydoc_data/topics.py read as prose, one document per topic",
            )
        elif self.kind == "files":
            d.update(base=str(self._base), n_files=len(self._files))
        else:
            name, config = _parse_hf(self.spec)
            d.update(
                name=name,
                config=config,
                loader=(
                    "load_from_disk" if _is_saved_to_disk(name) else "load_dataset(streaming=True)"
                ),
                split_note="a split the dataset has is used as is; a missing 'validation' is "
                "carved out of 'train' by document index",
            )
        return d

    # -- unit-level access (stdlib, local files)

    def _units(self) -> list[_Unit]:
        if self.kind == "stdlib":
            return _stdlib_units()
        return [_file_unit(key, path, self.text_field) for key, path in self._files]

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
            docs = _buffer_shuffle(docs, self.shuffle_buffer, random.Random(seed))
        return docs

    def _hf_documents(self, split: str, seed: int | None) -> Iterator[str]:
        name, config = _parse_hf(self.spec)
        splits = _hf_open(name, config)
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
                for i, d in enumerate(_hf_docs(splits["train"], self.text_field, where))
                if in_validation(str(i), pct) == want_val
            )
        else:
            docs = _hf_docs(splits[s], self.text_field, where)
        if seed is not None:
            docs = _buffer_shuffle(docs, self.shuffle_buffer, random.Random(seed))
        return docs


def _as_source(source: str | TextSource, source_kwargs: dict[str, Any]) -> TextSource:
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


# ----------------------------------------------------------------------------- tokenization


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


def _check_int(name: str, value: Any, minimum: int, allow_none: bool = False) -> None:
    if value is None and allow_none:
        return
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        alt = " or None" if allow_none else ""
        raise ValueError(f"{name} must be an int >= {minimum}{alt}, got {value!r}")


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
    _check_int("context_size", context_size, 2)
    _check_int("max_windows", max_windows, 1, allow_none=True)
    _check_int("window_pool", window_pool, 0)
    _check_int("docs_per_call", docs_per_call, 1)
    if window_pool > 0 and seed is None:
        raise ValueError("window_pool > 0 shuffles windows and needs a seed (got seed=None)")
    src = _as_source(source, source_kwargs)
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
        stream = _buffer_shuffle(stream, window_pool, random.Random(f"windows:{seed}"))
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
    _check_int("batch_size", batch_size, 1)
    _check_int("max_batches", max_batches, 1, allow_none=True)
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
