"""Attention-output SAEs (SAEs on ``blocks.L.attn.hook_z``): heads, source tokens, logits, induction.

An attention SAE reads the concatenated per-head outputs z = [z_0 | z_1 | ... | z_{H-1}]
(``d_in = n_heads * d_head``, head-major, the layout SAELens's ``reshape_activations="hook_z"``
uses). With grouped-query attention the H query heads share n_kv value heads: query head h reads
value head ``h // (H / n_kv)`` (TransformerLens repeats K/V with ``repeat_interleave``).

Public functions (plain dataclasses / tensors / dicts, for the CLI, benchmarks and dashboards):

* :func:`load_head_layout`: an SAE's head layout (``interp.hooks.head_layout`` /
  ``interp.hooks.layout_for_spec``).
* :func:`head_attribution`: share of each feature's decoder norm in each head's block,
  ||W_dec[f, h]|| / sum_h ||W_dec[f, h]||, with per-head summaries; :func:`dfa_head_attribution`:
  the same from data (activation-weighted share of positive DFA per head).
* :func:`attention_inputs`: pattern, v and z of one layer for a batch of prompts.
* :func:`direct_feature_attribution`: DFA_f(t, s, h) = A_h[t, s] * (v_{kv(h)}[s] . W_enc[h block, f])
  (input scale folded in); exact: sum_{s,h} DFA + (b_enc - b_dec . W_enc) = pre-activation.
* :func:`direct_logit_effect`: W_dec[f] -> W_O -> (final norm gain) -> W_U, top/bottom tokens.
* :func:`find_induction_features`: repeated random token sequences; features active on the second
  repeat whose DFA comes from the token after the earlier occurrence, the heads behind them, and
  short- vs long-prefix induction (the matching prefix varied from 1 token up).
* :func:`head_roles`: each feature's attention role from where its DFA comes from (BOS, self,
  previous token, induction, local, long-range); a head is polysemantic when its top features
  (by head attribution) have several roles.
* :func:`explore_prompt`: top features per position with their heads and DFA over source tokens.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch
from pydantic import BaseModel, ConfigDict, model_validator

from interp.hooks import HeadLayout, head_layout, hook_name, layout_for_spec

# ---------------------------------------------------------------------------------------------
# head layout
# ---------------------------------------------------------------------------------------------


def load_head_layout(sae, model=None) -> HeadLayout:
    """The layout of an attention SAE: from the model if given, else from the SAE's model spec."""
    hook = sae.cfg.hook_name
    layout = (
        head_layout(model, hook) if model is not None else layout_for_spec(sae.cfg.model_name, hook)
    )
    if layout is None:
        raise ValueError(
            f"cannot tell the head layout of {sae.cfg.model_name!r}: pass the loaded model"
        )
    if layout.d_in != sae.cfg.d_in:
        raise ValueError(f"SAE d_in={sae.cfg.d_in} but {hook} has n_heads*d_head={layout.d_in}")
    return layout


def encode_z(sae, z: torch.Tensor) -> torch.Tensor:
    """Dense codes of hook_z activations [..., n_heads, d_head] (SAELens's hook_z reshaping)."""
    return sae.encode(z.reshape(*z.shape[:-2], -1))


def reconstruct_z(sae, z: torch.Tensor) -> torch.Tensor:
    """SAE reconstruction of hook_z activations [..., n_heads, d_head], in the same shape."""
    return sae(z.reshape(*z.shape[:-2], -1))[0].reshape(z.shape)


def _raw_encoder(sae) -> tuple[torch.Tensor, torch.Tensor]:
    """(W [d_in, d_sae], c [d_sae]) with pre-activation = x @ W + c for raw inputs x."""
    W = sae.W_enc.detach().float()
    s = sae.cfg.input_scale or 1.0
    return W * s, sae.b_enc.detach().float() - sae.b_dec.detach().float() @ W


def _raw_decoder(sae) -> torch.Tensor:
    """Decoder rows [d_sae, d_in] in raw input units (x_hat = z @ W_dec_raw + b)."""
    return sae.W_dec.detach().float() / (sae.cfg.input_scale or 1.0)


# ---------------------------------------------------------------------------------------------
# head attribution (weights only)
# ---------------------------------------------------------------------------------------------


