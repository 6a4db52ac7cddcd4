"""What every SAE-folder reader shares: the JSON reader, the tensor checks, and the fold of an
encoder that reads x (not x - b_dec) into our convention.

Each reader of this package turns a folder into ``(SAEConfig, tensors, weights_path)`` with the
tensors already in our names and layout (W_enc [d_in, d_sae], b_enc [d_sae], W_dec [d_sae, d_in],
b_dec [d_in], plus the variant's own: ``threshold`` for jumprelu, ``b_mag`` / ``r_mag`` for gated),
so that ``(x - b_dec) W_enc + b_enc`` is the library's encoder pre-activation.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch

Tensors = dict[str, torch.Tensor]


def read_json(path: Path) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text())
    except json.JSONDecodeError as e:
        raise ValueError(f"corrupt SAE config {path}: {e}") from None
    if not isinstance(data, dict):
        raise ValueError(f"corrupt SAE config {path}: expected a JSON object")
    return data


def fold_input_bias(state: Tensors) -> None:
    """In place: an encoder that reads x (not x - b_dec) rewritten to read x - b_dec.

    x W + c = (x - b_dec) W + (c + b_dec W); a gated magnitude path x W e^r + b_mag gets
    b_dec W e^r. Thresholds compare the unchanged pre-activation, so they stay.
    """
    shift = state["b_dec"] @ state["W_enc"]
    state["b_enc"] = state["b_enc"] + shift
    if "b_mag" in state and "r_mag" in state:
        state["b_mag"] = state["b_mag"] + shift * state["r_mag"].exp()


def need_tensors(state: Tensors, keys: list[str], w_path: Path) -> None:
    """Every one of ``keys`` is in ``state``, or an error naming the file and the missing ones."""
    missing = sorted(set(keys) - set(state))
    if missing:
        raise ValueError(f"{w_path} lacks tensors {missing}")


def need_for(state: Tensors, keys: list[str], path: Path, what: str) -> None:
    """The same check for one of a library's classes: the error names the class (``what``) and
    lists the tensors the file does have."""
    missing = [k for k in keys if k not in state]
    if missing:
        raise ValueError(f"{path}: a {what} needs tensors {missing}; the file has {sorted(state)}")


def full_threshold(value: torch.Tensor, d_sae: int, path: Path) -> torch.Tensor:
    """One batch threshold (a scalar) or one per latent, as [d_sae]."""
    if value.numel() == 1:
        return value.reshape(()).float().expand(d_sae).clone()
    if tuple(value.shape) != (d_sae,):
        raise ValueError(
            f"{path}: 'threshold' has shape {tuple(value.shape)}, expected () or ({d_sae},)"
        )
    return value.float().clone()
