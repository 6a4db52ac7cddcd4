"""The sparsity laws: planted-parameter recovery, and the reproduction of the 11 published series of
"Sparsing Law" (Luo, Song et al., 2024) against the paper's own constants."""

from __future__ import annotations

import json

import numpy as np
import pytest

from interp.sparsity.laws import (
    PAPER_CONSTANTS,
    PARAM_RTOL,
    compare_to_paper,
    default_published_dir,
    errors,
    fit_law,
    law_for,
    linearised,
    load_published,
    load_series,
    predict,
    profile_a0,
)

pytestmark = pytest.mark.skipif(
    not default_published_dir().is_dir(), reason="the published Sparsing Law data is not present"
)


@pytest.fixture(scope="module")
def published():
    return load_published()


@pytest.fixture(scope="module")
def fits(published):
    return {name: fit_law(law_for(name), d, a) for name, (d, a) in published.items()}


@pytest.fixture(scope="module")
def lsq_fits(published):
    """Least-squares fits: the paper's objective (scipy curve_fit)."""
    return {name: fit_law(law_for(name), d, a, "lsq") for name, (d, a) in published.items()}


# The README's reading of the reproduction. A0: within 10% of the paper's everywhere but
# 0.4b_relu, whose A0 the data do not determine (see the profile test). The exponent (alpha within
# PARAM_RTOL = 20% of the paper's, least-squares fit): on these four ReLU series only.
A0_UNDETERMINED = {"0.4b_relu"}
ALPHA_REPRODUCED = {"0.1b_relu", "0.2b_relu", "0.8b_relu", "2.4b_relu"}


def test_all_eleven_series_load(published):
    assert sorted(published) == sorted(PAPER_CONSTANTS)
    for d, a in published.values():
        assert d.size == a.size >= 20
        assert np.all(np.diff(d) > 0) and 1e-1 < d.min() and d.max() < 1e3  # billions of tokens


@pytest.mark.parametrize("name", sorted(PAPER_CONSTANTS))
def test_fit_matches_or_beats_the_paper_constants(name, published, fits):
    """Our MAE <= 1.5x the MAE of the paper's Table 2 constants on the same points, and A0 is
    physically valid (ReLU: 0 <= A0 <= min A; SiLU: A0 >= max A)."""
    d, a = published[name]
    law = law_for(name)
    paper = errors(law, PAPER_CONSTANTS[name], d, a)
    fit = fits[name]
    assert fit.mae <= 1.5 * paper["mae"], (fit.mae, paper["mae"])
    assert fit.valid
    if law == "relu":
        assert 0.0 <= fit.params["A0"] <= a.min()
    else:
        assert fit.params["A0"] >= a.max()
    assert fit.params["c"] >= 0 and fit.params["alpha"] > 0


def test_a0_agrees_with_the_paper(fits, published):
    """A0 within 10% of the paper's on every series where the data determine it (all 5 SiLU, 5 of
    the 6 ReLU); on 0.4b_relu, where they do not, the honest side: our fit sits on the bound A0 = 0
    and is closer to the points than the paper's constants on both MAE and MSE."""
    rel = {n: abs(f.params["A0"] / PAPER_CONSTANTS[n]["A0"] - 1) for n, f in fits.items()}
    assert len(rel) == 11 and sum(law_for(n) == "silu" for n in rel) == 5
    seen = {n: r for n, r in rel.items() if n not in A0_UNDETERMINED}
    assert all(r <= 0.10 for r in seen.values()), seen
    for n in A0_UNDETERMINED:
        d, a = published[n]
        paper = errors(law_for(n), PAPER_CONSTANTS[n], d, a)
        assert rel[n] > 0.10 and fits[n].params["A0"] < 0.01 * a.min()
        assert fits[n].mae < paper["mae"] and fits[n].mse < paper["mse"]


@pytest.mark.parametrize("name", sorted(PAPER_CONSTANTS))
def test_each_objective_wins_its_own(name, published, fits, lsq_fits):
    """The least-squares fit has the lower MSE, the MAE-polished fit the lower MAE (each is the
    optimum of its own objective), and the least-squares fit is at least as close to the published
    points as the paper's constants on the paper's own objective (MSE)."""
    d, a = published[name]
    lsq, mae = lsq_fits[name], fits[name]
    assert lsq.objective == "lsq" and mae.objective == "mae"
    assert lsq.mse <= mae.mse * (1 + 1e-9)
    assert mae.mae <= lsq.mae * (1 + 1e-9)
    assert lsq.mse <= errors(law_for(name), PAPER_CONSTANTS[name], d, a)["mse"]


@pytest.mark.parametrize("name", sorted(PAPER_CONSTANTS))
def test_alpha_and_c_against_the_paper(name, published, lsq_fits):
    """Where the exponent reproduces (ALPHA_REPRODUCED), the least-squares alpha is within 20% of
    the paper's, and so is c except on 2.4b_relu (whose b, c and alpha trade off: c is 5x the
    paper's at the same alpha within 20%). Where it does not (every SiLU series, 0.4b_relu,
    1.2b_relu), alpha is more than 20% off and the honest side holds: our least-squares curve is
    at least 2x closer to the published points than the paper's constants on the paper's own
    objective, so the gap is not our optimiser falling short."""
    d, a = published[name]
    law, paper = law_for(name), PAPER_CONSTANTS[name]
    cmp = compare_to_paper(law, lsq_fits[name].params, paper, d, a)
    assert cmp["alpha_ratio"] == pytest.approx(lsq_fits[name].params["alpha"] / paper["alpha"])
    if name in ALPHA_REPRODUCED:
        assert abs(cmp["alpha_ratio"] - 1) <= PARAM_RTOL and cmp["alpha_within"]
        if name != "2.4b_relu":
            assert abs(cmp["c_ratio"] - 1) <= PARAM_RTOL and cmp["c_within"]
        assert cmp["mse_ratio"] <= 1.0
    else:
        assert abs(cmp["alpha_ratio"] - 1) > PARAM_RTOL and not cmp["alpha_within"]
        assert cmp["mse_ratio"] <= 0.5, cmp


