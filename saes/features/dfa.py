"""Direct feature attribution of an attention-output (``hook_z``) latent on its stored examples.

For an example centred on position t of a stored window, the latent's encoder pre-activation at t
splits exactly into each head h's and each source position s's term (``direct_feature_attribution``
in :mod:`saes.analysis.attention_heads`): DFA(s, h) = A_h[t, s] (v_{kv(h)}[s] . W_enc[h block]),
and sum_{s,h} DFA + bias = the pre-activation. Computed on demand (one forward of the window to the
SAE's layer), so the store holds no per-example DFA and the explorer shows it for the examples a
reader opens.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from interp.hooks import hook_layer
from saes.analysis.attention_heads import (
    attention_inputs,
    direct_feature_attribution,
    load_head_layout,
)
from saes.features.store import Example, FeatureStore


@dataclass
class ExampleDFA:
    """One example's DFA: per source token of the example's context (0 after the centre), per head."""

    latent: int
    example: Example
    by_source: list[float]  # aligned with example.tokens
    by_head: list[float]  # [H]
    pre_activation: float  # the encoder's pre-activation at the centre
    bias: float  # b_enc - b_dec . W_enc: sum(by_source) + bias == pre_activation


@torch.no_grad()
def example_dfa(store: FeatureStore, model, sae, latent: int, examples: list[Example]):
    """:class:`ExampleDFA` of ``latent`` for each example (their windows run in one batch)."""
    if not sae.cfg.hook_name.endswith("attn.hook_z"):
        raise ValueError(f"DFA needs an attention-output SAE (hook_z), not {sae.cfg.hook_name}")
    if not examples:
        return []
    layout = load_head_layout(sae, model)
    windows = sorted({e.window for e in examples})
    tokens = torch.tensor([store.window_tokens(w) for w in windows], dtype=torch.long)
    inputs = attention_inputs(model, tokens, hook_layer(sae.cfg.hook_name))
    d = direct_feature_attribution(sae, inputs, layout, [latent])
    row = {w: i for i, w in enumerate(windows)}
    out = []
    for e in examples:
        b, t = row[e.window], e.position
        dfa = d.dfa[b, t, 0]  # [H, S]
        src = dfa.sum(0)[e.start : e.start + len(e.tokens)]
        out.append(
            ExampleDFA(
                latent=latent,
                example=e,
                by_source=src.tolist(),
                by_head=dfa.sum(1).tolist(),
                pre_activation=float(d.pre_acts[b, t, 0]),
                bias=float(d.bias[0]),
            )
        )
    return out
