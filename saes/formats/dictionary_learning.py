"""dictionary_learning's SAE folders (saprmarks/dictionary_learning).

A folder holds ``ae.pt`` (a state dict, read with ``torch.load(weights_only=True)``, never
unpickled) + ``config.json`` (``{"trainer": {"dict_class", "activation_dim", "dict_size", "k",
"lm_name", "layer", "submodule_name", ...}}``). Its classes at inference:

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
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import torch

from saes.config import SAEConfig
from saes.formats.common import Tensors, fold_input_bias, full_threshold, need_for, read_json

DL_WEIGHTS, DL_CFG = "ae.pt", "config.json"

_DL_HOOK = re.compile(r"^(resid_post|mlp_out|attn_out)_layer_(\d+)$")


def is_dictionary_learning(folder: Path) -> bool:
    return (folder / DL_WEIGHTS).exists()


def _dl_hook_name(trainer: dict[str, Any]) -> str:
    """TransformerLens name of dictionary_learning's ``submodule_name`` when it is one of the
    usual ``resid_post_layer_L`` / ``mlp_out_layer_L`` / ``attn_out_layer_L``; else ''."""
    m = _DL_HOOK.match(str(trainer.get("submodule_name") or ""))
    return f"blocks.{m.group(2)}.hook_{m.group(1)}" if m else ""


def read_dictionary_learning(folder: Path) -> tuple[SAEConfig, Tensors, Path]:
    """A dictionary_learning folder: (config, tensors in our names and layout, weights path)."""
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
        need_for(sd, enc_keys, w_path, dict_class)
        d_sae, d_in = sd["encoder.weight"].shape
        state = {"W_enc": sd["encoder.weight"].t(), "W_dec": sd["decoder.weight"].t()}
        if dict_class == "AutoEncoder":
            need_for(sd, ["encoder.bias", "bias"], w_path, dict_class)
            state.update(b_enc=sd["encoder.bias"], b_dec=sd["bias"])
            variant: dict[str, Any] = {"variant": "relu_l1"}
        elif dict_class == "GatedAutoEncoder":
            need_for(sd, ["decoder_bias", "gate_bias", "mag_bias", "r_mag"], w_path, dict_class)
            state.update(b_enc=sd["gate_bias"], b_dec=sd["decoder_bias"], b_mag=sd["mag_bias"])
            state["r_mag"] = sd["r_mag"]
            variant = {"variant": "gated"}
        else:
            need_for(sd, ["encoder.bias", "b_dec", "k"], w_path, dict_class)
            state.update(b_enc=sd["encoder.bias"], b_dec=sd["b_dec"])
            k = int(sd["k"].item())
            if "k" in trainer and int(trainer["k"]) != k:
                raise ValueError(
                    f"{cfg_path}: trainer k={trainer['k']} but {w_path.name} has k={k}"
                )
            if dict_class == "AutoEncoderTopK":
                variant = {"variant": "topk", "k": k}
            else:  # BatchTopK at inference: its learned batch threshold, not a batch top-k
                need_for(sd, ["threshold"], w_path, dict_class)
                state["threshold"] = full_threshold(sd["threshold"], d_sae, w_path)
                variant = {"variant": "jumprelu"}
    elif dict_class in ("MatryoshkaBatchTopKSAE", "JumpReluAutoEncoder"):
        need_for(sd, ["W_enc", "b_enc", "W_dec", "b_dec", "threshold"], w_path, dict_class)
        d_in, d_sae = sd["W_enc"].shape
        state = {k: sd[k] for k in ("W_enc", "b_enc", "W_dec", "b_dec")}
        state["threshold"] = full_threshold(sd["threshold"], d_sae, w_path)
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
