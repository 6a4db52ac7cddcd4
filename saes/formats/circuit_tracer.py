"""circuit-tracer's transcoder folders, both ways: per-layer transcoder sets and cross-layer
transcoders (CLTs).

Written from circuit-tracer's documented layout (``circuit_tracer/transcoder/*.py``,
``utils/hf_utils.py``); circuit-tracer itself cannot be installed beside our pins (it requires
``transformers<=4.57.3``), so the tests check files written to that layout.

``config.yaml``: ``model_kind`` ("transcoder_set" | "cross_layer_transcoder"), ``model_name``,
``feature_input_hook`` / ``feature_output_hook`` (the hook under ``blocks.{layer}``, e.g.
"ln2.hook_normalized" / "hook_mlp_out"), and for sets ``activation`` ("relu" | "topk", with a
top-level ``k``; absent: JumpReLU when the files hold thresholds, else ReLU).

* a set: ``layer_{i}.safetensors`` for i = 0..L-1 with ``W_enc`` [d_tc, d_model] (ours
  transposed), ``W_dec`` [d_tc, d_model], ``b_enc`` [d_tc], ``b_dec`` [d_model], optional
  ``W_skip`` [d_out, d_in] (applied as x W_skip^T) and ``activation_function.threshold`` [d_tc];
* a CLT: ``W_enc_{i}.safetensors`` with ``W_enc_{i}`` [d_tc, d_model], ``b_enc_{i}``, ``b_dec_{i}``
  (the bias of *output* layer i) and optional ``threshold_{i}``; ``W_dec_{i}.safetensors`` with
  ``W_dec_{i}`` [d_tc, L - i, d_model] (slice j - i writes to layer j). circuit-tracer's CLT is
  ReLU or JumpReLU (thresholds present); our TopK CLTs are written with ``activation: topk`` and
  ``k`` in the config, which circuit-tracer does not read (it would apply ReLU).

Rules that differ: circuit-tracer's TopK keeps the k largest pre-activations with no ReLU; ours
applies ReLU first, so the two differ only at tokens with fewer than k positive pre-activations.
Layers are numbered from 0 and must be contiguous (circuit-tracer's loader requires a transcoder
for every layer 0..max).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
import yaml
from safetensors.torch import load_file, save_file

from interp.atomic_files import atomic_write
from interp.hooks import hook_layer, hook_template
from saes.config import SAEConfig, check_contiguous_layers
from saes.formats.common import need_for

CT_CONFIG = "config.yaml"
SET_KIND, CLT_KIND = "transcoder_set", "cross_layer_transcoder"
BLOCK = "blocks.{layer}."


def is_circuit_tracer(folder: Path) -> bool:
    return (folder / CT_CONFIG).exists()


def read_config(folder: Path) -> dict[str, Any]:
    path = folder / CT_CONFIG
    try:
        raw = yaml.safe_load(path.read_text())
    except (OSError, yaml.YAMLError) as e:
        raise ValueError(f"cannot read circuit-tracer config {path}: {e}") from None
    if not isinstance(raw, dict):
        raise ValueError(f"{path}: expected a mapping")
    for key in ("model_kind", "feature_input_hook", "feature_output_hook"):
        if key not in raw:
            raise ValueError(f"{path}: circuit-tracer configs need {key!r}; it has {sorted(raw)}")
    if raw["model_kind"] not in (SET_KIND, CLT_KIND):
        raise ValueError(
            f"{path}: model_kind {raw['model_kind']!r} is neither {SET_KIND!r} nor {CLT_KIND!r}"
        )
    return raw


def _load(path: Path) -> dict[str, torch.Tensor]:
    if not path.exists():
        raise FileNotFoundError(f"{path} is missing")
    try:
        return load_file(str(path))
    except Exception as e:  # noqa: BLE001 - name the file, not a deep safetensors error
        raise ValueError(f"cannot read transcoder weights {path}: {e}") from None


def _relative(hook_template: str) -> str:
    """``blocks.{layer}.ln2.hook_normalized`` -> ``ln2.hook_normalized`` (circuit-tracer's form)."""
    if not hook_template.startswith(BLOCK):
        raise ValueError(
            f"circuit-tracer names hooks under blocks.{{layer}}; {hook_template!r} is not one"
        )
    return hook_template[len(BLOCK) :]


def _rule(cfg: SAEConfig) -> dict[str, Any]:
    if cfg.variant == "topk":
        return {"activation": "topk", "k": cfg.k}
    if cfg.variant == "relu_l1":
        return {"activation": "relu"}
    if cfg.variant == "jumprelu":
        return {}  # thresholds in the files select JumpReLU
    raise ValueError(f"circuit-tracer has no {cfg.variant!r} transcoders (relu, jumprelu, topk)")


def _write_config(folder: Path, data: dict[str, Any]) -> None:
    atomic_write(folder / CT_CONFIG, lambda tmp: Path(tmp).write_text(yaml.safe_dump(data)))


def _save(folder: Path, name: str, tensors: dict[str, torch.Tensor]) -> None:
    tensors = {k: v.detach().contiguous().cpu() for k, v in tensors.items()}
    atomic_write(folder / name, lambda tmp: save_file(tensors, tmp))


# ---- per-layer sets ---------------------------------------------------------------------------
def write_transcoder_set(saes: list, folder: str | Path, model_name: str = "") -> Path:
    """One per-layer transcoder (an exported SAE of kind transcoder / skip_transcoder, raw-input
    weights) per layer 0..L-1, in circuit-tracer's set layout."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    cfgs = [s.cfg for s in saes]
    layers = [hook_layer(c.hook_name) for c in cfgs]
    if layers != list(range(len(saes))):
        raise ValueError(
            f"circuit-tracer sets hold a transcoder for every layer 0..L-1 in order; got layers "
            f"{layers}"
        )
    if any(not c.is_transcoder or c.kind == "clt" for c in cfgs):
        raise ValueError("a transcoder set holds per-layer transcoders (kind transcoder / skip)")
    for i, sae in enumerate(saes):
        tensors = {
            "W_enc": sae.W_enc.t(),
            "W_dec": sae.W_dec,
            "b_enc": sae.b_enc,
            "b_dec": sae.b_dec,
        }
        if sae.W_skip is not None:
            tensors["W_skip"] = sae.W_skip
        if hasattr(sae, "threshold"):
            tensors["activation_function.threshold"] = sae.threshold
        _save(folder, f"layer_{i}.safetensors", tensors)
    config = {
        "model_kind": SET_KIND,
        "model_name": model_name or cfgs[0].model_name,
        "feature_input_hook": _relative(hook_template([c.hook_name for c in cfgs])),
        "feature_output_hook": _relative(hook_template([c.output_hook_name for c in cfgs])),
        **_rule(cfgs[0]),
    }
    _write_config(folder, config)  # last: its presence marks the folder complete
    return folder


def read_transcoder_set(folder: str | Path) -> list[tuple[SAEConfig, dict[str, torch.Tensor]]]:
    """(config, tensors in our layout) per layer of a circuit-tracer transcoder set."""
    folder = Path(folder)
    raw = read_config(folder)
    if raw["model_kind"] != SET_KIND:
        raise ValueError(f"{folder / CT_CONFIG}: model_kind is {raw['model_kind']!r}, not a set")
    files = sorted(folder.glob("layer_*.safetensors"), key=lambda p: int(p.stem.split("_")[1]))
    if not files:
        raise FileNotFoundError(f"{folder} holds no layer_{{i}}.safetensors")
    check_contiguous_layers([int(p.stem.split("_")[1]) for p in files], f"{folder}'s layers")
    out = []
    for i, path in enumerate(files):
        sd = _load(path)
        need_for(sd, ["W_enc", "W_dec", "b_enc", "b_dec"], path, "circuit-tracer transcoder")
        d_tc, d_in = sd["W_enc"].shape
        if tuple(sd["W_dec"].shape[:1]) != (d_tc,) or sd["b_enc"].shape != (d_tc,):
            raise ValueError(
                f"{path}: W_enc is {tuple(sd['W_enc'].shape)} [d_tc, d_model] but W_dec is "
                f"{tuple(sd['W_dec'].shape)} and b_enc {tuple(sd['b_enc'].shape)}"
            )
        d_out = sd["W_dec"].shape[1]
        threshold = sd.get("activation_function.threshold")
        act = raw.get("activation")
        if act == "topk":
            variant, extra = "topk", {"k": int(raw["k"])}
        elif act == "relu" or threshold is None:
            variant, extra = "relu_l1", {}
        else:
            variant, extra = "jumprelu", {}
        cfg = SAEConfig(
            d_in=d_in,
            d_sae=d_tc,
            d_out=d_out,
            kind="skip_transcoder" if "W_skip" in sd else "transcoder",
            variant=variant,
            hook_name=f"blocks.{i}.{raw['feature_input_hook']}",
            output_hook_name=f"blocks.{i}.{raw['feature_output_hook']}",
            model_name=str(raw.get("model_name") or ""),
            **extra,
        )
        state = {
            "W_enc": sd["W_enc"].t(),
            "W_dec": sd["W_dec"],
            "b_enc": sd["b_enc"],
            "b_dec": sd["b_dec"],
        }
        if "W_skip" in sd:
            state["W_skip"] = sd["W_skip"]
        if variant == "jumprelu":
            state["threshold"] = threshold.reshape(-1).expand(d_tc).clone()
        out.append((cfg, state))
    return out


# ---- cross-layer transcoders ------------------------------------------------------------------
def write_clt(clt, folder: str | Path, model_name: str = "") -> Path:
    """A :class:`~saes.transcoders.CrossLayerTranscoder` with folded scales (raw inputs), in
    circuit-tracer's CLT layout."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    cfg = clt.cfg
    if cfg.layers[0] != 0:
        raise ValueError(
            f"circuit-tracer numbers a CLT's layers from 0; this one spans {cfg.layers}"
        )
    for i in range(clt.n_layers):
        enc = {
            f"W_enc_{i}": clt.W_enc[i].t(),
            f"b_enc_{i}": clt.b_enc[i],
            f"b_dec_{i}": clt.b_dec[i],
        }
        if hasattr(clt, "threshold"):
            enc[f"threshold_{i}"] = clt.threshold[i]
        _save(folder, f"W_enc_{i}.safetensors", enc)
        _save(folder, f"W_dec_{i}.safetensors", {f"W_dec_{i}": clt.source_decoder(i)})
    config = {
        "model_kind": CLT_KIND,
        "model_name": model_name or cfg.model_name,
        "feature_input_hook": _relative(cfg.hook_name),
        "feature_output_hook": _relative(cfg.output_hook_name),
        **_rule(cfg),
    }
    _write_config(folder, config)
    return folder


def read_clt(folder: str | Path) -> tuple[SAEConfig, dict[str, torch.Tensor]]:
    """(config, state dict of :class:`~saes.transcoders.CrossLayerTranscoder`) of a
    circuit-tracer CLT folder; shapes checked against each other, with the file named. The
    decoders, stored by source layer, are regrouped by target layer (our layout)."""
    folder = Path(folder)
    raw = read_config(folder)
    if raw["model_kind"] != CLT_KIND:
        raise ValueError(f"{folder / CT_CONFIG}: model_kind is {raw['model_kind']!r}, not a CLT")
    L = len(list(folder.glob("W_enc_*.safetensors")))
    if L == 0:
        raise FileNotFoundError(f"{folder} holds no W_enc_{{i}}.safetensors")
    state: dict[str, torch.Tensor] = {}
    b_enc, b_dec, thresholds, sources = [], [], [], []
    d_tc = d_in = d_out = None
    for i in range(L):
        ep, dp = folder / f"W_enc_{i}.safetensors", folder / f"W_dec_{i}.safetensors"
        enc, dec = _load(ep), _load(dp)
        need_for(enc, [f"W_enc_{i}", f"b_enc_{i}", f"b_dec_{i}"], ep, "circuit-tracer CLT layer")
        need_for(dec, [f"W_dec_{i}"], dp, "circuit-tracer CLT layer")
        w_enc, w_dec = enc[f"W_enc_{i}"], dec[f"W_dec_{i}"]
        if d_tc is None:
            d_tc, d_in = w_enc.shape
            d_out = w_dec.shape[-1]
        want = (d_tc, L - i, d_out)
        if tuple(w_enc.shape) != (d_tc, d_in) or tuple(w_dec.shape) != want:
            raise ValueError(
                f"{dp}: W_dec_{i} is {tuple(w_dec.shape)} and W_enc_{i} {tuple(w_enc.shape)}; "
                f"a CLT of {L} layers needs W_enc_{i} [{d_tc}, {d_in}] and W_dec_{i} {list(want)}"
            )
        state[f"W_enc.{i}"] = w_enc.t()
        sources.append(w_dec)
        b_enc.append(enc[f"b_enc_{i}"])
        b_dec.append(enc[f"b_dec_{i}"])
        if f"threshold_{i}" in enc:
            thresholds.append(enc[f"threshold_{i}"].reshape(-1).expand(d_tc))
    for j in range(L):  # ours groups the decoder by target layer: W_dec[j][i] = W_dec_i[:, j - i]
        state[f"W_dec.{j}"] = torch.stack([sources[i][:, j - i] for i in range(j + 1)])
    state["b_enc"] = torch.stack(b_enc)
    state["b_dec"] = torch.stack(b_dec)
    act = raw.get("activation")
    if thresholds:
        variant, extra = "jumprelu", {}
        state["threshold"] = torch.stack(thresholds)
    elif act == "topk":
        variant, extra = "topk", {"k": int(raw["k"])}
    else:
        variant, extra = "relu_l1", {}
    cfg = SAEConfig(
        d_in=d_in,
        d_sae=d_tc,
        d_out=d_out,
        kind="clt",
        variant=variant,
        layers=list(range(L)),
        hook_name=BLOCK + raw["feature_input_hook"],
        output_hook_name=BLOCK + raw["feature_output_hook"],
        model_name=str(raw.get("model_name") or ""),
        **extra,
    )
    return cfg, state
