"""Direction -> logits: the direct effect on the logits of a direction written at a hook.

One path for every analysis that asks "which tokens does this direction promote": a direction at a
residual-stream hook goes straight to the final norm and W_U; at ``attn.hook_z`` (heads
concatenated head-major, [n_heads * d_head]) it goes through W_O first, at ``mlp.hook_post``
through W_out (:func:`residual_direction`). The final norm is linearised the way direct logit
attribution does it: its gain is applied (and LayerNorm's centring), its per-position scale is left
out (it does not change which tokens rank first). So for a change ``d`` at the last block's
``hook_resid_post`` that leaves the norm's scale ``s`` of a position unchanged (e.g. ``d = -2x``,
a reflection), the logits there move by exactly ``unembed_direction(model, hook, d) / s``.
``load_model`` folds the gain into W_U, so there applying it is a no-op.
"""

from __future__ import annotations

import torch

from interp.hooks import hook_layer

__all__ = ["RESIDUAL_HOOKS", "direct_logit_effect", "residual_direction", "unembed_direction"]

RESIDUAL_HOOKS = (
    "hook_resid_pre",
    "hook_resid_mid",
    "hook_resid_post",
    "hook_attn_out",
    "hook_mlp_out",
)


def residual_direction(model, hook: str, direction: torch.Tensor) -> torch.Tensor:
    """What ``direction`` [..., d_in] written at ``hook`` writes to the residual stream [..., d_model]
    (float32, on W_U's device): through W_O for ``attn.hook_z``, W_out for ``mlp.hook_post``,
    unchanged for residual-stream hooks."""
    layer = hook_layer(hook)
    d = direction.detach().to(model.W_U.device, torch.float32)
    if hook.endswith("attn.hook_z"):
        W_O = model.blocks[layer].attn.W_O.detach().float()  # [n_heads, d_head, d_model]
        heads = d.reshape(*d.shape[:-1], W_O.shape[0], W_O.shape[1])
        return torch.einsum("...hd,hdm->...m", heads, W_O)
    if hook.endswith("mlp.hook_post"):
        return d @ model.blocks[layer].mlp.W_out.detach().float()
    if hook.endswith(RESIDUAL_HOOKS):
        return d
    raise ValueError(
        f"no direct path to the logits is known for hook {hook!r}; it is known for "
        "residual-stream hooks, attn.hook_z and mlp.hook_post"
    )


def unembed_direction(model, hook: str, direction: torch.Tensor) -> torch.Tensor:
    """Logits [..., d_vocab] that ``direction`` [..., d_in] written at ``hook`` adds along the
    direct path (uncentred): :func:`residual_direction`, then the final norm's centring (LayerNorm)
    and gain, then W_U; the norm's per-position scale is left out (see the module docstring)."""
    resid = residual_direction(model, hook, direction)
    ln = getattr(model, "ln_final", None)
    if type(ln).__name__.startswith("LayerNorm"):
        resid = resid - resid.mean(-1, keepdim=True)  # LayerNorm centres its input
    w = getattr(ln, "w", None)
    if w is not None:
        resid = resid * w.detach().float()
    return resid @ model.W_U.detach().float()


def direct_logit_effect(model, hook: str, direction: torch.Tensor) -> torch.Tensor:
    """:func:`unembed_direction`, centred over the vocabulary (logits are shift-invariant)."""
    logits = unembed_direction(model, hook, direction)
    return logits - logits.mean(-1, keepdim=True)
