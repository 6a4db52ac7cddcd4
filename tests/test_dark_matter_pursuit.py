"""Gradient pursuit (saes.analysis.dark_matter.pursuit): exact recovery of exact sparse codes, the
per-token L0 budget, and never a larger error than the SAE's own code (``best``)."""

from __future__ import annotations

import pytest
import torch

from saes.analysis.dark_matter.pursuit import gradient_pursuit, pursuit_vs_sae
from saes.codes import SparseCode
from saes.config import SAEConfig
from saes.sae import SAE


def _exact_codes(sae: SAE, n: int, L: int, seed: int):
    """n tokens, each exactly L non-negative atoms (values in [1, 2]) of the SAE's decoder + b_dec."""
    g = torch.Generator().manual_seed(seed)
    F = sae.cfg.d_sae
    idx = torch.stack([torch.randperm(F, generator=g)[:L] for _ in range(n)])
    val = torch.rand(n, L, generator=g) + 1
    with torch.no_grad():
        x = sae.decode(SparseCode(val, idx))
    dense = torch.zeros(n, F).scatter(1, idx, val)
    return x, dense


def _dense(code: SparseCode, F: int) -> torch.Tensor:
    return torch.zeros(code.values.shape[0], F).scatter_add(1, code.indices, code.values)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_orthonormal_dictionary_is_recovered_in_l0_steps(seed):
    """With orthonormal atoms each step's optimal step size lands exactly on the chosen atom's
    coefficient, so plain pursuit (no refinement) is exact after L steps (float32 round-off)."""
    d = 48
    sae = SAE(SAEConfig(d_in=d, d_sae=d, k=4), seed=seed)
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        sae.W_dec.copy_(torch.linalg.qr(torch.randn(d, d, generator=g))[0])
        sae.b_dec.normal_(generator=g)
    x, dense = _exact_codes(sae, 300, 5, seed)
    code = gradient_pursuit(sae, x, 5)
    assert (_dense(code, d) - dense).abs().max() < 1e-4


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_overcomplete_exact_codes_are_recovered(seed):
    """A random unit-norm dictionary 4x overcomplete (256 atoms in 64 dims, coherence ~0.5) and
    codes of 4 atoms: greedy selection finds every support here; with refinement steps the
    coefficients converge to the exact ones (the support's Gram matrix is well conditioned), and
    plain pursuit already reconstructs most of the variance."""
    d, F, L, n = 64, 256, 4, 400
    sae = SAE(SAEConfig(d_in=d, d_sae=F, k=L), seed=seed)
    with torch.no_grad():
        sae.b_dec.normal_(generator=torch.Generator().manual_seed(seed))
    x, dense = _exact_codes(sae, n, L, seed + 10)
    refined = gradient_pursuit(sae, x, L, refine_steps=60)
    got = _dense(refined, F)
    assert ((got > 0) == (dense > 0)).all(1).float().mean() >= 0.99
    ok = ((got > 0) == (dense > 0)).all(1)
    assert (got[ok] - dense[ok]).abs().max() < 1e-4
    plain = gradient_pursuit(sae, x, L)
    assert ((_dense(plain, F) > 0).sum(1) <= L).all()
    err = ((x - sae.decode(plain)) ** 2).sum() / ((x - x.mean(0)) ** 2).sum()
    assert err < 0.05


def test_per_token_l0_budget_is_respected():
    d, F = 32, 128
    sae = SAE(SAEConfig(d_in=d, d_sae=F, k=8), seed=0)
    x = torch.randn(200, d) * 3
    l0 = torch.randint(0, 9, (200,), generator=torch.Generator().manual_seed(0))
    code = gradient_pursuit(sae, x, l0, refine_steps=5)
    assert ((code.values != 0).sum(1) <= l0).all()
    assert (code.values[l0 == 0] == 0).all()
    assert (code.values >= 0).all()
    with pytest.raises(ValueError, match="one per token"):
        gradient_pursuit(sae, x, torch.ones(3, dtype=torch.long))


@pytest.mark.parametrize("variant", ["topk", "jumprelu"])
@pytest.mark.parametrize("seed", [0, 1])
def test_best_code_never_loses_to_the_sae(variant, seed):
    """Per token, ``best`` has an error <= the SAE's and uses <= the SAE's L0 on that token, and on
    exact sparse data (where the SAE's random encoder is poor) pursuit wins on most tokens."""
    d, F, L = 48, 192, 6
    kw = {"k": L} if variant == "topk" else {}
    sae = SAE(SAEConfig(d_in=d, d_sae=F, variant=variant, **kw), seed=seed)
    if variant == "jumprelu":
        with torch.no_grad():
            sae.threshold.fill_(0.8)  # per-token L0 varies
    x, _ = _exact_codes(sae, 600, 4, seed)
    cmp, rec = pursuit_vs_sae(sae, [x[:300], x[300:]])
    x_all = torch.cat(rec["x"])
    err = {k: ((x_all - torch.cat(rec[k])) ** 2).sum(1) for k in ("sae", "pursuit", "best")}
    assert (err["best"] <= err["sae"]).all()
    assert (torch.cat(rec["l0_best"]) <= torch.cat(rec["l0_sae"])).all()
    assert cmp.fvu_best <= cmp.fvu_sae and cmp.fvu_best <= cmp.fvu_pursuit + 1e-12
    assert cmp.l0_pursuit <= cmp.l0_sae + 1e-9 and cmp.l0_best <= cmp.l0_sae + 1e-9
    assert cmp.pursuit_better_fraction > 0.5
    assert cmp.n_tokens == 600
