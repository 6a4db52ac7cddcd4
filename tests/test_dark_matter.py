"""Dark matter (saes.analysis.dark_matter): the linear / nonlinear split of an SAE's error and the
error-norm probe, on synthetic activations with planted structure, and through the one SAE
interface for every variant on a tiny model."""

from __future__ import annotations

import math

import pytest
import torch

from interp.activations import ActivationCapture
from interp.data import token_windows
from saes.analysis.dark_matter.linear import decompose_error, fit_linear, sae_pairs
from saes.analysis.dark_matter.norms import norm_prediction
from saes.artifacts import load_sae, save_sae
from saes.config import SAEConfig
from saes.sae import SAE

D, M = 32, 16  # activation width; the dictionary's subspace S = the first M rotated axes


def _chunks(*tensors: torch.Tensor, rows: int = 4096):
    n = tensors[0].shape[0]
    return [tuple(t[i : i + rows] for t in tensors) for i in range(0, n, rows)]


def _planted(n: int, seed: int, noise: float):
    """x = s + c: s sparse non-negative codes over an orthonormal dictionary of S, c Gaussian in the
    orthogonal complement U (per-axis scales 0.5..1.5), rotated by a random orthogonal Q.
    x_hat = s + eta with eta ~ N(0, noise^2 I) independent of x, so e = c - eta, whose linearly
    predictable part is exactly c = x P_U (E[e | x] = c) and whose rest, -eta, is not."""
    g = torch.Generator().manual_seed(seed)
    Q = torch.linalg.qr(torch.randn(D, D, generator=g, dtype=torch.float64))[0]
    z = torch.rand(n, M, generator=g, dtype=torch.float64) * 3
    z = z * (torch.rand(n, M, generator=g, dtype=torch.float64) < 0.2)
    scales = torch.linspace(0.5, 1.5, D - M, dtype=torch.float64)
    c_coords = torch.randn(n, D - M, generator=g, dtype=torch.float64) * scales
    s = z @ Q[:M]
    c = c_coords @ Q[M:]
    eta = torch.randn(n, D, generator=g, dtype=torch.float64) * noise
    return {"x": s + c, "x_hat": s + eta, "Q": Q, "scales": scales}


def _expected(p: dict, noise: float) -> dict[str, float]:
    """The planted shares in closed form (population values)."""
    var_c = (p["scales"] ** 2).sum()
    share = float(var_c / (var_c + D * noise**2))
    # per output axis j: Var(c_j) = sum_i scales_i^2 Q[M+i, j]^2, Var(eta_j) = noise^2
    var_cj = (p["scales"][:, None] ** 2 * p["Q"][M:] ** 2).sum(0)
    per_dim = float((var_cj / (var_cj + noise**2)).mean())
    return {"share": share, "per_dim": per_dim}


@pytest.mark.parametrize("intercept", [False, True])
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_planted_linear_share_is_recovered(seed, intercept):
    n, noise = 20_000, 0.8
    fit = _planted(n, seed, noise)
    test = _planted_with(fit, n, seed + 100, noise)  # new tokens, the same planted map
    want = _expected(fit, noise)
    dec, lmap = decompose_error(
        _chunks(fit["x"], fit["x_hat"]), _chunks(test["x"], test["x_hat"]), intercept
    )
    # Tolerance. (1) Fitting d + 1 parameters per output on n rows inflates the held-out
    # residual of the unpredictable part by a factor 1 + p / (n - p - 1) (OLS prediction error),
    # i.e. biases a share down by at most (1 - share) * p / (n - p - 1) ~ 0.0011 here. (2) The test
    # sums are over n * D squared Gaussians: relative std sqrt(2 / (n D)) each for the residual and
    # the total, so the share's std is at most (1 - share) * 2 * sqrt(2 / (n D)) ~ 0.0022. Five of
    # those standard deviations plus the bias:
    p_fit = D + int(intercept)
    tol = (1 - want["share"]) * (5 * 2 * math.sqrt(2 / (n * D)) + p_fit / (n - p_fit - 1))
    assert abs(dec.r2_vector - want["share"]) < tol, (dec.r2_vector, want, tol)
    assert abs(dec.linear_norm_share - want["share"]) < tol, (dec.linear_norm_share, want)
    # per axis: each axis's R^2 has std ~ (1 - R^2_j) * 2 * sqrt(2 / n) ~ 0.02, averaged over D
    # independent-enough axes -> / sqrt(D); five of those plus the bias
    tol_dim = 5 * 2 * math.sqrt(2 / n) / math.sqrt(D) + p_fit / (n - p_fit - 1)
    assert abs(dec.r2_per_dim - want["per_dim"]) < tol_dim, (dec.r2_per_dim, want, tol_dim)
    assert dec.nonlinear_norm_share == pytest.approx(1 - dec.linear_norm_share)
    # FVU of x_hat + x a*: its error is e_nl, so the ratio of the two FVUs is the nonlinear share
    assert dec.fvu_sae_plus_linear / dec.fvu_sae == pytest.approx(dec.nonlinear_norm_share)
    x, x_hat = test["x"], test["x_hat"]
    fvu = float(((x - x_hat) ** 2).sum() / ((x - x.mean(0)) ** 2).sum())
    assert dec.fvu_sae == pytest.approx(fvu, rel=1e-9)
    # the map itself is the projection onto U (entrywise std ~ noise / sqrt(n var) ~ 0.006)
    P_U = fit["Q"][M:].T @ fit["Q"][M:]
    assert (lmap.weight - P_U).abs().max() < 0.05
    assert dec.n_fit == n and dec.n_test == n