def test_power_law_beats_the_log_baseline_on_0p1b_relu(published, fits):
    """The paper: power law MAE ~4.1e-4 vs ~3.4e-3 for the log fit on 0.1b_relu. Our log fit is
    better than the paper's (the offset b may be negative), but the power law still wins."""
    d, a = published["0.1b_relu"]
    log_fit = fit_law("log", d, a)
    assert fits["0.1b_relu"].mae < log_fit.mae
    assert fits["0.1b_relu"].mae < 5e-4  # the paper's 4.1e-4, with the rounding of its constants


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_planted_parameters_are_recovered(seed):
    """Noise sd 2e-4 (the published fits' residual scale) on 30 points over D in [1, 200]: A0 is
    recovered to within 5 sd of the noise (1e-3), alpha (least squares) within 20%; each fit is no
    worse than the true parameters on its own objective."""
    rng = np.random.default_rng(seed)
    d = np.geomspace(1, 200, 30)
    sd = 2e-4
    for law, p in (
        ("relu", {"alpha": 0.5, "b": -3.0, "c": 0.3, "A0": 0.07}),
        ("silu", {"alpha": 0.8, "c": 0.2, "A0": 0.39}),
    ):
        a = predict(law, p, d) + rng.normal(0, sd, d.size)
        fit = fit_law(law, d, a)
        assert abs(fit.params["A0"] - p["A0"]) < 5 * sd
        assert fit.mae <= errors(law, p, d, a)["mae"] * (1 + 1e-6)  # no worse than the truth
        assert fit.valid
        # the least-squares fit recovers the exponent within the reproduction criterion (20%)
        lsq = fit_law(law, d, a, "lsq")
        assert abs(lsq.params["alpha"] / p["alpha"] - 1) <= PARAM_RTOL, (law, lsq.params)
        assert lsq.mse <= errors(law, p, d, a)["mse"] * (1 + 1e-6)


def test_profile_pins_a_well_conditioned_limit_and_not_an_ill_conditioned_one(published):
    """0.1b_relu's profile has a clear minimum near the fit's A0 (a narrow 10% interval); the
    0.4b_relu profile is nearly flat (the fit's A0 hits the bound 0): the interval is wide."""
    d, a = published["0.1b_relu"]
    prof = profile_a0("relu", d, a, n=15)
    lo, hi = prof.interval
    assert lo <= prof.best_a0 <= hi
    assert hi - lo < 0.25 * a.min()
    assert prof.mae[0] > 1.5 * prof.best_mae  # A0 = 0 is clearly worse
    d, a = published["0.4b_relu"]
    prof = profile_a0("relu", d, a, n=15)
    lo, hi = prof.interval
    assert hi - lo > 0.7 * a.min()
    # the paper's A0 on its own: fixing it and refitting the rest is no worse than its constants
    at_paper = profile_a0("relu", d, a, grid=[PAPER_CONSTANTS["0.4b_relu"]["A0"]])
    assert at_paper.best_mae <= errors("relu", PAPER_CONSTANTS["0.4b_relu"], d, a)["mae"] * 1.000001


def test_linearised_view_is_a_straight_line_for_exact_data():
    d = np.geomspace(1, 100, 20)
    for law, p in (
        ("relu", {"alpha": 0.5, "b": -3.0, "c": 0.3, "A0": 0.07}),
        ("silu", {"alpha": 0.8, "c": 0.2, "A0": 0.39}),
    ):
        view = linearised(law, p, d, predict(law, p, d))
        slope, icpt = np.polyfit(view["x"], view["y"], 1)
        assert slope == pytest.approx(p["alpha"] if law == "relu" else -p["alpha"], rel=1e-6)
        assert icpt == pytest.approx(np.log(p["c"]), rel=1e-6)
        assert view["dropped"] == 0


def test_bad_inputs_say_what_is_wrong(tmp_path):
    bad = tmp_path / "x_relu.txt"
    bad.write_text(json.dumps({"token_passed": [1, 2, 3]}))
    with pytest.raises(ValueError, match="activation_ratio"):
        load_series(bad)
    bad.write_text(json.dumps({"token_passed": [1, 2], "activation_ratio": [0.1]}))
    with pytest.raises(ValueError, match="2 token_passed values but 1"):
        load_series(bad)
    with pytest.raises(ValueError, match="needs > 4 points, got 3"):
        fit_law("relu", [1, 2, 3], [0.1, 0.09, 0.08])
    with pytest.raises(ValueError, match="unknown law"):
        fit_law("gelu", [1, 2, 3], [0.1, 0.09, 0.08])
    with pytest.raises(ValueError, match="unknown objective 'l1'"):
        fit_law("relu", [1, 2, 3, 4, 5], [0.1, 0.09, 0.08, 0.07, 0.06], objective="l1")
    with pytest.raises(ValueError, match="neither relu nor silu"):
        law_for("0.1b_gelu")
