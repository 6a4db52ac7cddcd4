"""Dark matter, the downstream and follow-up parts: spliced CE (tiny model, resid and hook_z),
SAEs trained on e_lin / e_nl through the toolkit's trainer, previous-layer maps, width scaling."""

from __future__ import annotations

import math

import pytest
import torch

from interp.data import token_windows
from interp.interventions import Intervention, replace_with, run_with_interventions
from saes.analysis.dark_matter.downstream import splice_functions, spliced_ce
from saes.analysis.dark_matter.error_saes import train_error_saes
from saes.analysis.dark_matter.linear import LinearMap, decompose_error, sae_pairs
from saes.analysis.dark_matter.previous_layer import nonlinear_error_removed
from saes.analysis.dark_matter.scaling import cross_width_r2, fit_power_law
from saes.config import SAEConfig
from saes.sae import SAE

pytestmark = pytest.mark.usefixtures("one_thread_module")


@pytest.fixture(scope="module")
def windows(tiny):
    return torch.stack(list(token_windows(tiny.tokenizer, context_size=32, max_windows=12)))


@pytest.mark.parametrize("hook", ["blocks.0.hook_resid_post", "blocks.1.attn.hook_z"])
def test_spliced_ce_known_cases(tiny, windows, hook):
    """With a zero map, x_hat + e_nl is x itself (the clean CE) and x_hat + e_lin is x_hat; the
    CE counts exactly the predictions at positions >= start (checked against a hand splice)."""
    d = 64
    sae = SAE(SAEConfig(d_in=d, d_sae=128, k=8, hook_name=hook), seed=0)
    zero = LinearMap(torch.zeros(d, d, dtype=torch.float64))
    start = 10
    out = spliced_ce(tiny, sae, zero, windows, start=start, batch_windows=5)
    assert out["ce"]["x_hat_plus_e_nl"] == pytest.approx(out["ce_clean"], abs=1e-5)
    assert out["ce"]["x_hat_plus_e_lin"] == pytest.approx(out["ce"]["x_hat"], abs=1e-5)
    assert abs(out["ce_increase"]["x_hat"]) > 1e-3  # the splice changes the (random) model
    assert out["n_predictions"] == windows.shape[0] * (windows.shape[1] - 1 - start)
    mask = torch.arange(windows.shape[1]) >= start
    with torch.no_grad():
        iv = Intervention(hook, replace_with(lambda x: sae(x)[0]), positions=mask)
        logits = run_with_interventions(tiny, windows, iv)[:, start:-1]
        ce = torch.nn.functional.cross_entropy(
            logits.reshape(-1, logits.shape[-1]), windows[:, start + 1 :].reshape(-1)
        )
    assert out["ce"]["x_hat"] == pytest.approx(float(ce), abs=1e-5)
    with pytest.raises(ValueError, match="start"):
        spliced_ce(tiny, sae, zero, windows, start=31)


class _PlantedSAE(torch.nn.Module):
    """x_hat = x - (x P + q(x)): an error with a planted linear part x P and a planted nonlinear
    part q(x) = x_0 x_1 (1, ..., 1) / sqrt(d), which has no linear part for x ~ N(0, I) (E[q] = 0 and
    E[x q] = 0) and is large on some tokens only."""

    def __init__(self, P: torch.Tensor) -> None:
        super().__init__()
        self.P = P

    def q(self, x: torch.Tensor) -> torch.Tensor:
        d = x.shape[1]
        return (x[:, 0] * x[:, 1])[:, None].expand(-1, d) / d**0.5

    def forward(self, x: torch.Tensor):
        return (x - (x @ self.P.to(x.dtype) + self.q(x)),)


