"""The converted-weights cache: converted models (GGUF and HF folders) are stored, already
processed, as safetensors + JSON config + saved tokenizer under ``$INTERP_CACHE`` (default
``~/.cache/interp``), so a second load neither parses the GGUF nor builds the transformers model.
Entries are keyed by a fingerprint of the source files and the conversion settings."""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import re
import shutil
import tempfile
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

from interp.atomic_files import atomic_write
from interp.models.convert import N_CTX_CAP, PROCESSING
from interp.models.hooked import attach_tokenizer, new_hooked
from interp.models.specs import DEFAULT_MODEL, resolve_spec, smollm2_gguf_path

if TYPE_CHECKING:  # pragma: no cover
    from transformer_lens import HookedTransformer

#: bump when the cached format or the conversion changes; old entries are then ignored
CACHE_FORMAT_VERSION = 3


def cache_root() -> Path:
    """``$INTERP_CACHE`` or ``~/.cache/interp``."""
    return Path(os.path.expanduser(os.environ.get("INTERP_CACHE") or "~/.cache/interp"))


def source_fingerprint(kind: str, path: Path) -> dict[str, Any]:
    if path.is_file():
        files = [path]
    else:  # every top-level file: config, weights, tokenizer files
        files = sorted(p for p in path.iterdir() if p.is_file() and not p.name.startswith("."))
    return {
        "kind": kind,
        "path": str(path),
        "files": [[p.name, p.stat().st_size, p.stat().st_mtime_ns] for p in files],
        "format": CACHE_FORMAT_VERSION,
        "n_ctx_cap": N_CTX_CAP,
        "processing": PROCESSING,
    }


def cache_dir_for(kind: str, path: Path, label: str) -> Path:
    fp = source_fingerprint(kind, path)
    digest = hashlib.sha256(json.dumps(fp, sort_keys=True).encode()).hexdigest()[:16]
    slug = re.sub(r"[^A-Za-z0-9._-]+", "-", label).strip("-")[:60] or kind
    return cache_root() / "models" / f"{slug}-{digest}"


def model_cache_dir(spec: str = DEFAULT_MODEL) -> Path | None:
    """Cache folder a (GGUF / HF-folder / SmolLM2) spec converts into, or None for specs that are
    not cached (tiny, TransformerLens hub). The folder may not exist yet."""
    ms = resolve_spec(spec)
    if ms.kind == "smollm2":
        return cache_dir_for("gguf", smollm2_gguf_path(), "smollm2-135m")
    if ms.kind in ("gguf", "hf-folder"):
        assert ms.path is not None
        return cache_dir_for(ms.kind, ms.path, ms.path.stem if ms.kind == "gguf" else ms.path.name)
    return None


def cache_complete(entry: Path) -> bool:
    # config.json is written last: its presence marks a complete entry
    return (entry / "config.json").is_file() and (entry / "model.safetensors").is_file()


def _json_default(obj: Any) -> Any:
    if isinstance(obj, torch.dtype):
        return {"__torch_dtype__": str(obj).removeprefix("torch.")}
    if isinstance(obj, torch.device):
        return str(obj)
    if hasattr(obj, "item"):  # numpy / torch scalars
        return obj.item()
    if isinstance(obj, Path):
        return str(obj)
    raise TypeError(f"cannot serialize {type(obj).__name__}")


