"""Prompt: type text and see the SAE's top latents at every token (model and SAE cached)."""

from __future__ import annotations

import streamlit as st

from saes import figures
from saes.features.prompt import prompt_features
from saes.features.render import tokens_html

TITLE = "Prompt"
ORDER = 20
DEFAULT = 'def greet(name):\n    """Say hello."""\n    return f"Hello, {name}!"\n'


def render(ctx) -> None:
    store = ctx.store()
    st.title("Prompt")
    text = st.text_area("text", st.query_params.get("text", DEFAULT), height=120)
    top_k = st.slider("latents per token", 1, 10, 5)
    if not text:
        st.info("type some text")
        return
    view = prompt_features(ctx.model(), ctx.sae(), text, top_k=top_k, vocab=store.vocab)
    latents = view.latents()
    st.caption(
        f"{len(view.tokens)} tokens (BOS included), {len(latents)} distinct latents among the top "
        f"{top_k} at each token"
    )
    if not latents:
        st.warning("no latent fires on this text")
        return
    shown = st.selectbox(
        "highlight latent",
        latents,
        format_func=lambda j: f"{j} (max {max(view.activation_of(j)):.3g})",
    )
    st.html(tokens_html(view.texts, view.activation_of(shown)))
    st.markdown(f"[open latent {shown} →]({ctx.link('feature', feature=shown)})")
    head = latents[:20]
    st.plotly_chart(
        figures.prompt_heatmap(view.texts, head, [view.activation_of(j) for j in head]),
        width="stretch",
    )
    st.subheader("Top latents per token")
    rows = []
    for t, (txt, ids, vals) in enumerate(zip(view.texts, view.top_ids, view.top_values)):
        cells = ", ".join(
            f"[{j}]({ctx.link('feature', feature=j)}) {v:.2f}" for j, v in zip(ids, vals)
        )
        rows.append(f"| {t} | `{txt!r}` | {cells} |")
    st.markdown("| pos | token | latents |\n|---|---|---|\n" + "\n".join(rows))
