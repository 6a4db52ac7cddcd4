"""Activation-sparsity laws: the forms of "Sparsing Law" (Luo, Song et al., 2024), their fits and
how well the limit A0 is determined.

``D`` is the amount of training data in billions of tokens, ``A`` the activation ratio (the
fraction of FFN neurons kept under PPL-1% sparsity).

* ReLU, the "logspace power law": ``A(D) = exp(-c * D**alpha + b) + A0`` (A falls to A0);
* SiLU, a convergent increasing power law: ``A(D) = -c * D**(-alpha) + A0`` (A rises to A0);
* the logarithmic baseline ``A(D) = A0 + c * log(a * D + b)``. Since
  ``c log(aD + b) = c log a + c log(D + b/a)``, ``a`` is not identifiable; we fit ``a = 1``.

Fits minimise the squared error with ``scipy.optimize.least_squares`` inside physical bounds
(ReLU: ``0 <= A0 <= min A``; SiLU: ``max A <= A0 <= 1``; ``c >= 0``), from many starting points.
The starts use that each law is linear in some parameters once the others are fixed: for ReLU at a
given (alpha, A0), ``log(A - A0) = b - c D**alpha`` is linear in (b, c); for SiLU at a given alpha,
``A = A0 - c D**(-alpha)`` is linear in (A0, c); for the log law at a given b, linear in (A0, c).
``c`` is searched as ``log c`` (the published ReLU c spans 9e-6 to 3.2). Two objectives, each fit
named by its own: ``objective="lsq"`` stops at the least-squares optimum (the paper's objective:
scipy ``curve_fit``); ``objective="mae"`` (the default) then polishes it for the mean absolute error
(Nelder-Mead from the least-squares optimum; kept only if it lowers the MAE without leaving the
bounds), because MAE is the figure the paper reports. Both MAE and MSE are reported for either.

Against the paper's Table 2 (:func:`compare_to_paper`): the ratios ours / paper's of alpha and c,
and whether each is within ``PARAM_RTOL`` (20%) of the paper's; the MSE ratio says which curve fits
the published points better on the paper's own objective.

The A0 profile: for each A0 on a grid, the best MAE over the other parameters with A0 held fixed.
The near-optimal interval is the range of grid A0 whose profile MAE is within ``(1 + tol)`` of the
best. A wide interval means the data do not pin down the limit (ReLU series where b, c and A0 trade
off).

The linearised view: ReLU, ``log(b - log(A - A0)) = log c + alpha log D``; SiLU,
``log(A0 - A) = log c - alpha log D``; both straight lines in ``log D``.
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from scipy.optimize import least_squares, minimize

__all__ = [
    "LAWS",
    "PAPER_CONSTANTS",
    "PAPER_LOG_MAE_0P1B_RELU",
    "OBJECTIVES",
    "PARAM_RTOL",
    "Fit",
    "Profile",
    "compare_to_paper",
    "default_published_dir",
    "errors",
    "fit_law",
    "fit_series",
    "law_for",
    "linearised",
    "load_published",
    "load_series",
    "predict",
    "profile_a0",
]

# the paper's Table 2 (alpha, b, c, A0); b is absent for SiLU
PAPER_CONSTANTS: dict[str, dict[str, float]] = {
    "0.1b_relu": {"alpha": 1.01e-1, "b": -1.51e-2, "c": 3.20e0, "A0": 6.14e-2},
    "0.2b_relu": {"alpha": 4.49e-1, "b": -3.05e0, "c": 2.86e-1, "A0": 6.74e-2},
    "0.4b_relu": {"alpha": 6.83e-1, "b": -3.46e0, "c": 7.90e-2, "A0": 6.90e-2},
    "0.8b_relu": {"alpha": 1.01e0, "b": -3.49e0, "c": 7.97e-3, "A0": 7.21e-2},
    "1.2b_relu": {"alpha": 1.33e0, "b": -3.89e0, "c": 9.03e-4, "A0": 7.82e-2},
    "2.4b_relu": {"alpha": 2.11e0, "b": -3.82e0, "c": 9.04e-6, "A0": 7.12e-2},
    "0.1b_silu": {"alpha": 4.79e-1, "c": 1.02e-1, "A0": 4.09e-1},
    "0.2b_silu": {"alpha": 8.44e-1, "c": 2.08e-1, "A0": 3.90e-1},
    "0.4b_silu": {"alpha": 1.03e0, "c": 4.20e-1, "A0": 3.85e-1},
    "0.8b_silu": {"alpha": 9.95e-1, "c": 5.62e-1, "A0": 3.83e-1},
    "1.2b_silu": {"alpha": 9.67e-1, "c": 5.38e-1, "A0": 3.82e-1},
}
# the paper's MAE of its logarithmic fit on 0.1b_relu (its power law: about 4.1e-4)
PAPER_LOG_MAE_0P1B_RELU = 3.4e-3

LAWS = ("relu", "silu", "log")
OBJECTIVES = ("mae", "lsq")
# the criterion of "the exponent reproduces": alpha within 20% of the paper's (and c likewise)
PARAM_RTOL = 0.2
PARAMS = {
    "relu": ("alpha", "b", "c", "A0"),
    "silu": ("alpha", "c", "A0"),
    "log": ("a", "b", "c", "A0"),
}
_ALPHA_GRID = np.geomspace(0.03, 3.0, 12)
_ALPHA_MAX = 6.0
_LOGC = (-60.0, 12.0)
_B_RELU = (-40.0, 10.0)


def default_published_dir() -> Path:
    """The authors' published data (Raincleared-Song/SparsingLawData, ``data/``), shipped with the
    package in ``interp/sparsity/published/`` (its README names the source and the paper's
    constants), so the reproduction runs on any machine."""
    return Path(__file__).resolve().parent / "published"


def law_for(name: str) -> str:
    """The law of a series from its name: ``*relu*`` -> "relu", ``*silu*`` -> "silu"."""
    low = name.lower()
    if "relu" in low:
        return "relu"
    if "silu" in low or "swiglu" in low:
        return "silu"
    raise ValueError(f"cannot tell the law of series {name!r}: its name has neither relu nor silu")


def load_series(path: str | Path) -> tuple[np.ndarray, np.ndarray]:
    """One published file ``{"token_passed": [...], "activation_ratio": [...]}`` -> (D in billions
    of tokens, A)."""
    path = Path(path)
    try:
        raw = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise ValueError(f"{path}: not a readable JSON series ({exc})") from None
    for key in ("token_passed", "activation_ratio"):
        if key not in raw:
            raise ValueError(f"{path}: missing key {key!r}")
    d = np.asarray(raw["token_passed"], dtype=float) / 1e9
    a = np.asarray(raw["activation_ratio"], dtype=float)
    if d.shape != a.shape:
        raise ValueError(
            f"{path}: {d.size} token_passed values but {a.size} activation_ratio values"
        )
    return d, a


def load_published(directory: str | Path | None = None) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """Every ``*.txt`` series in the published-data folder, by name (file stem), sorted."""
    directory = Path(directory) if directory is not None else default_published_dir()
    files = sorted(directory.glob("*.txt"))
    if not files:
        raise ValueError(f"no *.txt series in {directory}")
    return {f.stem: load_series(f) for f in files}


# ---------------------------------------------------------------------------------------------
# the laws
# ---------------------------------------------------------------------------------------------


def predict(law: str, params: dict[str, float], d: np.ndarray) -> np.ndarray:
    """The law's activation ratio at data amounts ``d`` (billions of tokens)."""
    d = np.asarray(d, dtype=float)
    if law == "relu":
        with np.errstate(over="ignore"):
            return np.exp(-params["c"] * d ** params["alpha"] + params["b"]) + params["A0"]
    if law == "silu":
        return -params["c"] * d ** (-params["alpha"]) + params["A0"]
    if law == "log":
        return params["A0"] + params["c"] * np.log(params.get("a", 1.0) * d + params["b"])
    raise ValueError(f"unknown law {law!r}; one of {LAWS}")


