"""Prompt: type text and see the SAE's top latents at every token (model and SAE cached).

Tokens whose activation norm is over the run's training norm limit (``data.max_norm_ratio`` x the
median; training left such rows out) are marked, and by default left out of the colour scale,
the latent list, the heatmap and the top-latent table; a toggle puts them back.
"""

from __future__ import annotations

import streamlit as st

from saes import figures
from saes.features.prompt import prompt_features
from saes.features.render import tokens_html
from saes.rundir import RunDir

TITLE = "Prompt"
ORDER = 20
DEFAULT = 'def greet(name):\n    """Say hello."""\n    return f"Hello, {name}!"\n'


def norm_limit(ctx) -> tuple[float | None, str]:
    """The run's training norm limit (``data.max_norm_ratio``) and a sentence saying where it is
    from; None when the run keeps every row or records no training config."""
    cfg = RunDir(ctx.run).config() if ctx.run is not None else None
    if cfg is None:
        return None, "this SAE folder records no training config, so no norm limit is applied"
    ratio = (cfg.get("data") or {}).get("max_norm_ratio")
    if ratio is None:
        return None, "this run trained on every row (data.max_norm_ratio: null): no norm limit"
    return float(ratio), f"the run's data.max_norm_ratio, {ratio:g}x the median norm"


def render(ctx) -> None:
    store = ctx.store()
    st.title("Prompt")
    text = st.text_area("text", st.query_params.get("text", DEFAULT), height=120)
    top_k = st.slider("latents per token", 1, 10, 5)
    if not text:
        st.info("type some text")
        return
    ratio, source = norm_limit(ctx)
    view = prompt_features(
        ctx.model(), ctx.sae(), text, top_k=top_k, vocab=store.vocab, max_norm_ratio=ratio
    )
    over = view.over
    n_over = sum(over)
    include = False
    if ratio is not None:
        include = st.toggle(
            "include tokens over the training norm limit",
            False,
            disabled=not n_over,
            help="Training left rows over the limit out, so the SAE's codes there are outside "
            "what it was trained on; evaluation reports such tokens apart.",
        )
        where = ", ".join(f"{t} `{view.texts[t]!r}`" for t in range(len(over)) if over[t])
        st.caption(
            f"Norm limit: {view.norm_limit:.3g} ({source}; median over this prompt's tokens "
            f"{view.median_norm:.3g}, BOS excluded). "
            + (
                f"{n_over} token(s) over it, marked hatched with a dashed red outline: {where}. "
                + (
                    "They are included below."
                    if include
                    else "Training left such rows out, so they are left out of the colour "
                    "scale, the latent list, the heatmap and the table below (toggle to include)."
                )
                if n_over
                else "No token is over it."
            )
        )
    else:
        st.caption(f"Norm limit: none ({source}).")
    latents = view.latents(include_over=include)
    st.caption(
        f"{len(view.tokens)} tokens (BOS included), {len(latents)} distinct latents among the top "
        f"{top_k} at each token" + ("" if include or not n_over else " (over-limit tokens aside)")
    )
    if not latents:
        st.warning("no latent fires on this text")
        return
    shown = st.selectbox(
        "highlight latent",
        latents,
        format_func=lambda j: f"{j} (max {max(view.activation_of(j, include)):.3g})",
    )
    # over-limit tokens keep their value (in the hover) but set the colour scale only if included
    scale = max(view.activation_of(shown, include_over=include))
    st.html(
        tokens_html(
            view.texts,
            view.activation_of(shown, include_over=True),
            scale=scale,
            marked=over,
            mark_note="over the training norm limit",
        )
    )
    st.markdown(f"[open latent {shown} →]({ctx.link('feature', feature=shown)})")
    head = latents[:20]
    st.plotly_chart(
        figures.prompt_heatmap(
            view.texts,
            head,
            [view.activation_of(j, include) for j in head],
            left_out=[o and not include for o in over],
        ),
        width="stretch",
    )
    st.subheader("Top latents per token")
    rows = []
    for t, (txt, ids, vals) in enumerate(zip(view.texts, view.top_ids, view.top_values)):
        if over[t] and not include:
            cells = f"_over the norm limit (‖x‖ {_norm_text(view, t)}): left out_"
        else:
            cells = ", ".join(
                f"[{j}]({ctx.link('feature', feature=j)}) {v:.2f}" for j, v in zip(ids, vals)
            )
            if over[t]:
                cells = f"**over the norm limit** (‖x‖ {_norm_text(view, t)}): " + cells
        rows.append(f"| {t} | `{txt!r}` | {cells} |")
    st.markdown("| pos | token | latents |\n|---|---|---|\n" + "\n".join(rows))


def _norm_text(view, t: int) -> str:
    med = view.median_norm or 0.0
    n = view.norms[t] if view.norms else 0.0
    return f"{n:.3g}, {n / med:.1f}x the median" if med else f"{n:.3g}"
