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
  (``cfg.json`` + ``sae.safetensors``; ``load_sae(run, hook=...)`` on the run folder).

The readers, one module per format, are in :mod:`saes.formats`; this module writes SAEs and
builds them from what a reader returns.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from safetensors.torch import save_file

from interp.atomic_files import atomic_write, atomic_write_json
from interp.hooks import HOOK_Z, layout_for_spec
from saes.config import SAEConfig
from saes.formats import read_sae_folder
from saes.formats.common import need_tensors
from saes.formats.saelens import CFG, WEIGHTS, saelens_architecture
from saes.sae import SAE

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
        "architecture": saelens_architecture(cfg),
        "d_in": cfg.d_in,
        "d_sae": cfg.d_sae,
        "dtype": cfg.dtype,
        "device": "cpu",
        "apply_b_dec_to_input": not cfg.is_transcoder,
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
    if cfg.is_transcoder:  # SAELens's TranscoderConfig: d_out; the output hook in metadata
        out["d_out"] = cfg.width_out
        out["metadata"]["hook_name_out"] = cfg.output_hook_name
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


def _build(cfg: SAEConfig, state: dict[str, torch.Tensor], w_path: Path, cfg_path: Path) -> SAE:
    """The SAE of ``cfg`` holding ``state`` (our names), every tensor's shape checked."""
    sae = SAE(cfg, seed=None)
    training_only = set(sae.variant.training_buffers)
    own = sae.state_dict()
    wanted = [k for k in own if k not in training_only]  # + threshold / b_mag, r_mag
    need_tensors(state, wanted, w_path)
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
    """Open an SAE folder: ours, SAELens's, dictionary_learning's or one sparsify hook folder
    (read by :func:`saes.formats.read_sae_folder`, one module per format).

    ``hook``: the subfolder of a folder holding one SAE per hook (a sparsify run), e.g.
    ``load_sae(run, hook="layers.6")``.
    """
    cfg, state, w_path, cfg_path = read_sae_folder(folder, hook)
    return _build(cfg, state, w_path, cfg_path).to(device)
