"""Thresholds and top-k at the same kept fraction (interp.sparsity.budgets): top-k keeps exactly k
neurons per token, the largest by |h_i| ||W_out[i]||; the CETT for a kept fraction is read off the
trace; the comparison matches top-k to the kept fraction the thresholds reach, on the same
windows."""

from __future__ import annotations

import math

import pytest
import torch

from interp.models import load_model
from interp.sparsity.budgets import cett_for_ratio, compare_at_budgets, topk_interventions
from interp.sparsity.cett import neuron_norms
from interp.sparsity.measure import (
    MeasureConfig,
    capture_hidden,
    perplexity,
    ppl_sparsity,
    search_and_heldout,
    threshold_interventions,
)


@pytest.fixture(scope="module")
def model():
    return load_model("tiny:act_fn=silu,gated_mlp=true,seed=0")


@pytest.mark.parametrize("k", [1, 17, 100])
def test_topk_keeps_the_k_largest_contributions(model, k):
    """Captured after the top-k intervention, every token of layer 0 has at most k nonzero
    neurons, and they are the k largest n_i of the dense activations (ties aside); the counter
    says k per token."""
    cfg = MeasureConfig(n_tokens=512, context_size=64)
    tokens, _ = search_and_heldout(model, cfg)
    dense = capture_hidden(model, tokens, [0])[0]
    counter = {0: torch.zeros(model.cfg.d_mlp + 1, dtype=torch.float64)}
    sparse = capture_hidden(model, tokens, [0], interventions=topk_interventions(model, {0: k}))[0]
    topk_interventions(model, {0: k}, counter)  # building it counts nothing
    assert float(counter[0].sum()) == 0
    n = dense.abs() * neuron_norms(model.blocks[0].mlp.W_out.detach())
    want = torch.zeros_like(dense, dtype=torch.bool).scatter_(1, n.topk(k, dim=1).indices, True)
    assert torch.equal(sparse != 0, want & (dense != 0))
    assert torch.allclose(sparse[want], dense[want])
    ivs = topk_interventions(model, {0: k}, counter)
    perplexity(model, tokens, ivs)
    assert float(counter[0][-1]) == tokens.numel()
    assert float(counter[0][:-1].sum()) == k * tokens.numel()
    with pytest.raises(ValueError, match=r"k must be in \[0, 256\]"):
        topk_interventions(model, {0: 257})


def test_cett_for_ratio_interpolates_log_cett():
    trace = [
        {"cett": 0.2, "activation_ratio": 0.3},
        {"cett": 0.05, "activation_ratio": 0.7},
        {"cett": 0.1, "activation_ratio": 0.5},
    ]
    assert cett_for_ratio(trace, 0.5) == pytest.approx(0.1)
    # halfway between 0.3 and 0.5 in ratio: the geometric mean of 0.2 and 0.1
    assert cett_for_ratio(trace, 0.4) == pytest.approx(math.sqrt(0.02))
    with pytest.raises(ValueError, match="does not bracket a kept fraction of 0.9"):
        cett_for_ratio(trace, 0.9)
    with pytest.raises(ValueError, match=r"in \(0, 1\)"):
        cett_for_ratio(trace, 1.5)


def test_compare_at_budgets_matches_the_kept_fraction(model):
    """Each top-k point keeps the threshold point's kept fraction (uniform: overall, to within
    rounding k to whole neurons; per layer: in every layer); the threshold point reproduces a
    direct measurement of the same thresholds on the same windows; ratios the trace does not
    bracket are skipped with the reason."""
    cfg = MeasureConfig(n_tokens=2048, heldout_tokens=1024, context_size=64, calib_tokens=512)
    tokens, held = search_and_heldout(model, cfg)
    res = ppl_sparsity(model, cfg, tokens, progress=False, heldout=held)
    lo = min(t["activation_ratio"] for t in res["trace"])
    hi = max(t["activation_ratio"] for t in res["trace"])
    inside = 0.5 * (lo + hi)
    calib = tokens[: cfg.calib_tokens // cfg.context_size]
    out = compare_at_budgets(model, res, held, calib, cfg, ratios=[inside, 0.999])
    assert [s["ratio"] for s in out["skipped"]] == [0.999]
    pts = out["points"]
    assert [p["method"] for p in pts] == ["thresholds", "topk_uniform", "topk_per_layer"] * 2
    d = model.cfg.d_mlp
    for i in (0, 3):
        th, uni, per = pts[i : i + 3]
        assert abs(uni["activation_ratio"] - th["activation_ratio"]) <= 0.5 / d + 1e-12
        for a, b in zip(per["layer_ratios"], th["layer_ratios"], strict=True):
            assert abs(a - b) <= 0.5 / d + 1e-12
    assert pts[0]["ppl_increase"] == pytest.approx(res["heldout"]["ppl_increase"], abs=1e-9)
    assert pts[0]["activation_ratio"] == pytest.approx(res["heldout"]["activation_ratio"])
    assert out["ppl_dense"] == pytest.approx(perplexity(model, held), rel=1e-9)
    ivs = threshold_interventions(model, res["thresholds"])
    assert math.log(perplexity(model, held, ivs) / out["ppl_dense"]) == pytest.approx(
        math.log1p(pts[0]["ppl_increase"]), abs=1e-9
    )