@dataclass
class HeadAttribution:
    """Decoder-norm shares per feature and head, and per-head summaries."""

    shares: torch.Tensor  # [d_sae, n_heads], rows sum to 1
    dominant_head: torch.Tensor  # [d_sae]
    max_share: torch.Tensor  # [d_sae]
    effective_heads: torch.Tensor  # [d_sae]: exp(entropy of the shares), 1 = one head only
    features_dominated: list[int]  # per head: features whose largest share is that head's
    mean_max_share: list[float]  # per head: mean max_share of the features it dominates
    alive: torch.Tensor | None = None  # [d_sae] bool mask the summaries were restricted to

    def top_features(self, head: int, n: int = 10, min_share: float = 0.0) -> torch.Tensor:
        """Up to n features with the largest share in ``head``, at least ``min_share`` (alive ones
        only when a mask was given)."""
        s = self.shares[:, head].clone()
        if self.alive is not None:
            s[~self.alive] = -1.0
        s[s < min_share] = -1.0
        return s.topk(min(n, int((s >= 0).sum()))).indices

    def summary(self) -> dict[str, Any]:
        return {
            "features_dominated": self.features_dominated,
            "mean_max_share": self.mean_max_share,
            "max_share_hist": torch.histogram(
                self._sel(self.max_share), bins=20, range=(0.0, 1.0)
            ).hist.tolist(),
            "fraction_single_head_0.9": float((self._sel(self.max_share) >= 0.9).float().mean()),
            "mean_effective_heads": float(self._sel(self.effective_heads).mean()),
        }

    def _sel(self, t: torch.Tensor) -> torch.Tensor:
        return (t if self.alive is None else t[self.alive]).float()


def head_attribution(sae, layout: HeadLayout, alive: torch.Tensor | None = None) -> HeadAttribution:
    """Weight-based head attribution: ||W_dec[f, head h]|| / sum_h ||W_dec[f, head h]||."""
    if sae.cfg.d_in != layout.d_in:
        raise ValueError(
            f"SAE d_in={sae.cfg.d_in} does not match the layout's n_heads*d_head={layout.d_in}"
        )
    norms = layout.split(_raw_decoder(sae)).norm(dim=-1)  # [d_sae, H]
    return _attribution_from_shares(
        norms / norms.sum(-1, keepdim=True).clamp_min(1e-30), layout, alive
    )


# ---------------------------------------------------------------------------------------------
# attention inputs and direct feature attribution
# ---------------------------------------------------------------------------------------------


@dataclass
class AttentionInputs:
    """One layer's attention on a batch: pattern [B, H, T, S], v [B, S, n_kv, d_head], z [B, T, H, d_head]."""

    tokens: torch.Tensor
    pattern: torch.Tensor
    v: torch.Tensor
    z: torch.Tensor


@torch.no_grad()
def attention_inputs(model, tokens: torch.Tensor, layer: int) -> AttentionInputs:
    """Pattern, v and z of ``layer`` (the model runs only up to that block). Hooking the pattern
    makes the fast forward fall back to TransformerLens's attention for that layer, so pattern, v
    and z come from one and the same computation."""
    if tokens.dim() == 1:
        tokens = tokens[None]
    if tokens.dim() != 2:
        raise ValueError(
            f"tokens must be [positions] or [batch, positions], got {tuple(tokens.shape)}"
        )
    if not 0 <= layer < model.cfg.n_layers:
        raise ValueError(f"layer {layer} does not exist: the model has {model.cfg.n_layers} layers")
    names = [
        hook_name(layer, "attn.pattern"),
        hook_name(layer, "attn.v"),
        hook_name(layer, "attn.z"),
    ]
    device = next(model.parameters()).device
    stop = layer + 1 if layer + 1 < model.cfg.n_layers else None
    _, cache = model.run_with_cache(
        tokens.to(device),
        names_filter=names,
        stop_at_layer=stop,
        return_type=None if stop is None else "logits",
    )
    return AttentionInputs(
        tokens.cpu(),
        cache[names[0]].float().cpu(),
        cache[names[1]].float().cpu(),
        cache[names[2]].float().cpu(),
    )


def _projected_values(inputs: AttentionInputs, layout: HeadLayout, W: torch.Tensor) -> torch.Tensor:
    """v_{kv(h)}[s] . W[h block, f] for every head: [B, H, S, F] (W [d_in, F] raw-input encoder columns)."""
    v = inputs.v[:, :, layout.kv_index]  # [B, S, H, d_head]: each query head's value vectors
    Wh = W.reshape(layout.n_heads, layout.d_head, -1)  # [H, d_head, F]
    return torch.einsum("bshd,hdf->bhsf", v, Wh)


@torch.no_grad()
def dfa_by_source(
    sae, inputs: AttentionInputs, layout: HeadLayout, features: Sequence[int] | torch.Tensor
) -> torch.Tensor:
    """DFA summed over heads, [B, T(dest), F, S(source)], without the per-head tensor."""
    W, _ = _raw_encoder(sae)
    proj = _projected_values(
        inputs, layout, W[:, torch.as_tensor(features, dtype=torch.long)].cpu()
    )
    return torch.einsum("bhts,bhsf->btfs", inputs.pattern, proj)


