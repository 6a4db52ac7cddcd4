"""On-disk activation cache: safetensors shards plus a JSON manifest, memory-mapped on read.

Folder layout (documented in docs/formats.md so activations from anywhere can be handed in)::

    manifest.json                 format, version, model, hooks {name: d_in}, dtype, has_grads,
                                  source, seed, context_size, windows_per_shard, tokens, complete,
                                  shards [{file, tokens, bytes, sha256}]
    shard_00000.safetensors       one tensor per hook "<hook>" [n, d_in]; "<hook>.grad" when
                                  gradients were captured; "tokens" [n] int64 (optional)

Writing is resumable: shard ``i`` always holds token windows ``[i*W, (i+1)*W)`` of the
deterministic window stream, each shard is written to a temporary name, fsynced and renamed,
and the manifest is rewritten atomically after every shard. A crashed run resumes after the last
shard the manifest lists, so no token is duplicated or missing.

Opening a cache (:class:`ActivationFiles`) checks it against its manifest from the manifest and
the shards' safetensors headers only (no tensor is read): required keys, format and version, the
dtype (one of :data:`ACTIVATION_DTYPES`), ``complete``, each shard's tensors (every hook present with
``d_in`` columns and the manifest's dtype, equal rows across hooks, grads when ``has_grads``, the
row count the manifest lists for it) and the total row count. Each failure is a
:class:`ActivationFilesError` naming the file, the key and both values.
"""

from __future__ import annotations

import hashlib
import json
import mmap
import struct
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import save_file

from interp.activations import ActivationBatch, ActivationCapture
from interp.atomic_files import atomic_write, atomic_write_json

FORMAT = "interp-activations"
VERSION = 1
MANIFEST = "manifest.json"

_ST_DTYPES = {
    "F32": torch.float32,
    "BF16": torch.bfloat16,
    "F16": torch.float16,
    "I64": torch.int64,
    "I32": torch.int32,
}


# manifest "dtype" -> the safetensors dtype its activation (and gradient) tensors must have
ACTIVATION_DTYPES = {"float32": "F32", "bfloat16": "BF16", "float16": "F16"}
REQUIRED_KEYS = ("format", "version", "hooks", "dtype", "shards")
_ST_ITEMSIZE = {"F32": 4, "BF16": 2, "F16": 2, "I64": 8, "I32": 4}
_ST_NAMES = {"F32": "float32", "BF16": "bfloat16", "F16": "float16", "F64": "float64"}


class ActivationFilesError(ValueError):
    """A cache folder or shard is missing, truncated, corrupt or inconsistent."""


def sha256_file(path: Path, chunk: int = 1 << 22) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()


def _parse_header(path: Path, head: bytes, size: int) -> tuple[dict[str, Any], int]:
    """A safetensors file's JSON header (from its first bytes) and where its data starts."""
    if size < 8:
        raise ActivationFilesError(f"shard {path} is truncated ({size} bytes)")
    (n,) = struct.unpack("<Q", head[:8])
    if 8 + n > size:
        raise ActivationFilesError(
            f"shard {path} is truncated or corrupt (header of {n} bytes, file {size})"
        )
    try:
        header = json.loads(head[8 : 8 + n])
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise ActivationFilesError(f"shard {path} has a corrupt header: {e}") from None
    if not isinstance(header, dict):
        raise ActivationFilesError(f"shard {path} has a corrupt header: not a JSON object")
    return header, 8 + n


def read_shard_header(path: Path) -> tuple[dict[str, Any], int]:
    """The tensor entries {name: {dtype, shape, data_offsets}} of a safetensors file and the offset
    its data starts at, read from its header alone (a few KiB, however large the shard)."""
    size = path.stat().st_size
    with open(path, "rb") as f:
        head = f.read(8)
        if len(head) == 8:
            (n,) = struct.unpack("<Q", head)
            if 8 + n <= size:
                head += f.read(n)
    header, base = _parse_header(path, head, size)
    return {k: v for k, v in header.items() if k != "__metadata__"}, base


