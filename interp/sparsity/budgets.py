"""Sparsity methods compared at the same budget: the perplexity of PPL-p%-style thresholds and of
per-token top-k at the same kept fraction, on the same (held-out) windows.

A fair comparison keeps the same fraction of neurons with both methods. The thresholds keep a
fraction that varies per layer and per token; top-k keeps exactly k per token. For a threshold
point (a global CETT with its per-layer thresholds, measured to keep a fraction r overall and r_L in
layer L) two top-k points are run on the same windows:

* ``topk_uniform``: k = round(r * d_mlp) in every layer (the same overall kept fraction);
* ``topk_per_layer``: k_L = round(r_L * d_mlp) (the same kept fraction in every layer), which
  separates the per-layer allocation from the per-token choice.

Threshold points other than the PPL-p% one come from a CETT read off the search's trace: the trace
holds (CETT, activation ratio on the search tokens) pairs, and :func:`cett_for_ratio` interpolates
log CETT linearly in the ratio between the two trace points that bracket the wanted ratio. The
kept fraction actually reached on the measured windows is what is reported (and what top-k is
matched to), not the wanted one.
"""

from __future__ import annotations

import math
from typing import Any

import torch

from interp.interventions import Intervention, apply
from interp.sparsity.cett import neuron_norms
from interp.sparsity.measure import (
    MeasureConfig,
    _counter,
    _per_layer,
    _Thresholds,
    _w_out,
    capture_hidden,
    document_ids,
    increase_stats,
    mlp_hook,
    mlp_layers,
    threshold_interventions,
    token_losses,
)

__all__ = ["cett_for_ratio", "compare_at_budgets", "topk_interventions"]


def topk_interventions(
    model, ks: dict[int, int], counter: dict[int, torch.Tensor] | None = None
) -> list[Intervention]:
    """Keep, per token, the k_L neurons of largest |h_i| ||W_out[i]|| at ``blocks.L.mlp.hook_post``
    and zero the rest; with ``counter`` (layer -> [d_mlp + 1] float64) add the kept counts and the
    number of tokens, as :func:`measure.threshold_interventions` does."""
    ivs = []
    for L, k in ks.items():
        norms = neuron_norms(_w_out(model, int(L))[0])
        d_mlp = norms.numel()
        if not 0 <= k <= d_mlp:
            raise ValueError(f"layer {L}: k must be in [0, {d_mlp}], got {k}")

        def fn(h: torch.Tensor, norms=norms, k=int(k), L=int(L)) -> torch.Tensor:
            n = h.abs() * norms.to(h.device, h.dtype)
            keep = torch.zeros_like(h, dtype=torch.bool)
            if k:
                keep.scatter_(-1, n.topk(k, dim=-1).indices, True)
            if counter is not None:
                kk = keep.reshape(-1, keep.shape[-1])
                counter[L][:-1] += kk.sum(0).double().cpu()
                counter[L][-1] += kk.shape[0]
            return h * keep

        ivs.append(Intervention(mlp_hook(int(L)), apply(fn)))
    return ivs


def cett_for_ratio(trace: list[dict[str, float]], ratio: float) -> float:
    """The CETT expected to keep ``ratio`` of the neurons: log CETT interpolated linearly in the
    activation ratio between the two trace points around ``ratio`` (the kept fraction falls as the
    CETT grows). ``ValueError`` if the trace does not bracket it."""
    if not 0 < ratio < 1:
        raise ValueError(f"the kept fraction must be in (0, 1), got {ratio}")
    pts = sorted((t["activation_ratio"], t["cett"]) for t in trace if "activation_ratio" in t)
    for (r0, c0), (r1, c1) in zip(pts, pts[1:], strict=False):
        if r0 <= ratio <= r1 and r0 < r1:
            w = (ratio - r0) / (r1 - r0)
            return math.exp(math.log(c0) + w * (math.log(c1) - math.log(c0)))
    span = f"{pts[0][0]:.3f} to {pts[-1][0]:.3f}" if pts else "no points"
    raise ValueError(
        f"the search's trace does not bracket a kept fraction of {ratio} (it spans {span}); "
        "measure with more search steps or pick a fraction inside it"
    )


def _point(model, layers, tokens, ivs_of, cfg: MeasureConfig, dense, progress) -> dict[str, Any]:
    counter = _counter(model, layers)
    sparse = token_losses(model, tokens, ivs_of(counter), cfg.batch_size, progress)
    per_layer = _per_layer(model, layers, [math.nan] * len(layers), counter, cfg.dead_fraction)
    return {
        **increase_stats(dense, sparse, document_ids(model, tokens)),
        "activation_ratio": sum(r["activation_ratio"] for r in per_layer) / len(per_layer),
        "layer_ratios": [r["activation_ratio"] for r in per_layer],
    }


def compare_at_budgets(
    model,
    result: dict[str, Any],
    tokens: torch.Tensor,
    calib_tokens: torch.Tensor,
    cfg: MeasureConfig,
    ratios: list[float] | tuple[float, ...] = (0.5,),
    progress: bool = False,
) -> dict[str, Any]:
    """On ``tokens`` (windows the thresholds were not searched on): the dense perplexity; the
    PPL-p% thresholds of ``result`` (:func:`measure.ppl_sparsity`'s output) and the thresholds at the
    CETT of each of ``ratios`` (read off the trace, thresholds calibrated on ``calib_tokens``, the
    windows the search calibrated on); and for every threshold point the two top-k points at its
    measured kept fraction (see the module doc). Each point: method, CETT, kept fraction overall
    and per layer, perplexity increase with its standard error (clustered by document, see
    :func:`measure.increase_stats`). A ratio the trace does not bracket
    is listed under "skipped" with the reason."""
    layers = mlp_layers(model)
    d_mlp = model.cfg.d_mlp
    dense = token_losses(model, tokens, batch_size=cfg.batch_size, progress=progress)
    targets: list[tuple[str, float, list[float]]] = [
        (f"PPL-{100 * cfg.ppl_increase:g}% thresholds", result["cett"], result["thresholds"])
    ]
    skipped = []
    cetts = []
    for r in ratios:
        try:
            cetts.append((r, cett_for_ratio(result["trace"], r)))
        except ValueError as exc:
            skipped.append({"ratio": r, "reason": str(exc)})
    if cetts:
        calib = capture_hidden(model, calib_tokens, layers, cfg.batch_size)
        th = _Thresholds(model, calib, cfg.cett_rtol)
        del calib
        for r, c in cetts:
            targets.append((f"thresholds for ~{100 * r:g}% kept", c, th(c)))
    points = []
    for name, c, eps in targets:
        pt = _point(
            model,
            layers,
            tokens,
            lambda ctr, eps=eps: threshold_interventions(model, eps, ctr),
            cfg,
            dense,
            progress,
        )
        points.append({"method": "thresholds", "name": name, "cett": c, **pt})
        r = pt["activation_ratio"]
        uniform = {L: round(r * d_mlp) for L in layers}
        per_layer = {L: round(x * d_mlp) for L, x in zip(layers, pt["layer_ratios"], strict=True)}
        for method, ks in (("topk_uniform", uniform), ("topk_per_layer", per_layer)):
            tk = _point(
                model,
                layers,
                tokens,
                lambda ctr, ks=ks: topk_interventions(model, ks, ctr),
                cfg,
                dense,
                progress,
            )
            points.append({"method": method, "name": f"{method} at {name}", "cett": None, **tk})
    return {
        "tokens": int(tokens.numel()),
        "ppl_dense": math.exp(float(dense.mean())),
        "points": points,
        "skipped": skipped,
    }