@dataclass
class FeatureDFA:
    """DFA of some features on one batch of prompts."""

    features: torch.Tensor  # [F]
    dfa: torch.Tensor  # [B, T(dest), F, H, S(source)]
    bias: torch.Tensor  # [F]: b_enc - b_dec . W_enc (raw units)
    pre_acts: torch.Tensor  # [B, T, F]: the SAE's encoder pre-activations on z
    acts: torch.Tensor  # [B, T, F]: the SAE's feature activations on z

    @property
    def by_source(self) -> torch.Tensor:
        """[B, T, F, S]: summed over heads."""
        return self.dfa.sum(3)

    @property
    def by_head(self) -> torch.Tensor:
        """[B, T, F, H]: summed over source positions."""
        return self.dfa.sum(4)


@torch.no_grad()
def direct_feature_attribution(
    sae, inputs: AttentionInputs, layout: HeadLayout, features: Sequence[int] | torch.Tensor
) -> FeatureDFA:
    """DFA_f(t, s, h) = A_h[t, s] * (v_{kv(h)}[s] . W_enc[h block, f]) for the given features.

    Because z_h[t] = sum_s A_h[t, s] v_{kv(h)}[s] is linear in v, the sum over s and h plus
    ``bias`` is exactly the feature's encoder pre-activation at t."""
    feats = torch.as_tensor(features, dtype=torch.long).reshape(-1)
    if feats.numel() and (feats.min() < 0 or feats.max() >= sae.cfg.d_sae):
        raise ValueError(
            f"feature indices must be in [0, {sae.cfg.d_sae}), got {feats.tolist()[:10]}"
        )
    W, c = _raw_encoder(sae)
    W, c = W[:, feats].cpu(), c[feats].cpu()
    proj = _projected_values(inputs, layout, W)  # [B, H, S, F]
    dfa = torch.einsum("bhts,bhsf->btfhs", inputs.pattern, proj)
    z = inputs.z.reshape(*inputs.z.shape[:2], -1)
    acts = sae.encode(z.to(sae.device)).float().cpu()[..., feats]
    return FeatureDFA(feats, dfa, c, z @ W + c, acts)


def _attribution_from_shares(
    shares: torch.Tensor, layout: HeadLayout, alive: torch.Tensor | None
) -> HeadAttribution:
    max_share, dominant = shares.max(-1)
    p = shares.clamp_min(1e-30)
    effective = torch.exp(-(shares * p.log()).sum(-1))
    keep = torch.ones_like(dominant, dtype=torch.bool) if alive is None else alive.bool()
    dominated = [int(((dominant == h) & keep).sum()) for h in range(layout.n_heads)]
    mean_max = [
        float(max_share[(dominant == h) & keep].mean()) if dominated[h] else float("nan")
        for h in range(layout.n_heads)
    ]
    return HeadAttribution(
        shares, dominant, max_share, effective, dominated, mean_max, None if alive is None else keep
    )


@torch.no_grad()
def dfa_head_attribution(
    model, sae, windows: torch.Tensor, layout: HeadLayout | None = None, batch_size: int = 8
) -> HeadAttribution:
    """Data-based head attribution: each feature's activation-weighted share of positive DFA per
    head over ``windows`` (BOS positions skipped). Unlike the decoder-norm shares it ignores
    weight directions the heads never write, so it is informative for SAEs whose decoder rows
    still carry their random initialisation. Features that never fire are not alive."""
    layout = layout or load_head_layout(sae, model)
    W, _ = _raw_encoder(sae)
    mass = torch.zeros(sae.cfg.d_sae, layout.n_heads)
    for inp in _batched_inputs(model, windows, layout.layer, batch_size):
        z = inp.z.reshape(inp.z.shape[0], inp.z.shape[1], -1)
        acts = sae.encode(z.to(sae.device)).float().cpu()[:, 1:]  # [B, T-1, d_sae]
        for f0 in range(0, sae.cfg.d_sae, 1024):  # feature chunks bound the [B, T, F, H] tensor
            sl = slice(f0, f0 + 1024)
            proj = _projected_values(inp, layout, W[:, sl].cpu())  # [B, H, S, F]
            by_head = torch.einsum("bhts,bhsf->btfh", inp.pattern, proj)[:, 1:].clamp_min(0)
            share = by_head / by_head.sum(-1, keepdim=True).clamp_min(1e-12)
            mass[sl] += torch.einsum("btf,btfh->fh", acts[..., sl], share)
    alive = mass.sum(-1) > 0
    shares = torch.where(
        alive[:, None],
        mass / mass.sum(-1, keepdim=True).clamp_min(1e-30),
        torch.full_like(mass, 1.0 / layout.n_heads),
    )
    return _attribution_from_shares(shares, layout, alive)


# ---------------------------------------------------------------------------------------------
# direct logit effect
# ---------------------------------------------------------------------------------------------


