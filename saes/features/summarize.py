"""After the pass: the per-latent arrays of a feature store that need its weights or its whole
pass (quantile bands from the sample, logit effects, decoder neighbours, co-activation partners,
head attribution). Dead latents (no nonzero activation in the pass) are skipped: their rows are
-1 ids and zeros."""

from __future__ import annotations

import torch

from interp.logit_lens import top_logit_effects
from saes.analysis.attention_heads import head_attribution, load_head_layout, raw_decoder
from saes.features.accumulate import Accumulators
from saes.features.config import StoreConfig


def quantile_bands(acc: Accumulators, cfg: StoreConfig) -> dict[str, torch.Tensor]:
    """Band edges from each latent's sample, and its sampled examples in each band (those with
    the smallest hashes, so the choice is as uniform as the sample)."""
    F, R = acc.sample.index.shape
    q = torch.tensor(cfg.band_quantiles, dtype=torch.float64)
    Q, E = len(q) - 1, cfg.examples_per_band
    valid = acc.sample.index >= 0
    n = valid.sum(1)
    vals = torch.where(valid, acc.sample.value.double(), torch.full((F, R), float("inf")))
    sorted_vals = vals.sort(1).values
    pos = q[None, :] * (n[:, None] - 1).clamp_min(0).double()  # linear interpolation
    lo = pos.floor().long().clamp(0, R - 1)
    hi = pos.ceil().long().clamp(0, R - 1)
    w = pos - lo.double()
    edges = sorted_vals.gather(1, lo) * (1 - w) + sorted_vals.gather(1, hi) * w
    edges = torch.where(n[:, None] > 0, edges, torch.zeros_like(edges)).float()
    band_index = torch.full((F, Q, E), -1, dtype=torch.int64)
    band_value = torch.zeros(F, Q, E, dtype=torch.float32)
    v = acc.sample.value
    for j in range(Q):
        inside = valid & (v >= edges[:, j : j + 1])
        inside &= (v <= edges[:, j + 1 : j + 2]) if j == Q - 1 else (v < edges[:, j + 1 : j + 2])
        # the first E inside, in hash order (the sample is sorted by hash)
        rank = torch.cumsum(inside.long(), 1) - 1
        take = inside & (rank < E)
        f, slot = torch.nonzero(take, as_tuple=True)
        band_index[f, j, rank[f, slot]] = acc.sample.index[f, slot]
        band_value[f, j, rank[f, slot]] = v[f, slot]
    return {"band_edges": edges, "band_index": band_index, "band_value": band_value}


def logit_effects(sae, model, alive: torch.Tensor, n: int) -> dict[str, torch.Tensor]:
    """Top and bottom direct logit effects of each live latent's decoder row (the final norm's
    gain and centring applied: :func:`interp.logit_lens.top_logit_effects`). A transcoder's rows
    write to its output hook (an MLP's output joins the residual stream), so the effect is taken
    there; its activations are read at its input hook."""
    F = alive.numel()
    out = {
        "logit_top_ids": torch.full((F, n), -1, dtype=torch.int32),
        "logit_top_values": torch.zeros(F, n),
        "logit_bottom_ids": torch.full((F, n), -1, dtype=torch.int32),
        "logit_bottom_values": torch.zeros(F, n),
    }
    live = torch.nonzero(alive).flatten()
    if live.numel() == 0:
        return out
    top_i, top_v, bot_i, bot_v = top_logit_effects(
        model, sae.cfg.output_hook_name or sae.cfg.hook_name, raw_decoder(sae)[live], n
    )
    k = top_i.shape[1]
    out["logit_top_ids"][live, :k], out["logit_top_values"][live, :k] = top_i.int(), top_v
    out["logit_bottom_ids"][live, :k], out["logit_bottom_values"][live, :k] = bot_i.int(), bot_v
    return out


def decoder_neighbours(sae, alive: torch.Tensor, n: int) -> dict[str, torch.Tensor]:
    """The n live latents with the largest decoder cosine to each live latent (itself excluded)."""

    W = raw_decoder(sae)
    W = W / W.norm(dim=1, keepdim=True).clamp_min(1e-12)
    F = W.shape[0]
    n = min(n, max(0, int(alive.sum()) - 1))
    ids = torch.full((F, max(n, 1)), -1, dtype=torch.int32)
    cos = torch.zeros(F, max(n, 1))
    if n == 0:
        return {"neighbour_ids": ids, "neighbour_cos": cos}
    live = torch.nonzero(alive).flatten()
    Wl = W[live]
    for chunk in torch.arange(live.numel()).split(1024):
        c = Wl[chunk] @ Wl.T
        c[torch.arange(chunk.numel()), chunk] = -2.0  # not itself
        top = c.topk(n, dim=1)
        ids[live[chunk], :n] = live[top.indices].int()
        cos[live[chunk], :n] = top.values
    return {"neighbour_ids": ids, "neighbour_cos": cos}


def coactivation_partners(acc: Accumulators, n: int) -> dict[str, torch.Tensor]:
    F = acc.n_latents
    n = min(n, F - 1)
    ids = torch.full((F, n), -1, dtype=torch.int32)
    counts = torch.zeros(F, n, dtype=torch.int64)
    for chunk in torch.arange(F).split(1024):
        c = acc.coactivation(chunk)
        top = c.topk(n, dim=1)
        hit = top.values > 0
        ids[chunk] = torch.where(hit, top.indices, torch.full_like(top.indices, -1)).int()
        counts[chunk] = torch.where(hit, top.values, torch.zeros_like(top.values))
    return {"coact_ids": ids, "coact_counts": counts}


def per_latent_arrays(sae, model, acc: Accumulators, cfg: StoreConfig) -> dict[str, torch.Tensor]:
    """Every array of ``features.safetensors`` (see :mod:`saes.features.store`)."""
    alive = acc.count > 0
    arrays: dict[str, torch.Tensor] = {
        "count": acc.count,
        "sum_fixed": acc.sum_fixed,
        "max": acc.max,
        "hist": acc.hist,
        "top_index": acc.top.index,
        "top_value": acc.top.value,
        "sample_index": acc.sample.index,
        "sample_value": acc.sample.value,
        **quantile_bands(acc, cfg),
        **logit_effects(sae, model, alive, cfg.logits),
        **decoder_neighbours(sae, alive, cfg.neighbours),
    }
    if acc.coact is not None:
        arrays.update(coactivation_partners(acc, cfg.coactivation))
    if sae.cfg.hook_name.endswith("attn.hook_z"):
        arrays["head_attribution"] = head_attribution(sae, load_head_layout(sae, model)).shares
    return arrays