@pytest.mark.parametrize("estimator", ["ols", "ridge"])
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_splices_put_back_the_planted_parts_on_new_tokens(seed, estimator):
    """Map fitted on one set of tokens, splices applied to others: x_hat + e_lin leaves out only the
    planted nonlinear part (x - q(x)), x_hat + e_nl only the planted linear part (x - x P), and
    x_hat leaves out both, each within the map's estimation error (entry std ~ sd(q) / sqrt(n))."""
    d, n = 16, 40_000
    g = torch.Generator().manual_seed(seed)
    P = torch.randn(d, d, generator=g, dtype=torch.float64) / d**0.5
    sae = _PlantedSAE(P)
    x_fit = torch.randn(n, d, generator=g, dtype=torch.float64)
    x_new = torch.randn(2000, d, generator=g, dtype=torch.float64)
    _, lmap = decompose_error(
        sae_pairs(sae, [x_fit]), sae_pairs(sae, [x_fit[:2]]), False, estimator
    )
    fns = splice_functions(sae, lmap)
    with torch.no_grad():
        got = {k: f(x_new.float()).double() for k, f in fns.items()}
    x32 = x_new.float().double()
    want = {
        "x_hat": x32 - x32 @ P - sae.q(x32),
        "x_hat_plus_e_lin": x32 - sae.q(x32),
        "x_hat_plus_e_nl": x32 - x32 @ P,
    }
    # The map's entries are off by ~ sd(q_j) / sqrt(n) = 1 / sqrt(d n) each; an output sums d of
    # them times x_i ~ N(0, 1): RMS error ~ 1 / sqrt(n) per output. Five times that (+ float32):
    tol = 5 / n**0.5 + 1e-4

    def rms(t):
        return float((t**2).mean().sqrt())

    for k in want:
        assert rms(got[k] - want[k]) < tol, (k, rms(got[k] - want[k]), tol)
    # the planted parts are far above that tolerance: a splice that swapped them would fail
    assert rms(sae.q(x32)) > 5 * tol and rms(x32 @ P) > 5 * tol


def test_error_saes_learn_the_linear_part_not_the_noise(tmp_path):
    """e_lin made of 4-sparse non-negative codes over 64 atoms (an SAE's ideal input), e_nl
    Gaussian noise (no dictionary can compress it: a k-sparse code from 64 latents captures about
    k * (2 log(64/k)) / d of an isotropic Gaussian's variance at best, well under half here): the
    trainer, run on their caches at equal k, gives the linear part the lower FVU."""
    d, F, k, n = 32, 64, 4, 6144
    g = torch.Generator().manual_seed(0)
    atoms = torch.randn(F, d, generator=g)
    atoms /= atoms.norm(dim=1, keepdim=True)
    idx = torch.stack([torch.randperm(F, generator=g)[:k] for _ in range(n)])
    codes = torch.zeros(n, F).scatter(1, idx, torch.rand(n, k, generator=g) + 0.5)
    parts = {"e_lin": codes @ atoms, "e_nl": torch.randn(n, d, generator=g)}
    res = train_error_saes(
        parts,
        "blocks.0.hook_resid_post",
        tmp_path,
        d_sae=F,
        k=k,
        holdout_tokens=1024,
        batch_tokens=256,
    )
    assert res["e_lin"]["fvu"] < 0.5 * res["e_nl"]["fvu"], res
    assert res["e_nl"]["fvu"] > 0.5
    assert res["e_lin"]["holdout_tokens"] == 1024
    assert res["e_lin"]["l0_mean"] == pytest.approx(k)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_previous_layer_removal_matches_planted_share(seed):
    """e = x A + z B + noise with z independent of x: the nonlinear error left by x alone is
    z B + noise, and z removes Var(z B) / (Var(z B) + Var(noise)) of it."""
    n, d = 20_000, 12
    g = torch.Generator().manual_seed(seed)
    A = torch.randn(d, d, generator=g, dtype=torch.float64)
    B = torch.randn(d, d, generator=g, dtype=torch.float64) / math.sqrt(d)  # Var(zB) ~ 1 / dim
    sigma = 0.7

    def draw():
        x = torch.randn(n, d, generator=g, dtype=torch.float64)
        z = torch.randn(n, d, generator=g, dtype=torch.float64)
        e = x @ A + z @ B + sigma * torch.randn(n, d, generator=g, dtype=torch.float64)
        return [(x, z, e)]

    out = nonlinear_error_removed(draw(), draw())
    var_zb = float((B**2).sum())  # E||z B||^2 for z ~ N(0, I)
    want = var_zb / (var_zb + d * sigma**2)
    # as in test_dark_matter: sampling std of each sum of n * d squares ~ sqrt(2 / (n d)) relative,
    # the fit of 2d parameters inflates the residual by ~ 2d / n; five std + the bias
    tol = (1 - want) * (5 * 2 * math.sqrt(2 / (n * d)) + 2 * d / n)
    assert abs(out["nonlinear_removed"] - want) < tol, (out, want, tol)


