"""SAE artifacts in SAELens's layout: ``cfg.json`` + ``sae_weights.safetensors``.

``sae_lens.SAE.load_from_disk(folder)`` opens the variants SAELens has an architecture for
(topk -> "topk", relu_l1 -> "standard", jumprelu, gated) with their hook and model names
(``metadata.sae_lens_version`` marks the file as SAELens 6's format). Our own fields live under
``cfg["interp"]`` (SAELens ignores unknown keys).

``load_sae`` opens, into the one :class:`saes.sae.SAE` interface:

* ours, and SAELens's ``standard``, ``topk`` (also ``rescale_acts_by_decoder_norm``),
  ``jumprelu`` (also its BatchTopK / Matryoshka BatchTopK SAEs, which it saves as jumprelu) and
  ``gated``, with ``apply_b_dec_to_input`` either way and ``reshape_activations="hook_z"`` (our SAE
  takes hook_z flattened to n_heads * d_head, head-major: ``saes.analysis.attention_heads.encode_z``
  does SAELens's reshape);
* dictionary_learning folders (``ae.pt`` + ``config.json``) and sparsify hook folders
  (``cfg.json`` + ``sae.safetensors``; ``load_sae(run, hook=...)`` on the run folder): see
  :mod:`saes.foreign`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file

from interp.hooks import HOOK_Z, layout_for_spec
from interp.io import atomic_write, atomic_write_json
from saes.config import SAEConfig
from saes.foreign import (
    DL_WEIGHTS,
    SPARSIFY_CFG,
    SPARSIFY_WEIGHTS,
    fold_input_bias,
    read_dictionary_learning,
    read_json,
    read_sparsify,
)
from saes.sae import SAE
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
# the SAELens file format we write: SAELens >= 6 reads metadata (hook, model names) from
# ``metadata``; without a version it takes the file for a pre-6 one and drops them
SAE_LENS_FORMAT_VERSION = "6.0.0"


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
            "sae_lens_version": SAE_LENS_FORMAT_VERSION,
            "sae_lens_training_version": None,
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
    names = _saelens_names(export)  # ours -> SAELens's where they differ (gated: b_gate)
    tensors = {
        names.get(k, k): v.detach().contiguous().cpu()
        for k, v in export.state_dict().items()
        if k not in training_only
    }
    atomic_write(folder / WEIGHTS, lambda tmp: save_file(tensors, tmp))
    atomic_write_json(folder / CFG, sae_lens_cfg(export, extra_metadata))
    return folder


def _saelens_names(sae: SAE) -> dict[str, str]:
    return dict(getattr(sae.variant, "saelens_names", {}) or {})


def _read_saelens(folder: Path) -> tuple[SAEConfig, dict[str, torch.Tensor], Path]:
    """Our folders and SAELens's: (config, tensors in our names and layout, weights path)."""
    cfg_path, w_path = folder / CFG, folder / WEIGHTS
    raw = read_json(cfg_path)
    arch = raw.get("architecture", "standard")
    if "interp" in raw:
        cfg = SAEConfig.from_saved(raw["interp"])
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
        _need_tensors(state, ["W_enc", "b_enc", "W_dec", "b_dec"], w_path)
        _check_shape(state, "W_enc", (cfg.d_in, cfg.d_sae), w_path, cfg_path)
        if not raw.get("apply_b_dec_to_input", True):
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


def _need_tensors(state: dict[str, torch.Tensor], keys: list[str], w_path: Path) -> None:
    missing = sorted(set(keys) - set(state))
    if missing:
        raise ValueError(f"{w_path} lacks tensors {missing}")


def _check_shape(
    state: dict[str, torch.Tensor],
    key: str,
    want: tuple[int, ...],
    w_path: Path,
    cfg_path: Path | None,
) -> None:
    got = tuple(state[key].shape)
    if got != tuple(want):
        says = f"{cfg_path.name} says" if cfg_path is not None else "expected"
        raise ValueError(f"{w_path}: {key} has shape {got}, {says} {tuple(want)}")


def _build(cfg: SAEConfig, state: dict[str, torch.Tensor], w_path: Path, cfg_path: Path) -> SAE:
    """The SAE of ``cfg`` holding ``state`` (our names), every tensor's shape checked."""
    sae = SAE(cfg, seed=None)
    training_only = set(sae.variant.training_buffers)
    own = sae.state_dict()
    wanted = [k for k in own if k not in training_only]  # + threshold / b_mag, r_mag
    _need_tensors(state, wanted, w_path)
    for k in wanted:
        want = tuple(own[k].shape)
        if tuple(state[k].shape) != want:
            raise ValueError(
                f"{w_path}: {k} has shape {tuple(state[k].shape)}, expected {want} "
                f"(d_in={cfg.d_in}, d_sae={cfg.d_sae} from {cfg_path.name})"
            )
    sae.load_state_dict({k: state[k].to(own[k].dtype) for k in wanted}, strict=not training_only)
    return sae


def load_sae(
    folder: str | Path, device: str | torch.device = "cpu", hook: str | None = None
) -> SAE:
    """Open an SAE folder: ours, SAELens's, dictionary_learning's or one sparsify hook folder.

    ``hook``: the subfolder of a folder holding one SAE per hook (a sparsify run), e.g.
    ``load_sae(run, hook="layers.6")``.
    """
    folder = Path(folder)
    if hook is not None:
        folder = folder / hook
    if (folder / CFG).exists() and (folder / WEIGHTS).exists():
        cfg, state, w_path = _read_saelens(folder)
        cfg_path = folder / CFG
    elif (folder / SPARSIFY_CFG).exists() and (folder / SPARSIFY_WEIGHTS).exists():
        cfg, state, w_path = read_sparsify(folder)
        cfg_path = folder / SPARSIFY_CFG
    elif (folder / DL_WEIGHTS).exists():
        cfg, state, w_path = read_dictionary_learning(folder)
        cfg_path = w_path.with_name("config.json")
    else:
        if not folder.is_dir():
            raise FileNotFoundError(f"{folder} is not an SAE folder: it does not exist")
        hooks = sorted(
            p.name
            for p in folder.iterdir()
            if p.is_dir() and ((p / SPARSIFY_CFG).exists() or (p / CFG).exists())
        )
        if hooks:
            raise FileNotFoundError(f"{folder} holds one SAE per hook: pass hook= one of {hooks}")
        for p in (folder / CFG, folder / WEIGHTS):
            if not p.exists():
                raise FileNotFoundError(f"{folder} is not an SAE folder: {p.name} is missing")
    return _build(cfg, state, w_path, cfg_path).to(device)