def errors(law: str, params: dict[str, float], d: np.ndarray, a: np.ndarray) -> dict[str, float]:
    """Mean absolute and mean squared error of the law's curve on the points."""
    r = predict(law, params, d) - np.asarray(a, dtype=float)
    return {"mae": float(np.mean(np.abs(r))), "mse": float(np.mean(r**2))}


@dataclass
class Fit:
    """A fitted law: its parameters, MAE and MSE on the n points, whether A0 respects the
    physical bound (ReLU: 0 <= A0 <= min A; SiLU: A0 >= max A; the log law has none), and the
    objective it minimised ("mae": least squares polished for MAE; "lsq": least squares)."""

    law: str
    params: dict[str, float]
    mae: float
    mse: float
    n: int
    valid: bool
    starts: int = 0
    objective: str = "mae"

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def _a0_bounds(law: str, a: np.ndarray) -> tuple[float, float]:
    if law == "relu":
        return 0.0, float(a.min())
    if law == "silu":
        return float(a.max()), max(1.0, float(a.max()))
    return -math.inf, math.inf


def _is_valid(law: str, params: dict[str, float], a: np.ndarray, slack: float = 1e-12) -> bool:
    if law == "log":
        return True
    lo, hi = _a0_bounds(law, a)
    return lo - slack <= params["A0"] <= hi + slack and params["c"] >= 0


