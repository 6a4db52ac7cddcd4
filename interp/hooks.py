"""TransformerLens hook names: the one place that knows them.

Which names a model has (validation with suggestions), the block a hook belongs to and how far a
forward must run for a set of hooks (``stop_at_layer``), a hook's width per token, the spelling of a
block's hook (:func:`hook_name`), and the head layout of ``blocks.L.attn.hook_z``.

Head layout: an attention-output hook reads the concatenated per-head outputs
z = [z_0 | z_1 | ... | z_{H-1}] (``d_in = n_heads * d_head``, head-major, the layout SAELens's
``reshape_activations="hook_z"`` uses). With grouped-query attention the H query heads share n_kv
value heads: query head h reads value head ``h // (H / n_kv)`` (TransformerLens repeats K/V with
``repeat_interleave``).
"""

from __future__ import annotations

import difflib
import inspect
import json
import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch

from interp.models import model_cache_dir, parse_tiny_spec, resolve_spec, tiny_model

__all__ = [
    "HOOK_Z",
    "HeadLayout",
    "head_layout",
    "hook_dim",
    "hook_layer",
    "hook_name",
    "hook_template",
    "hook_z_layer",
    "layout_for_spec",
    "output_hook_for",
    "stop_at_layer_for",
    "validate_hook_names",
    "validate_hooks",
]

HOOK_Z = re.compile(r"^blocks\.(\d+)\.attn\.hook_z$")
_BLOCK_HOOK = re.compile(r"^blocks\.(\d+)\.(.*)$")
_EMBED_HOOKS = ("hook_embed", "hook_pos_embed", "hook_tokens")
# hooks that exist on every block but only fire when a config flag is on
_FLAG_HOOKS = {
    "attn.hook_result": ("use_attn_result", "set_use_attn_result"),
    "hook_q_input": ("use_split_qkv_input", "set_use_split_qkv_input"),
    "hook_k_input": ("use_split_qkv_input", "set_use_split_qkv_input"),
    "hook_v_input": ("use_split_qkv_input", "set_use_split_qkv_input"),
    "hook_attn_in": ("use_attn_in", "set_use_attn_in"),
    "hook_mlp_in": ("use_hook_mlp_in", "set_use_hook_mlp_in"),
}


# ---------------------------------------------------------------------------------------------
# names and layers
# ---------------------------------------------------------------------------------------------


def hook_name(layer: int, kind: str) -> str:
    """The TransformerLens name of block ``layer``'s hook ``kind``: the part after ``blocks.L.``,
    with ``hook_`` on the last component optional: ``hook_name(3, "resid_post")`` ->
    ``"blocks.3.hook_resid_post"``, ``hook_name(1, "attn.z")`` -> ``"blocks.1.attn.hook_z"``,
    ``hook_name(0, "mlp.hook_post")`` -> ``"blocks.0.mlp.hook_post"``."""
    if isinstance(layer, bool) or not isinstance(layer, int) or layer < 0:
        raise ValueError(f"layer must be an int >= 0, got {layer!r}")
    if not kind or kind.startswith(("blocks.", ".")) or kind.endswith("."):
        raise ValueError(f"bad hook kind {kind!r}; use e.g. 'resid_post', 'attn.z', 'mlp.post'")
    head, _, last = kind.rpartition(".")
    last = last if last.startswith("hook_") else f"hook_{last}"
    return f"blocks.{layer}.{head + '.' if head else ''}{last}"


def hook_layer(name: str) -> int | None:
    """Block index of a TransformerLens hook name: ``blocks.L.*`` -> L; embedding hooks
    (``hook_embed``, ``hook_pos_embed``, ``hook_tokens``, ``embed.*``, ``pos_embed.*``) -> -1
    (computed before block 0, i.e. ``stop_at_layer=0`` suffices); anything else (``ln_final.*``,
    ``unembed.*``, unknown) -> None, meaning the whole model has to run."""
    m = re.match(r"^blocks\.(\d+)\.", name)
    if m:
        return int(m.group(1))
    if name in _EMBED_HOOKS or name.startswith(("embed.", "pos_embed.")):
        return -1
    return None


#: what a transcoder predicts when its config names nothing: the same layer's MLP output
DEFAULT_TRANSCODER_OUTPUT = "blocks.{layer}.hook_mlp_out"


