"""Test helper: the tiny trained run, built in one place.

Most tests train the same small run and change a field or two: a TopK SAE (d_sae 128, k 8) on the
tiny model's ``blocks.0.hook_resid_post``, 8 steps of 256 rows from 33-token windows (checkpointed
at the end only), evaluated (if at all) on 512 held-out rows and 4 windows. A test states only
what differs, section by section::

    tiny_config(tmp_path, "crash", data={"train_tokens": 256 * 12}, sae={"k": 4})
    tiny_run(tmp_path, "run", model=tiny, evaluate=True)            # trained: its run folder

A keyword named after a section (``data``, ``sae``, ``optim``, ``log``, ``eval``) is merged into
that section; any other (``saes=[...]``, ``device=...``) sets the top-level field. Positional
mappings of such overrides come first, so a module can name what all its runs change
(``LONG = {"data": {"train_tokens": 256 * 12}}``; ``tiny_config(tmp_path, "a", LONG, sae=...)``).
The run of the base config, trained once per session and evaluated, is conftest.py's
``tiny_trained`` fixture.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

from saes.training.config import RunConfig

BASE: dict[str, dict[str, Any]] = {
    "data": {
        "model": "tiny",
        "hook": "blocks.0.hook_resid_post",
        "context_size": 33,
        "batch_windows": 8,
        "buffer_tokens": 1024,
        "train_tokens": 256 * 8,
        "batch_tokens": 256,
    },
    "sae": {"d_sae": 128, "k": 8},
    "optim": {"warmup_steps": 2},
    "log": {"log_every": 2},
    "eval": {"tokens": 512, "ce_windows": 4},
}


def tiny_sections(*layers: Mapping[str, Any], **overrides: Any) -> dict[str, Any]:
    """The base run's nested mapping with each layer of overrides, then ``overrides``, applied (a
    mapping merges into its section; anything else sets a top-level field). No ``log.out_dir``:
    a sweep's base, or a config file's contents, take it as it is."""
    out: dict[str, Any] = {name: dict(fields) for name, fields in BASE.items()}
    for layer in (*layers, overrides):
        for key, value in layer.items():
            if key in BASE and isinstance(value, Mapping):
                out[key] = {**out[key], **value}
            else:
                out[key] = value
    return out


def tiny_config(
    root: str | Path, name: str = "run", *layers: Mapping[str, Any], **overrides: Any
) -> RunConfig:
    """The base run config with the overrides (see the module), its run folder ``root / name``."""
    sections = tiny_sections(*layers, **overrides)
    sections["log"] = {"out_dir": str(Path(root) / name), **sections["log"]}
    return RunConfig(**sections)


def tiny_run(
    root: str | Path,
    name: str = "run",
    *layers: Mapping[str, Any],
    model=None,
    evaluate: bool = False,
    **overrides: Any,
) -> Path:
    """``tiny_config(root, name, ...)`` trained (``model``: the loaded tiny model, else it is
    loaded by name); its run folder."""
    from saes.training.loop import train

    cfg = tiny_config(root, name, *layers, **overrides)
    return train(cfg, progress=False, evaluate=evaluate, model=model)