def _mmap_safetensors(path: Path) -> dict[str, torch.Tensor]:
    """Zero-copy read-only tensors over a memory-mapped safetensors file."""
    size = path.stat().st_size
    if size < 8:
        raise ActivationFilesError(f"shard {path} is truncated ({size} bytes)")
    with open(path, "rb") as f:
        mm = mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ)
    header, base = _parse_header(path, mm, size)
    out: dict[str, torch.Tensor] = {}
    for name, info in header.items():
        if name == "__metadata__":
            continue
        start, end = info["data_offsets"]
        if base + end > size:
            raise ActivationFilesError(
                f"shard {path} is truncated: tensor {name!r} ends past the file end"
            )
        dtype = _ST_DTYPES.get(info["dtype"])
        if dtype is None:
            raise ActivationFilesError(
                f"shard {path}: unsupported dtype {info['dtype']} for {name!r}"
            )
        count = (end - start) // torch.empty((), dtype=dtype).element_size()
        import warnings

        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # read-only buffer: we never write to these tensors
            t = torch.frombuffer(mm, dtype=dtype, count=count, offset=base + start)
        out[name] = t.view(info["shape"])
    return out


@dataclass
class ActivationManifest:
    """The parsed manifest.json of a cache folder."""

    data: dict[str, Any]

    @property
    def hooks(self) -> dict[str, int]:
        return dict(self.data["hooks"])

    @property
    def shards(self) -> list[dict[str, Any]]:
        return list(self.data["shards"])

    @property
    def has_grads(self) -> bool:
        return bool(self.data.get("has_grads", False))

    @property
    def total_tokens(self) -> int:
        return sum(s["tokens"] for s in self.data["shards"])


def read_manifest(folder: str | Path) -> ActivationManifest:
    path = Path(folder) / MANIFEST
    if not path.exists():
        raise ActivationFilesError(f"{folder} is not an activation cache: {path} is missing")
    try:
        data = json.loads(path.read_text())
    except json.JSONDecodeError as e:
        raise ActivationFilesError(f"corrupt cache manifest {path}: {e}") from None
    if not isinstance(data, dict):
        raise ActivationFilesError(f"corrupt cache manifest {path}: not a JSON object")
    for key in ("hooks", "shards"):
        if key not in data:
            raise ActivationFilesError(
                f"{path} lacks the required key {key!r} (see docs/formats.md, 'Activation cache format')"
            )
    return ActivationManifest(data)


def _is_count(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool) and v >= 0


def check_manifest(
    manifest: ActivationManifest, folder: Path, allow_incomplete: bool = False
) -> None:
    """The manifest's own keys and values (no shard is opened)."""
    data, where = manifest.data, folder / MANIFEST
    for key in REQUIRED_KEYS:
        if key not in data:
            raise ActivationFilesError(
                f"{where} lacks the required key {key!r} (see docs/formats.md, 'Activation cache format')"
            )
    if data["format"] != FORMAT:
        raise ActivationFilesError(f"{where}: 'format' is {data['format']!r}, expected {FORMAT!r}")
    if data["version"] != VERSION:
        raise ActivationFilesError(
            f"{where}: 'version' is {data['version']!r}, this reader reads {VERSION}"
        )
    hooks = data["hooks"]
    if not isinstance(hooks, dict) or not hooks:
        raise ActivationFilesError(
            f"{where}: 'hooks' must be a non-empty {{hook_name: d_in}}, got {hooks!r}"
        )
    for h, d in hooks.items():
        if not _is_count(d) or d == 0:
            raise ActivationFilesError(
                f"{where}: 'hooks' gives d_in {d!r} for {h!r}; d_in is a positive int"
            )
    if data["dtype"] not in ACTIVATION_DTYPES:
        raise ActivationFilesError(
            f"{where}: 'dtype' is {data['dtype']!r}, which is not an accepted cache dtype; "
            f"accepted: {', '.join(map(repr, ACTIVATION_DTYPES))}"
        )
    shards = data["shards"]
    if not isinstance(shards, list):
        raise ActivationFilesError(f"{where}: 'shards' must be a list of {{file, tokens, ...}}")
    for i, s in enumerate(shards):
        for key in ("file", "tokens"):
            if not isinstance(s, dict) or key not in s:
                raise ActivationFilesError(f"{where}: shards[{i}] lacks the required key {key!r}")
        if not _is_count(s["tokens"]):
            raise ActivationFilesError(
                f"{where}: shards[{i}] 'tokens' is {s['tokens']!r}, not a row count"
            )
    if data.get("complete", True) is not True and not allow_incomplete:
        raise ActivationFilesError(
            f"{where}: 'complete' is {data.get('complete')!r}: the cache is incomplete (a writer is "
            f"still running, or crashed, after {len(shards)} shards / {manifest.total_tokens} "
            "tokens). Wait for the writer to finish, resume it by running the same `interp cache` "
            "command again, or read what is there with data.cache_allow_incomplete=true "
            "(ActivationFiles(..., allow_incomplete=True))"
        )