# Each law as a vector function of its free parameters theta (c as log c), with bounds and starts.
# ``fixed_a0`` removes A0 from theta (for the profile).


def _unpack(law: str, theta: np.ndarray, fixed_a0: float | None) -> dict[str, float]:
    t = list(theta)
    a0 = fixed_a0 if fixed_a0 is not None else t.pop()
    a0 = float(a0)
    if law == "relu":
        return {"alpha": float(t[0]), "b": float(t[1]), "c": math.exp(t[2]), "A0": a0}
    if law == "silu":
        return {"alpha": float(t[0]), "c": math.exp(t[1]), "A0": a0}
    return {"a": 1.0, "b": float(t[0]), "c": float(t[1]), "A0": a0}


def _bounds(law: str, d: np.ndarray, a: np.ndarray, fixed_a0: float | None):
    lo0, hi0 = _a0_bounds(law, a)
    if law == "relu":
        lo, hi = [1e-3, _B_RELU[0], _LOGC[0]], [_ALPHA_MAX, _B_RELU[1], _LOGC[1]]
    elif law == "silu":
        lo, hi = [1e-3, _LOGC[0]], [_ALPHA_MAX, _LOGC[1]]
    else:
        lo, hi = [-0.999 * float(d.min()), -np.inf], [1e6, np.inf]
    if fixed_a0 is None:
        lo.append(lo0)
        hi.append(hi0)
    return np.array(lo), np.array(hi)


def _linear(x: np.ndarray, y: np.ndarray) -> tuple[float, float]:
    """Least-squares (intercept, slope) of y on x."""
    m = np.vstack([np.ones_like(x), x]).T
    coef, *_ = np.linalg.lstsq(m, y, rcond=None)
    return float(coef[0]), float(coef[1])