def test_power_law_recovers_planted_parameters():
    W = [1024, 2048, 4096, 8192, 16384]
    c, a, m = 0.05, 3.0, -0.4
    y = [c + a * w**m for w in W]
    fit = fit_power_law(W, y, exponents=torch.linspace(-1.0, -0.05, 951, dtype=torch.float64))
    assert fit["m"] == pytest.approx(m, abs=1e-3)  # the grid's step
    assert fit["c"] == pytest.approx(c, abs=2e-3) and fit["a"] == pytest.approx(a, rel=2e-2)
    assert fit["rmse"] < 1e-4 and fit["n_points"] == 5 and not fit["m_at_grid_edge"]
    with pytest.raises(ValueError, match="points"):
        fit_power_law([1], [1.0])


@pytest.mark.parametrize("seed", [0, 1])
def test_cross_width_nonlinear_norm_adds_what_was_planted(seed):
    """||e_large|| = 0.6 ||e_small|| + 0.4 ||e_nl,small|| + noise: adding the nonlinear norm raises
    R^2 to the planted value; adding the (independent) linear norm adds ~nothing."""
    n = 20_000
    g = torch.Generator().manual_seed(seed)

    def draw():
        e = torch.rand(n, generator=g, dtype=torch.float64) * 4 + 1
        nl = torch.rand(n, generator=g, dtype=torch.float64) * 4
        lin = torch.rand(n, generator=g, dtype=torch.float64) * 4
        large = 0.6 * e + 0.4 * nl + 0.2 * torch.randn(n, generator=g, dtype=torch.float64)
        return {
            256: {"e": e, "e_nl": nl, "e_lin": lin},
            512: {"e": large, "e_nl": nl, "e_lin": lin},
        }

    rows = cross_width_r2(draw(), draw())
    (row,) = rows
    assert (row["small_width"], row["large_width"]) == (256, 512)
    var_e, var_nl, noise = 0.36 * 16 / 12, 0.16 * 16 / 12, 0.04
    want_small = var_e / (var_e + var_nl + noise)
    want_nl = (var_e + var_nl) / (var_e + var_nl + noise)
    tol = 5 * 2 * math.sqrt(2 / n)  # relative std of the sums, five of them (R^2 <= 1 scale)
    assert abs(row["small"] - want_small) < tol and abs(row["small_plus_nl"] - want_nl) < tol
    assert abs(row["small_plus_lin"] - row["small"]) < 3 / n * 100


@pytest.mark.parametrize("seed", [0, 1, 2])
@pytest.mark.parametrize("estimator", ["ols", "ridge"])
def test_pursuit_and_previous_layer_compared_on_the_same_tokens(seed, estimator):
    """The SAE's error e = x A + w with w = z B + noise (its nonlinear part; z the previous layer,
    independent of x); pursuit's error x A2 + s w. Planted: the map from z removes
    Var(zB) / Var(w) of the nonlinear error, pursuit removes 1 - s². With s = 0.9 the map removes
    more (resolved that way), with s = 0.5 pursuit does, and with 1 - s² = Var(zB) / Var(w) the two
    are equal: the difference then stays near 0."""
    from saes.analysis.dark_matter.previous_layer import compare_with_pursuit

    n, d = 12_000, 8
    g = torch.Generator().manual_seed(seed)
    A, A2 = (torch.randn(d, d, generator=g, dtype=torch.float64) for _ in range(2))
    B = torch.randn(d, d, generator=g, dtype=torch.float64) / math.sqrt(d)
    var_zb, var_noise = float((B**2).sum()), d * 1.0
    share = var_zb / (var_zb + var_noise)

    def draw(s: float):
        x, z = (torch.randn(n, d, generator=g, dtype=torch.float64) for _ in range(2))
        w = z @ B + torch.randn(n, d, generator=g, dtype=torch.float64)
        return {"x": x, "z": z, "x_hat": x - (x @ A + w), "x_gp": x - (x @ A2 + s * w)}

    for s, want in ((0.9, "previous layer"), (0.5, "pursuit"), ((1 - share) ** 0.5, None)):
        out = compare_with_pursuit(draw(s), draw(s), estimator=estimator)
        # sampling error of each share ~ 2 sqrt(2 / (n d)) relative, plus the fit's bias ~ 2d / n
        tol = 5 * 2 * math.sqrt(2 / (n * d)) + 2 * d / n
        assert abs(out["removed_by_previous_layer"] - share) < tol, (out, share)
        assert abs(out["removed_by_pursuit"] - (1 - s**2)) < tol, (out, s)
        lo, hi = out["interval"]
        assert lo <= out["difference"] <= hi and hi - lo > 0
        if want:
            assert out["verdict"] == want, out
        else:
            assert abs(out["difference"]) < 2 * tol, out
    assert out["n_test"] == n and out["n_blocks"] == -(-n // 128)