def check_shard(manifest: ActivationManifest, folder: Path, index: int) -> int:
    """Shard ``index``'s tensor names, shapes and dtypes against the manifest, from its header
    only; returns its row count."""
    entry = manifest.shards[index]
    path = folder / entry["file"]
    header, base = read_shard_header(path)
    size = path.stat().st_size
    want_dtype = ACTIVATION_DTYPES[manifest.data["dtype"]]
    names = list(manifest.hooks) + [f"{h}.grad" for h in manifest.hooks if manifest.has_grads]
    rows: tuple[str, int] | None = None
    for name in [*names, "tokens"]:
        info = header.get(name)
        if info is None:
            if name == "tokens":
                continue
            what = "gradient" if name.endswith(".grad") else "activation"
            why = " ('has_grads' is true)" if name.endswith(".grad") else ""
            raise ActivationFilesError(
                f"shard {path}: no tensor {name!r}, but {MANIFEST} lists it{why}; the shard holds "
                f"{sorted(header)} (one {what} tensor per hook)"
            )
        try:
            dtype, shape = info["dtype"], [int(x) for x in info["shape"]]
            start, end = (int(x) for x in info["data_offsets"])
        except (KeyError, TypeError, ValueError):
            raise ActivationFilesError(
                f"shard {path} has a corrupt header entry for {name!r}"
            ) from None
        if name == "tokens":
            if shape != [rows[1] if rows else 0] or dtype not in ("I64", "I32"):
                raise ActivationFilesError(
                    f"shard {path}: tensor 'tokens' is {dtype} {shape}; expected int64 "
                    f"[{rows[1] if rows else 0}] (one token id per row)"
                )
        else:
            hook = name.removesuffix(".grad")
            if len(shape) != 2 or shape[1] != manifest.hooks[hook]:
                cols = f"{shape[1]} columns" if len(shape) == 2 else f"shape {shape}"
                raise ActivationFilesError(
                    f"shard {path}: tensor {name!r} has {cols} but {MANIFEST} says d_in "
                    f"{manifest.hooks[hook]} for that hook (expected [rows, {manifest.hooks[hook]}])"
                )
            if dtype != want_dtype:
                raise ActivationFilesError(
                    f"shard {path}: tensor {name!r} is {dtype} ({_ST_NAMES.get(dtype, dtype)}) "
                    f"but {MANIFEST} says dtype {manifest.data['dtype']!r} (stored as {want_dtype})"
                )
            if rows is None:
                rows = (name, shape[0])
            elif shape[0] != rows[1]:
                raise ActivationFilesError(
                    f"shard {path}: tensor {name!r} has {shape[0]} rows but tensor {rows[0]!r} has "
                    f"{rows[1]}; every tensor of a shard holds the same rows"
                )
        n_bytes = _ST_ITEMSIZE.get(dtype, 0) * (shape[0] * (shape[1] if len(shape) > 1 else 1))
        if end - start != n_bytes or end < start or base + end > size:
            raise ActivationFilesError(
                f"shard {path} is truncated or corrupt: tensor {name!r} {dtype} {shape} needs "
                f"{n_bytes} bytes, its header gives bytes [{start}, {end}) of a {size}-byte file"
            )
    assert rows is not None
    if rows[1] != entry["tokens"]:
        raise ActivationFilesError(
            f"shard {path}: holds {rows[1]} rows but {MANIFEST} says tokens {entry['tokens']} for "
            f"it (shards[{index}])"
        )
    return rows[1]


def check_activation_files(
    manifest: ActivationManifest, folder: Path, allow_incomplete: bool = False
) -> None:
    """Everything :class:`ActivationFiles` checks on open: the manifest, then each shard's file
    size and header, then the total row count (manifest and headers only: cheap at any size)."""
    check_manifest(manifest, folder, allow_incomplete)
    for s in manifest.shards:
        path = folder / s["file"]
        if not path.exists():
            raise ActivationFilesError(f"cache shard {path} listed in the manifest is missing")
        if "bytes" in s and path.stat().st_size != s["bytes"]:
            raise ActivationFilesError(
                f"cache shard {path} is truncated or altered: {path.stat().st_size} bytes, "
                f"manifest says {s['bytes']}"
            )
    total = sum(check_shard(manifest, folder, i) for i in range(len(manifest.shards)))
    if "tokens" in manifest.data and manifest.data["tokens"] != total:
        raise ActivationFilesError(
            f"{folder / MANIFEST}: 'tokens' is {manifest.data['tokens']!r} but its "
            f"{len(manifest.shards)} shards hold {total} rows"
        )


