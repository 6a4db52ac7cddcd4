"""The top latents at every token of one prompt, for any SAE (the explorer's Prompt page).

The prompt is tokenized as the model tokenizes it (with its BOS), run to the SAE's hook only
(``stop_at_layer``), encoded, and the ``top_k`` largest activations kept per token. Text comes
from :meth:`interp.text.Vocab.token_texts`, so ``"".join(view.texts[1:])`` is exactly the prompt,
multi-byte characters and indentation included (a byte-level BPE token that ends inside a
character shows "" and the token that completes it shows the whole character).
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

    @property
    def text(self) -> str:
        """The prompt's text (without the BOS)."""
        return "".join(self.texts[1:] if self.bos else self.texts)

    def activation_of(self, latent: int) -> list[float]:
        """One latent's activation at every token (0 where it is not among the top, and at BOS)."""
        out = []
        for t, (ids, vals) in enumerate(zip(self.top_ids, self.top_values)):
            hit = next((v for i, v in zip(ids, vals) if i == latent), 0.0)
            out.append(0.0 if self.bos and t == 0 else hit)
        return out

    def latents(self) -> list[int]:
        """Every latent that appears at a non-BOS token, by its largest activation."""
        best: dict[int, float] = {}
        for t, (ids, vals) in enumerate(zip(self.top_ids, self.top_values)):
            if self.bos and t == 0:
                continue
            for i, v in zip(ids, vals):
                best[i] = max(best.get(i, 0.0), v)
        return sorted(best, key=lambda i: -best[i])


@torch.no_grad()
def prompt_features(
    model, sae, text: str, top_k: int = 5, vocab: Vocab | None = None
) -> PromptView:
    """The top ``top_k`` latents of ``sae`` at every token of ``text`` (see the module doc)."""
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
    )
