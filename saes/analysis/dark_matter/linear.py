"""Linear prediction of an SAE's error from its input: how much of the "dark matter" is linear.

Given activations x [N, d], an SAE reconstruction x_hat and the error e = x - x_hat, least squares
finds the map a* [d, d] (optionally with an intercept b) minimising sum_t ||e_t - x_t a - b||^2 on
N_fit tokens. The fit is streamed: only X^T X [d+1, d+1] and X^T E [d+1, d] are accumulated, in
float64, so N can be any size; a* solves (X^T X) a = X^T E (Cholesky, with a pseudo-inverse fallback
for a singular X^T X). Everything is scored on other, held-out tokens:

* ``r2_per_dim``: the paper's number (Engels et al. 2024, sklearn's ``r2_score`` averaged uniformly
  over dimensions): mean_j [1 - sum_t (e_tj - ê_tj)^2 / sum_t (e_tj - mean_t e_tj)^2];
* ``r2_vector``: the R^2 of the whole vector, 1 - sum ||e - ê||^2 / sum ||e - mean e||^2
  (dimensions weighted by their variance);
* ``linear_norm_share``: the fraction of the error's squared norm the prediction captures,
  1 - sum ||e - ê||^2 / sum ||e||^2, and ``nonlinear_norm_share`` = 1 - that = sum ||e_nl||^2 /
  sum ||e||^2 with the nonlinear error e_nl = e - x a* - b;
* ``fvu_sae`` = sum ||x - x_hat||^2 / sum ||x - mean x||^2 and ``fvu_sae_plus_linear``, the FVU of
  x_hat + x a* + b (whose error is e_nl).

The same two streaming pieces (:class:`LinearStats`, :class:`R2Stats`) fit and score any linear map
from inputs to targets (the error-norm probe, the previous-layer maps, the width cross-prediction).

Two estimators (``ESTIMATORS``): ``"ols"``, plain least squares (the paper's), and ``"ridge"``,
least squares with a penalty λ ||a||² (intercept unpenalised) whose size is chosen on held-out
rows of the fit set itself (:class:`RidgeCVStats`): the fit rows are dealt in blocks of
``block_rows`` consecutive rows to ``folds`` folds; for each fold the map is fitted on the other
folds and scored on it, for every λ = α trace(XᵀX) / p on a log grid of α (α = 0, OLS, included),
from one eigendecomposition of each fold's complement XᵀX (so each λ costs two matrix products);
the α with the smallest summed held-out error is then refitted on all fit rows.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from dataclasses import asdict, dataclass

import torch

Pairs = Iterable[tuple[torch.Tensor, torch.Tensor]]

ESTIMATORS = ("ols", "ridge")
ALPHAS = (0.0, *(10.0 ** (e / 4) for e in range(-28, 5)))
"""The ridge grid: relative penalties α (λ = α trace(XᵀX) / p), 0 (OLS) and 1e-7 .. 10."""

__all__ = [
    "ALPHAS",
    "ESTIMATORS",
    "ErrorDecomposition",
    "block_rows_for",
    "LinearMap",
    "LinearStats",
    "R2Stats",
    "RidgeCVStats",
    "decompose_error",
    "fit_linear",
    "new_stats",
    "score_decomposition",
    "sae_pairs",
    "score_linear",
]


@dataclass
class LinearMap:
    """y ≈ x @ weight + bias (bias None: no intercept); float64 parameters."""

    weight: torch.Tensor
    bias: torch.Tensor | None = None
    n_rows: int = 0
    """How many rows it was fitted on."""
    alpha: float = 0.0
    """The relative ridge penalty it was fitted with (0: ordinary least squares)."""

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        y = x.to(torch.float64) @ self.weight.to(x.device)
        if self.bias is not None:
            y = y + self.bias.to(x.device)
        return y.to(x.dtype if x.is_floating_point() else torch.float32)

    @property
    def d_in(self) -> int:
        return self.weight.shape[0]


class LinearStats:
    """Streams X^T X and X^T Y in float64 (X with a column of ones when ``intercept``)."""

    def __init__(self, intercept: bool = False) -> None:
        self.intercept = intercept
        self.xtx: torch.Tensor | None = None
        self.xty: torch.Tensor | None = None
        self.yy: torch.Tensor | None = None
        self.n = 0

    def _design(self, x: torch.Tensor) -> torch.Tensor:
        x = x.to(torch.float64)
        if self.intercept:
            x = torch.cat([x, torch.ones(x.shape[0], 1, dtype=torch.float64, device=x.device)], 1)
        return x

    def update(self, x: torch.Tensor, y: torch.Tensor) -> None:
        if x.shape[0] != y.shape[0]:
            raise ValueError(f"inputs have {x.shape[0]} rows but targets have {y.shape[0]}")
        X, Y = self._design(x), y.to(torch.float64)
        if self.xtx is None:
            self.xtx = torch.zeros(X.shape[1], X.shape[1], dtype=torch.float64)
            self.xty = torch.zeros(X.shape[1], Y.shape[1], dtype=torch.float64)
            self.yy = torch.zeros(Y.shape[1], dtype=torch.float64)
        elif X.shape[1] != self.xtx.shape[0] or Y.shape[1] != self.xty.shape[1]:  # type: ignore[union-attr]
            raise ValueError(
                f"batch widths changed: inputs {X.shape[1]} / targets {Y.shape[1]}, "
                f"expected {self.xtx.shape[0]} / {self.xty.shape[1]}"  # type: ignore[union-attr]
            )
        self.xtx += (X.T @ X).cpu()
        self.xty += (X.T @ Y).cpu()  # type: ignore[operator]
        self.yy += (Y * Y).sum(0).cpu()  # type: ignore[operator]
        self.n += X.shape[0]

    def add(self, other: LinearStats, sign: float = 1.0) -> LinearStats:
        """A new LinearStats holding this one's sums plus (``sign`` -1: minus) ``other``'s."""
        out = LinearStats(self.intercept)
        if self.xtx is None:
            return other.add(out) if sign > 0 else out
        if other.xtx is None:
            out.xtx, out.xty, out.yy, out.n = (
                self.xtx.clone(),
                self.xty.clone(),
                self.yy.clone(),
                self.n,
            )  # type: ignore[union-attr]
            return out
        out.xtx = self.xtx + sign * other.xtx
        out.xty = self.xty + sign * other.xty  # type: ignore[operator]
        out.yy = self.yy + sign * other.yy  # type: ignore[operator]
        out.n = self.n + int(sign) * other.n
        return out

    def solve(self, alpha: float = 0.0) -> LinearMap:
        """Least squares (``alpha`` 0) or ridge with λ = ``alpha`` trace(XᵀX) / p (the intercept
        unpenalised: the ridge is fitted on centred sums)."""
        if self.xtx is None or self.n == 0:
            raise ValueError("no rows to fit: the fit stream was empty")
        if alpha < 0:
            raise ValueError(f"the ridge penalty must be >= 0, got {alpha}")
        if alpha > 0:
            w = _RidgePath(self).weights([alpha])[0]
            return self._map(w, alpha)
        A, B = self.xtx, self.xty
        # a relative jitter far below float32 precision: keeps Cholesky alive on exactly
        # collinear inputs without changing a well-posed solution
        jitter = 1e-12 * A.diagonal().mean().clamp_min(1e-300)
        L, info = torch.linalg.cholesky_ex(A + jitter * torch.eye(A.shape[0], dtype=A.dtype))
        if int(info) == 0:
            W = torch.cholesky_solve(B, L)  # type: ignore[arg-type]
        else:
            W = torch.linalg.pinv(A, hermitian=True) @ B
        return self._map(W, 0.0)

    def _map(self, W: torch.Tensor, alpha: float) -> LinearMap:
        if self.intercept:
            return LinearMap(W[:-1].contiguous(), W[-1].contiguous(), self.n, alpha)
        return LinearMap(W.contiguous(), None, self.n, alpha)

    def residual_sq(self, W: torch.Tensor) -> torch.Tensor:
        """Per target column, sum_t (y_t - X_t W)^2 over this set's rows, from its sums alone
        (W in the design's layout: the intercept as the last row)."""
        if self.xtx is None:
            raise ValueError("no rows")
        return self.yy - 2 * (W * self.xty).sum(0) + (W * (self.xtx @ W)).sum(0)  # type: ignore[operator]


class _RidgePath:
    """Ridge solutions of one LinearStats for many penalties from one eigendecomposition.

    Without an intercept: W(λ) = V diag(1 / (Λ + λ)) Vᵀ XᵀY with XᵀX = V Λ Vᵀ. With one: the same
    on the centred sums S = XᵀX - n μ_x μ_xᵀ, S_xy = XᵀY - n μ_x μ_yᵀ, and b = μ_y - μ_x W (so the
    intercept is not shrunk). λ = α trace(S) / p; α = 0 is the (pseudo-inverse) least squares."""

    def __init__(self, stats: LinearStats) -> None:
        A, B, n = stats.xtx, stats.xty, stats.n
        self.intercept = stats.intercept
        if self.intercept:
            mx, my = A[-1, :-1] / n, B[-1] / n  # type: ignore[index]
            S = A[:-1, :-1] - n * torch.outer(mx, mx)  # type: ignore[index]
            Sxy = B[:-1] - n * torch.outer(mx, my)  # type: ignore[index]
            self.mx, self.my = mx, my
        else:
            S, Sxy = A, B
        self.evals, self.evecs = torch.linalg.eigh(S)  # type: ignore[arg-type]
        self.evals = self.evals.clamp_min(0)
        self.vtb = self.evecs.T @ Sxy
        self.scale = float(self.evals.sum()) / max(S.shape[0], 1)  # type: ignore[union-attr]

    def weights(self, alphas) -> list[torch.Tensor]:
        """The solution (the design's layout, intercept last) for each relative penalty."""
        top = float(self.evals.max()) if len(self.evals) else 0.0
        out = []
        for a in alphas:
            lam = a * self.scale
            if lam > 0:
                inv = 1.0 / (self.evals + lam)
            else:  # pseudo-inverse: directions with no variance get no weight
                ok = self.evals > 1e-12 * max(top, 1e-300)
                inv = torch.where(ok, 1.0 / self.evals.clamp_min(1e-300), 0.0)
            W = self.evecs @ (inv[:, None] * self.vtb)
            if self.intercept:
                W = torch.cat([W, (self.my - self.mx @ W)[None]], 0)
            out.append(W)
        return out


class RidgeCVStats:
    """Streams the sums of ``folds`` folds of rows (blocks of ``block_rows`` consecutive rows dealt
    in turn) and fits ridge with the penalty chosen on held-out folds (see the module doc).

    ``shared``: one α for every target column (minimising the summed held-out error; the error
    vector's map), else one per column (targets of different scales, e.g. ||e||² and ||e||)."""

    def __init__(
        self,
        intercept: bool = False,
        folds: int = 5,
        block_rows: int = 1024,
        alphas=ALPHAS,
        shared: bool = True,
    ) -> None:
        if folds < 2:
            raise ValueError(f"ridge selection needs at least 2 folds, got {folds}")
        if block_rows < 1:
            raise ValueError(f"block_rows must be >= 1, got {block_rows}")
        if not alphas or any(a < 0 for a in alphas):
            raise ValueError(f"the penalty grid must be non-empty and >= 0, got {alphas}")
        self.intercept, self.block_rows, self.shared = intercept, block_rows, shared
        self.alphas = tuple(float(a) for a in alphas)
        self.folds = [LinearStats(intercept) for _ in range(folds)]
        self.n = 0
        self.cv_error: torch.Tensor | None = None
        """After :meth:`select`: held-out sum of squares [len(alphas), targets]."""
        self.chosen: torch.Tensor | None = None
        """After :meth:`select`: the chosen α per target column."""

    def update(self, x: torch.Tensor, y: torch.Tensor) -> None:
        if x.shape[0] != y.shape[0]:
            raise ValueError(f"inputs have {x.shape[0]} rows but targets have {y.shape[0]}")
        i = 0
        while i < x.shape[0]:
            row = self.n + i
            take = min(self.block_rows - row % self.block_rows, x.shape[0] - i)
            fold = (row // self.block_rows) % len(self.folds)
            self.folds[fold].update(x[i : i + take], y[i : i + take])
            i += take
        self.n += x.shape[0]

    def total(self) -> LinearStats:
        out = LinearStats(self.intercept)
        for f in self.folds:
            out = out.add(f)
        return out

    def select(self) -> torch.Tensor:
        """The chosen α per target column (all equal when ``shared``); sets ``cv_error``."""
        used = [f for f in self.folds if f.n > 0]
        if len(used) < 2:
            raise ValueError(
                f"ridge selection needs rows in at least 2 folds; {self.n} rows in blocks of "
                f"{self.block_rows} filled {len(used)}"
            )
        total = self.total()
        err = None
        for f in used:
            train = total.add(f, -1.0)
            if train.n < 2:
                continue
            path = _RidgePath(train)
            e = torch.stack([f.residual_sq(W) for W in path.weights(self.alphas)])
            err = e if err is None else err + e
        self.cv_error = err
        alphas = torch.tensor(self.alphas, dtype=torch.float64)
        if self.shared:
            self.chosen = alphas[err.sum(1).argmin()].expand(err.shape[1]).clone()  # type: ignore[union-attr]
        else:
            self.chosen = alphas[err.argmin(0)]  # type: ignore[union-attr]
        return self.chosen

    def solve(self) -> LinearMap:
        chosen = self.select()
        total = self.total()
        if bool((chosen == chosen[0]).all()):
            return total.solve(float(chosen[0]))
        path = _RidgePath(total)
        uniq = sorted(set(chosen.tolist()))
        sols = dict(zip(uniq, path.weights(uniq)))
        W = torch.stack([sols[a][:, j] for j, a in enumerate(chosen.tolist())], 1)
        lmap = total._map(W, float(chosen.max()))
        return lmap


def block_rows_for(n_rows: int, folds: int = 5, cap: int = 1024) -> int:
    """Rows per fold block for a fit of ``n_rows`` rows: ``cap`` (consecutive rows share documents,
    so blocks keep neighbours on one side of the split), smaller where the rows would not fill every
    fold twice (a nested half of the fit included)."""
    return max(1, min(cap, n_rows // (2 * folds)))


def new_stats(
    estimator: str = "ols", intercept: bool = False, **ridge
) -> LinearStats | RidgeCVStats:
    """Streaming sums for ``estimator`` (``"ols"`` or ``"ridge"``; keyword arguments go to
    :class:`RidgeCVStats`)."""
    if estimator == "ols":
        return LinearStats(intercept)  # (ridge keywords are ignored)
    if estimator == "ridge":
        return RidgeCVStats(intercept, **ridge)
    raise ValueError(f"unknown estimator {estimator!r}; choose one of {ESTIMATORS}")


def fit_linear(pairs: Pairs, intercept: bool = False, estimator: str = "ols", **ridge) -> LinearMap:
    """Least squares (or ridge, ``estimator``; keyword arguments go to :class:`RidgeCVStats`) from
    inputs to targets over a stream of (inputs [n, p], targets [n, q])."""
    stats = new_stats(estimator, intercept, **ridge)
    for x, y in pairs:
        stats.update(x, y)
    return stats.solve()


class R2Stats:
    """Streams per-dimension sums of y, y^2 and (y - ŷ)^2 (float64) to score predictions."""

    def __init__(self) -> None:
        self.n = 0
        self.s = self.ss = self.res = self.pred_ss = None

    def update(self, y: torch.Tensor, y_pred: torch.Tensor) -> None:
        y, p = y.to(torch.float64), y_pred.to(torch.float64)
        if y.shape != p.shape:
            raise ValueError(f"targets {tuple(y.shape)} and predictions {tuple(p.shape)} differ")
        parts = (y.sum(0), (y * y).sum(0), ((y - p) ** 2).sum(0), (p * p).sum(0))
        if self.s is None:
            self.s, self.ss, self.res, self.pred_ss = (t.cpu() for t in parts)
        else:
            self.s += parts[0].cpu()
            self.ss += parts[1].cpu()
            self.res += parts[2].cpu()
            self.pred_ss += parts[3].cpu()
        self.n += y.shape[0]

    def _check(self) -> None:
        if self.s is None or self.n < 2:
            raise ValueError(f"need at least 2 scored rows, got {self.n}")

    @property
    def centered(self) -> torch.Tensor:
        """Per-dimension sum of (y - mean y)^2."""
        self._check()
        return self.ss - self.s**2 / self.n  # type: ignore[operator]

    def r2_per_dim(self) -> float:
        """Mean over dimensions of each dimension's R^2 (dimensions with no variance left out)."""
        c = self.centered
        ok = c > 1e-12 * c.max().clamp_min(1e-300)
        return float((1 - self.res[ok] / c[ok]).mean())  # type: ignore[index]

    def r2_vector(self) -> float:
        return float(1 - self.res.sum() / self.centered.sum())  # type: ignore[union-attr]

    def uncentered_share(self) -> float:
        """1 - sum (y - ŷ)^2 / sum y^2: the part of the squared norm the prediction removes."""
        self._check()
        return float(1 - self.res.sum() / self.ss.sum())  # type: ignore[union-attr]

    @property
    def residual_sq(self) -> float:
        self._check()
        return float(self.res.sum())  # type: ignore[union-attr]

    @property
    def target_sq(self) -> float:
        self._check()
        return float(self.ss.sum())  # type: ignore[union-attr]


def score_linear(pairs: Pairs, lmap: LinearMap) -> R2Stats:
    """R2Stats of ``lmap`` on a stream of (inputs, targets)."""
    stats = R2Stats()
    for x, y in pairs:
        stats.update(y, lmap(x.to(torch.float64)))
    return stats


def sae_pairs(
    sae: torch.nn.Module | Callable[[torch.Tensor], torch.Tensor],
    xs: Iterable[torch.Tensor],
    batch_rows: int = 4096,
) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """(x, x_hat) for each chunk of ``batch_rows`` rows of the activations ``xs``, through the SAE
    interface (``sae(x)[0]``; a plain callable returning x_hat also works)."""
    for x in xs:
        for i in range(0, x.shape[0], batch_rows):
            chunk = x[i : i + batch_rows].float()
            with torch.no_grad():
                out = sae(chunk)
            x_hat = out[0] if isinstance(out, tuple) else out
            yield chunk, x_hat.float()


@dataclass
class ErrorDecomposition:
    """The linear / nonlinear split of an SAE's error on held-out tokens (see the module doc)."""

    n_fit: int
    n_test: int
    intercept: bool
    estimator: str
    alpha: float
    r2_per_dim: float
    r2_vector: float
    linear_norm_share: float
    nonlinear_norm_share: float
    fvu_sae: float
    fvu_sae_plus_linear: float
    error_sq_mean: float
    nonlinear_sq_mean: float

    def to_dict(self) -> dict[str, float | int | bool]:
        return asdict(self)


class _XStats:
    """sum x and sum ||x||^2 (float64) for the FVU denominator sum ||x - mean x||^2."""

    def __init__(self) -> None:
        self.n, self.s, self.ss = 0, None, 0.0

    def update(self, x: torch.Tensor) -> None:
        x = x.to(torch.float64)
        s = x.sum(0).cpu()
        self.s = s if self.s is None else self.s + s
        self.ss += float((x * x).sum())
        self.n += x.shape[0]

    @property
    def total_variance(self) -> float:
        return self.ss - float((self.s**2).sum()) / self.n  # type: ignore[operator]


def error_pairs(pairs: Pairs) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """(x, e = x - x_hat) from (x, x_hat)."""
    for x, x_hat in pairs:
        yield x, x.float() - x_hat.float()


def decompose_error(
    fit: Pairs, test: Pairs, intercept: bool = False, estimator: str = "ols", **ridge
) -> tuple[ErrorDecomposition, LinearMap]:
    """Fit a* (``estimator``: ``"ols"`` or ``"ridge"``) on the (x, x_hat) stream ``fit``, score it
    on the (x, x_hat) stream ``test``.

    Returns the decomposition and the fitted map (e_lin = lmap(x), e_nl = e - lmap(x))."""
    lmap = fit_linear(error_pairs(fit), intercept, estimator, **ridge)
    return score_decomposition(test, lmap, estimator), lmap


def score_decomposition(test: Pairs, lmap: LinearMap, estimator: str = "ols") -> ErrorDecomposition:
    """The decomposition of the (x, x_hat) stream ``test`` by a fitted map."""
    r2, xs = R2Stats(), _XStats()
    for x, x_hat in test:
        e = x.float() - x_hat.float()
        r2.update(e, lmap(x.float()))
        xs.update(x)
    if r2.n < 2:
        raise ValueError(f"the test stream holds {r2.n} rows; need at least 2")
    total = xs.total_variance
    return ErrorDecomposition(
        n_fit=lmap.n_rows,
        n_test=r2.n,
        intercept=lmap.bias is not None,
        estimator=estimator,
        alpha=lmap.alpha,
        r2_per_dim=r2.r2_per_dim(),
        r2_vector=r2.r2_vector(),
        linear_norm_share=r2.uncentered_share(),
        nonlinear_norm_share=1.0 - r2.uncentered_share(),
        fvu_sae=r2.target_sq / total,
        fvu_sae_plus_linear=r2.residual_sq / total,
        error_sq_mean=r2.target_sq / r2.n,
        nonlinear_sq_mean=r2.residual_sq / r2.n,
    )