def output_hook_for(input_hook: str, template: str | None = None) -> str:
    """The hook a transcoder reading ``input_hook`` predicts: the pairing rule. ``template``
    (default ``blocks.{layer}.hook_mlp_out``) has its ``{layer}`` set to the input hook's block, so
    ``blocks.7.ln2.hook_normalized`` and ``blocks.7.hook_resid_mid`` pair with
    ``blocks.7.hook_mlp_out``; a name without ``{layer}`` is used as it is."""
    template = template or DEFAULT_TRANSCODER_OUTPUT
    if "{layer}" not in template:
        return template
    layer = hook_layer(input_hook)
    if layer is None or layer < 0:
        raise ValueError(
            f"hook {input_hook!r} names no block (blocks.L.<hook>): the output template "
            f"{template!r} pairs hooks by the input hook's block number"
        )
    return template.format(layer=layer)


def hook_template(names: Sequence[str]) -> str:
    """The ``blocks.{layer}.<hook>`` template that hooks at several blocks share (an error when
    they are different hooks, or not block hooks)."""
    forms = {re.sub(r"^blocks\.\d+\.", "blocks.{layer}.", n, count=1) for n in names}
    if len(forms) != 1 or "{layer}" not in next(iter(forms)):
        raise ValueError(
            f"expected one hook at each of several blocks (blocks.L.<hook>), got {list(names)}"
        )
    return forms.pop()


def stop_at_layer_for(names: list[str]) -> int | None:
    """``stop_at_layer`` for a forward that only needs ``names``: deepest block + 1, or None when
    some hook lies after the last block (or no names are given)."""
    layers = [hook_layer(n) for n in names]
    if not layers or any(layer is None for layer in layers):
        return None
    return max(layers) + 1  # type: ignore[type-var]


def hook_dim(model, hook: str) -> int:
    """Width of a hook's activation once flattened per token (hook_z: n_heads * d_head)."""
    cfg = model.cfg
    if hook.endswith(("hook_z", "hook_q")):
        return cfg.n_heads * cfg.d_head
    if hook.endswith("hook_result"):
        return cfg.n_heads * cfg.d_model
    if hook.endswith(("hook_k", "hook_v")):
        n_kv = getattr(cfg, "n_key_value_heads", None) or cfg.n_heads
        return n_kv * cfg.d_head
    if hook.endswith(("mlp.hook_pre", "mlp.hook_post", "mlp.hook_pre_linear")):
        return cfg.d_mlp
    if hook.endswith(("hook_pattern", "hook_attn_scores")):
        raise ValueError(
            f"hook {hook!r} is per (query, key) pair, not per token: it cannot feed an SAE"
        )
    return cfg.d_model


# ---------------------------------------------------------------------------------------------
# validation
# ---------------------------------------------------------------------------------------------


def validate_hook_names(model: Any, names: list[str] | str) -> None:
    """Raise ``ValueError`` naming every hook in ``names`` that ``model`` does not have (with the
    closest valid names), or that exists but never fires under the model's config (e.g.
    ``attn.hook_result`` without ``use_attn_result``)."""
    if isinstance(names, str):
        names = [names]
    valid = list(model.hook_dict.keys())
    valid_set = set(valid)
    n_layers = int(model.cfg.n_layers)
    errors = []
    for name in names:
        if name in valid_set:
            for suffix, (flag, setter) in _FLAG_HOOKS.items():
                if name.endswith(suffix) and not getattr(model.cfg, flag, False):
                    errors.append(
                        f"hook {name!r} exists but only fires when model.cfg.{flag} is True; "
                        f"call model.{setter}(True) first"
                    )
            continue
        suggestions: list[str] = []
        m = _BLOCK_HOOK.match(name)
        where = ""
        if m and int(m.group(1)) >= n_layers:
            where = f" (the model has {n_layers} layers: blocks.0 .. blocks.{n_layers - 1})"
            last = f"blocks.{n_layers - 1}.{m.group(2)}"
            if last in valid_set:
                suggestions.append(last)
        for s in difflib.get_close_matches(name, valid, n=5, cutoff=0.6):
            if s not in suggestions:
                suggestions.append(s)
        if suggestions:
            errors.append(
                f"unknown hook {name!r}; closest valid names: {', '.join(suggestions[:5])}{where}"
            )
        else:
            errors.append(
                f"unknown hook {name!r}; no similar names{where}. Valid names look like "
                f"'blocks.0.hook_resid_post', 'blocks.0.attn.hook_z' (see model.hook_dict, "
                f"{len(valid)} hooks)"
            )
    if errors:
        raise ValueError("\n".join(errors))


