"""Hugging Face model -> ``HookedTransformer``: config mapping, rope settings, TransformerLens's
weight converters and the weight processing every loader applies.

Weight processing (all loaders, :data:`PROCESSING`): ``fold_ln=True, center_writing_weights=False,
center_unembed=False, fold_value_biases=False``. Folding the (RMS)norm weights into the following
linear layers leaves every residual-stream hook (``hook_resid_pre/mid/post``, ``hook_attn_out``,
``hook_mlp_out``), every attention hook (q/k/v/z/pattern) and the logits the same function of the
input as in the original model (up to float rounding); only ``ln*.hook_normalized`` changes (it
becomes the normalized vector before the norm's weight). Centering the writing weights would
remove each residual vector's mean over d_model, so ``hook_resid_post`` would no longer be the
model's real residual stream (TransformerLens skips it for RMSNorm models anyway); centering the
unembedding changes logits (not log-probs) and is invalid with logit softcapping (Gemma 2);
folding value biases would move ``b_V`` out of ``hook_v``/``hook_z``. So we keep all of those equal
to the real model's activations.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import torch

from interp.models.hooked import attach_tokenizer, fast_layout, new_hooked, quiet_tl

if TYPE_CHECKING:  # pragma: no cover
    from transformer_lens import HookedTransformer
    from transformers import PreTrainedModel, PreTrainedTokenizerBase

logger = logging.getLogger(__name__)

#: n_ctx is max_position_embeddings capped at this. In TransformerLens 3.9 the causal mask is
#: built per forward and the rotary table grows lazily, so a large n_ctx costs no memory; the cap
#: only bounds ``to_tokens`` truncation for models with 128k+ contexts.
N_CTX_CAP = 8192

#: weight-processing settings used by every loader (see the module docstring for why)
PROCESSING = {
    "fold_ln": True,
    "center_writing_weights": False,
    "center_unembed": False,
    "fold_value_biases": False,
}


def _attr(cfg: Any, name: str, default: Any = None) -> Any:
    try:
        val = getattr(cfg, name)
    except Exception:  # noqa: BLE001 - heterogeneous configs (transformers>=5.15) raise on global reads
        return default
    return default if val is None else val


def _rope_params(hf_config: Any, layer_type: str | None = None) -> dict[str, Any]:
    """rope parameters as a flat dict (transformers 5 ``rope_parameters``, or legacy fields)."""
    params = _attr(hf_config, "rope_parameters")
    if (
        isinstance(params, dict)
        and layer_type is not None
        and isinstance(params.get(layer_type), dict)
    ):
        params = params[layer_type]
    elif isinstance(params, dict) and any(isinstance(v, dict) for v in params.values()):
        params = params.get("full_attention") or next(
            v for v in params.values() if isinstance(v, dict)
        )
    out = dict(params) if isinstance(params, dict) else {}
    legacy = _attr(hf_config, "rope_scaling")
    if isinstance(legacy, dict):
        for k, v in legacy.items():
            out.setdefault(k, v)
    if "rope_theta" not in out and _attr(hf_config, "rope_theta") is not None:
        out["rope_theta"] = _attr(hf_config, "rope_theta")
    if "type" in out and "rope_type" not in out:
        out["rope_type"] = out["type"]
    return out


def _apply_rope(
    cfg: dict[str, Any], rope: dict[str, Any], arch: str, allow_linear: bool = False
) -> None:
    cfg["rotary_base"] = rope.get("rope_theta", 10000.0)
    kind = (rope.get("rope_type") or "default").lower()
    if kind == "default":
        return
    if kind == "llama3":
        cfg.update(
            use_NTK_by_parts_rope=True,
            NTK_original_ctx_len=int(rope.get("original_max_position_embeddings", 8192)),
            NTK_by_parts_low_freq_factor=float(rope.get("low_freq_factor", 1.0)),
            NTK_by_parts_high_freq_factor=float(rope.get("high_freq_factor", 4.0)),
            NTK_by_parts_factor=float(rope.get("factor", 8.0)),
        )
        return
    if kind == "linear" and allow_linear:
        cfg["rotary_scaling_factor"] = float(rope.get("factor", 1.0))
        return
    raise ValueError(f"{arch}: rope_type {kind!r} is not supported by interp's converter")


def _local_attention(
    cfg: dict[str, Any], hf_config: Any, n_layers: int, all_local: bool = False
) -> None:
    window = _attr(hf_config, "sliding_window")
    layer_types = _attr(hf_config, "layer_types")
    if not window:
        return
    if layer_types and any(t == "sliding_attention" for t in layer_types):
        attn_types = ["local" if t == "sliding_attention" else "global" for t in layer_types]
    elif all_local:
        attn_types = ["local"] * n_layers
    else:
        return
    cfg.update(use_local_attn=True, window_size=int(window), attn_types=attn_types)


def _architecture(hf_model_or_config: Any) -> str:
    if hasattr(hf_model_or_config, "config"):
        return type(hf_model_or_config).__name__
    archs = _attr(hf_model_or_config, "architectures") or []
    if archs:
        return archs[0]
    mt = _attr(hf_model_or_config, "model_type", "")
    return {
        "llama": "LlamaForCausalLM",
        "mistral": "MistralForCausalLM",
        "qwen2": "Qwen2ForCausalLM",
        "qwen3": "Qwen3ForCausalLM",
        "gemma": "GemmaForCausalLM",
        "gemma2": "Gemma2ForCausalLM",
        "gemma3_text": "Gemma3ForCausalLM",
    }.get(mt, mt or "unknown")


SUPPORTED_ARCHITECTURES = (
    "LlamaForCausalLM",
    "MistralForCausalLM",
    "Qwen2ForCausalLM",
    "Qwen3ForCausalLM",
    "GemmaForCausalLM",
    "Gemma2ForCausalLM",
    "Gemma3ForCausalLM",
)


def hf_config_to_tl_config(
    hf_config: Any,
    architecture: str | None = None,
    *,
    default_prepend_bos: bool = True,
    n_ctx_cap: int = N_CTX_CAP,
) -> dict[str, Any]:
    """Map a transformers config onto ``HookedTransformerConfig`` kwargs (the same fields
    TransformerLens's ``convert_hf_model_config`` sets per architecture, read from the config
    itself so nothing is looked up on the hub). Raises ``ValueError`` for unsupported models."""
    arch = architecture or _architecture(hf_config)
    if arch not in SUPPORTED_ARCHITECTURES:
        raise ValueError(
            f"architecture {arch!r} is not supported for local GGUF/HF-folder loading; "
            f"supported: {', '.join(SUPPORTED_ARCHITECTURES)}"
        )
    n_heads = int(hf_config.num_attention_heads)
    d_model = int(hf_config.hidden_size)
    head_dim = _attr(hf_config, "head_dim")
    d_head = int(head_dim) if head_dim and head_dim > 0 else d_model // n_heads
    n_kv = int(_attr(hf_config, "num_key_value_heads", n_heads))
    n_layers = int(hf_config.num_hidden_layers)
    max_pos = int(_attr(hf_config, "max_position_embeddings", 2048))
    act = _attr(hf_config, "hidden_activation") or _attr(hf_config, "hidden_act") or "silu"
    from transformer_lens.utilities.activation_functions import SUPPORTED_ACTIVATIONS

    if act not in SUPPORTED_ACTIVATIONS:
        raise ValueError(f"{arch}: activation {act!r} is not supported by TransformerLens")
    cfg: dict[str, Any] = {
        "model_name": str(_attr(hf_config, "_name_or_path", "") or arch).split("/")[-1] or arch,
        "original_architecture": arch,
        "d_model": d_model,
        "d_head": d_head,
        "n_heads": n_heads,
        "d_mlp": int(hf_config.intermediate_size),
        "n_layers": n_layers,
        "n_ctx": min(max_pos, n_ctx_cap),
        "eps": float(_attr(hf_config, "rms_norm_eps", 1e-6)),
        "d_vocab": int(hf_config.vocab_size),
        "act_fn": act,
        "normalization_type": "RMS",
        "positional_embedding_type": "rotary",
        "rotary_adjacent_pairs": False,
        "rotary_dim": d_head,
        "final_rms": True,
        "gated_mlp": True,
        "use_attn_scale": True,
        "n_key_value_heads": n_kv,
        "default_prepend_bos": default_prepend_bos,
        # lean defaults: no per-head result / split inputs / mlp_in copies
        "use_attn_result": False,
        "use_split_qkv_input": False,
        "use_hook_mlp_in": False,
        "use_attn_in": False,
        "init_weights": False,
        "tokenizer_name": None,
        "device": "cpu",
        "dtype": torch.float32,
    }
    rope = _rope_params(hf_config)
    partial = _attr(hf_config, "partial_rotary_factor") or rope.get("partial_rotary_factor")
    if partial and float(partial) != 1.0:
        cfg["rotary_dim"] = int(d_head * float(partial))

    if arch == "LlamaForCausalLM":
        if _attr(hf_config, "attention_bias", False) or _attr(hf_config, "mlp_bias", False):
            raise ValueError(
                "LlamaForCausalLM with attention_bias/mlp_bias is not supported (TL's converter drops biases)"
            )
        cfg["n_key_value_heads"] = n_kv if n_kv != n_heads else None
        _apply_rope(cfg, rope, arch, allow_linear=True)
    elif arch == "MistralForCausalLM":
        _apply_rope(cfg, rope, arch)
        _local_attention(cfg, hf_config, n_layers, all_local=True)
    elif arch == "Qwen2ForCausalLM":
        _apply_rope(cfg, rope, arch)
        if _attr(hf_config, "use_sliding_window", False):
            _local_attention(cfg, hf_config, n_layers)
    elif arch == "Qwen3ForCausalLM":
        if _attr(hf_config, "attention_bias", False):
            raise ValueError("Qwen3ForCausalLM with attention_bias is not supported")
        cfg["use_qk_norm"] = True
        cfg["n_key_value_heads"] = n_kv if n_kv != n_heads else None
        _apply_rope(cfg, rope, arch)
        if _attr(hf_config, "use_sliding_window", False):
            _local_attention(cfg, hf_config, n_layers)
    elif arch.startswith("Gemma"):
        _apply_rope(cfg, rope, arch, allow_linear=arch == "Gemma3ForCausalLM")
        if arch in ("Gemma2ForCausalLM", "Gemma3ForCausalLM"):
            cfg["use_normalization_before_and_after"] = True
            cfg["attn_scale"] = float(_attr(hf_config, "query_pre_attn_scalar", d_head)) ** 0.5
            soft_attn = _attr(hf_config, "attn_logit_softcapping")
            soft_out = _attr(hf_config, "final_logit_softcapping")
            if soft_attn:
                cfg["attn_scores_soft_cap"] = float(soft_attn)
            if soft_out:
                cfg["output_logits_soft_cap"] = float(soft_out)
            _local_attention(cfg, hf_config, n_layers)
        if arch == "Gemma3ForCausalLM":
            cfg["use_qk_norm"] = True
            local = _rope_params(hf_config, "sliding_attention")
            if (local.get("rope_type") or "default") != "default":
                raise ValueError(
                    f"{arch}: local rope_type {local.get('rope_type')!r} is not supported"
                )
            cfg["rotary_base_local"] = local.get("rope_theta", 10000.0)
            if _attr(hf_config, "use_bidirectional_attention", False):
                raise ValueError("Gemma3 with use_bidirectional_attention is not supported")
    return cfg


def _converter(arch: str) -> Callable[[Any, Any], dict[str, torch.Tensor]]:
    from transformer_lens.pretrained import weight_conversions as wc

    return {
        "LlamaForCausalLM": wc.convert_llama_weights,
        "MistralForCausalLM": wc.convert_mistral_weights,
        "Qwen2ForCausalLM": wc.convert_qwen2_weights,
        "Qwen3ForCausalLM": wc.convert_qwen3_weights,
        "GemmaForCausalLM": wc.convert_gemma_weights,
        "Gemma2ForCausalLM": wc.convert_gemma_weights,
        "Gemma3ForCausalLM": wc.convert_gemma_weights,
    }[arch]


def _tokenizer_prepends_bos(tokenizer: PreTrainedTokenizerBase | None) -> bool:
    if tokenizer is None:
        return True
    try:
        return len(tokenizer.encode("")) > 0
    except Exception:  # noqa: BLE001  # pragma: no cover - exotic tokenizers
        return bool(getattr(tokenizer, "add_bos_token", False))


def hf_to_hooked(
    hf_model: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase | None = None,
    *,
    model_name: str | None = None,
    n_ctx_cap: int = N_CTX_CAP,
) -> HookedTransformer:
    """Convert an in-memory transformers causal LM into an fp32 CPU HookedTransformer with
    TransformerLens's own weight conversion + ``load_and_process_state_dict`` (:data:`PROCESSING`).
    The HF model is left untouched."""
    from transformer_lens import HookedTransformerConfig

    arch = _architecture(hf_model)
    cfg_dict = hf_config_to_tl_config(
        hf_model.config,
        arch,
        default_prepend_bos=_tokenizer_prepends_bos(tokenizer),
        n_ctx_cap=n_ctx_cap,
    )
    if model_name:
        cfg_dict["model_name"] = model_name
    cfg = HookedTransformerConfig(**cfg_dict)
    if tokenizer is not None and len(tokenizer) > cfg.d_vocab:
        logger.warning("tokenizer has %d tokens but the model only %d", len(tokenizer), cfg.d_vocab)
    with torch.no_grad():
        raw = _converter(arch)(hf_model, cfg)
        # own copies: TL's processing may work in place and must not touch the HF model's tensors
        state_dict = {
            k: v.detach().to(device="cpu", dtype=torch.float32).clone() for k, v in raw.items()
        }
        del raw
        model = new_hooked(cfg)
        with quiet_tl():
            model.load_and_process_state_dict(state_dict, **PROCESSING)
    fast_layout(model)
    attach_tokenizer(model, tokenizer)
    model.eval()
    return model
