"""Interventions at TransformerLens hooks: the one mechanism for splicing, patching, ablating,
steering and arbitrary edits of activations during a forward pass.

An :class:`Intervention` is a hook name, an operation and where it applies: every position, chosen
token indices or a boolean mask [batch, pos] (``positions``), chosen heads of a per-head hook such
as ``attn.hook_z`` [batch, pos, head, d_head] (``heads``), and optionally the BOS position (index 0)
left as it is (``keep_bos``; spliced evaluation and steering both leave it untouched). The
operation computes a new activation of the same shape from the old one; only the chosen positions
and heads take the new values, everything else keeps the old values exactly.

Operations (builders returning an :data:`Op`):

* :func:`replace_with` (splice): per-token rows [N, d] -> replacement rows, e.g. an SAE
  reconstruction ``replace_with(lambda x: sae(x)[0])`` (rows are flattened per token, heads
  concatenated head-major, the layout SAEs read);
* :func:`splice_with_error`: the same, plus the reconstruction error added back,
  ``x_hat + (x - x_hat)`` (the forward value is x up to rounding; the two terms stay separate
  nodes, for analyses of what the SAE misses);
* :func:`patch`: activations from another run (a tensor, or a mapping such as a cache keyed by
  hook name);
* :func:`zero_ablate`, :func:`mean_ablate` (a given mean, or one computed over the selected
  positions of the batch, or per position over the batch);
* :func:`add_direction`: x + scale * direction, with a scalar scale, one per batch row (steering
  uses per-row alphas) or one per (row, position);
* :func:`apply`: any function of the hook-shaped activation.

:func:`intervened` (a context manager) and :func:`run_with_interventions` attach them through
TransformerLens's ``model.hooks``, which removes the hooks on exit, also when the forward raises.
Knows nothing of SAEs: an SAE is just a callable passed in.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import torch

from interp.hooks import HOOK_Z, head_layout, validate_hook_names

__all__ = [
    "Intervention",
    "Op",
    "Site",
    "add_direction",
    "apply",
    "intervened",
    "mean_ablate",
    "patch",
    "replace_with",
    "run_with_interventions",
    "splice_with_error",
    "zero_ablate",
]

# hooks whose activation is [batch, pos, head, d]: ``heads`` may restrict these
PER_HEAD_HOOKS = (
    "attn.hook_z",
    "attn.hook_q",
    "attn.hook_k",
    "attn.hook_v",
    "attn.hook_rot_q",
    "attn.hook_rot_k",
    "attn.hook_result",
)
# hooks that are not [batch, pos, ...] (patterns and scores are [batch, head, query, key])
_NOT_TOKEN_MAJOR = ("hook_pattern", "hook_attn_scores")

Positions = int | Sequence[int] | torch.Tensor | None


@dataclass(frozen=True)
class Site:
    """Where an operation runs: the hook's name and the selected positions, a bool mask [batch, pos]
    (BOS already excluded with ``keep_bos``; heads are applied afterwards)."""

    hook: str
    positions: torch.Tensor


Op = Callable[[torch.Tensor, Site], torch.Tensor]


# ---------------------------------------------------------------------------------------------
# operations
# ---------------------------------------------------------------------------------------------


def _rows(fn: Callable[[torch.Tensor], torch.Tensor], act: torch.Tensor) -> torch.Tensor:
    """fn on the per-token rows [batch * pos, d] of ``act``, back in act's shape and dtype."""
    rows = act.reshape(act.shape[0] * act.shape[1], -1)
    out = fn(rows)
    if out.shape != rows.shape:
        raise ValueError(f"the replacement has shape {tuple(out.shape)}, not {tuple(rows.shape)}")
    return out.reshape(act.shape).to(act.dtype)


def replace_with(fn: Callable[[torch.Tensor], torch.Tensor]) -> Op:
    """Splice: replace the activation by ``fn(rows)``, rows [N, d] flattened per token (an SAE's
    input layout, e.g. ``lambda x: sae(x)[0]``)."""
    return lambda act, site: _rows(fn, act)  # noqa: ARG005