def _starts(law: str, d: np.ndarray, a: np.ndarray, fixed_a0: float | None) -> list[np.ndarray]:
    lo0, hi0 = _a0_bounds(law, a)
    out: list[np.ndarray] = []
    if law == "relu":
        a0s = (
            [fixed_a0]
            if fixed_a0 is not None
            else [hi0 * f for f in (0.0, 0.5, 0.8, 0.9, 0.95, 0.99)]
        )
        for a0 in a0s:
            y = np.log(np.maximum(a - a0, 1e-9))
            for alpha in _ALPHA_GRID:
                b, slope = _linear(d**alpha, y)
                c = max(-slope, 1e-12)
                theta = [alpha, float(np.clip(b, *_B_RELU)), float(np.clip(math.log(c), *_LOGC))]
                out.append(np.array(theta + ([a0] if fixed_a0 is None else [])))
    elif law == "silu":
        for alpha in _ALPHA_GRID:
            x = -(d ** (-alpha))
            if fixed_a0 is None:
                a0, c = _linear(x, a)
                a0 = float(np.clip(a0, lo0, hi0))
            else:
                a0 = fixed_a0
                c = float(np.sum(x * (a - a0)) / np.sum(x * x))
            c = max(c, 1e-12)
            theta = [alpha, float(np.clip(math.log(c), *_LOGC))]
            out.append(np.array(theta + ([a0] if fixed_a0 is None else [])))
    else:
        span = float(d.max())
        for s in (0.0, 0.01 * span, 0.1 * span, span, 10 * span):
            s = max(s, -0.5 * float(d.min()))
            x = np.log(d + s)
            if fixed_a0 is None:
                a0, c = _linear(x, a)
                out.append(np.array([s, c, a0]))
            else:
                c = float(np.sum(x * (a - fixed_a0)) / np.sum(x * x))
                out.append(np.array([s, c]))
    return out


def _fit_once(
    law: str, d: np.ndarray, a: np.ndarray, fixed_a0: float | None, polish: bool = True
) -> tuple[dict[str, float], int]:
    lo, hi = _bounds(law, d, a, fixed_a0)
    span = np.where(np.isfinite(hi - lo), hi - lo, 1.0)
    best: tuple[float, np.ndarray] | None = None
    starts = _starts(law, d, a, fixed_a0)

    def resid(theta: np.ndarray) -> np.ndarray:
        r = predict(law, _unpack(law, theta, fixed_a0), d) - a
        return np.where(np.isfinite(r), r, 1e3)

    for x0 in starts:
        x0 = np.clip(x0, lo + 1e-9 * span, hi - 1e-9 * span)
        try:
            sol = least_squares(
                resid, x0, bounds=(lo, hi), method="trf", x_scale="jac", max_nfev=4000
            )
        except ValueError:
            continue
        cost = float(np.mean(sol.fun**2))
        if best is None or cost < best[0]:
            best = (cost, sol.x)
    if best is None:
        raise RuntimeError(f"no start of the {law} fit converged on {d.size} points")
    theta = best[1]
    if not polish:
        return _unpack(law, theta, fixed_a0), len(starts)

    # polish for MAE, inside the bounds
    def mae(t: np.ndarray) -> float:
        if np.any(t < lo) or np.any(t > hi):
            return math.inf
        r = resid(t)
        return float(np.mean(np.abs(r)))

    pol = minimize(
        mae, theta, method="Nelder-Mead", options={"xatol": 1e-10, "fatol": 1e-12, "maxiter": 4000}
    )
    if np.isfinite(pol.fun) and pol.fun < mae(theta):
        theta = pol.x
    return _unpack(law, theta, fixed_a0), len(starts)


def fit_law(
    law: str,
    d: Sequence[float] | np.ndarray,
    a: Sequence[float] | np.ndarray,
    objective: str = "mae",
) -> Fit:
    """Fit ``law`` ("relu", "silu" or "log") to the points (D, A): bounded multi-start least squares,
    then (``objective="mae"``) polished for MAE, or (``"lsq"``) not. Needs at least as many points
    as parameters + 1."""
    if law not in LAWS:
        raise ValueError(f"unknown law {law!r}; one of {LAWS}")
    if objective not in OBJECTIVES:
        raise ValueError(f"unknown objective {objective!r}; one of {OBJECTIVES}")
    d = np.asarray(d, dtype=float)
    a = np.asarray(a, dtype=float)
    if d.shape != a.shape or d.ndim != 1:
        raise ValueError(f"D and A must be 1-d of one length, got {d.shape} and {a.shape}")
    need = len(PARAMS[law]) if law != "log" else 3
    if d.size <= need:
        raise ValueError(
            f"the {law} law has {need} free parameters: needs > {need} points, got {d.size}"
        )
    if np.any(d <= 0) or not np.all(np.isfinite(a)):
        raise ValueError("D must be > 0 and A finite")
    params, n_starts = _fit_once(law, d, a, None, polish=objective == "mae")
    err = errors(law, params, d, a)
    return Fit(
        law,
        params,
        err["mae"],
        err["mse"],
        int(d.size),
        _is_valid(law, params, a),
        n_starts,
        objective,
    )


