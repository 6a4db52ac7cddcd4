"""Readers for other libraries' SAE folders: dictionary_learning and EleutherAI sparsify.

Each reader turns a folder into ``(SAEConfig, tensors, weights_path)`` with the tensors already
in our names and layout (W_enc [d_in, d_sae], b_enc [d_sae], W_dec [d_sae, d_in], b_dec [d_in],
plus the variant's own: ``threshold`` for jumprelu, ``b_mag`` / ``r_mag`` for gated), so that
``(x - b_dec) W_enc + b_enc`` is the library's encoder pre-activation. ``saes.artifacts.load_sae``
checks the shapes and builds the SAE; SAELens folders are read there.

dictionary_learning (saprmarks/dictionary_learning): ``ae.pt`` (a state dict, read with
``torch.load(weights_only=True)``) + ``config.json`` (``{"trainer": {"dict_class", "activation_dim",
"dict_size", "k", "lm_name", "layer", "submodule_name", ...}}``). Its classes at inference:

==========================  ===========  =================================================
``dict_class``              our variant  encoder
==========================  ===========  =================================================
``AutoEncoder``             relu_l1      relu(encoder(x - bias))
``AutoEncoderTopK``         topk         top-k of relu(encoder(x - b_dec))
``BatchTopKSAE``            jumprelu     relu(pre) * (relu(pre) > threshold), one threshold
``MatryoshkaBatchTopKSAE``  jumprelu     the same with W_enc/b_enc parameters
``JumpReluAutoEncoder``     jumprelu     relu(pre * (pre > threshold)), pre = x W_enc + b_enc
``GatedAutoEncoder``        gated        gate_bias / mag_bias / r_mag around encoder(x - b)
==========================  ===========  =================================================

sparsify (EleutherAI): one folder per hook point with ``cfg.json`` (``k``, ``activation``,
``num_latents``, ``transcode``, ``skip_connection``, ``d_in``) + ``sae.safetensors``
(``encoder.weight`` [d_sae, d_in], ``encoder.bias``, ``W_dec`` [d_sae, d_in], ``b_dec``); the run
folder above holds ``config.json`` with the model name. Encoder: top-k of relu(encoder(x - b_dec)).
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file

from saes.config import SAEConfig

DL_WEIGHTS, DL_CFG = "ae.pt", "config.json"
SPARSIFY_WEIGHTS, SPARSIFY_CFG = "sae.safetensors", "cfg.json"

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


def _need(state: Tensors, keys: list[str], path: Path, what: str) -> None:
    missing = [k for k in keys if k not in state]
    if missing:
        raise ValueError(f"{path}: a {what} needs tensors {missing}; the file has {sorted(state)}")


def _full_threshold(value: torch.Tensor, d_sae: int, path: Path) -> torch.Tensor:
    """One batch threshold (a scalar) or one per latent, as [d_sae]."""
    if value.numel() == 1:
        return value.reshape(()).float().expand(d_sae).clone()
    if tuple(value.shape) != (d_sae,):
        raise ValueError(
            f"{path}: 'threshold' has shape {tuple(value.shape)}, expected () or ({d_sae},)"
        )
    return value.float().clone()


# ---- dictionary_learning --------------------------------------------------------------------

_DL_HOOK = re.compile(r"^(resid_post|mlp_out|attn_out)_layer_(\d+)$")


def _dl_hook_name(trainer: dict[str, Any]) -> str:
    """TransformerLens name of dictionary_learning's ``submodule_name`` when it is one of the
    usual ``resid_post_layer_L`` / ``mlp_out_layer_L`` / ``attn_out_layer_L``; else ''."""
    m = _DL_HOOK.match(str(trainer.get("submodule_name") or ""))
    return f"blocks.{m.group(2)}.hook_{m.group(1)}" if m else ""


def read_dictionary_learning(folder: Path) -> tuple[SAEConfig, Tensors, Path]:
    w_path, cfg_path = folder / DL_WEIGHTS, folder / DL_CFG
    if not cfg_path.exists():
        raise FileNotFoundError(
            f"{folder}: a dictionary_learning folder needs {DL_CFG} beside {DL_WEIGHTS} "
            "(it names the dict_class)"
        )
    raw = read_json(cfg_path)
    trainer = raw.get("trainer", raw)
    dict_class = trainer.get("dict_class")
    try:
        sd = torch.load(w_path, map_location="cpu", weights_only=True)
    except Exception as e:  # noqa: BLE001 - name the file, not a deep unpickler error
        raise ValueError(f"cannot read SAE weights {w_path} (weights only): {e}") from None
    if not isinstance(sd, dict) or not all(isinstance(v, torch.Tensor) for v in sd.values()):
        raise ValueError(f"{w_path}: expected a state dict of tensors")
    sd = {k: v.detach() for k, v in sd.items()}
    common = dict(
        hook_name=_dl_hook_name(trainer), model_name=str(trainer.get("lm_name") or "") or ""
    )
    state: Tensors
    if dict_class in ("AutoEncoderTopK", "AutoEncoder", "BatchTopKSAE", "GatedAutoEncoder"):
        enc_keys = ["encoder.weight", "decoder.weight"]
        _need(sd, enc_keys, w_path, dict_class)
        d_sae, d_in = sd["encoder.weight"].shape
        state = {"W_enc": sd["encoder.weight"].t(), "W_dec": sd["decoder.weight"].t()}
        if dict_class == "AutoEncoder":
            _need(sd, ["encoder.bias", "bias"], w_path, dict_class)
            state.update(b_enc=sd["encoder.bias"], b_dec=sd["bias"])
            variant: dict[str, Any] = {"variant": "relu_l1"}
        elif dict_class == "GatedAutoEncoder":
            _need(sd, ["decoder_bias", "gate_bias", "mag_bias", "r_mag"], w_path, dict_class)
            state.update(b_enc=sd["gate_bias"], b_dec=sd["decoder_bias"], b_mag=sd["mag_bias"])
            state["r_mag"] = sd["r_mag"]
            variant = {"variant": "gated"}
        else:
            _need(sd, ["encoder.bias", "b_dec", "k"], w_path, dict_class)
            state.update(b_enc=sd["encoder.bias"], b_dec=sd["b_dec"])
            k = int(sd["k"].item())
            if "k" in trainer and int(trainer["k"]) != k:
                raise ValueError(
                    f"{cfg_path}: trainer k={trainer['k']} but {w_path.name} has k={k}"
                )
            if dict_class == "AutoEncoderTopK":
                variant = {"variant": "topk", "k": k}
            else:  # BatchTopK at inference: its learned batch threshold, not a batch top-k
                _need(sd, ["threshold"], w_path, dict_class)
                state["threshold"] = _full_threshold(sd["threshold"], d_sae, w_path)
                variant = {"variant": "jumprelu"}
    elif dict_class in ("MatryoshkaBatchTopKSAE", "JumpReluAutoEncoder"):
        _need(sd, ["W_enc", "b_enc", "W_dec", "b_dec", "threshold"], w_path, dict_class)
        d_in, d_sae = sd["W_enc"].shape
        state = {k: sd[k] for k in ("W_enc", "b_enc", "W_dec", "b_dec")}
        state["threshold"] = _full_threshold(sd["threshold"], d_sae, w_path)
        if dict_class == "JumpReluAutoEncoder":  # reads x, not x - b_dec (apply_b_dec_to_input)
            fold_input_bias(state)
        variant = {"variant": "jumprelu"}
    else:
        raise ValueError(
            f"{cfg_path}: dictionary_learning dict_class {dict_class!r} has no interp variant; "
            "supported: AutoEncoder, AutoEncoderTopK, BatchTopKSAE, MatryoshkaBatchTopKSAE, "
            "JumpReluAutoEncoder, GatedAutoEncoder"
        )
    for key, want in (("activation_dim", d_in), ("dict_size", d_sae)):
        if key in trainer and int(trainer[key]) != want:
            raise ValueError(
                f"{cfg_path}: {key}={trainer[key]} but {w_path.name}'s weights give {want}"
            )
    cfg = SAEConfig(d_in=int(d_in), d_sae=int(d_sae), **variant, **common)
    return cfg, state, w_path


# ---- sparsify -------------------------------------------------------------------------------

_SPARSIFY_HOOK = re.compile(r"^(?:.*\.)?(?:layers|h)\.(\d+)(?:\.(mlp|self_attn|attn))?$")


def sparsify_hook_name(hookpoint: str) -> str:
    """TransformerLens name of a sparsify hook point (a module whose output it read):
    ``layers.L`` (or ``h.L``) -> ``blocks.L.hook_resid_post``, ``layers.L.mlp`` ->
    ``blocks.L.hook_mlp_out``, ``layers.L.self_attn`` -> ``blocks.L.hook_attn_out``; any other
    name is kept as it is."""
    m = _SPARSIFY_HOOK.match(hookpoint)
    if not m:
        return hookpoint
    kind = {None: "resid_post", "mlp": "mlp_out"}.get(m.group(2), "attn_out")
    return f"blocks.{m.group(1)}.hook_{kind}"


def read_sparsify(folder: Path) -> tuple[SAEConfig, Tensors, Path]:
    w_path, cfg_path = folder / SPARSIFY_WEIGHTS, folder / SPARSIFY_CFG
    raw = read_json(cfg_path)
    for key in ("transcode", "skip_connection"):
        if raw.get(key, False):
            raise ValueError(
                f"{cfg_path}: {key}={raw[key]!r} is not supported "
                "(a transcoder or skip connection is no plain SAE)"
            )
    if raw.get("activation", "topk") != "topk":
        raise ValueError(
            f"{cfg_path}: activation={raw['activation']!r} is not supported (only 'topk')"
        )
    try:
        sd = load_file(str(w_path))
    except Exception as e:  # noqa: BLE001 - name the file, not a deep safetensors error
        raise ValueError(f"cannot read SAE weights {w_path}: {e}") from None
    _need(sd, ["encoder.weight", "encoder.bias", "W_dec", "b_dec"], w_path, "sparsify SAE")
    if "W_skip" in sd:
        raise ValueError(f"{w_path}: has 'W_skip' (a skip connection): not supported")
    d_sae, d_in = sd["encoder.weight"].shape
    if "d_in" in raw and int(raw["d_in"]) != d_in:
        raise ValueError(f"{cfg_path}: d_in={raw['d_in']} but encoder.weight gives d_in={d_in}")
    if raw.get("num_latents") and int(raw["num_latents"]) != d_sae:
        raise ValueError(
            f"{cfg_path}: num_latents={raw['num_latents']} but encoder.weight gives {d_sae}"
        )
    run_cfg = folder.parent / "config.json"
    model = read_json(run_cfg).get("model", "") if run_cfg.exists() else ""
    cfg = SAEConfig(
        d_in=int(d_in),
        d_sae=int(d_sae),
        variant="topk",
        k=int(raw.get("k", 32)),
        hook_name=sparsify_hook_name(folder.name),
        model_name=str(model or ""),
    )
    state = {
        "W_enc": sd["encoder.weight"].t(),
        "b_enc": sd["encoder.bias"],
        "W_dec": sd["W_dec"],
        "b_dec": sd["b_dec"],
    }
    return cfg, state, w_path