@dataclass
class LogitEffect:
    feature: int
    effect: torch.Tensor  # [d_vocab]: logit change per unit of feature activation (direct path)
    top_ids: list[int]
    top_values: list[float]
    top_tokens: list[str]
    bottom_ids: list[int]
    bottom_values: list[float]
    bottom_tokens: list[str]


@torch.no_grad()
def feature_output_directions(sae, model, layout: HeadLayout) -> torch.Tensor:
    """What each feature writes to the residual stream: W_dec[f] (per head) @ W_O [d_sae, d_model]."""
    W_O = model.blocks[layout.layer].attn.W_O.detach().float().cpu()  # [H, d_head, d_model]
    dec = layout.split(_raw_decoder(sae).cpu())  # [d_sae, H, d_head]
    return torch.einsum("fhd,hdm->fm", dec, W_O)


@torch.no_grad()
def direct_logit_effect(sae, model, layout: HeadLayout, feature: int, n: int = 10) -> LogitEffect:
    """The feature's direct effect on the logits through W_O, the final norm's gain and W_U (the
    norm's scale is left out, as in direct logit attribution): top and bottom ``n`` tokens."""
    if not 0 <= feature < sae.cfg.d_sae:
        raise ValueError(f"feature {feature} out of range [0, {sae.cfg.d_sae})")
    from saes.steering import unembedded_direction

    effect = unembedded_direction(model, layout.hook, _raw_decoder(sae)[feature]).cpu()
    n = min(n, effect.numel())
    top, bottom = effect.topk(n), (-effect).topk(n)
    tok = getattr(model, "tokenizer", None)

    def names(ids: torch.Tensor) -> list[str]:
        return [tok.decode([i]) if tok is not None else str(i) for i in ids.tolist()]

    return LogitEffect(
        feature,
        effect,
        top.indices.tolist(),
        top.values.tolist(),
        names(top.indices),
        bottom.indices.tolist(),
        (-bottom.values).tolist(),
        names(bottom.indices),
    )


# ---------------------------------------------------------------------------------------------
# induction features
# ---------------------------------------------------------------------------------------------


class InductionSearchConfig(BaseModel):
    """How to look for induction features on repeated random tokens. Unknown keys are an error."""

    model_config = ConfigDict(extra="forbid")

    n_sequences: int = 32
    seq_len: int = 48  # the random segment, repeated once: [BOS] + A + A
    batch_size: int = 8
    prefix_lengths: list[int] = [1, 2, 3, 4, 8]  # matching-prefix lengths for short/long induction
    token_pool: list[int] | None = None  # token ids to draw from (default: all but special ids)
    min_second_density: float = 0.01  # fires on at least this fraction of second-repeat positions
    min_ratio: float = 4.0  # mean activation, second repeat / first repeat
    min_source_share: float = 0.3  # DFA from the token after the earlier occurrence / total |DFA|
    long_prefix_ratio: float = 0.5  # act(prefix 1) / act(longest prefix) below this: long-prefix
    max_features_dfa: int = 512  # candidates (by ratio) whose DFA is computed
    seed: int = 0

    @model_validator(mode="after")
    def _check(self) -> InductionSearchConfig:
        if self.n_sequences < 1 or self.seq_len < 4 or self.batch_size < 1:
            raise ValueError("n_sequences and batch_size must be >= 1 and seq_len >= 4")
        if (
            not self.prefix_lengths
            or min(self.prefix_lengths) < 1
            or max(self.prefix_lengths) > self.seq_len - 2
        ):
            raise ValueError(
                f"prefix_lengths must lie in [1, seq_len - 2], got {self.prefix_lengths}"
            )
        if self.token_pool is not None and len(set(self.token_pool)) < self.seq_len + 1:
            raise ValueError(f"token_pool needs more than seq_len={self.seq_len} distinct tokens")
        return self


@dataclass
class InductionFeature:
    feature: int
    act_first: float  # mean activation over the first repeat
    act_second: float  # mean activation over the second repeat
    density_second: float
    source_share: float  # activation-weighted DFA share from the induction source
    head_dfa_share: list[float]  # per head: share of the DFA at the induction source
    top_head: int
    weight_head: int  # dominant head by decoder norm
    act_by_prefix: dict[int, float] = field(default_factory=dict)
    kind: str = ""  # "short-prefix", "long-prefix", or "" (not active on the probes)


