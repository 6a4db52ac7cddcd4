"""SAEs trained on the two parts of an SAE's error, at equal k (as the paper does).

The linear part e_lin = x a* (+ b) and the nonlinear part e_nl = x - x_hat - e_lin of held-out
tokens are written as two activation caches (the README's hand-written cache format: safetensors
shards + ``manifest.json``, hook name = the SAE's hook), and an SAE of the same width and k is
trained on each with the toolkit's trainer (``saes.training.loop.train``, a model-free run:
``data.model: null``), evaluated on the last ``holdout_tokens`` rows of its cache, which training
never reads (an earlier call's caches and runs in ``out_dir`` are replaced). The paper finds the SAE on e_nl much worse (higher FVU) than the one on e_lin:
nonlinear error holds fewer not-yet-learned features.
"""

from __future__ import annotations

import contextlib
import io
import json
import shutil
from collections.abc import Iterable
from pathlib import Path

import torch
from safetensors.torch import save_file

from interp.atomic_files import atomic_write_json
from saes.analysis.dark_matter.linear import LinearMap
from saes.rundir import RunDir
from saes.training.activation_sources import usable_rows
from saes.training.config import RunConfig
from saes.training.loop import train

PARTS = ("e_lin", "e_nl")

__all__ = ["PARTS", "error_parts", "train_error_saes", "write_rows_cache"]


def error_parts(
    pairs: Iterable[tuple[torch.Tensor, torch.Tensor]], lmap: LinearMap
) -> dict[str, torch.Tensor]:
    """e_lin and e_nl [N, d] (float32) of a stream of (x, x_hat)."""
    lin, nl = [], []
    for x, x_hat in pairs:
        x = x.float()
        e_lin = lmap(x).float()
        lin.append(e_lin)
        nl.append(x - x_hat.float() - e_lin)
    return {"e_lin": torch.cat(lin), "e_nl": torch.cat(nl)}


def write_rows_cache(
    folder: str | Path,
    hook: str,
    rows: torch.Tensor,
    meta: dict | None = None,
    shard_rows: int = 65536,
) -> Path:
    """An activation cache holding ``rows`` [N, d] at ``hook`` (float32)."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    shards = []
    for i, a in enumerate(range(0, rows.shape[0], shard_rows)):
        name = f"shard_{i:05d}.safetensors"
        part = rows[a : a + shard_rows].float().contiguous()
        save_file({hook: part}, str(folder / name))
        shards.append(
            {"file": name, "tokens": part.shape[0], "bytes": (folder / name).stat().st_size}
        )
    atomic_write_json(
        folder / "manifest.json",
        {
            "format": "interp-activations",
            "version": 1,
            "hooks": {hook: int(rows.shape[1])},
            "dtype": "float32",
            "has_grads": False,
            "complete": True,
            "tokens": int(rows.shape[0]),
            "shards": shards,
            **(meta or {}),
        },
    )
    return folder


def train_error_saes(
    parts: dict[str, torch.Tensor],
    hook: str,
    out_dir: str | Path,
    d_sae: int,
    k: int,
    holdout_tokens: int,
    batch_tokens: int = 4096,
    seed: int = 0,
    progress: bool = False,
) -> dict[str, dict[str, float]]:
    """Train one TopK SAE (d_sae, k) per part on its cache; returns each run's held-out metrics
    (``fvu``, ``l0_mean``, ``dead_fraction``) and where it lies."""
    out_dir = Path(out_dir)
    results = {}
    for name in PARTS:
        rows = parts[name]
        train_rows = rows.shape[0] - holdout_tokens
        buffer = max(batch_tokens, 65536 // batch_tokens * batch_tokens)
        usable = usable_rows(train_rows, buffer, batch_tokens)
        if usable < batch_tokens:
            raise ValueError(
                f"{name}: {rows.shape[0]} rows minus {holdout_tokens} held out leave "
                f"{train_rows}, under one batch of {batch_tokens}"
            )
        for old in (out_dir / f"cache_{name}", out_dir / f"sae_{name}"):
            if old.exists():  # this function's own output of an earlier call: start afresh
                shutil.rmtree(old)
        cache = write_rows_cache(
            out_dir / f"cache_{name}", hook, rows, {"model": None, "part": name}
        )
        cfg = RunConfig(
            data={
                "model": None,
                "hook": hook,
                "cache": str(cache),
                "train_tokens": usable,
                "batch_tokens": batch_tokens,
                "buffer_tokens": buffer,
                "init_sample_tokens": min(4096, usable),
                "max_norm_ratio": None,
                "seed": seed,
            },
            sae={"d_sae": d_sae, "k": k},
            optim={"warmup_steps": min(10, max(1, usable // batch_tokens // 10))},
            log={"out_dir": str(out_dir / f"sae_{name}"), "checkpoint_every_tokens": usable},
            eval={"tokens": holdout_tokens, "holdout_tokens": holdout_tokens, "ce_windows": 0},
        )
        quiet = (
            contextlib.redirect_stdout(io.StringIO()) if not progress else contextlib.nullcontext()
        )
        with quiet:
            run = train(cfg, progress=progress)
        metrics = RunDir(run).metrics(required=True) or {}
        results[name] = {
            "fvu": float(metrics["fvu"]),
            "l0_mean": float(metrics["l0_mean"]),
            "dead_fraction": float(metrics["dead_fraction"]),
            "train_tokens": usable,
            "holdout_tokens": holdout_tokens,
            "run": str(run),
        }
    (out_dir / "error_saes.json").write_text(json.dumps(results, indent=1))
    return results
