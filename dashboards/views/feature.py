"""Feature: every panel of one latent, read lazily from the store (``?page=feature&feature=N``).

Jump by id, by the token of a latent's top activation, or by text in its top examples; previous
and next step over live latents. Steering runs the toolkit's steering function on demand.
"""

from __future__ import annotations

import streamlit as st

from saes import figures
from saes.analysis.steering import steer_latents
from saes.features.dfa import example_dfa
from saes.features.render import band_caption, examples_html, tokens_html

TITLE = "Feature"
ORDER = 10


def _go(j: int) -> None:
    st.query_params["feature"] = str(int(j))


def _typed() -> None:
    _go(st.session_state["latent_id"])


def _html(body: str, empty: str | None = None) -> None:
    """``st.html`` for a non-empty body (Streamlit refuses an empty one); else ``empty`` in words."""
    if body:
        st.html(body)
    elif empty:
        st.caption(empty)


def _links(ctx, ids: list[int]) -> str:
    return ", ".join(f"[{j}]({ctx.link('feature', feature=j)})" for j in ids)


def _pick(ctx, store) -> int:
    """The latent to show (``?feature=``; default the first live one) and the ways to move."""
    alive = store.alive
    first = int(alive[0]) if alive.numel() else 0
    q = st.query_params.get("feature")
    try:
        i = int(q) if q is not None else first
    except ValueError:
        st.warning(f"?feature={q!r} is not a latent id; showing the first live latent")
        i = first
    i = min(max(i, 0), store.d_sae - 1)
    st.session_state["latent_id"] = i  # the widget follows the URL, not its own last value
    c1, c2, c3, c4, c5 = st.columns([1, 1, 1, 2, 2])
    c1.number_input("latent", 0, store.d_sae - 1, step=1, key="latent_id", on_change=_typed)
    earlier, later = alive[alive < i], alive[alive > i]
    prev_j = int(earlier[-1]) if earlier.numel() else i
    next_j = int(later[0]) if later.numel() else i
    c2.button("◀ previous", disabled=not earlier.numel(), on_click=_go, args=(prev_j,))
    c3.button("next ▶", disabled=not later.numel(), on_click=_go, args=(next_j,))
    token = c4.text_input("jump by top token", placeholder="e.g.  def")
    if token:
        ids = [t for t in range(len(store.vocab)) if store.vocab.label(t) == token]
        hits = [f for t in ids for f in store.latents_with_top_token(t)]
        c4.markdown(
            f"{len(hits)} latents top on `{token!r}`: {_links(ctx, hits[:20])}"
            if hits
            else f"no live latent has its top activation on `{token!r}`"
        )
    text = c5.text_input("search top examples", placeholder="e.g.  import os")
    if text:
        hits = store.search(text, limit=20)
        c5.markdown(
            f"{len(hits)} latents: {_links(ctx, hits)}"
            if hits
            else "no latent's top examples match"
        )
    return i


def _steer(ctx, i: int) -> None:
    with st.expander(f"steer with latent {i}"):
        prompt = st.text_input("prompt", "def main():\n", key="steer_prompt")
        alpha = st.slider("alpha (x the mean activation norm)", -2.0, 2.0, 0.5, 0.1)
        if st.button("steer", key="steer_go"):
            model, sae = ctx.model(), ctx.sae()
            tokens = model.to_tokens(prompt)
            [res] = steer_latents(model, sae, [i], [alpha], tokens)
            st.write(
                f"KL from the clean next-token distribution: **{res.kl[0]:.4f}** nats; "
                f"log-prob change of the latent's top tokens: "
                f"**{res.target_logprob_change[0]:+.4f}**"
            )
            st.caption("target tokens: " + ", ".join(repr(s) for s in res.target_strings))


def render(ctx) -> None:
    store = ctx.store()
    st.title("Feature")
    i = _pick(ctx, store)
    f = store.feature(i)
    m = store.manifest
    st.caption(
        f"{m.get('variant')} SAE on `{m.get('hook')}` of {m.get('model')}, {store.d_sae:,} latents; "
        f"store over {store.n_tokens:,} held-out tokens"
    )
    if f.dead:
        st.warning(f"latent {i} never fired on the store's {store.n_tokens:,} tokens (dead)")
        return
    a, b, c, d = st.columns(4)
    a.metric("density", f"{f.density:.4%}")
    b.metric("tokens", f"{f.count:,}")
    c.metric("max activation", f"{f.max:.3g}")
    d.metric("mean (nonzero)", f"{f.mean:.3g}")
    left, right = st.columns([3, 2])
    with left:
        st.subheader("Top activations")
        _html(examples_html(f.top), "no top example is stored for this latent")
        st.subheader("Quantile bands")
        st.caption(
            f"cut from a uniform sample of {f.n_sample:,} of its {f.count:,} nonzero activations; "
            "bands whose edges are equal (tied values) are merged into the band above"
        )
        for band in reversed(f.shown_bands):
            st.markdown(band_caption(band, f.n_sample))
            _html(examples_html(band.examples, scale=f.max))
    with right:
        st.plotly_chart(figures.activation_histogram(f), width="stretch")
        st.plotly_chart(figures.logit_effects_bar(f), width="stretch")
        if f.head_attribution is not None:
            st.plotly_chart(figures.head_attribution_bar(f.head_attribution), width="stretch")
        st.subheader("Nearest by decoder cosine")
        st.markdown(
            " · ".join(f"[{j}]({ctx.link('feature', feature=j)}) {c:.2f}" for j, c in f.neighbours)
        )
        if f.coactivation:
            st.subheader("Co-activating")
            st.markdown(
                " · ".join(
                    f"[{j}]({ctx.link('feature', feature=j)}) ({n:,})" for j, n in f.coactivation
                )
            )
    if f.head_attribution is not None:
        _dfa(ctx, store, f)
    _steer(ctx, i)


def _dfa(ctx, store, f) -> None:
    """hook_z latents: DFA of the top examples over source tokens and heads (computed on demand)."""
    with st.expander("DFA of the top examples: which source tokens and heads drive the latent"):
        if not f.top:
            st.caption("no top example to attribute")
            return
        # a slider needs two distinct ends: one example is simply that example
        m = min(10, len(f.top))
        n = st.slider("examples", 1, m, min(3, m), key="dfa_n") if m > 1 else 1
        if st.button("compute DFA", key="dfa_go"):
            for r in example_dfa(store, ctx.model(), ctx.sae(), f.index, f.top[:n]):
                heads = ", ".join(
                    f"H{h} {v:+.2f}"
                    for h, v in sorted(enumerate(r.by_head), key=lambda p: -p[1])[:3]
                )
                st.markdown(f"activation {r.example.value:.3g}; top heads: {heads}")
                _html(
                    tokens_html(
                        r.example.texts, [max(0.0, v) for v in r.by_source], center=r.example.center
                    )
                )
