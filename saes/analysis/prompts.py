"""Prompt explorer data for attention SAEs: top features per position, their DFA by head and source.

:func:`explore_prompt` returns one :class:`PositionFeatures` per token of a prompt.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from interp.hooks import HeadLayout
from saes.analysis.attention_heads import (
    attention_inputs,
    direct_feature_attribution,
    load_head_layout,
)

# ---------------------------------------------------------------------------------------------
# prompt explorer data
# ---------------------------------------------------------------------------------------------


@dataclass
class PositionFeatures:
    position: int
    token: str
    features: list[int]
    activations: list[float]
    head_dfa: list[list[float]]  # per feature: DFA summed over sources, per head
    source_dfa: list[list[float]]  # per feature: DFA summed over heads, per source position (<= t)


@torch.no_grad()
def explore_prompt(
    model, sae, tokens: torch.Tensor | str, layout: HeadLayout | None = None, top_k: int = 5
) -> list[PositionFeatures]:
    """Top ``top_k`` features at every position of one prompt, with their DFA by head and by source."""
    layout = layout or load_head_layout(sae, model)
    if isinstance(tokens, str):
        tokens = model.to_tokens(tokens)[0]
    tokens = torch.as_tensor(tokens).reshape(-1).cpu()
    inp = attention_inputs(model, tokens, layout.layer)
    z = inp.z.reshape(1, tokens.numel(), -1)
    acts = sae.encode(z.to(sae.device)).float().cpu()[0]  # [T, d_sae]
    k = min(top_k, sae.cfg.d_sae)
    vals, idx = acts.topk(k, dim=-1)
    feats = torch.unique(idx[vals > 0])
    d = direct_feature_attribution(sae, inp, layout, feats)
    col = {int(f): i for i, f in enumerate(feats)}
    tok = getattr(model, "tokenizer", None)
    out = []
    for t in range(tokens.numel()):
        keep = [(int(f), float(v)) for f, v in zip(idx[t], vals[t]) if v > 0]
        out.append(
            PositionFeatures(
                position=t,
                token=tok.decode([int(tokens[t])]) if tok is not None else str(int(tokens[t])),
                features=[f for f, _ in keep],
                activations=[v for _, v in keep],
                head_dfa=[d.by_head[0, t, col[f]].tolist() for f, _ in keep],
                source_dfa=[d.by_source[0, t, col[f], : t + 1].tolist() for f, _ in keep],
            )
        )
    return out
