"""Reading documents: the per-format readers (text, JSONL, parquet), the stdlib walk, local
file/directory/glob resolution and opening Hugging Face datasets."""

from __future__ import annotations

import glob as _glob
import json
import os
import sysconfig
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any

TEXT_SUFFIXES: tuple[str, ...] = (".txt", ".md", ".py")
SUPPORTED_SUFFIXES: tuple[str, ...] = TEXT_SUFFIXES + (".jsonl", ".parquet")
TOPICS_REL = "pydoc_data/topics.py"


@dataclass(frozen=True)
class Unit:
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


def file_unit(key: str, path: Path, text_field: str) -> Unit:
    suffix = path.suffix.lower()
    if suffix == ".jsonl":
        return Unit(key, lambda: _read_jsonl(path, text_field))
    if suffix == ".parquet":
        return Unit(key, lambda: _read_parquet(path, text_field))
    return Unit(key, lambda: _read_text(path))


def stdlib_root() -> Path:
    return Path(sysconfig.get_paths()["stdlib"]).resolve()


@lru_cache(maxsize=4)
def stdlib_files(root: str) -> tuple[tuple[str, str], ...]:
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
            if rel == TOPICS_REL:
                continue  # added as prose documents instead
            out.append((rel, os.path.join(dirpath, name)))
    out.sort()
    return tuple(out)


def pydoc_topics() -> dict[str, str]:
    try:
        from pydoc_data.topics import topics
    except ImportError:  # some distributions strip pydoc_data
        return {}
    return {k: v for k, v in topics.items() if isinstance(v, str) and v}


def stdlib_units() -> list[Unit]:
    files = stdlib_files(str(stdlib_root()))
    units = [Unit(rel, (lambda p=Path(p): _read_text_strict(p))) for rel, p in files]
    for name, text in pydoc_topics().items():
        units.append(Unit(f"{TOPICS_REL}::{name}", (lambda t=text: iter((t,)))))
    units.sort(key=lambda u: u.key)
    return units


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


def resolve_files(spec: str) -> tuple[Path, list[tuple[str, Path]]]:
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


def parse_hf(spec: str) -> tuple[str, str | None]:
    rest = spec[3:]
    if not rest:
        raise ValueError("empty Hugging Face dataset name; use 'hf:NAME' or 'hf:NAME:CONFIG'")
    if os.path.exists(os.path.expanduser(rest)) or ":" not in rest:
        return os.path.expanduser(rest), None
    name, config = rest.rsplit(":", 1)
    if not name or not config:
        raise ValueError(f"bad Hugging Face source {spec!r}; use 'hf:NAME' or 'hf:NAME:CONFIG'")
    return os.path.expanduser(name), config


def is_saved_to_disk(name: str) -> bool:
    p = Path(name)
    return p.is_dir() and (
        (p / "dataset_dict.json").is_file()
        or ((p / "state.json").is_file() and (p / "dataset_info.json").is_file())
    )


def hf_open(name: str, config: str | None) -> dict[str, Any]:
    """The dataset's splits: ``{split name: Dataset | IterableDataset}``."""
    import datasets

    if is_saved_to_disk(name):
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


def hf_docs(ds: Any, text_field: str, where: str) -> Iterator[str]:
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
