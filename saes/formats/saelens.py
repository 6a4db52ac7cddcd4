"""SAELens's SAE folders, and ours (the same layout): ``cfg.json`` + ``sae_weights.safetensors``.

Ours carry our own config under ``cfg["interp"]`` and open as saved. SAELens's open as
``standard`` (-> relu_l1), ``topk`` (also ``rescale_acts_by_decoder_norm``, folded into the
weights), ``jumprelu`` (also its BatchTopK / Matryoshka BatchTopK SAEs, which it saves as
jumprelu; older files' ``log_threshold`` is exponentiated) and ``gated``, with
``apply_b_dec_to_input`` either way and ``reshape_activations="hook_z"`` (our SAE takes hook_z
flattened to n_heads * d_head, head-major). Writing this layout is :func:`saes.artifacts.save_sae`.
"""

from __future__ import annotations

from pathlib import Path

from safetensors.torch import load_file

from saes.config import SAEConfig
from saes.formats.common import Tensors, fold_input_bias, need_tensors, read_json
from saes.variants import variant_class

WEIGHTS = "sae_weights.safetensors"
CFG = "cfg.json"

# SAELens architecture -> the variant that opens it (ours -> theirs is each variant's
# ``saelens_architecture``)
FROM_SAELENS_ARCH = {
    "topk": "topk",
    "standard": "relu_l1",
    "jumprelu": "jumprelu",
    "gated": "gated",
}

# SAELens's transcoder architectures: (our rule, our kind) both ways. A transcoder is ReLU
# ("transcoder") or JumpReLU in SAELens, with or without W_skip [d_out, d_in]; it reads x
# (apply_b_dec_to_input False) and its b_dec is the output's. SAELens has no TopK transcoder:
# ours are written with architecture "<rule>_<kind>", which only interp opens.
TRANSCODER_ARCH = {
    ("relu_l1", "transcoder"): "transcoder",
    ("relu_l1", "skip_transcoder"): "skip_transcoder",
    ("jumprelu", "transcoder"): "jumprelu_transcoder",
    ("jumprelu", "skip_transcoder"): "jumprelu_skip_transcoder",
}
FROM_TRANSCODER_ARCH = {arch: key for key, arch in TRANSCODER_ARCH.items()}


def saelens_architecture(cfg: SAEConfig) -> str:
    """The ``architecture`` we write for a config (SAELens opens every one but "<rule>_<kind>")."""
    if cfg.kind == "sae":
        return variant_class(cfg.variant).saelens_architecture or cfg.variant
    return TRANSCODER_ARCH.get((cfg.variant, cfg.kind), f"{cfg.variant}_{cfg.kind}")


def is_saelens(folder: Path) -> bool:
    return (folder / CFG).exists() and (folder / WEIGHTS).exists()


def _check_shape(
    state: Tensors,
    key: str,
    want: tuple[int, ...],
    w_path: Path,
    cfg_path: Path | None,
) -> None:
    got = tuple(state[key].shape)
    if got != tuple(want):
        says = f"{cfg_path.name} says" if cfg_path is not None else "expected"
        raise ValueError(f"{w_path}: {key} has shape {got}, {says} {tuple(want)}")


def _transcoder_config(raw: dict, arch: str) -> SAEConfig:
    """Our config for SAELens's transcoder, skip transcoder and JumpReLU transcoders."""
    variant, kind = FROM_TRANSCODER_ARCH[arch]
    meta = raw.get("metadata", {}) or {}
    return SAEConfig(
        d_in=raw["d_in"],
        d_sae=raw["d_sae"],
        d_out=raw.get("d_out", raw["d_in"]),
        kind=kind,
        variant=variant,
        hook_name=meta.get("hook_name") or raw.get("hook_name") or "",
        output_hook_name=meta.get("hook_name_out") or raw.get("hook_name_out") or "",
        model_name=meta.get("model_name") or raw.get("model_name") or "",
    )