class ActivationFilesWriter:
    """Writes (or resumes writing) an activation cache from a deterministic window stream."""

    def __init__(
        self,
        folder: str | Path,
        capture: ActivationCapture,
        meta: dict[str, Any],
        windows_per_shard: int,
    ) -> None:
        self.folder = Path(folder)
        self.capture = capture
        self.windows_per_shard = windows_per_shard
        self.folder.mkdir(parents=True, exist_ok=True)
        hooks = capture.dims
        fresh = {
            "format": FORMAT,
            "version": VERSION,
            "hooks": hooks,
            "dtype": str(capture.dtype).replace("torch.", ""),
            "has_grads": capture.with_grads,
            "drop_bos": capture.drop_bos,
            "skip_positions": capture.skip_positions,
            "max_norm_ratio": capture.max_norm_ratio,
            "windows_per_shard": windows_per_shard,
            **meta,
            "complete": False,
            "tokens": 0,
            "shards": [],
        }
        if (self.folder / MANIFEST).exists():
            old = read_manifest(self.folder).data
            for key in (
                "hooks",
                "dtype",
                "has_grads",
                "windows_per_shard",
                "model",
                "source",
                "seed",
                "context_size",
                "model_dtype",
                "drop_bos",
                "skip_positions",
                "max_norm_ratio",
            ):
                if key not in old and key in ("model_dtype", "skip_positions", "max_norm_ratio"):
                    continue  # written before the key existed (fp32, every position kept)
                if key in fresh and old.get(key) != fresh.get(key):
                    raise ActivationFilesError(
                        f"cannot resume {self.folder}: its {key} is {old.get(key)!r} but this run "
                        f"asks for {fresh.get(key)!r}; use another folder"
                    )
            self.manifest = old
            self._drop_unlisted_files()
        else:
            self.manifest = fresh
            atomic_write_json(self.folder / MANIFEST, self.manifest)

    def _drop_unlisted_files(self) -> None:
        listed = {s["file"] for s in self.manifest["shards"]}
        for p in [*self.folder.glob("shard_*"), *self.folder.glob(".shard_*.tmp")]:
            if p.name not in listed:
                p.unlink()  # a shard half-written when the previous run died

    @property
    def windows_done(self) -> int:
        return len(self.manifest["shards"]) * self.windows_per_shard

    def write(
        self,
        windows: Iterable[torch.Tensor],
        batch_windows: int,
        max_windows: int | None = None,
        progress: bool = True,
    ) -> ActivationManifest:
        """Capture and write windows; windows already in the cache are skipped, not recomputed."""
        from tqdm.auto import tqdm

        if self.windows_per_shard % batch_windows:
            raise ValueError(
                f"windows_per_shard ({self.windows_per_shard}) must be a multiple of batch_windows ({batch_windows})"
            )
        it = iter(windows)
        for _ in range(self.windows_done):  # skip what a previous run already wrote
            if next(it, None) is None:
                break
        todo = None if max_windows is None else max(0, max_windows - self.windows_done)
        bar = tqdm(
            total=todo, desc=f"caching -> {self.folder.name}", unit="win", disable=not progress
        )
        pending: list[ActivationBatch] = []
        pending_windows = 0
        written = 0
        while todo is None or written + pending_windows < todo:
            want = (
                batch_windows
                if todo is None
                else min(batch_windows, todo - written - pending_windows)
            )
            chunk = [w for _, w in zip(range(want), it)]
            if not chunk:
                break
            pending.append(self.capture(torch.stack(chunk)))
            pending_windows += len(chunk)
            bar.update(len(chunk))
            if pending_windows >= self.windows_per_shard:
                self._write_shard(ActivationBatch.concat(pending))
                written += pending_windows
                pending, pending_windows = [], 0
        if pending:
            self._write_shard(ActivationBatch.concat(pending))
        bar.close()
        self.manifest["complete"] = True
        atomic_write_json(self.folder / MANIFEST, self.manifest)
        return ActivationManifest(self.manifest)

    def _write_shard(self, batch: ActivationBatch) -> None:
        index = len(self.manifest["shards"])
        name = f"shard_{index:05d}.safetensors"
        tensors: dict[str, torch.Tensor] = {h: a.contiguous() for h, a in batch.acts.items()}
        if batch.grads is not None:
            tensors.update({f"{h}.grad": g.contiguous() for h, g in batch.grads.items()})
        if batch.tokens is not None:
            tensors["tokens"] = batch.tokens.to(torch.int64).contiguous()
        atomic_write(self.folder / name, lambda tmp: save_file(tensors, tmp))
        self.manifest["shards"].append(
            {
                "file": name,
                "tokens": len(batch),
                "bytes": (self.folder / name).stat().st_size,
                "sha256": sha256_file(self.folder / name),
            }
        )
        self.manifest["tokens"] = ActivationManifest(self.manifest).total_tokens
        atomic_write_json(self.folder / MANIFEST, self.manifest)


