"""Token highlighting as HTML: one function the explorer and the notebooks share.

A context is shown as the exact text of its tokens (``Vocab.token_texts``: joined, the pieces are
exactly the decoded span, so multi-byte characters split across byte-level BPE tokens show
whole), each token a ``<span>`` whose background is the activation scaled by the largest one
shown, whose ``title`` (the hover) gives the token's bytes and its value, and whose whitespace is
made visible (space ·, tab →, newline ↵ followed by a real line break), since code is most of
the default corpus. The token the example is centred on is outlined.
"""

from __future__ import annotations

import html
from collections.abc import Sequence

from interp.text import show_whitespace
from saes.features.store import Band, Example

# the highlight colour (an orange, as in Anthropic's feature visualiser); alpha carries the value
_RGB = "255, 140, 0"


# a token marked as outside what the SAE was trained on (over the norm limit): hatched, dashed red
_MARK = (
    "outline: 2px dashed #c00; background-image: repeating-linear-gradient(135deg, "
    "rgba(200, 0, 0, 0.18) 0 3px, transparent 3px 6px);"
)


def _span(text: str, value: float, scale: float, title: str, center: bool, mark: bool) -> str:
    alpha = 0.0 if scale <= 0 or value <= 0 else min(1.0, value / scale)
    shown = html.escape(show_whitespace(text)).replace("\n", "<br>")
    style = f"background-color: rgba({_RGB}, {alpha:.3f});"
    if center:
        style += " outline: 1px solid #333;"
    if mark:
        style += " " + _MARK
    cls = "tok over" if mark else "tok"
    return f'<span class="{cls}" style="{style}" title="{html.escape(title)}">{shown}</span>'


def tokens_html(
    texts: Sequence[str],
    values: Sequence[float],
    scale: float | None = None,
    center: int | None = None,
    labels: Sequence[str] | None = None,
    marked: Sequence[bool] | None = None,
    mark_note: str = "",
) -> str:
    """One line of highlighted tokens. ``scale``: the value drawn at full colour (default: the
    largest value among the tokens not ``marked``); ``labels``: the hover text's token names
    (default: the texts); ``marked``: tokens drawn hatched with a dashed red outline, ``mark_note``
    added to their hover text (e.g. over the training norm limit)."""
    marked = list(marked) if marked is not None else [False] * len(texts)
    if scale is None:
        scale = max((v for v, m in zip(values, marked) if not m), default=0.0)
    labels = labels if labels is not None else texts
    spans = [
        _span(t, v, scale, f"{lab!r}: {v:.3g}" + (f" ({mark_note})" if m else ""), i == center, m)
        for i, (t, v, lab, m) in enumerate(zip(texts, values, labels, marked))
    ]
    return (
        '<div class="ctx" style="font-family: monospace; white-space: pre-wrap; '
        'line-height: 1.6; margin: 2px 0;">' + "".join(spans) + "</div>"
    )


def example_html(ex: Example, scale: float | None = None) -> str:
    """An :class:`Example` as highlighted tokens, prefixed by its activation."""
    head = f'<span style="color:#666; font-size: 0.85em;">{ex.value:.3g}&nbsp;</span>'
    return head + tokens_html(ex.texts, ex.acts, scale=scale, center=ex.center)


def examples_html(examples: Sequence[Example], scale: float | None = None) -> str:
    """Several examples on one shared colour scale (default: the largest activation among them)."""
    if scale is None:
        scale = max((max(e.acts, default=0.0) for e in examples), default=0.0)
    return "".join(example_html(e, scale) for e in examples)


def band_caption(band: Band, n_sample: int) -> str:
    """Markdown naming one (tie-merged) band: its quantiles and values, ties said in words, and
    why a band has no example when it has none (``n_sample``: the latent's sampled activations)."""
    qs = f"**{band.q_lo:.0%}-{band.q_hi:.0%}** of the nonzero activations"
    if band.tied:
        text = f"{qs}: all at {band.lo:.3g}"
    elif band.tied_to is not None:
        text = (
            f"{qs} ({band.lo:.3g} to {band.hi:.3g}; the {band.q_lo:.0%} to {band.tied_to:.0%} "
            f"quantiles are all {band.lo:.3g}, a tie)"
        )
    else:
        text = f"{qs} ({band.lo:.3g} to {band.hi:.3g})"
    if not band.examples:
        text += (
            f"  \n_no example: none of the latent's {n_sample:,} sampled activations lies here "
            "(with few samples, the quantile edges interpolate between two neighbouring values)_"
        )
    return text
