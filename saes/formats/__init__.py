"""Reading SAE folders, one module per format: ``saelens`` (ours and SAELens's: ``cfg.json`` +
``sae_weights.safetensors``), ``dictionary_learning`` (``ae.pt`` + ``config.json``) and
``sparsify`` (one hook folder: ``cfg.json`` + ``sae.safetensors``); ``common`` holds what they
share.

Each reader turns a folder into ``(SAEConfig, tensors, weights_path)`` with the tensors already
in our names and layout (W_enc [d_in, d_sae], b_enc [d_sae], W_dec [d_sae, d_in], b_dec [d_in],
plus the variant's own: ``threshold`` for jumprelu, ``b_mag`` / ``r_mag`` for gated), so that
``(x - b_dec) W_enc + b_enc`` is the library's encoder pre-activation. :func:`read_sae_folder`
picks the reader from the files a folder holds; ``saes.artifacts.load_sae`` checks every
tensor's shape and builds the SAE.
"""

from __future__ import annotations

from pathlib import Path

from saes.config import SAEConfig
from saes.formats.common import Tensors, fold_input_bias, full_threshold, need_tensors, read_json
from saes.formats.dictionary_learning import (
    DL_CFG,
    DL_WEIGHTS,
    is_dictionary_learning,
    read_dictionary_learning,
)
from saes.formats.saelens import CFG, FROM_SAELENS_ARCH, WEIGHTS, is_saelens, read_saelens
from saes.formats.sparsify import (
    SPARSIFY_CFG,
    SPARSIFY_WEIGHTS,
    is_sparsify,
    read_sparsify,
    sparsify_hook_name,
)

__all__ = [
    "CFG",
    "DL_CFG",
    "DL_WEIGHTS",
    "FROM_SAELENS_ARCH",
    "SPARSIFY_CFG",
    "SPARSIFY_WEIGHTS",
    "Tensors",
    "WEIGHTS",
    "fold_input_bias",
    "full_threshold",
    "need_tensors",
    "read_dictionary_learning",
    "read_json",
    "read_sae_folder",
    "read_saelens",
    "read_sparsify",
    "sparsify_hook_name",
]


def read_sae_folder(
    folder: str | Path, hook: str | None = None
) -> tuple[SAEConfig, Tensors, Path, Path]:
    """``(config, tensors, weights path, config path)`` of an SAE folder in any format read here.

    ``hook``: the subfolder of a folder holding one SAE per hook (a sparsify run), e.g.
    ``read_sae_folder(run, hook="layers.6")``.
    """
    folder = Path(folder)
    if hook is not None:
        folder = folder / hook
    if is_saelens(folder):
        cfg, state, w_path = read_saelens(folder)
        return cfg, state, w_path, folder / CFG
    if is_sparsify(folder):
        cfg, state, w_path = read_sparsify(folder)
        return cfg, state, w_path, folder / SPARSIFY_CFG
    if is_dictionary_learning(folder):
        cfg, state, w_path = read_dictionary_learning(folder)
        return cfg, state, w_path, w_path.with_name(DL_CFG)
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
    raise FileNotFoundError(f"{folder} is not an SAE folder")  # pragma: no cover - unreachable