class ActivationFiles:
    """Reads a cache folder: memory-mapped shards served as ActivationBatch streams."""

    def __init__(
        self, folder: str | Path, verify: bool = False, allow_incomplete: bool = False
    ) -> None:
        """Open and check a cache (see :func:`check_activation_files`); ``verify`` also checks each shard's
        sha256 (reads every byte); ``allow_incomplete`` reads a cache a writer is still writing
        (``complete: false``): the shards listed so far."""
        self.folder = Path(folder)
        self.manifest = read_manifest(self.folder)
        check_activation_files(self.manifest, self.folder, allow_incomplete)
        if verify:
            self.verify()

    def verify(self) -> None:
        """Check every shard's sha256 against the manifest (names the first bad file)."""
        for s in self.manifest.shards:
            if "sha256" in s and sha256_file(self.folder / s["file"]) != s["sha256"]:
                raise ActivationFilesError(
                    f"cache shard {self.folder / s['file']} is corrupt (sha256 mismatch)"
                )

    @property
    def hooks(self) -> dict[str, int]:
        return self.manifest.hooks

    def __len__(self) -> int:
        return self.manifest.total_tokens

    def d_in(self, hook: str) -> int:
        self.check_hook(hook)
        return self.hooks[hook]

    def check_hook(self, hook: str, d_in: int | None = None) -> None:
        if hook not in self.hooks:
            raise ActivationFilesError(
                f"cache {self.folder} has no hook {hook!r}; it holds {sorted(self.hooks)}"
            )
        if d_in is not None and self.hooks[hook] != d_in:
            raise ActivationFilesError(
                f"d_in mismatch: cache {self.folder} has d_in={self.hooks[hook]} for {hook!r}, "
                f"the config asks for d_in={d_in}"
            )

    def shard(self, i: int) -> dict[str, torch.Tensor]:
        path = self.folder / self.manifest.shards[i]["file"]
        try:
            return _mmap_safetensors(path)
        except ActivationFilesError:
            raise
        except Exception as e:  # noqa: BLE001 - any parse failure names the file
            raise ActivationFilesError(f"cannot read cache shard {path}: {e}") from None

    def batches(
        self,
        hooks: Sequence[str] | None = None,
        with_grads: bool = False,
        rows_per_read: int = 8192,
        shard_indices: Sequence[int] | None = None,
    ) -> Iterator[ActivationBatch]:
        """Stream the cache in order, ``rows_per_read`` rows at a time (feed a ShufflingBuffer)."""
        hooks = list(hooks or self.hooks)
        for h in hooks:
            self.check_hook(h)
        if with_grads and not self.manifest.has_grads:
            raise ActivationFilesError(f"cache {self.folder} was written without gradients")
        for i in shard_indices if shard_indices is not None else range(len(self.manifest.shards)):
            tensors = self.shard(i)
            n = tensors[hooks[0]].shape[0]
            for a in range(0, n, rows_per_read):
                sl = slice(a, min(n, a + rows_per_read))
                yield ActivationBatch(
                    acts={h: tensors[h][sl].clone() for h in hooks},
                    grads={h: tensors[f"{h}.grad"][sl].clone() for h in hooks}
                    if with_grads
                    else None,
                    tokens=tensors["tokens"][sl].clone() if "tokens" in tensors else None,
                )
