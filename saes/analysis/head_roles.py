"""Attention roles of an attention SAE's features and polysemantic heads.

:func:`head_roles`: each feature's attention role from where its DFA comes from (BOS, self,
previous token, induction, local, long-range); a head is polysemantic when its top features (by
head attribution) have several roles.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from tqdm.auto import tqdm

from interp.hooks import HeadLayout
from saes.analysis.attention_heads import (
    HeadAttribution,
    attribution_from_shares,
    batched_inputs,
    bos_token_id,
    dfa_by_source,
    head_attribution,
    load_head_layout,
)

# ---------------------------------------------------------------------------------------------
# feature roles and polysemantic heads
# ---------------------------------------------------------------------------------------------

ROLES = ("bos", "self", "previous", "induction", "local", "long-range")


def _source_roles(tokens: torch.Tensor, bos_id: int | None, local: int) -> torch.Tensor:
    """Role index of every (dest t, source s <= t) pair [B, T, S] (order of precedence as ROLES)."""
    B, T = tokens.shape
    t = torch.arange(T)[:, None]
    s = torch.arange(T)[None, :]
    off = (t - s).expand(B, T, T)
    role = torch.full((B, T, T), ROLES.index("long-range"), dtype=torch.long)
    role[off <= local] = ROLES.index("local")
    prev_tok = torch.cat([torch.full((B, 1), -1), tokens[:, :-1]], 1)  # token before s
    induct = (prev_tok[:, None, :] == tokens[:, :, None]) & (off >= 2)
    role[induct] = ROLES.index("induction")
    role[off == 1] = ROLES.index("previous")
    role[off == 0] = ROLES.index("self")
    first = s.expand(B, T, T) == 0
    if bos_id is not None:
        first = first & (tokens[:, None, :1] == bos_id)
    role[first] = ROLES.index("bos")
    return role


@dataclass
class HeadRoles:
    feature_roles: dict[int, str]  # feature -> its role (largest share of positive DFA mass)
    feature_role_mass: dict[int, list[float]]  # feature -> share of positive DFA mass per role
    head_top_features: list[list[int]]
    head_roles: list[dict[str, int]]  # per head: role -> number of its top features with that role
    polysemantic: list[bool]
    fraction_polysemantic: float
    rule: str
    alive: torch.Tensor  # [d_sae] features active on the windows


@torch.no_grad()
def head_roles(
    model,
    sae,
    windows: torch.Tensor,
    layout: HeadLayout | None = None,
    top_n: int = 10,
    min_share: float = 0.3,
    min_features_per_role: int = 2,
    local: int = 8,
    batch_size: int = 8,
    attribution: HeadAttribution | None = None,
    progress: bool = False,
) -> HeadRoles:
    """An automated version of the paper's head study: for each head take its ``top_n`` features by
    decoder-norm share (at least ``min_share``, among features active on ``windows``), give each feature the attention
    role that carries most of its positive DFA mass on the windows (activation-weighted): BOS,
    self, previous token, induction (source after an earlier copy of the current token), local
    (offset <= ``local``) or long-range; a head is polysemantic when at least two roles are held
    by at least ``min_features_per_role`` of its top features each. ``attribution`` (e.g. from
    :func:`dfa_head_attribution`) replaces the decoder-norm shares. Roles only see where a
    feature's input comes from, not what it means, so this undercounts semantic polysemanticity."""
    layout = layout or load_head_layout(sae, model)
    if windows.dim() != 2:
        raise ValueError(f"windows must be [batch, positions], got {tuple(windows.shape)}")
    batches = list(batched_inputs(model, windows, layout.layer, batch_size))
    fires = torch.zeros(sae.cfg.d_sae)
    for inp in batches:
        z = inp.z.reshape(inp.z.shape[0], inp.z.shape[1], -1)
        fires += (sae.encode(z.to(sae.device)).float().cpu()[:, 1:] > 0).float().sum((0, 1))
    alive = fires > 0
    source = "decoder-norm" if attribution is None else "given"
    if attribution is None:  # the paper's weight-based attribution
        attribution = head_attribution(sae, layout, alive=alive)
    else:
        attribution = attribution_from_shares(attribution.shares, layout, alive)
    tops = [attribution.top_features(h, top_n, min_share).tolist() for h in range(layout.n_heads)]
    feats = torch.tensor(sorted({f for top in tops for f in top}), dtype=torch.long)
    mass = torch.zeros(feats.numel(), len(ROLES))
    bos = bos_token_id(model)
    for inp in tqdm(batches, desc=f"roles L{layout.layer}", disable=not progress):
        src = dfa_by_source(sae, inp, layout, feats).clamp_min(0)  # [B, T, F, S]
        z = inp.z.reshape(inp.z.shape[0], inp.z.shape[1], -1)
        acts = sae.encode(z.to(sae.device)).float().cpu()[..., feats]
        w = acts / src.sum(-1).clamp_min(
            1e-12
        )  # activation-weighted, each position's mass sums to 1
        roles = _source_roles(inp.tokens, bos, local)  # [B, T, S]
        onehot = torch.nn.functional.one_hot(roles, len(ROLES)).float()  # [B, T, S, R]
        m = torch.einsum("btfs,btsr->btfr", src, onehot)
        mass += (w[..., None] * m)[:, 1:].sum((0, 1))
    share = mass / mass.sum(-1, keepdim=True).clamp_min(1e-12)
    role_of = {int(f): ROLES[int(share[i].argmax())] for i, f in enumerate(feats)}
    role_mass = {int(f): share[i].tolist() for i, f in enumerate(feats)}
    per_head, poly = [], []
    for top in tops:
        counts: dict[str, int] = {}
        for f in top:
            counts[role_of[f]] = counts.get(role_of[f], 0) + 1
        per_head.append(counts)
        poly.append(sum(c >= min_features_per_role for c in counts.values()) >= 2)
    rule = (
        f"top {top_n} features per head by {source} share "
        f"(>= {min_share}); polysemantic if >= 2 roles "
        f"with >= {min_features_per_role} features each (roles: {', '.join(ROLES)}; local <= {local})"
    )
    return HeadRoles(
        role_of, role_mass, tops, per_head, poly, sum(poly) / max(1, len(poly)), rule, alive
    )