def _planted_with(ref: dict, n: int, seed: int, noise: float) -> dict:
    """Fresh tokens from the same planted structure as ``ref`` (same Q and scales)."""
    g = torch.Generator().manual_seed(seed)
    Q, scales = ref["Q"], ref["scales"]
    z = torch.rand(n, M, generator=g, dtype=torch.float64) * 3
    z = z * (torch.rand(n, M, generator=g, dtype=torch.float64) < 0.2)
    s = z @ Q[:M]
    c = (torch.randn(n, D - M, generator=g, dtype=torch.float64) * scales) @ Q[M:]
    eta = torch.randn(n, D, generator=g, dtype=torch.float64) * noise
    return {"x": s + c, "x_hat": s + eta, "Q": Q, "scales": scales}


def test_no_noise_means_no_nonlinear_error():
    p = _planted(5000, 3, 0.0)
    q = _planted_with(p, 5000, 4, 0.0)
    dec, _ = decompose_error(_chunks(p["x"], p["x_hat"]), _chunks(q["x"], q["x_hat"]))
    assert dec.nonlinear_norm_share < 1e-9 and dec.r2_vector > 1 - 1e-9


def test_exact_dictionary_sae_error_is_the_planted_linear_part(tmp_path):
    """Through the SAE interface: a TopK SAE whose decoder is S's orthonormal dictionary encodes
    s exactly (the pre-activations are z, since c is orthogonal to S), so its error is c = x P_U:
    all of it linear, after a save / load_sae round trip."""
    p = _planted(4000, 5, 0.0)
    cfg = SAEConfig(d_in=D, d_sae=M, k=M - 1, variant="topk")
    sae = SAE(cfg, seed=0)
    with torch.no_grad():
        sae.W_dec.copy_(p["Q"][:M].float())
        sae.W_enc.copy_(p["Q"][:M].T.float())
        sae.b_enc.zero_()
        sae.b_dec.zero_()
    sae = load_sae(save_sae(sae, tmp_path / "sae"))
    x = p["x"].float()
    keep = (p["x"] @ p["Q"][:M].T > 0).sum(1) <= M - 1  # tokens whose code fits in k
    x = x[keep]
    half = x.shape[0] // 2
    dec, _ = decompose_error(sae_pairs(sae, [x[:half]]), sae_pairs(sae, [x[half:]]))
    assert dec.linear_norm_share > 1 - 1e-5  # float32 SAE arithmetic
    assert dec.fvu_sae_plus_linear < 1e-5 * dec.fvu_sae


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_norm_probe_recovers_planted_r2(seed):
    """||e||^2 = x . w + b0 + nu with nu independent: the probe's population R^2 is
    Var(x . w) / (Var(x . w) + Var(nu)); ||x||^2 alone explains much less (x . w is independent of
    ||x||^2 for Gaussian x and a fixed w, up to sampling)."""
    n, d = 20_000, 16
    g = torch.Generator().manual_seed(seed)
    w = torch.randn(d, generator=g, dtype=torch.float64)
    w = w / w.norm()
    u = torch.randn(d, generator=g, dtype=torch.float64)
    u = u / u.norm()

    def draw(gen):
        x = torch.randn(n, d, generator=gen, dtype=torch.float64)
        nu = (torch.rand(n, generator=gen, dtype=torch.float64) - 0.5) * 2  # Var = 1/3
        e_sq = x @ w + 6.0 + nu  # > 0: x . w ~ N(0, 1), |x . w| < 5 on these draws
        assert (e_sq > 0).all()
        return x, x - u * e_sq.sqrt()[:, None]

    fit = draw(g)
    test = draw(g)
    out = norm_prediction(_chunks(*fit), _chunks(*test))
    want = 1 / (1 + 1 / 3)
    # R^2's sampling std: ~ (1 - R^2) * 2 * sqrt(2 / n) (the residual and total sums, each of n
    # terms with relative std ~ sqrt(2 / n)); bias from fitting d + 1 parameters: (1 - R^2) p / n
    tol = 5 * (1 - want) * 2 * math.sqrt(2 / n) + (1 - want) * (d + 1) / n
    assert abs(out["sq_norm"]["probe"] - want) < tol, (out, tol)
    assert out["sq_norm"]["x_norm"] < 0.01  # ||x||^2 and x . w are uncorrelated
    assert abs(out["sq_norm"]["constant"]) < 0.01  # ~ -1/n: the fit mean on other tokens
    assert out["norm"]["probe"] > out["norm"]["x_norm"]
    assert out["n_fit"] == n and out["n_test"] == n


