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

__all__ = [
    "RESIDUAL_HOOKS",
    "direct_logit_effect",
    "residual_direction",
    "top_logit_effects",
    "unembed_direction",
]

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


def _normed(model, hook: str, direction: torch.Tensor) -> torch.Tensor:
    """What reaches W_U along the direct path: the residual direction, centred (LayerNorm), times
    the final norm's gain (float32)."""
    resid = residual_direction(model, hook, direction)
    ln = getattr(model, "ln_final", None)
    if type(ln).__name__.startswith("LayerNorm"):
        resid = resid - resid.mean(-1, keepdim=True)  # LayerNorm centres its input
    w = getattr(ln, "w", None)
    return resid * w.detach().float() if w is not None else resid


def unembed_direction(model, hook: str, direction: torch.Tensor) -> torch.Tensor:
    """Logits [..., d_vocab] that ``direction`` [..., d_in] written at ``hook`` adds along the
    direct path (uncentred): :func:`residual_direction`, then the final norm's centring (LayerNorm)
    and gain, then W_U; the norm's per-position scale is left out (see the module docstring)."""
    return _normed(model, hook, direction) @ model.W_U.detach().float()


def direct_logit_effect(model, hook: str, direction: torch.Tensor) -> torch.Tensor:
    """:func:`unembed_direction`, centred over the vocabulary (logits are shift-invariant)."""
    logits = unembed_direction(model, hook, direction)
    return logits - logits.mean(-1, keepdim=True)


def top_logit_effects(
    model, hook: str, directions: torch.Tensor, n: int, margin: int = 8, chunk: int = 256
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """The ``n`` largest and ``n`` most negative :func:`direct_logit_effect` of each direction
    [D, d_in]: ``(top_ids, top_values, bottom_ids, bottom_values)``, each [D, n], float32 values.

    W_U stays in its own dtype: with bf16 weights the ranking GEMM runs in bf16, the top and
    bottom ``n + margin`` candidates are recomputed in float32 and the best ``n`` of those kept
    (the same tokens as the float32 path up to near-ties below bf16's resolution); float32
    weights rank in float32 directly. Centring over the vocabulary is ``d . mean(W_U)``.
    """
    W_U = model.W_U.detach()  # [d_model, V]
    n = min(n, W_U.shape[1])
    low = W_U.dtype != torch.float32
    wide = min(n + margin, W_U.shape[1]) if low else n
    mean = W_U.float().mean(1)  # [d_model]
    rows = W_U.T.contiguous() if low else None  # [V, d_model]: candidate rows, gathered
    out = []
    for d in directions.split(chunk):
        r = _normed(model, hook, d)  # [c, d_model] float32
        logits = r.to(W_U.dtype) @ W_U
        centre = r @ mean
        sides = []
        for sign in (1.0, -1.0):  # largest, then most negative
            ids = (logits if sign > 0 else -logits).topk(wide, dim=1).indices
            if low:  # exact float32 values of the candidates, then the best n of them
                raw = torch.einsum("cd,cwd->cw", r, rows[ids].float())
            else:
                raw = logits.gather(1, ids)
            best = (sign * (raw - centre[:, None])).topk(n, dim=1)
            sides += [ids.gather(1, best.indices), sign * best.values]
        out.append(sides)
    return tuple(torch.cat([o[i] for o in out]).cpu() for i in range(4))  # type: ignore[return-value]
