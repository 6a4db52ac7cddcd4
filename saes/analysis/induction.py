"""Induction features of an attention SAE, the heads behind them, and short- vs long-prefix induction.

:func:`find_induction_features`: on repeated random token sequences (BOS + A + A), features active
on the second repeat whose DFA comes from the token after the earlier occurrence, the heads behind
them, and short- vs long-prefix induction (the matching prefix varied from 1 token up, on the probe
sequences of :func:`prefix_probe_tokens`). Configured by :class:`InductionSearchConfig`, reported as
an :class:`InductionReport` (:func:`format_induction_report`, :func:`save_report`).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch
from pydantic import BaseModel, ConfigDict, model_validator
from tqdm.auto import tqdm

from interp.atomic_files import atomic_write_json
from interp.hooks import HeadLayout
from saes.analysis.attention_heads import (
    AttentionInputs,
    batched_inputs,
    bos_token_id,
    head_attribution,
    load_head_layout,
    projected_values,
    raw_encoder,
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


def repeated_random_tokens(model, cfg: InductionSearchConfig) -> torch.Tensor:
    """[n_sequences, 1 + 2 * seq_len]: BOS + A + A, A drawn without replacement from the pool."""
    pool = _token_pool(model, cfg)
    gen = torch.Generator().manual_seed(cfg.seed)
    rows = []
    bos = bos_token_id(model)
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
    bos = bos_token_id(model)
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
    batches = list(batched_inputs(model, tokens, layer, cfg.batch_size))
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
    W, _ = raw_encoder(sae)
    Wc = W[:, cand].cpu()
    share_num = torch.zeros(cand.numel())
    weight = torch.zeros(cand.numel())
    head_dfa = torch.zeros(cand.numel(), H)
    for inp, acts2 in stored:
        proj = projected_values(inp, layout, Wc)  # [B, H, S, F]
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
            batched_inputs(model, ptoks, layer, cfg.batch_size),
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
    atomic_write_json(Path(path), report.to_dict())
