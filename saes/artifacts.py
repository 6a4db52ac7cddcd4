"""SAE artifacts in SAELens's layout: ``cfg.json`` + ``sae_weights.safetensors``.

``sae_lens.SAE.load_from_disk(folder)`` opens the variants SAELens has an architecture for
(topk -> "topk", relu_l1 -> "standard"); ``load_sae`` opens ours and SAELens-saved ones.
Our own fields live under ``cfg["interp"]`` (SAELens ignores unknown keys).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file

from interp.hooks import HOOK_Z, layout_for_spec
from interp.io import atomic_write, atomic_write_json
from saes.config import SAEConfig
from saes.sae import SAE

WEIGHTS = "sae_weights.safetensors"
CFG = "cfg.json"

# SAELens architecture -> the variant that opens it (ours -> theirs is each variant's
# ``saelens_architecture``)
FROM_SAELENS_ARCH = {"topk": "topk", "standard": "relu_l1"}


def _head_layout_metadata(cfg: SAEConfig) -> dict[str, Any]:
    """n_heads / d_head / n_kv_heads of a hook_z SAE's model when known without loading it."""
    if not HOOK_Z.match(cfg.hook_name):
        return {}
    layout = layout_for_spec(cfg.model_name, cfg.hook_name)
    if layout is None or layout.d_in != cfg.d_in:
        return {}
    return {"n_heads": layout.n_heads, "d_head": layout.d_head, "n_kv_heads": layout.n_kv_heads}


def sae_lens_cfg(sae: SAE, extra_metadata: dict[str, Any] | None = None) -> dict[str, Any]:
    cfg = sae.cfg
    out: dict[str, Any] = {
        "architecture": sae.variant.saelens_architecture or cfg.variant,
        "d_in": cfg.d_in,
        "d_sae": cfg.d_sae,
        "dtype": cfg.dtype,
        "device": "cpu",
        "apply_b_dec_to_input": True,
        "normalize_activations": "none",
        "reshape_activations": "hook_z" if cfg.hook_name.endswith("hook_z") else "none",
        "metadata": {
            "model_name": cfg.model_name,
            "hook_name": cfg.hook_name,
            "hook_head_index": None,
            "prepend_bos": True,
            **_head_layout_metadata(cfg),
            **(extra_metadata or {}),
        },
        "interp": cfg.model_dump(),
        "selection_rule": sae.variant.describe(),
    }
    if sae.variant.saelens_architecture == "topk":
        out["k"] = cfg.k
        out["rescale_acts_by_decoder_norm"] = False
    return out


def save_sae(sae: SAE, folder: str | Path, extra_metadata: dict[str, Any] | None = None) -> Path:
    """Write the artifact (input scale folded into the weights), atomically."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    export = SAE(sae.cfg.model_copy(), seed=None)
    export.load_state_dict(sae.state_dict())
    export.fold_input_scale()
    training_only = set(export.variant.training_buffers)  # e.g. usage EMAs
    tensors = {
        k: v.detach().contiguous().cpu()
        for k, v in export.state_dict().items()
        if k not in training_only
    }
    atomic_write(folder / WEIGHTS, lambda tmp: save_file(tensors, tmp))
    atomic_write_json(folder / CFG, sae_lens_cfg(export, extra_metadata))
    return folder


def load_sae(folder: str | Path, device: str | torch.device = "cpu") -> SAE:
    """Open an SAE folder written by us or by SAELens (topk / standard architectures)."""
    folder = Path(folder)
    cfg_path, w_path = folder / CFG, folder / WEIGHTS
    for p in (cfg_path, w_path):
        if not p.exists():
            raise FileNotFoundError(f"{folder} is not an SAE folder: {p.name} is missing")
    try:
        raw = json.loads(cfg_path.read_text())
    except json.JSONDecodeError as e:
        raise ValueError(f"corrupt SAE config {cfg_path}: {e}") from None
    if "interp" in raw:
        cfg = SAEConfig.from_saved(raw["interp"])
    else:
        arch = raw.get("architecture", "standard")
        if arch not in FROM_SAELENS_ARCH:
            raise ValueError(
                f"{cfg_path}: SAELens architecture {arch!r} has no interp variant; "
                f"supported: {sorted(FROM_SAELENS_ARCH)}"
            )
        if raw.get("normalize_activations", "none") not in ("none", None):
            raise ValueError(
                f"{cfg_path}: normalize_activations={raw['normalize_activations']!r} is not supported"
            )
        meta = raw.get("metadata", {}) or {}
        cfg = SAEConfig(
            d_in=raw["d_in"],
            d_sae=raw["d_sae"],
            variant=FROM_SAELENS_ARCH[arch],
            k=raw.get("k", 32) if arch == "topk" else 32,
            hook_name=meta.get("hook_name", raw.get("hook_name", "")) or "",
            model_name=meta.get("model_name", raw.get("model_name", "")) or "",
        )
    try:
        state = load_file(str(w_path))
    except Exception as e:  # noqa: BLE001 - name the file, not a deep safetensors error
        raise ValueError(f"cannot read SAE weights {w_path}: {e}") from None
    sae = SAE(cfg, seed=None)
    training_only = set(sae.variant.training_buffers)
    wanted = [
        k for k in sae.state_dict() if k not in training_only
    ]  # + "threshold" for jumprelu ones
    missing = set(wanted) - set(state)
    if missing:
        raise ValueError(f"{w_path} lacks tensors {sorted(missing)}")
    if tuple(state["W_enc"].shape) != (cfg.d_in, cfg.d_sae):
        raise ValueError(
            f"{w_path}: W_enc has shape {tuple(state['W_enc'].shape)}, cfg.json says "
            f"d_in={cfg.d_in}, d_sae={cfg.d_sae}"
        )
    if not raw.get("apply_b_dec_to_input", True):
        # SAELens without b_dec on the input: fold it into b_enc so (x - b_dec) W + b_enc matches
        state["b_enc"] = state["b_enc"] + state["b_dec"] @ state["W_enc"]
    sae.load_state_dict({k: state[k] for k in wanted}, strict=not training_only)
    return sae.to(device)
