"""The top latents at every token of one prompt, for any SAE (the explorer's Prompt page).

The prompt is tokenized as the model tokenizes it (with its BOS), run to the SAE's hook only
(``stop_at_layer``), encoded, and the ``top_k`` largest activations kept per token. Text comes
from :meth:`interp.text.Vocab.token_texts`, so ``"".join(view.texts[1:])`` is exactly the prompt,
multi-byte characters and indentation included (a byte-level BPE token that ends inside a
character shows "" and the token that completes it shows the whole character).

Positions over a norm limit: given ``max_norm_ratio`` (a run's ``data.max_norm_ratio``, 10 by
default), a token whose activation norm at the hook exceeds that multiple of the median norm of
the prompt's tokens (BOS excluded; training takes the median of its batch's rows the same way) is
flagged in ``over``. Training left such rows out, so the SAE's codes there (SmolLM2's first token
after BOS, an attention sink, gets codes of 450-633 where others get 2-5) lie outside what it was
trained on; :meth:`PromptView.latents` and :meth:`PromptView.activation_of` leave them out unless
asked (``include_over``).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from interp.activations import ActivationCapture
from interp.text import Vocab


@dataclass
class PromptView:
    """One prompt's tokens and, per token, its top latents (BOS included, flagged by ``bos``)."""

    tokens: list[int]
    texts: list[str]
    top_ids: list[list[int]]  # [T][<= top_k], largest first, only nonzero activations
    top_values: list[list[float]]
    bos: bool  # whether position 0 is the model's BOS (its latents are not meaningful)
    norms: list[float] | None = None  # the activation norm at the hook, per token
    max_norm_ratio: float | None = None  # the norm limit, a multiple of the median (None: none)

    @property
    def median_norm(self) -> float | None:
        """The median activation norm over the prompt's tokens, BOS excluded."""
        if not self.norms:
            return None
        scored = self.norms[1:] if self.bos and len(self.norms) > 1 else self.norms
        return float(torch.tensor(scored).median())

    @property
    def norm_limit(self) -> float | None:
        """The absolute norm above which a token is over the limit (None: no limit)."""
        med = self.median_norm
        return None if self.max_norm_ratio is None or med is None else self.max_norm_ratio * med

    @property
    def over(self) -> list[bool]:
        """Per token: its norm exceeds ``max_norm_ratio`` x the median (BOS is never flagged)."""
        limit = self.norm_limit
        if limit is None or self.norms is None:
            return [False] * len(self.tokens)
        return [n > limit and not (self.bos and t == 0) for t, n in enumerate(self.norms)]

    def _left_out(self, include_over: bool) -> list[bool]:
        over = self.over
        return [(self.bos and t == 0) or (over[t] and not include_over) for t in range(len(over))]

    @property
    def text(self) -> str:
        """The prompt's text (without the BOS)."""
        return "".join(self.texts[1:] if self.bos else self.texts)

    def activation_of(self, latent: int, include_over: bool = False) -> list[float]:
        """One latent's activation at every token (0 where it is not among the top, at BOS, and
        at tokens over the norm limit unless ``include_over``)."""
        out = []
        skip = self._left_out(include_over)
        for t, (ids, vals) in enumerate(zip(self.top_ids, self.top_values)):
            hit = next((v for i, v in zip(ids, vals) if i == latent), 0.0)
            out.append(0.0 if skip[t] else hit)
        return out

    def latents(self, include_over: bool = False) -> list[int]:
        """Every latent that appears at a non-BOS token (over the norm limit only with
        ``include_over``), by its largest activation there."""
        best: dict[int, float] = {}
        skip = self._left_out(include_over)
        for t, (ids, vals) in enumerate(zip(self.top_ids, self.top_values)):
            if skip[t]:
                continue
            for i, v in zip(ids, vals):
                best[i] = max(best.get(i, 0.0), v)
        return sorted(best, key=lambda i: -best[i])


@torch.no_grad()
def prompt_features(
    model,
    sae,
    text: str,
    top_k: int = 5,
    vocab: Vocab | None = None,
    max_norm_ratio: float | None = None,
) -> PromptView:
    """The top ``top_k`` latents of ``sae`` at every token of ``text``; ``max_norm_ratio`` flags
    the tokens over that norm limit (see the module doc)."""
    if max_norm_ratio is not None and not max_norm_ratio > 1:
        raise ValueError(
            f"max_norm_ratio must be > 1 (a multiple of the median norm), got {max_norm_ratio}"
        )
    if not text:
        raise ValueError("the prompt is empty: type some text")
    hook = sae.cfg.hook_name
    if not hook:
        raise ValueError("the SAE records no hook_name, so the prompt cannot be run to it")
    tokens = model.to_tokens(text)  # [1, T], BOS prepended when the model has one
    capture = ActivationCapture(model, [hook], drop_bos=False)
    x = capture(tokens).acts[hook]  # [T, d_in]
    acts = sae.encode(x.to(sae.device, sae.W_enc.dtype)).float().cpu()
    vals, idx = acts.topk(min(top_k, acts.shape[-1]), dim=-1)
    ids = tokens[0].tolist()
    vocab = vocab or Vocab.from_tokenizer(model.tokenizer)
    keep = vals > 0
    return PromptView(
        tokens=ids,
        texts=vocab.token_texts(ids),
        top_ids=[i[k].tolist() for i, k in zip(idx, keep)],
        top_values=[v[k].tolist() for v, k in zip(vals, keep)],
        bos=capture.bos_id is not None and ids[0] == capture.bos_id,
        norms=x.float().norm(dim=-1).cpu().tolist(),
        max_norm_ratio=max_norm_ratio,
    )