def compare_to_paper(
    law: str, params: dict[str, float], paper: dict[str, float], d: np.ndarray, a: np.ndarray
) -> dict[str, Any]:
    """A fit's parameters against the paper's on the same points: ours / paper's for alpha, c and
    A0; whether alpha and c are each within ``PARAM_RTOL`` of the paper's; and the MAE and MSE
    ratios (ours / the paper's constants'; < 1: our curve is closer to the points)."""
    ours, theirs = errors(law, params, d, a), errors(law, paper, d, a)
    out: dict[str, Any] = {
        f"{k}_ratio": params[k] / paper[k] for k in ("alpha", "c", "A0") if paper[k] != 0
    }
    for k in ("alpha", "c"):
        out[f"{k}_within"] = bool(abs(out[f"{k}_ratio"] - 1) <= PARAM_RTOL)
    out["mae_ratio"] = ours["mae"] / theirs["mae"]
    out["mse_ratio"] = ours["mse"] / theirs["mse"]
    return out


@dataclass
class Profile:
    """Best MAE as a function of a fixed A0 (``a0``, ``mae``, ``mse`` on one grid); the best grid
    point, and the interval [lo, hi] of grid A0 whose MAE is within (1 + tol) of the best."""

    law: str
    a0: list[float]
    mae: list[float]
    mse: list[float]
    best_a0: float
    best_mae: float
    tol: float
    interval: tuple[float, float]
    params: list[dict[str, float]] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def profile_a0(
    law: str,
    d: Sequence[float] | np.ndarray,
    a: Sequence[float] | np.ndarray,
    grid: Sequence[float] | None = None,
    n: int = 41,
    tol: float = 0.1,
    refine: int = 21,
) -> Profile:
    """The A0 profile of ``law`` ("relu" or "silu"): at each A0 of ``grid`` (default: ``n`` points
    over the physical range, ReLU [0, min A], SiLU [max A, max A + (max A - min A)]), the best MAE
    over the other parameters. ``tol``: the relative MAE slack of the near-optimal interval. On the
    default grid, ``refine`` more points are spread over the near-optimal interval widened by one
    coarse step on each side, so the interval's ends are resolved finer than the coarse grid."""
    if law not in ("relu", "silu"):
        raise ValueError(f"the A0 profile is defined for the relu and silu laws, not {law!r}")
    d = np.asarray(d, dtype=float)
    a = np.asarray(a, dtype=float)
    if grid is None:
        if law == "relu":
            lo, hi = 0.0, float(a.min())
        else:
            lo, hi = float(a.max()), min(1.0, float(a.max()) + float(a.max() - a.min()))
        # the ReLU law cannot reach A0 = min A exactly (exp > 0): stop just short of it
        grid = np.linspace(lo, hi - (1e-6 * hi if law == "relu" else 0.0), n)
    else:
        refine = 0
    rows: dict[float, tuple[float, float, dict[str, float]]] = {}

    def run(points) -> tuple[float, float, float]:
        for a0 in (float(g) for g in points):
            if a0 not in rows:
                p, _ = _fit_once(law, d, a, a0)
                e = errors(law, p, d, a)
                rows[a0] = (e["mae"], e["mse"], p)
        best = min(rows, key=lambda g: rows[g][0])
        ok = [g for g in rows if rows[g][0] <= (1 + tol) * rows[best][0]]
        return best, min(ok), max(ok)

    best, lo_ok, hi_ok = run(grid)
    if refine and len(grid) > 1:
        step = float(grid[1] - grid[0])
        lo_r, hi_r = max(float(grid[0]), lo_ok - step), min(float(grid[-1]), hi_ok + step)
        best, lo_ok, hi_ok = run(np.linspace(lo_r, hi_r, refine))
    pts = sorted(rows)
    return Profile(
        law,
        pts,
        [rows[g][0] for g in pts],
        [rows[g][1] for g in pts],
        best,
        rows[best][0],
        tol,
        (lo_ok, hi_ok),
        [rows[g][2] for g in pts],
    )