def validate_hooks(model, hooks: Sequence[str]) -> list[str]:
    """Check hook names against the model (errors suggest the closest names); returns them deduplicated."""
    if not hooks:
        raise ValueError("no hook names given")
    validate_hook_names(model, list(hooks))
    return list(dict.fromkeys(hooks))


# ---------------------------------------------------------------------------------------------
# head layout of attn.hook_z
# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class HeadLayout:
    """Where each head's block sits in hook_z's flattened d_in = n_heads * d_head."""

    layer: int
    n_heads: int
    d_head: int
    n_kv_heads: int

    def __post_init__(self) -> None:
        if min(self.n_heads, self.d_head, self.n_kv_heads) < 1 or self.layer < 0:
            raise ValueError(f"invalid head layout {self}")
        if self.n_heads % self.n_kv_heads:
            raise ValueError(
                f"n_heads ({self.n_heads}) must be a multiple of n_kv_heads ({self.n_kv_heads})"
            )

    @property
    def d_in(self) -> int:
        return self.n_heads * self.d_head

    @property
    def hook(self) -> str:
        return hook_name(self.layer, "attn.z")

    def kv_head(self, head: int) -> int:
        """The value head a query head reads (grouped-query attention)."""
        return head // (self.n_heads // self.n_kv_heads)

    @property
    def kv_index(self) -> torch.Tensor:
        return torch.arange(self.n_heads) // (self.n_heads // self.n_kv_heads)

    def split(self, x: torch.Tensor) -> torch.Tensor:
        """[..., n_heads * d_head] -> [..., n_heads, d_head]."""
        if x.shape[-1] != self.d_in:
            raise ValueError(f"expected last dim n_heads*d_head={self.d_in}, got {x.shape[-1]}")
        return x.reshape(*x.shape[:-1], self.n_heads, self.d_head)

    def to_metadata(self) -> dict[str, int]:
        return {
            "n_heads": self.n_heads,
            "d_head": self.d_head,
            "n_kv_heads": self.n_kv_heads,
            "layer": self.layer,
        }


def hook_z_layer(hook: str) -> int:
    """The layer of a ``blocks.L.attn.hook_z`` name, or a ValueError naming the problem."""
    m = HOOK_Z.match(hook)
    if not m:
        raise ValueError(
            f"not an attention-output hook: {hook!r} (expected 'blocks.L.attn.hook_z')"
        )
    return int(m.group(1))


def _layout_from_cfg(cfg: Any, layer: int) -> HeadLayout:
    get = (lambda k: cfg.get(k)) if isinstance(cfg, dict) else (lambda k: getattr(cfg, k, None))
    n_layers = get("n_layers")
    if n_layers is not None and layer >= n_layers:
        raise ValueError(f"layer {layer} does not exist: the model has {n_layers} layers")
    n_heads, d_head = int(get("n_heads")), int(get("d_head"))
    return HeadLayout(layer, n_heads, d_head, int(get("n_key_value_heads") or n_heads))


def head_layout(model, hook: str) -> HeadLayout:
    """The head layout of ``hook`` (``blocks.L.attn.hook_z``) in a TransformerLens model."""
    return _layout_from_cfg(model.cfg, hook_z_layer(hook))


def layout_for_spec(model_name: str, hook: str) -> HeadLayout | None:
    """The head layout from a model spec without loading weights (tiny specs, converted-model
    caches); None when it cannot be known cheaply (the caller may pass a loaded model instead)."""
    layer = hook_z_layer(hook)
    try:
        ms = resolve_spec(model_name)
        if ms.kind == "tiny":
            defaults = {k: p.default for k, p in inspect.signature(tiny_model).parameters.items()}
            return _layout_from_cfg({**defaults, **parse_tiny_spec(model_name)}, layer)
        folder = model_cache_dir(model_name)
        if folder is not None and (folder / "config.json").is_file():
            return _layout_from_cfg(json.loads((folder / "config.json").read_text()), layer)
    except (ValueError, FileNotFoundError, OSError, KeyError, TypeError):
        return None
    return None