def splice_with_error(fn: Callable[[torch.Tensor], torch.Tensor]) -> Op:
    """Splice with the error term: ``x_hat + (x - x_hat)`` for ``x_hat = fn(rows)``."""

    def op(act: torch.Tensor, site: Site) -> torch.Tensor:  # noqa: ARG001
        x_hat = _rows(fn, act)
        return x_hat + (act - x_hat)

    return op


def _fit(src: torch.Tensor, act: torch.Tensor, what: str) -> torch.Tensor:
    """``src`` in act's shape, device and dtype: the same shape, flattened per token (as captured
    activations are), or broadcastable."""
    src = src.to(act.device, act.dtype)
    if src.shape == act.shape:
        return src
    if src.shape[:2] == act.shape[:2] and math.prod(src.shape[2:]) == math.prod(act.shape[2:]):
        return src.reshape(act.shape)
    try:
        return torch.broadcast_to(src, act.shape)
    except RuntimeError:
        raise ValueError(
            f"{what} has shape {tuple(src.shape)}, which does not fit the activation "
            f"{tuple(act.shape)}"
        ) from None


def patch(source: torch.Tensor | Mapping[str, torch.Tensor]) -> Op:
    """Patch in activations from another run: a tensor of the activation's shape, or a mapping
    (e.g. a TransformerLens ``ActivationCache``) looked up by the hook's name."""

    def op(act: torch.Tensor, site: Site) -> torch.Tensor:
        src = source if isinstance(source, torch.Tensor) else source[site.hook]
        return _fit(src, act, f"the patch for {site.hook}")

    return op


def zero_ablate() -> Op:
    """Replace the activation by zeros."""
    return lambda act, site: torch.zeros_like(act)  # noqa: ARG005


def mean_ablate(mean: torch.Tensor | None = None, over: str = "positions") -> Op:
    """Replace the activation by a mean: ``mean`` when given (broadcast to the activation, e.g.
    [d] or [pos, d]); else computed from this forward's activation, ``over="positions"``: over
    every selected (row, position) of the batch (one mean per feature), ``over="batch"``: over
    the batch rows at each position."""
    if over not in ("positions", "batch"):
        raise ValueError(f"over must be 'positions' or 'batch', got {over!r}")

    def op(act: torch.Tensor, site: Site) -> torch.Tensor:
        if mean is not None:
            return _fit(mean, act, "the mean")
        if over == "batch":
            return act.mean(0, keepdim=True).expand_as(act)
        if not site.positions.any():
            return act
        return act[site.positions].mean(0).expand_as(act)

    return op


def add_direction(direction: torch.Tensor, scale: float | torch.Tensor = 1.0) -> Op:
    """x + scale * direction. ``direction``: the activation's per-token shape, or flattened per
    token ([n_heads * d_head] at hook_z, as SAE decoder rows are); ``scale``: a number, one per
    batch row [batch] or one per (row, position) [batch, pos]."""

    def op(act: torch.Tensor, site: Site) -> torch.Tensor:  # noqa: ARG001
        d = direction.to(act.device, act.dtype).reshape(act.shape[2:])
        s = torch.as_tensor(scale, device=act.device)
        if s.ndim > 2:
            raise ValueError(f"scale must be a number, [batch] or [batch, pos], got {s.shape}")
        s = s.reshape(*s.shape, *([1] * (act.ndim - s.ndim)))
        return (act + s * d).to(act.dtype)

    return op


def apply(fn: Callable[[torch.Tensor], torch.Tensor]) -> Op:
    """Any function of the hook-shaped activation, returning the same shape."""
    return lambda act, site: fn(act)  # noqa: ARG005


# ---------------------------------------------------------------------------------------------
# where
# ---------------------------------------------------------------------------------------------


def _position_mask(positions: Positions, batch: int, pos: int, device) -> torch.Tensor:
    if positions is None:
        return torch.ones(batch, pos, dtype=torch.bool, device=device)
    p = torch.as_tensor(positions, device=device)
    if p.dtype == torch.bool:
        if p.shape not in ((batch, pos), (pos,)):
            raise ValueError(f"a position mask must be [batch, pos] = {(batch, pos)} or [pos]")
        return p.expand(batch, pos).clone()
    idx = p.reshape(-1).long()
    if idx.numel() and (idx.min() < -pos or idx.max() >= pos):
        raise ValueError(f"positions {idx.tolist()} out of range for {pos} positions")
    mask = torch.zeros(batch, pos, dtype=torch.bool, device=device)
    mask[:, idx % pos] = True
    return mask