def linearised(law: str, params: dict[str, float], d: np.ndarray, a: np.ndarray) -> dict[str, Any]:
    """The paper's straight-line view: x = log D and y such that the law is the line
    ``y = log c + alpha * x`` (ReLU: y = log(b - log(A - A0))) or ``y = log c - alpha * x``
    (SiLU: y = log(A0 - A)). Points where y is undefined (A on the wrong side of A0) are dropped."""
    d = np.asarray(d, dtype=float)
    a = np.asarray(a, dtype=float)
    if law == "relu":
        with np.errstate(invalid="ignore", divide="ignore"):
            y = np.log(params["b"] - np.log(a - params["A0"]))
        slope = params["alpha"]
    elif law == "silu":
        with np.errstate(invalid="ignore", divide="ignore"):
            y = np.log(params["A0"] - a)
        slope = -params["alpha"]
    else:
        raise ValueError(f"no linearised view for the {law!r} law")
    x = np.log(d)
    keep = np.isfinite(y)
    xs = np.linspace(x.min(), x.max(), 50)
    return {
        "x": x[keep].tolist(),
        "y": y[keep].tolist(),
        "line_x": xs.tolist(),
        "line_y": (math.log(params["c"]) + slope * xs).tolist(),
        "dropped": int((~keep).sum()),
    }


# ---------------------------------------------------------------------------------------------
# a whole report
# ---------------------------------------------------------------------------------------------


def fit_series(
    series: dict[str, tuple[Sequence[float], Sequence[float]]],
    laws: dict[str, str] | None = None,
    paper: dict[str, dict[str, float]] | None = None,
    profile_n: int = 41,
    tol: float = 0.1,
) -> dict[str, Any]:
    """Fit every series (name -> (D, A)) with its law (``laws[name]``, else from the name): the
    MAE-polished fit (``fit``) and the least-squares one (``lsq_fit``), the log baseline, the A0
    profile (``profile_n`` grid points, 0 to skip) and, where ``paper`` has the series, the paper
    constants' errors on the same points, our A0's relative difference, and each of our fits
    against the paper's parameters (``vs_paper``: {"mae": ..., "lsq": ...}, see
    :func:`compare_to_paper`)."""
    out: dict[str, Any] = {}
    for name, (d, a) in series.items():
        d, a = np.asarray(d, dtype=float), np.asarray(a, dtype=float)
        law = (laws or {}).get(name) or law_for(name)
        fit = fit_law(law, d, a)
        lsq = fit_law(law, d, a, objective="lsq")
        row: dict[str, Any] = {
            "law": law,
            "D": d.tolist(),
            "A": a.tolist(),
            "fit": fit.to_dict(),
            "lsq_fit": lsq.to_dict(),
            "log_fit": fit_law("log", d, a).to_dict(),
            "linearised": linearised(law, fit.params, d, a),
        }
        if profile_n:
            row["profile"] = profile_a0(law, d, a, n=profile_n, tol=tol).to_dict()
        if paper and name in paper:
            p = paper[name]
            row["paper"] = {"params": p, **errors(law, p, d, a)}
            row["mae_ratio"] = fit.mae / row["paper"]["mae"]
            row["a0_rel_diff"] = abs(fit.params["A0"] / p["A0"] - 1)
            row["vs_paper"] = {
                f.objective: compare_to_paper(law, f.params, p, d, a) for f in (fit, lsq)
            }
        out[name] = row
    return out
