"""Heads (attention-output ``hook_z`` SAEs): each latent's share per head, and DFA on a prompt.

Head attribution is the share of a latent's decoder row in each head's slice (from the store).
Direct feature attribution splits a latent's pre-activation at one position into each head's and
each source token's contribution (``saes.analysis.prompts.explore_prompt``).
"""

from __future__ import annotations

import plotly.graph_objects as go
import streamlit as st

from saes import figures
from saes.analysis.prompts import explore_prompt
from saes.features.render import tokens_html

TITLE = "Heads"
ORDER = 30


def render(ctx) -> None:
    store = ctx.store()
    st.title("Heads")
    hook = store.manifest.get("hook", "")
    if not store.has("head_attribution"):
        st.info(
            f"This SAE reads `{hook}`: head views are for attention-output SAEs (a hook ending "
            "in `attn.hook_z`). Train one with `--set data.hook=blocks.L.attn.hook_z`."
        )
        return
    shares = store.array("head_attribution")  # [F, H]
    counts = store.array("count")
    alive = store.alive
    main = shares[alive].argmax(-1)
    H = shares.shape[1]
    per_head = [int((main == h).sum()) for h in range(H)]
    fig = go.Figure(go.Bar(x=[f"H{h}" for h in range(H)], y=per_head))
    fig.update_layout(
        title="live latents whose largest decoder share is in each head",
        template="plotly_white",
        height=280,
    )
    st.plotly_chart(fig, width="stretch")
    top = alive[counts[alive].argsort(descending=True)][:40]
    heat = go.Figure(
        go.Heatmap(
            z=shares[top].tolist(),
            x=[f"H{h}" for h in range(H)],
            y=[f"latent {int(i)}" for i in top],
            colorscale="Blues",
        )
    )
    heat.update_layout(title="decoder share per head, 40 densest latents", height=700)
    st.plotly_chart(heat, width="stretch")

    st.subheader("Direct feature attribution on a prompt")
    text = st.text_input("prompt", "When Mary and John went to the store, John gave a drink to")
    if not text:
        return
    model, sae = ctx.model(), ctx.sae()
    tokens = model.to_tokens(text)[0]
    texts = store.vocab.token_texts(tokens.tolist())
    rows = explore_prompt(model, sae, tokens, top_k=5)
    pos = st.slider("position", 1, len(rows) - 1, len(rows) - 1)
    here = rows[pos]
    if not here.features:
        st.info(f"no latent fires at position {pos}")
        return
    j = st.selectbox(
        "latent",
        range(len(here.features)),
        format_func=lambda n: f"{here.features[n]} ({here.activations[n]:.3g})",
    )
    st.plotly_chart(figures.head_attribution_bar(here.head_dfa[j]), width="stretch")
    st.caption("contribution of each source token (summed over heads):")
    src = [max(0.0, v) for v in here.source_dfa[j]] + [0.0] * (len(texts) - pos - 1)
    st.html(tokens_html(texts, src, center=pos))
