"""A model whose circuit is known by construction: a hand-built 2-layer attention-only
TransformerLens model in which a previous-token head feeds an induction head, among distractor
heads.

Residual stream (d_model = 2V + V + P + J, no LayerNorm, no MLPs), in blocks:

* ``tok`` [V]: one-hot of the current token (W_E);
* ``prev`` [V]: written by the previous-token head: one-hot of the token one position back;
* ``out`` [V]: written by the induction head, read by W_U (logits = ``scale * out``);
* ``pos`` [P]: one-hot of the position (W_pos);
* ``junk`` [J]: written by the distractor heads and read by nobody.

Heads (``PREV`` = L0H1, ``INDUCTION`` = L1H2; the other 6 are distractors):

* previous-token head: q_i = s * e_i (position i), k_j = e_{j+1}: position i attends to i - 1;
  v = one-hot of the token, written into ``prev``.
* induction head: q_i = s * tok_i, k_j = prev_j (plus a constant s/2 on the BOS key through a
  query bias, so with no match the head rests on BOS, whose value is 0): position i attends to
  the position j whose previous token equals token i, and writes tok_j into ``out``: on a
  repeated sequence it predicts the next token of the first occurrence (induction).
* distractors, each writing into ``junk`` through a random W_O: a BOS sink (constant output), a
  current-position head, a head attending to position 2, a previous-position head (each copying
  a position: the positional twins of the planted heads), and two heads with small random Q/K/V
  reading the positions (or, ``content_distractors=True``, the whole stream).

Why the distractors do not read the tokens by default: the node score counts codes seen on
positives and never on negatives, so any head whose output varies from prompt to prompt collects
such codes by chance, even with the same distribution on both sides. In a trial with a
prefix-averaging head and a first-token copier as distractors (5 prompt seeds, 20 + 20 prompts),
these two outranked both planted heads; with the random heads reading tokens
(``content_distractors=True``) the induction head still ranks first but the previous-token head
ties with them. The previous-token head's own output has the same per-position distribution on
positives and negatives (only the duplicated tokens of a repeat differ), which is the same
limitation met on a real model.

Positive prompts are BOS + n random distinct tokens + the same n tokens again (induction predicts
every token of the second half); negatives are BOS + 2n distinct random tokens (nothing to copy:
the induction head rests on BOS, and the model is at chance).
"""

from __future__ import annotations

import torch

from circuits.discrete_codes import head_vectors
from interp.models.hooked import new_hooked

__all__ = ["INDUCTION", "PLANTED", "PREV", "induction_accuracy", "planted_model", "planted_prompts"]

PREV = "L0H1"
INDUCTION = "L1H2"
PLANTED = (PREV, INDUCTION)
# output gains of the planted heads (their readers divide them out again): with them every head's
# position-averaged output has a norm of about 3 (measured: 0.38 and 0.19 at gain 1)
PREV_GAIN = 8.0
INDUCTION_GAIN = 16.0
JUNK_NORM = 3.0