@dataclass
class InductionReport:
    hook: str
    layout: HeadLayout
    features: list[InductionFeature]
    head_induction_score: list[float]  # mean attention to the induction source on the second repeat
    head_attention_by_prefix: dict[
        int, list[float]
    ]  # prefix length -> per-head attention to the source
    head_kind: list[
        str
    ]  # per head: short-/long-prefix (for heads with induction score >= 0.1), else ""
    features_per_head: list[int]  # induction features whose top DFA head is h
    n_candidates: int
    config: dict[str, Any]

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["layout"] = self.layout.to_metadata()
        d["n_induction_features"] = len(self.features)
        d["n_short_prefix"] = sum(f.kind == "short-prefix" for f in self.features)
        d["n_long_prefix"] = sum(f.kind == "long-prefix" for f in self.features)
        d["n_prefix_undetermined"] = sum(f.kind == "" for f in self.features)
        d["kinds_per_head"] = [
            {
                k or "undetermined": sum(f.top_head == h and f.kind == k for f in self.features)
                for k in ("short-prefix", "long-prefix", "")
            }
            for h in range(self.layout.n_heads)
        ]
        d["head_attention_by_prefix"] = {
            str(k): v for k, v in self.head_attention_by_prefix.items()
        }
        for f in d["features"]:
            f["act_by_prefix"] = {str(k): v for k, v in f["act_by_prefix"].items()}
        return d


def _token_pool(model, cfg: InductionSearchConfig) -> torch.Tensor:
    if cfg.token_pool is not None:
        pool = torch.tensor(sorted(set(cfg.token_pool)))
        if pool.min() < 0 or pool.max() >= model.cfg.d_vocab:
            raise ValueError(f"token_pool ids must lie in [0, {model.cfg.d_vocab})")
        return pool
    special = set(getattr(getattr(model, "tokenizer", None), "all_special_ids", []) or [])
    return torch.tensor([i for i in range(model.cfg.d_vocab) if i not in special])


def _bos(model) -> int | None:
    tok = getattr(model, "tokenizer", None)
    return getattr(tok, "bos_token_id", None) if tok is not None else None


def repeated_random_tokens(model, cfg: InductionSearchConfig) -> torch.Tensor:
    """[n_sequences, 1 + 2 * seq_len]: BOS + A + A, A drawn without replacement from the pool."""
    pool = _token_pool(model, cfg)
    gen = torch.Generator().manual_seed(cfg.seed)
    rows = []
    bos = _bos(model)
    for _ in range(cfg.n_sequences):
        a = pool[torch.randperm(len(pool), generator=gen)[: cfg.seq_len]]
        head = (
            [torch.tensor([bos])]
            if bos is not None
            else [pool[torch.randint(len(pool), (1,), generator=gen)]]
        )
        rows.append(torch.cat(head + [a, a]))
    return torch.stack(rows)


