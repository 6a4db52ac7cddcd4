"""Saving and opening any dictionary a run trains: SAEs and per-layer transcoders in SAELens's
layout (:mod:`saes.artifacts`), CLTs in circuit-tracer's (:mod:`saes.formats.circuit_tracer`) with
our config beside it; and circuit-tracer's transcoder sets, read into per-layer transcoders.

A CLT run folder holds ``config.yaml`` + ``W_enc_{i}`` / ``W_dec_{i}.safetensors`` (what
circuit-tracer opens) and ``cfg.json`` with our full config under ``"interp"`` (its layers, hooks
and rule), so :func:`load_dictionary` opens ours and circuit-tracer's alike.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from interp.atomic_files import atomic_write_json
from saes.artifacts import _build, load_sae, save_sae
from saes.config import SAEConfig
from saes.formats.circuit_tracer import (
    CLT_KIND,
    SET_KIND,
    is_circuit_tracer,
    read_clt,
    read_config,
    read_transcoder_set,
    write_clt,
    write_transcoder_set,
)
from saes.formats.common import read_json
from saes.formats.saelens import CFG
from saes.sae import SAE
from saes.transcoders.clt import CrossLayerTranscoder

__all__ = [
    "load_dictionary",
    "load_transcoder_set",
    "save_dictionary",
    "write_transcoder_set",
]


def save_dictionary(
    module, folder: str | Path, extra_metadata: dict[str, Any] | None = None
) -> Path:
    """The artifact of an SAE or transcoder (SAELens's layout) or of a CLT (circuit-tracer's
    layout + ``cfg.json``), scales folded, written atomically file by file."""
    if not isinstance(module, CrossLayerTranscoder):
        return save_sae(module, folder, extra_metadata)
    folder = Path(folder)
    export = CrossLayerTranscoder(module.cfg.model_copy(), seed=None)
    export.load_state_dict(module.state_dict())
    export.fold_scales()
    write_clt(export, folder)
    cfg = {
        "architecture": f"{export.cfg.variant}_clt",
        "interp": export.cfg.model_dump(),
        "selection_rule": export.variant.describe(),
        "metadata": dict(extra_metadata or {}),
    }
    atomic_write_json(folder / CFG, cfg)
    return folder


def _open_clt(folder: Path) -> CrossLayerTranscoder:
    cfg, state = read_clt(folder)
    ours = folder / CFG
    if ours.exists():
        saved = read_json(ours).get("interp")
        if saved:
            cfg = SAEConfig.from_saved(saved)
    clt = CrossLayerTranscoder(cfg, seed=None)
    own = clt.state_dict()
    for key, value in state.items():
        if key in own and tuple(own[key].shape) != tuple(value.shape):
            raise ValueError(
                f"{folder}: {key} has shape {tuple(value.shape)}, the config "
                f"({len(cfg.layers)} layers, d_sae {cfg.d_sae}) needs {tuple(own[key].shape)}"
            )
    clt.load_state_dict({**own, **state})
    return clt


def load_dictionary(
    folder: str | Path, device: str | torch.device = "cpu", hook: str | None = None
):
    """Open a run folder or artifact: an SAE or per-layer transcoder (:func:`saes.load_sae`'s
    formats) or a CLT (ours, or circuit-tracer's ``cross_layer_transcoder``)."""
    folder = Path(folder)
    if hook is None and is_circuit_tracer(folder):
        kind = read_config(folder)["model_kind"]
        if kind == CLT_KIND:
            return _open_clt(folder).to(device)
        if kind == SET_KIND:
            raise ValueError(
                f"{folder} is a circuit-tracer transcoder set (one transcoder per layer): open it "
                "with saes.transcoders.load_transcoder_set"
            )
    return load_sae(folder, device=device, hook=hook)


def load_transcoder_set(folder: str | Path, device: str | torch.device = "cpu") -> list[SAE]:
    """A circuit-tracer transcoder set as one per-layer transcoder (an :class:`SAE`) per layer."""
    folder = Path(folder)
    cfg_path = folder / "config.yaml"
    return [
        _build(cfg, state, folder / f"layer_{i}.safetensors", cfg_path).to(device)
        for i, (cfg, state) in enumerate(read_transcoder_set(folder))
    ]