def read_saelens(folder: Path) -> tuple[SAEConfig, Tensors, Path]:
    """Our folders and SAELens's: (config, tensors in our names and layout, weights path)."""
    cfg_path, w_path = folder / CFG, folder / WEIGHTS
    raw = read_json(cfg_path)
    arch = raw.get("architecture", "standard")
    if "interp" in raw:
        cfg = SAEConfig.from_saved(raw["interp"])
    elif arch in FROM_TRANSCODER_ARCH:
        cfg = _transcoder_config(raw, arch)
    else:
        if arch not in FROM_SAELENS_ARCH:
            raise ValueError(
                f"{cfg_path}: SAELens architecture {arch!r} has no interp variant; "
                f"supported: {sorted(FROM_SAELENS_ARCH)}"
            )
        if raw.get("normalize_activations", "none") not in ("none", None, False):
            raise ValueError(
                f"{cfg_path}: normalize_activations={raw['normalize_activations']!r} "
                "is not supported (only 'none')"
            )
        meta = raw.get("metadata", {}) or {}
        hook = meta.get("hook_name") or raw.get("hook_name") or raw.get("hook_point") or ""
        reshape = raw.get("reshape_activations", "none") or "none"
        if reshape not in ("none", "hook_z"):
            raise ValueError(f"{cfg_path}: reshape_activations={reshape!r} is not supported")
        if reshape == "hook_z" and not hook.endswith("_z"):
            raise ValueError(
                f"{cfg_path}: reshape_activations='hook_z' but hook_name={hook!r} is no hook_z"
            )
        cfg = SAEConfig(
            d_in=raw["d_in"],
            d_sae=raw["d_sae"],
            variant=FROM_SAELENS_ARCH[arch],
            k=raw.get("k", 32) if arch == "topk" else 32,
            hook_name=hook,
            model_name=meta.get("model_name") or raw.get("model_name") or "",
        )
    try:
        state = load_file(str(w_path))
    except Exception as e:  # noqa: BLE001 - name the file, not a deep safetensors error
        raise ValueError(f"cannot read SAE weights {w_path}: {e}") from None
    ours = dict(getattr(variant_class(cfg.variant), "saelens_names", {}) or {})
    theirs = {v: k for k, v in ours.items()}
    state = {theirs.get(k, k): v for k, v in state.items()}
    if "log_threshold" in state and "threshold" not in state:  # older SAELens JumpReLU files
        state["threshold"] = state.pop("log_threshold").exp()
    if "interp" not in raw:
        need_tensors(state, ["W_enc", "b_enc", "W_dec", "b_dec"], w_path)
        _check_shape(state, "W_enc", (cfg.d_in, cfg.d_sae), w_path, cfg_path)
        if cfg.is_transcoder:
            _check_shape(state, "W_dec", (cfg.d_sae, cfg.width_out), w_path, cfg_path)
            if cfg.kind == "skip_transcoder":
                need_tensors(state, ["W_skip"], w_path)
                _check_shape(state, "W_skip", (cfg.width_out, cfg.d_in), w_path, cfg_path)
        elif not raw.get("apply_b_dec_to_input", True):
            # SAELens without b_dec on the input: fold it into the biases so the encoder reads
            # x - b_dec like ours
            fold_input_bias(state)
        if arch == "topk" and raw.get("rescale_acts_by_decoder_norm", False):
            # codes pre * ||W_dec_i||, decoded with W_dec_i / ||W_dec_i||: fold the norms in
            _check_shape(state, "W_dec", (cfg.d_sae, cfg.d_in), w_path, cfg_path)
            norm = state["W_dec"].norm(dim=-1)
            state["W_enc"] = state["W_enc"] * norm
            state["b_enc"] = state["b_enc"] * norm
            state["W_dec"] = state["W_dec"] / norm.clamp_min(1e-12)[:, None]
    return cfg, state, w_path