def save_cache(entry: Path, model: HookedTransformer, tokenizer: Any, meta: dict[str, Any]) -> None:
    from safetensors.torch import save_file

    entry.mkdir(parents=True, exist_ok=True)
    if tokenizer is not None and not (entry / "tokenizer").is_dir():
        tmp_dir = Path(tempfile.mkdtemp(dir=entry, prefix=".tokenizer."))
        try:
            tokenizer.save_pretrained(str(tmp_dir))
            try:
                os.replace(tmp_dir, entry / "tokenizer")
            except OSError:  # another process got there first
                pass
        finally:
            shutil.rmtree(tmp_dir, ignore_errors=True)
    # Parameters are saved in their storage order (see fast_layout) with the dim permutation in
    # the metadata, so a cached load needs no copy to get the fast layout back.
    seen: set[int] = set()
    tensors: dict[str, torch.Tensor] = {}
    layout: dict[str, list[int]] = {}
    for name, p in model.named_parameters():
        t = p.detach().to("cpu")
        perm = sorted(range(t.dim()), key=lambda i: -t.stride(i))
        stored = t.permute(perm)
        if perm != list(range(t.dim())) and stored.is_contiguous():
            layout[name] = perm
        else:
            stored = t.contiguous()
        if stored.data_ptr() in seen:
            stored = stored.clone()
        seen.add(stored.data_ptr())
        tensors[name] = stored
    st_meta = {"format": "pt", "interp_layout": json.dumps(layout)}
    atomic_write(entry / "model.safetensors", lambda tmp: save_file(tensors, tmp, metadata=st_meta))
    meta = dict(
        meta, created=time.strftime("%Y-%m-%dT%H:%M:%S"), has_tokenizer=tokenizer is not None
    )
    atomic_write(
        entry / "meta.json",
        lambda tmp: Path(tmp).write_text(json.dumps(meta, indent=2, default=_json_default)),
    )
    cfg = {k: v for k, v in model.cfg.to_dict().items() if k not in ("device", "n_params")}
    atomic_write(
        entry / "config.json",
        lambda tmp: Path(tmp).write_text(json.dumps(cfg, indent=2, default=_json_default)),
    )


def load_cache(entry: Path, dtype: torch.dtype) -> HookedTransformer:
    from safetensors import safe_open
    from safetensors.torch import load_file
    from transformer_lens import HookedTransformerConfig

    raw = json.loads((entry / "config.json").read_text())
    for k, v in list(raw.items()):
        if isinstance(v, dict) and "__torch_dtype__" in v:
            raw[k] = getattr(torch, v["__torch_dtype__"])
    raw.update(device="cpu", dtype=dtype, init_weights=False, tokenizer_name=None)
    valid = {f.name for f in dataclasses.fields(HookedTransformerConfig)}
    cfg = HookedTransformerConfig(**{k: v for k, v in raw.items() if k in valid})
    tokenizer = None
    if (entry / "tokenizer").is_dir():
        from transformers import AutoTokenizer

        tokenizer = AutoTokenizer.from_pretrained(str(entry / "tokenizer"))
    model = new_hooked(cfg)
    weights = str(entry / "model.safetensors")
    with safe_open(weights, framework="pt") as f:
        layout = json.loads((f.metadata() or {}).get("interp_layout", "{}"))
    state = load_file(weights)
    for name, perm in layout.items():  # back to the logical shape, keeping the storage order
        inverse = sorted(range(len(perm)), key=perm.__getitem__)
        state[name] = state[name].permute(inverse)
    if dtype != torch.float32:
        state = {k: v.to(dtype) for k, v in state.items()}
    missing, unexpected = model.load_state_dict(state, strict=False, assign=True)
    params = {n for n, _ in model.named_parameters()}
    if unexpected or params & set(missing):
        raise ValueError(
            f"cache entry {entry} does not match the model: missing {sorted(params & set(missing))[:5]}, unexpected {unexpected[:5]}"
        )
    attach_tokenizer(model, tokenizer)
    return model


def prune_stale(entry: Path, source: Path) -> None:
    """Remove older cache entries of the same source (changed file, older cache format)."""
    for other in entry.parent.iterdir():
        if other == entry or not other.is_dir():
            continue
        try:
            meta = json.loads((other / "meta.json").read_text())
        except (OSError, ValueError):
            continue
        if meta.get("source") == str(source):
            shutil.rmtree(other, ignore_errors=True)