def planted_model(
    d_vocab: int = 40,
    n_ctx: int = 32,
    d_junk: int = 16,
    scale: float = 20.0,
    seed: int = 0,
    content_distractors: bool = False,
):
    """The planted-circuit HookedTransformer (2 layers x 4 heads, attention only).
    ``content_distractors``: the two random distractors read the tokens too (their outputs then
    vary from prompt to prompt, with the same distribution on positives and negatives)."""
    from transformer_lens import HookedTransformerConfig

    v, p, j = d_vocab, n_ctx, d_junk
    tok, prev, out, pos, junk = 0, v, 2 * v, 3 * v, 3 * v + p
    d_model = 3 * v + p + j
    d_head = max(v, p)
    cfg = HookedTransformerConfig(
        n_layers=2,
        d_model=d_model,
        n_ctx=n_ctx,
        d_head=d_head,
        n_heads=4,
        d_vocab=v,
        attn_only=True,
        normalization_type=None,
        positional_embedding_type="standard",
        act_fn="relu",
        seed=seed,
        default_prepend_bos=False,
    )
    model = new_hooked(cfg)  # (TransformerLens's deprecation warning silenced, as everywhere)
    gen = torch.Generator().manual_seed(seed)
    eye_v, eye_p = torch.eye(v), torch.eye(p)
    with torch.no_grad():
        for param in model.parameters():
            param.zero_()
        model.embed.W_E[:, tok : tok + v] = eye_v
        model.pos_embed.W_pos[:, pos : pos + p] = eye_p
        model.unembed.W_U[out : out + v, :] = scale / INDUCTION_GAIN * eye_v
        a0, a1 = model.blocks[0].attn, model.blocks[1].attn
        # the attention score is q.k / sqrt(d_head): fold sqrt(d_head) into the query scale
        s = scale * d_head**0.5

        # L0H1: previous-token head
        a0.W_Q[1, pos : pos + p, :p] = s * eye_p
        a0.W_K[1, pos : pos + p - 1, 1:p] = eye_p[: p - 1, : p - 1]
        a0.W_V[1, tok : tok + v, :v] = eye_v
        a0.W_O[1, :v, prev : prev + v] = PREV_GAIN * eye_v

        # L1H2: induction head; BOS (token 0) is the default, its value is 0
        a1.W_Q[2, tok : tok + v, :v] = s * eye_v
        # a previous BOS is no match
        a1.W_K[2, prev + 1 : prev + v, 1:v] = eye_v[1:, 1:] / PREV_GAIN
        a1.b_Q[2, 0] = s / 2
        a1.W_K[2, pos, 0] += 1.0  # key of position 0
        a1.W_Q[2, tok, :] = 0.0  # BOS queries nothing
        a1.W_V[2, tok + 1 : tok + v, 1:v] = eye_v[1:, 1:]
        a1.W_O[2, :v, out : out + v] = INDUCTION_GAIN * eye_v

        def junk_out(attn, h, d_in_head):
            attn.W_O[h, :d_in_head, junk : junk + j] = torch.randn(d_in_head, j, generator=gen)

        # L0H0: BOS sink (constant output)
        a0.b_Q[0, 0] = s
        a0.W_K[0, pos, 0] = 1.0
        a0.W_V[0, pos : pos + p, :p] = eye_p
        junk_out(a0, 0, p)
        # L0H2: current-position head copying its position
        a0.W_Q[2, pos : pos + p, :p] = s * eye_p
        a0.W_K[2, pos : pos + p, :p] = eye_p
        a0.W_V[2, pos : pos + p, :p] = eye_p
        junk_out(a0, 2, p)
        # L0H3: attends to position 2 and copies that position
        a0.b_Q[3, 0] = s
        a0.W_K[3, pos + 2, 0] = 1.0
        a0.W_V[3, pos : pos + p, :p] = eye_p
        junk_out(a0, 3, p)
        # L1H0: previous-position head copying the position (a positional twin of L0H1)
        a1.W_Q[0, pos : pos + p, :p] = s * eye_p
        a1.W_K[0, pos : pos + p - 1, 1:p] = eye_p[: p - 1, : p - 1]
        a1.W_V[0, pos : pos + p, :p] = eye_p
        junk_out(a1, 0, p)
        # L1H1, L1H3: small random heads reading the positions (content_distractors: the whole
        # stream, so their outputs vary with the tokens)
        lo, hi = (0, d_model) if content_distractors else (pos, pos + p)
        for h in (1, 3):
            for w in (a1.W_Q, a1.W_K, a1.W_V):
                w[h, lo:hi] = 0.1 * torch.randn(hi - lo, d_head, generator=gen)
            junk_out(a1, h, d_head)
        _calibrate_junk(model, [(0, 0), (0, 2), (0, 3), (1, 0), (1, 1), (1, 3)], d_vocab, seed)
    return model


def _calibrate_junk(model, heads, d_vocab: int, seed: int) -> None:
    """Scale each distractor's W_O so its position-averaged output has mean norm JUNK_NORM on
    random prompts (nobody reads ``junk``, so the behaviour is unchanged): every head then writes
    vectors of comparable size, and the SAE sees them all."""
    pos, neg = planted_prompts(16, d_vocab=d_vocab, seed=seed + 1)
    x = head_vectors(model, torch.cat([pos, neg]))
    for layer, h in heads:
        norm = x[:, layer * model.cfg.n_heads + h].norm(dim=-1).mean().clamp_min(1e-6)
        model.blocks[layer].attn.W_O[h] *= JUNK_NORM / norm


def planted_prompts(
    n: int, half: int = 6, d_vocab: int = 40, seed: int = 0
) -> tuple[torch.Tensor, torch.Tensor]:
    """(positives, negatives) [n, 1 + 2 * half]: BOS (0) + ``half`` distinct random tokens + the
    same again; BOS + 2 * half distinct random tokens."""
    if 2 * half > d_vocab - 1:
        raise ValueError(f"2 * half = {2 * half} distinct tokens need d_vocab > {2 * half}")
    gen = torch.Generator().manual_seed(seed)
    pos, neg = [], []
    for _ in range(n):
        first = torch.randperm(d_vocab - 1, generator=gen)[:half] + 1
        pos.append(torch.cat([torch.zeros(1, dtype=torch.long), first, first]))
        fresh = torch.randperm(d_vocab - 1, generator=gen)[: 2 * half] + 1
        neg.append(torch.cat([torch.zeros(1, dtype=torch.long), fresh]))
    return torch.stack(pos), torch.stack(neg)


@torch.no_grad()
def induction_accuracy(model, tokens: torch.Tensor) -> float:
    """Share of second-half positions (those with a next token in the second half) whose argmax
    prediction is the next token."""
    half = (tokens.shape[1] - 1) // 2
    logits = model(tokens)
    pred = logits[:, half + 1 : -1].argmax(-1)
    return float((pred == tokens[:, half + 2 :]).float().mean())