def prefix_probe_tokens(
    model, cfg: InductionSearchConfig
) -> dict[int, tuple[torch.Tensor, torch.Tensor, torch.Tensor]]:
    """Probe sequences for each matching-prefix length q: BOS + A + chunks [r, A[i-q+1], ..., A[i]]
    (r is a token not in A, so the chunk's last token has a matching prefix of exactly q tokens).
    The sequences differ only in q: the same A, breakers and chunk targets i for every q, so a
    feature is compared on the same predicted tokens.

    Returns {q: (tokens [N, T_q], dest [N, C], source [N, C])}: the chunk-end positions and the
    positions of the token after the earlier occurrence (A[i + 1])."""
    pool = _token_pool(model, cfg)
    P, n = max(cfg.prefix_lengths), cfg.seq_len
    gen = torch.Generator().manual_seed(cfg.seed + 1)
    n_chunks = max(1, n // (P + 1))
    bos = _bos(model)
    plans = []
    for _ in range(cfg.n_sequences):
        perm = torch.randperm(len(pool), generator=gen)
        a, rest = pool[perm[:n]], pool[perm[n:]]
        first = bos if bos is not None else int(rest[0])
        targets = torch.randint(P - 1, n - 1, (n_chunks,), generator=gen)  # A[i + 1] exists
        breakers = rest[torch.randint(len(rest), (n_chunks,), generator=gen)]
        plans.append((first, a, targets, breakers))
    out = {}
    for q in sorted(set(cfg.prefix_lengths)):
        T = 1 + n + n_chunks * (q + 1)
        tokens = torch.empty(cfg.n_sequences, T, dtype=torch.long)
        dest = torch.empty(cfg.n_sequences, n_chunks, dtype=torch.long)
        source = torch.empty(cfg.n_sequences, n_chunks, dtype=torch.long)
        for r, (first, a, targets, breakers) in enumerate(plans):
            tokens[r, 0] = first
            tokens[r, 1 : 1 + n] = a
            pos = 1 + n
            for c, (i, br) in enumerate(zip(targets.tolist(), breakers.tolist())):
                tokens[r, pos] = br
                tokens[r, pos + 1 : pos + q + 1] = a[i - q + 1 : i + 1]
                dest[r, c], source[r, c] = pos + q, 1 + i + 1
                pos += q + 1
        out[q] = (tokens, dest, source)
    return out


def _batched_inputs(model, tokens: torch.Tensor, layer: int, batch_size: int):
    for start in range(0, tokens.shape[0], batch_size):
        yield attention_inputs(model, tokens[start : start + batch_size], layer)


@torch.no_grad()
def find_induction_features(
    model,
    sae,
    cfg: InductionSearchConfig | None = None,
    layout: HeadLayout | None = None,
    progress: bool = False,
) -> InductionReport:
    """Induction features of an attention SAE and the heads behind them.

    On BOS + A + A (A random, no repeats): a feature is an induction feature when it fires on at
    least ``min_second_density`` of the second-repeat positions, its mean activation there is at
    least ``min_ratio`` times that on the first repeat, and (activation-weighted over its active
    second-repeat positions) at least ``min_source_share`` of its |DFA| comes from the token after
    the earlier occurrence. Its heads: the per-head split of that DFA. Short vs long prefix: its
    mean activation at a matching prefix of 1 token vs the longest prefix (probe sequences); heads
    likewise by their attention to the induction source."""
    from tqdm.auto import tqdm

    cfg = cfg or InductionSearchConfig()
    layout = layout or load_head_layout(sae, model)
    layer, H, n = layout.layer, layout.n_heads, cfg.seq_len
    if sae.cfg.d_in != layout.d_in:
        raise ValueError(
            f"SAE d_in={sae.cfg.d_in} does not match {layout.hook} (n_heads*d_head={layout.d_in})"
        )
    tokens = repeated_random_tokens(model, cfg)
    T = tokens.shape[1]
    first, second = torch.arange(1, 1 + n), torch.arange(1 + n, T)
    src = second - n + 1  # the token after the earlier occurrence
    d_sae = sae.cfg.d_sae
    sum_first = torch.zeros(d_sae)
    sum_second = torch.zeros(d_sae)
    fired_second = torch.zeros(d_sae)
    head_score = torch.zeros(H)
    stored: list[tuple[AttentionInputs, torch.Tensor]] = []
    batches = list(_batched_inputs(model, tokens, layer, cfg.batch_size))
    for inp in tqdm(batches, desc=f"induction L{layer}", disable=not progress):
        z = inp.z.reshape(inp.z.shape[0], T, -1)
        acts = sae.encode(z.to(sae.device)).float().cpu()  # [B, T, d_sae]
        sum_first += acts[:, first].sum((0, 1))
        sum_second += acts[:, second].sum((0, 1))
        fired_second += (acts[:, second] > 0).float().sum((0, 1))
        head_score += (
            inp.pattern[:, :, second, src].sum(0).sum(-1)
        )  # advanced indexing pairs (t, src)
        stored.append((inp, acts[:, second]))
    n_pos = tokens.shape[0] * n
    act_first, act_second = sum_first / n_pos, sum_second / n_pos
    density = fired_second / n_pos
    ratio = act_second / act_first.clamp_min(1e-9)
    ok = (density >= cfg.min_second_density) & (ratio >= cfg.min_ratio)
    cand = ok.nonzero().squeeze(-1)
    if cand.numel() > cfg.max_features_dfa:
        cand = cand[act_second[cand].topk(cfg.max_features_dfa).indices]
    head_score /= n_pos

    # DFA at the induction source for the candidates
    W, _ = _raw_encoder(sae)
    Wc = W[:, cand].cpu()
    share_num = torch.zeros(cand.numel())
    weight = torch.zeros(cand.numel())
    head_dfa = torch.zeros(cand.numel(), H)
    for inp, acts2 in stored:
        proj = _projected_values(inp, layout, Wc)  # [B, H, S, F]
        pat = inp.pattern[:, :, second]  # [B, H, n, S]
        total = (
            torch.einsum("bhts,bhsf->btfs", pat, proj).abs().sum(-1)
        )  # sum_s |DFA(t, s)|: [B, n, F]
        at_src = torch.einsum(
            "bht,bhtf->btfh", inp.pattern[:, :, second, src], proj[:, :, src]
        )  # [B, n, F, H]
        a = acts2[..., cand]  # [B, n, F]
        share_num += (a * at_src.sum(-1) / total.clamp_min(1e-12)).sum((0, 1))
        weight += a.sum((0, 1))
        head_dfa += (a[..., None] * at_src).sum((0, 1))
    source_share = share_num / weight.clamp_min(1e-12)
    keep = source_share >= cfg.min_source_share
    attribution = head_attribution(sae, layout)

    # short vs long prefix
    lengths = sorted(set(cfg.prefix_lengths))
    feats = cand[keep]
    act_by_prefix: dict[int, torch.Tensor] = {}
    attn_by_prefix: dict[int, list[float]] = {}
    for q, (ptoks, dest, psource) in prefix_probe_tokens(model, cfg).items():
        act_sum, attn_sum = torch.zeros(feats.numel()), torch.zeros(H)
        for start, inp in zip(
            range(0, ptoks.shape[0], cfg.batch_size),
            _batched_inputs(model, ptoks, layer, cfg.batch_size),
        ):
            d, sp = dest[start : start + cfg.batch_size], psource[start : start + cfg.batch_size]
            b = torch.arange(d.shape[0])[:, None].expand_as(d)
            z = inp.z.reshape(inp.z.shape[0], inp.z.shape[1], -1)
            acts = sae.encode(z.to(sae.device)).float().cpu()[..., feats]
            act_sum += acts[b, d].sum((0, 1))
            attn_sum += inp.pattern[b, :, d, sp].sum((0, 1))
        act_by_prefix[q] = act_sum / dest.numel()
        attn_by_prefix[q] = (attn_sum / dest.numel()).tolist()
    lo, hi = lengths[0], lengths[-1]

    def kind(short: float, long: float) -> str:
        if long <= 1e-6:  # never active on the probes at the longest prefix: undetermined
            return ""
        return "long-prefix" if short < cfg.long_prefix_ratio * long else "short-prefix"

    out: list[InductionFeature] = []
    for j, f in enumerate(feats.tolist()):
        i = int((cand == f).nonzero()[0, 0])
        hd = head_dfa[i]
        shares = (hd.clamp_min(0) / hd.clamp_min(0).sum().clamp_min(1e-12)).tolist()
        by_q = {q: float(act_by_prefix[q][j]) for q in lengths}
        out.append(
            InductionFeature(
                feature=f,
                act_first=float(act_first[f]),
                act_second=float(act_second[f]),
                density_second=float(density[f]),
                source_share=float(source_share[i]),
                head_dfa_share=shares,
                top_head=int(hd.argmax()),
                weight_head=int(attribution.dominant_head[f]),
                act_by_prefix=by_q,
                kind=kind(by_q[lo], by_q[hi]),
            )
        )
    out.sort(key=lambda r: -r.act_second)
    per_head = [sum(r.top_head == h for r in out) for h in range(H)]
    head_kind = [
        kind(attn_by_prefix[lo][h], attn_by_prefix[hi][h]) if head_score[h] >= 0.1 else ""
        for h in range(H)
    ]
    return InductionReport(
        layout.hook,
        layout,
        out,
        head_score.tolist(),
        attn_by_prefix,
        head_kind,
        per_head,
        int(cand.numel()),
        cfg.model_dump(),
    )


# ---------------------------------------------------------------------------------------------
# feature roles and polysemantic heads
# ---------------------------------------------------------------------------------------------

ROLES = ("bos", "self", "previous", "induction", "local", "long-range")


def _source_roles(tokens: torch.Tensor, bos_id: int | None, local: int) -> torch.Tensor:
    """Role index of every (dest t, source s <= t) pair [B, T, S] (order of precedence as ROLES)."""
    B, T = tokens.shape
    t = torch.arange(T)[:, None]
    s = torch.arange(T)[None, :]
    off = (t - s).expand(B, T, T)
    role = torch.full((B, T, T), ROLES.index("long-range"), dtype=torch.long)
    role[off <= local] = ROLES.index("local")
    prev_tok = torch.cat([torch.full((B, 1), -1), tokens[:, :-1]], 1)  # token before s
    induct = (prev_tok[:, None, :] == tokens[:, :, None]) & (off >= 2)
    role[induct] = ROLES.index("induction")
    role[off == 1] = ROLES.index("previous")
    role[off == 0] = ROLES.index("self")
    first = s.expand(B, T, T) == 0
    if bos_id is not None:
        first = first & (tokens[:, None, :1] == bos_id)
    role[first] = ROLES.index("bos")
    return role


@dataclass
class HeadRoles:
    feature_roles: dict[int, str]  # feature -> its role (largest share of positive DFA mass)
    feature_role_mass: dict[int, list[float]]  # feature -> share of positive DFA mass per role
    head_top_features: list[list[int]]
    head_roles: list[dict[str, int]]  # per head: role -> number of its top features with that role
    polysemantic: list[bool]
    fraction_polysemantic: float
    rule: str
    alive: torch.Tensor  # [d_sae] features active on the windows


@torch.no_grad()
def head_roles(
    model,
    sae,
    windows: torch.Tensor,
    layout: HeadLayout | None = None,
    top_n: int = 10,
    min_share: float = 0.3,
    min_features_per_role: int = 2,
    local: int = 8,
    batch_size: int = 8,
    attribution: HeadAttribution | None = None,
    progress: bool = False,
) -> HeadRoles:
    """An automated version of the paper's head study: for each head take its ``top_n`` features by
    decoder-norm share (at least ``min_share``, among features active on ``windows``), give each feature the attention
    role that carries most of its positive DFA mass on the windows (activation-weighted): BOS,
    self, previous token, induction (source after an earlier copy of the current token), local
    (offset <= ``local``) or long-range; a head is polysemantic when at least two roles are held
    by at least ``min_features_per_role`` of its top features each. ``attribution`` (e.g. from
    :func:`dfa_head_attribution`) replaces the decoder-norm shares. Roles only see where a
    feature's input comes from, not what it means, so this undercounts semantic polysemanticity."""
    from tqdm.auto import tqdm

    layout = layout or load_head_layout(sae, model)
    if windows.dim() != 2:
        raise ValueError(f"windows must be [batch, positions], got {tuple(windows.shape)}")
    batches = list(_batched_inputs(model, windows, layout.layer, batch_size))
    fires = torch.zeros(sae.cfg.d_sae)
    for inp in batches:
        z = inp.z.reshape(inp.z.shape[0], inp.z.shape[1], -1)
        fires += (sae.encode(z.to(sae.device)).float().cpu()[:, 1:] > 0).float().sum((0, 1))
    alive = fires > 0
    source = "decoder-norm" if attribution is None else "given"
    if attribution is None:  # the paper's weight-based attribution
        attribution = head_attribution(sae, layout, alive=alive)
    else:
        attribution = _attribution_from_shares(attribution.shares, layout, alive)
    tops = [attribution.top_features(h, top_n, min_share).tolist() for h in range(layout.n_heads)]
    feats = torch.tensor(sorted({f for top in tops for f in top}), dtype=torch.long)
    mass = torch.zeros(feats.numel(), len(ROLES))
    bos = _bos(model)
    for inp in tqdm(batches, desc=f"roles L{layout.layer}", disable=not progress):
        src = dfa_by_source(sae, inp, layout, feats).clamp_min(0)  # [B, T, F, S]
        z = inp.z.reshape(inp.z.shape[0], inp.z.shape[1], -1)
        acts = sae.encode(z.to(sae.device)).float().cpu()[..., feats]
        w = acts / src.sum(-1).clamp_min(
            1e-12
        )  # activation-weighted, each position's mass sums to 1
        roles = _source_roles(inp.tokens, bos, local)  # [B, T, S]
        onehot = torch.nn.functional.one_hot(roles, len(ROLES)).float()  # [B, T, S, R]
        m = torch.einsum("btfs,btsr->btfr", src, onehot)
        mass += (w[..., None] * m)[:, 1:].sum((0, 1))
    share = mass / mass.sum(-1, keepdim=True).clamp_min(1e-12)
    role_of = {int(f): ROLES[int(share[i].argmax())] for i, f in enumerate(feats)}
    role_mass = {int(f): share[i].tolist() for i, f in enumerate(feats)}
    per_head, poly = [], []
    for top in tops:
        counts: dict[str, int] = {}
        for f in top:
            counts[role_of[f]] = counts.get(role_of[f], 0) + 1
        per_head.append(counts)
        poly.append(sum(c >= min_features_per_role for c in counts.values()) >= 2)
    rule = (
        f"top {top_n} features per head by {source} share "
        f"(>= {min_share}); polysemantic if >= 2 roles "
        f"with >= {min_features_per_role} features each (roles: {', '.join(ROLES)}; local <= {local})"
    )
    return HeadRoles(
        role_of, role_mass, tops, per_head, poly, sum(poly) / max(1, len(poly)), rule, alive
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


def format_induction_report(report: InductionReport, max_rows: int = 20) -> str:
    """A plain-text summary (the CLI prints it)."""
    kinds = [f.kind for f in report.features]
    lines = [
        f"{report.hook}: {len(kinds)} induction features ({kinds.count('short-prefix')} short-prefix, "
        f"{kinds.count('long-prefix')} long-prefix) of {report.n_candidates} candidates"
    ]
    lines.append("head  induction-score  kind           induction-features")
    for h in range(report.layout.n_heads):
        lines.append(
            f"{h:>4}  {report.head_induction_score[h]:>15.3f}  {report.head_kind[h] or '-':<13}  "
            f"{report.features_per_head[h]:>18}"
        )
    if report.features:
        lines.append("feature  act(2nd)  act(1st)  density  src-share  top-head  kind")
        for f in report.features[:max_rows]:
            lines.append(
                f"{f.feature:>7}  {f.act_second:>8.3f}  {f.act_first:>8.3f}  {f.density_second:>7.2f}  "
                f"{f.source_share:>9.2f}  {f.top_head:>8}  {f.kind}"
            )
    return "\n".join(lines)


def save_report(report: InductionReport, path: str | Path) -> None:
    from interp.io import atomic_write_json

    atomic_write_json(Path(path), report.to_dict())
