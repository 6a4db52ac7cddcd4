"""``load_model``: any spec -> a ``HookedTransformer`` on the requested device and dtype, through
the converted-weights cache for GGUF files and HF folders."""

from __future__ import annotations

import logging
import shutil
import time
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

from interp.models.convert import PROCESSING, hf_to_hooked
from interp.models.converted_weights import (
    cache_complete,
    cache_dir_for,
    load_cache,
    prune_stale,
    save_cache,
    source_fingerprint,
)
from interp.models.dtypes import resolve_model_dtype
from interp.models.fast_forward import install_fast_forward
from interp.models.hooked import check_device, default_device, fast_layout, place, quiet_tl
from interp.models.specs import DEFAULT_MODEL, resolve_spec, smollm2_gguf_path
from interp.models.tiny import tiny_model

if TYPE_CHECKING:  # pragma: no cover
    from transformer_lens import HookedTransformer

logger = logging.getLogger(__name__)


def _console():
    from rich.console import Console

    return Console(stderr=True, log_path=False)


def _load_converted(
    kind: str,
    path: Path,
    label: str,
    build: Callable[[], tuple[Any, Any]],
    device: str | torch.device | None,
    dtype: torch.dtype,
    message: str,
) -> HookedTransformer:
    entry = cache_dir_for(kind, path, label)
    if cache_complete(entry):
        try:
            model = load_cache(entry, dtype)
        except Exception as exc:  # noqa: BLE001 - corrupt/partial entry: convert again
            logger.warning("ignoring unusable cache entry %s (%s); converting again", entry, exc)
            shutil.rmtree(entry, ignore_errors=True)
        else:
            logger.info("loaded %s from cache %s", label, entry)
            return place(model, device, dtype)
    console = _console()
    console.log(message)
    t0 = time.perf_counter()
    hf_model, tokenizer = build()
    model = hf_to_hooked(hf_model, tokenizer, model_name=label)
    del hf_model
    try:
        save_cache(
            entry,
            model,
            tokenizer,
            {"spec": label, "kind": kind, "source": str(path), **source_fingerprint(kind, path)},
        )
        console.log(f"converted in {time.perf_counter() - t0:.1f} s; cached at {entry}")
        prune_stale(entry, path)
    except OSError as exc:
        console.log(
            f"converted in {time.perf_counter() - t0:.1f} s; could not write cache {entry}: {exc}"
        )
    return place(model, device, dtype)


def _build_from_gguf(path: Path) -> Callable[[], tuple[Any, Any]]:
    def build():
        from transformers import AutoModelForCausalLM, AutoTokenizer

        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            tok = AutoTokenizer.from_pretrained(str(path.parent), gguf_file=path.name)
            hf = AutoModelForCausalLM.from_pretrained(
                str(path.parent), gguf_file=path.name, dtype=torch.float32
            )
        return hf, tok

    return build


def _build_from_folder(path: Path) -> Callable[[], tuple[Any, Any]]:
    def build():
        from transformers import AutoModelForCausalLM, AutoTokenizer

        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            hf = AutoModelForCausalLM.from_pretrained(str(path), dtype=torch.float32)
            try:
                tok = AutoTokenizer.from_pretrained(str(path))
            except (OSError, ValueError, TypeError) as exc:
                logger.warning("no usable tokenizer in %s (%s); model.tokenizer is None", path, exc)
                tok = None
        return hf, tok

    return build


def load_model(
    spec: str = DEFAULT_MODEL,
    device: str | torch.device | None = None,
    dtype: torch.dtype | str = torch.float32,
    fast: bool = True,
) -> HookedTransformer:
    """Load a model as a TransformerLens ``HookedTransformer`` with ``.tokenizer`` set.

    ``spec``: ``"smollm2-135m"`` (default), ``"tiny"``, ``"tiny-attn-only"``, ``"tiny:k=v,..."``,
    a local ``.gguf`` file, a local Hugging Face model folder, or a TransformerLens model name.
    ``device`` defaults to CUDA when available, else CPU. Converted models are cached (see
    :func:`model_cache_dir`); the first SmolLM2 load takes ~20-30 s, later ones a few seconds.
    ``fast`` (default) installs :func:`interp.models.fast_forward.install_fast_forward` (fused attention
    etc., same hooks and activations); ``fast=False`` keeps TransformerLens's own forwards.
    ``dtype``: a torch dtype or ``"float32"`` / ``"bfloat16"`` / ``"auto"`` (bf16 where the CPU or
    GPU multiplies bf16 natively, see :mod:`interp.models.dtypes`).
    """
    model = _load_model(spec, device, resolve_model_dtype(dtype, device))
    if fast:
        install_fast_forward(model)
    return model


def _load_model(
    spec: str, device: str | torch.device | None, dtype: torch.dtype
) -> HookedTransformer:
    if not isinstance(dtype, torch.dtype):
        raise ValueError(f"dtype must be a torch.dtype, got {dtype!r}")  # noqa: TRY004
    check_device(device)
    ms = resolve_spec(spec)
    if ms.kind == "tiny":
        return tiny_model(**dict(ms.options), device=device, dtype=dtype)
    if ms.kind == "smollm2":
        path = smollm2_gguf_path()
        return _load_converted(
            "gguf",
            path,
            "smollm2-135m",
            _build_from_gguf(path),
            device,
            dtype,
            "converting SmolLM2 GGUF -> TransformerLens (one-time, ~20 s)",
        )
    if ms.kind == "gguf":
        assert ms.path is not None
        return _load_converted(
            "gguf",
            ms.path,
            ms.path.stem,
            _build_from_gguf(ms.path),
            device,
            dtype,
            f"converting {ms.path.name} -> TransformerLens (one-time)",
        )
    if ms.kind == "hf-folder":
        assert ms.path is not None
        return _load_converted(
            "hf-folder",
            ms.path,
            ms.path.name,
            _build_from_folder(ms.path),
            device,
            dtype,
            f"converting HF folder {ms.path} -> TransformerLens (one-time)",
        )
    # TransformerLens hub name (needs the network or a populated HF cache)
    from transformer_lens import HookedTransformer

    with quiet_tl():
        model = HookedTransformer.from_pretrained(
            ms.name,
            device=default_device() if device is None else device,
            dtype=dtype,
            **PROCESSING,
        )
    fast_layout(model)
    model.eval()
    return model