def test_fit_linear_names_mismatched_rows():
    with pytest.raises(ValueError, match="rows"):
        fit_linear([(torch.zeros(3, 2), torch.zeros(4, 2))])
    with pytest.raises(ValueError, match="empty"):
        fit_linear([])


# ---- every variant through the one interface, on a tiny model --------------------------------

VARIANTS = {
    "topk": {"variant": "topk", "k": 4},
    "gtopk": {"variant": "gtopk", "k": 4},
    "mutual_choice": {"variant": "mutual_choice", "k": 4},
    "feature_choice": {"variant": "feature_choice", "k": 4},
    "jumprelu": {"variant": "jumprelu"},
}


@pytest.fixture(scope="module")
def tiny_acts(tiny):
    hooks = ["blocks.0.hook_resid_post", "blocks.1.attn.hook_z"]
    cap = ActivationCapture(tiny, hooks)
    wins = torch.stack(list(token_windows(tiny.tokenizer, context_size=64, max_windows=48)))
    batch = cap(wins)
    return batch.acts


@pytest.mark.parametrize(
    "variant,hook",
    [*((v, "blocks.0.hook_resid_post") for v in VARIANTS), ("topk", "blocks.1.attn.hook_z")],
)
def test_every_variant_goes_through_the_interface(tiny_acts, variant, hook, tmp_path):
    x = tiny_acts[hook]
    cfg = SAEConfig(
        d_in=x.shape[1], d_sae=128, hook_name=hook, model_name="tiny", **VARIANTS[variant]
    )
    sae = SAE(cfg, seed=1)
    if variant == "jumprelu":
        with torch.no_grad():
            sae.threshold.fill_(0.1)
    sae = load_sae(save_sae(sae, tmp_path / variant))
    half = x.shape[0] // 2
    dec, lmap = decompose_error(sae_pairs(sae, [x[:half]]), sae_pairs(sae, [x[half:]]))
    norms = norm_prediction(sae_pairs(sae, [x[:half]]), sae_pairs(sae, [x[half:]]))
    # the same numbers computed independently: x_hat through forward(), least squares by lstsq
    with torch.no_grad():
        x_hat = sae(x)[0].double()
    xd = x.double()
    e = xd - x_hat
    fit, test = slice(0, half), slice(half, None)
    A = torch.linalg.lstsq(xd[fit], e[fit]).solution
    res = e[test] - xd[test] @ A
    cen = e[test] - e[test].mean(0)
    per_dim = 1 - (res**2).sum(0) / (cen**2).sum(0)
    ok = (cen**2).sum(0) > 1e-12 * (cen**2).sum(0).max()
    total = ((xd[test] - xd[test].mean(0)) ** 2).sum()
    want = {
        "r2_per_dim": per_dim[ok].mean(),
        "r2_vector": 1 - (res**2).sum() / (cen**2).sum(),
        "linear_norm_share": 1 - (res**2).sum() / (e[test] ** 2).sum(),
        "fvu_sae": (e[test] ** 2).sum() / total,
        "fvu_sae_plus_linear": (res**2).sum() / total,
    }
    for k, v in want.items():
        assert getattr(dec, k) == pytest.approx(float(v), rel=1e-4, abs=1e-6), k
    assert torch.allclose(lmap.weight, A, atol=1e-4 * float(A.abs().max()))
    # the error-norm probe: ||e||^2 from [x, 1] by lstsq
    ones = torch.ones(x.shape[0], 1, dtype=torch.float64)
    X1, t = torch.cat([xd, ones], 1), (e**2).sum(1, keepdim=True)
    w = torch.linalg.lstsq(X1[fit], t[fit]).solution
    r = t[test] - X1[test] @ w
    probe = 1 - (r**2).sum() / ((t[test] - t[test].mean()) ** 2).sum()
    assert norms["sq_norm"]["probe"] == pytest.approx(float(probe), rel=1e-4, abs=1e-6)
    assert dec.fvu_sae_plus_linear < dec.fvu_sae  # a random SAE's error is partly linear
