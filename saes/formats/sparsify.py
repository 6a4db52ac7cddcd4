"""EleutherAI sparsify's SAE folders.

One folder per hook point with ``cfg.json`` (``k``, ``activation``, ``num_latents``,
``transcode``, ``skip_connection``, ``d_in``) + ``sae.safetensors`` (``encoder.weight``
[d_sae, d_in], ``encoder.bias``, ``W_dec`` [d_sae, d_in], ``b_dec``); the run folder above holds
``config.json`` with the model name. Encoder: top-k of relu(encoder(x - b_dec)).

Transcoders (``transcode: true``): the encoder reads x itself, ``b_dec`` is the output's bias and
``W_skip`` [d_out, d_in] (``skip_connection``) adds x W_skip^T; they open as our transcoders /
skip transcoders. sparsify's hook point ``layers.L.mlp`` reads the MLP module's input, which in
Llama-style models is the post-attention RMSNorm's output *with* its weight; our
``blocks.L.ln2.hook_normalized`` is the normalized vector before the weight (the weight is folded
into the MLP), so on our models multiply the input by that weight first, or fold it into W_enc.
"""

from __future__ import annotations

import re
from pathlib import Path

from safetensors.torch import load_file

from saes.config import SAEConfig
from saes.formats.common import Tensors, need_for, read_json

SPARSIFY_WEIGHTS, SPARSIFY_CFG = "sae.safetensors", "cfg.json"

_SPARSIFY_HOOK = re.compile(r"^(?:.*\.)?(?:layers|h)\.(\d+)(?:\.(mlp|self_attn|attn))?$")


def is_sparsify(folder: Path) -> bool:
    return (folder / SPARSIFY_CFG).exists() and (folder / SPARSIFY_WEIGHTS).exists()


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
    """One sparsify hook folder: (config, tensors in our names and layout, weights path)."""
    w_path, cfg_path = folder / SPARSIFY_WEIGHTS, folder / SPARSIFY_CFG
    raw = read_json(cfg_path)
    transcode = bool(raw.get("transcode", False))
    if raw.get("skip_connection", False) and not transcode:
        raise ValueError(
            f"{cfg_path}: skip_connection without transcode (a skip SAE) is not supported"
        )
    if raw.get("activation", "topk") != "topk":
        raise ValueError(
            f"{cfg_path}: activation={raw['activation']!r} is not supported (only 'topk')"
        )
    try:
        sd = load_file(str(w_path))
    except Exception as e:  # noqa: BLE001 - name the file, not a deep safetensors error
        raise ValueError(f"cannot read SAE weights {w_path}: {e}") from None
    need_for(sd, ["encoder.weight", "encoder.bias", "W_dec", "b_dec"], w_path, "sparsify SAE")
    if "W_skip" in sd and not transcode:
        raise ValueError(f"{w_path}: has 'W_skip' (a skip connection) but transcode is false")
    d_sae, d_in = sd["encoder.weight"].shape
    d_out = sd["W_dec"].shape[1]
    if "d_in" in raw and int(raw["d_in"]) != d_in:
        raise ValueError(f"{cfg_path}: d_in={raw['d_in']} but encoder.weight gives d_in={d_in}")
    if raw.get("num_latents") and int(raw["num_latents"]) != d_sae:
        raise ValueError(
            f"{cfg_path}: num_latents={raw['num_latents']} but encoder.weight gives {d_sae}"
        )
    run_cfg = folder.parent / "config.json"
    model = read_json(run_cfg).get("model", "") if run_cfg.exists() else ""
    extra = {}
    if transcode:
        m = _SPARSIFY_HOOK.match(folder.name)
        layer = m.group(1) if m else None
        extra = {
            "kind": "skip_transcoder" if "W_skip" in sd else "transcoder",
            "d_out": int(d_out),
            "hook_name": f"blocks.{layer}.ln2.hook_normalized" if layer else folder.name,
            "output_hook_name": sparsify_hook_name(folder.name),
        }
    cfg = SAEConfig(
        **{
            "d_in": int(d_in),
            "d_sae": int(d_sae),
            "variant": "topk",
            "k": int(raw.get("k", 32)),
            "hook_name": sparsify_hook_name(folder.name),
            "model_name": str(model or ""),
            **extra,
        }
    )
    state = {
        "W_enc": sd["encoder.weight"].t(),
        "b_enc": sd["encoder.bias"],
        "W_dec": sd["W_dec"],
        "b_dec": sd["b_dec"],
    }
    if "W_skip" in sd:
        state["W_skip"] = sd["W_skip"]
    return cfg, state, w_path