@dataclass(frozen=True)
class Intervention:
    """``op`` at hook ``hook``, applied at ``positions`` (None: all; token indices, negative ones
    from the end; or a bool mask [batch, pos] / [pos]) and ``heads`` (per-head hooks only), never
    at position 0 when ``keep_bos``."""

    hook: str
    op: Op
    positions: Positions = None
    heads: Sequence[int] | None = None
    keep_bos: bool = False

    def __post_init__(self) -> None:
        where = self.positions is not None or self.heads is not None or self.keep_bos
        if where and self.hook.endswith(_NOT_TOKEN_MAJOR):
            raise ValueError(
                f"{self.hook} is [batch, head, query, key]: positions/heads/keep_bos are not "
                "supported there (use apply() and index it yourself)"
            )
        if self.heads is not None and not self.hook.endswith(PER_HEAD_HOOKS):
            raise ValueError(
                f"heads= needs a per-head hook ({', '.join(PER_HEAD_HOOKS)}), got {self.hook!r}"
            )

    def mask(self, act: torch.Tensor) -> torch.Tensor:
        """The [batch, pos] bool mask of the positions this intervention changes."""
        m = _position_mask(self.positions, act.shape[0], act.shape[1], act.device)
        if self.keep_bos:
            m[:, 0] = False
        return m

    def __call__(self, act: torch.Tensor, hook: Any = None) -> torch.Tensor:  # noqa: ARG002
        """The new activation (also the TransformerLens hook function: ``hook`` is ignored)."""
        positions = self.mask(act)
        new = self.op(act, Site(self.hook, positions))
        if new.shape != act.shape:
            raise ValueError(
                f"the operation at {self.hook} returned {tuple(new.shape)}, not {tuple(act.shape)}"
            )
        if self.positions is None and self.heads is None and not self.keep_bos:
            return new
        m = positions.reshape(*positions.shape, *([1] * (act.ndim - 2)))
        if self.heads is not None:
            if act.ndim != 4:
                raise ValueError(f"{self.hook} is not [batch, pos, head, d]: {tuple(act.shape)}")
            heads = torch.as_tensor(self.heads, dtype=torch.long).reshape(-1)
            if heads.numel() and (heads.min() < 0 or heads.max() >= act.shape[2]):
                raise ValueError(f"heads {heads.tolist()} out of range [0, {act.shape[2]})")
            hm = torch.zeros(act.shape[2], dtype=torch.bool, device=act.device)
            hm[heads.to(act.device)] = True
            m = m & hm[:, None]
        return torch.where(m, new, act)


# ---------------------------------------------------------------------------------------------
# running
# ---------------------------------------------------------------------------------------------


def _as_list(interventions: Intervention | Sequence[Intervention]) -> list[Intervention]:
    return [interventions] if isinstance(interventions, Intervention) else list(interventions)


def _check(model, interventions: list[Intervention]) -> None:
    validate_hook_names(model, [iv.hook for iv in interventions])
    for iv in interventions:
        if iv.heads is not None and HOOK_Z.match(iv.hook):
            n = head_layout(model, iv.hook).n_heads
            if any(not 0 <= int(h) < n for h in iv.heads):
                raise ValueError(f"heads {list(iv.heads)} out of range: {iv.hook} has {n} heads")


@contextmanager
def intervened(model, interventions: Intervention | Sequence[Intervention]) -> Iterator[Any]:
    """The model with the interventions attached (in order; several at one hook compose); they
    are removed on exit, also when the body raises."""
    ivs = _as_list(interventions)
    _check(model, ivs)
    with model.hooks(fwd_hooks=[(iv.hook, iv) for iv in ivs]):
        yield model


def run_with_interventions(
    model, tokens, interventions: Intervention | Sequence[Intervention], **forward_kwargs
):
    """``model(tokens, **forward_kwargs)`` with the interventions attached for that forward."""
    with intervened(model, interventions):
        return model(tokens, **forward_kwargs)
