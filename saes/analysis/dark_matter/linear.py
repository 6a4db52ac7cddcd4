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
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from dataclasses import asdict, dataclass

import torch

Pairs = Iterable[tuple[torch.Tensor, torch.Tensor]]

__all__ = [
    "ErrorDecomposition",
    "LinearMap",
    "LinearStats",
    "R2Stats",
    "decompose_error",
    "fit_linear",
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
        elif X.shape[1] != self.xtx.shape[0] or Y.shape[1] != self.xty.shape[1]:  # type: ignore[union-attr]
            raise ValueError(
                f"batch widths changed: inputs {X.shape[1]} / targets {Y.shape[1]}, "
                f"expected {self.xtx.shape[0]} / {self.xty.shape[1]}"  # type: ignore[union-attr]
            )
        self.xtx += (X.T @ X).cpu()
        self.xty += (X.T @ Y).cpu()  # type: ignore[operator]
        self.n += X.shape[0]

    def solve(self) -> LinearMap:
        if self.xtx is None or self.n == 0:
            raise ValueError("no rows to fit: the fit stream was empty")
        A, B = self.xtx, self.xty
        # a relative jitter far below float32 precision: keeps Cholesky alive on exactly
        # collinear inputs without changing a well-posed solution
        jitter = 1e-12 * A.diagonal().mean().clamp_min(1e-300)
        L, info = torch.linalg.cholesky_ex(A + jitter * torch.eye(A.shape[0], dtype=A.dtype))
        if int(info) == 0:
            W = torch.cholesky_solve(B, L)  # type: ignore[arg-type]
        else:
            W = torch.linalg.pinv(A, hermitian=True) @ B
        if self.intercept:
            return LinearMap(W[:-1].contiguous(), W[-1].contiguous(), self.n)
        return LinearMap(W.contiguous(), None, self.n)


def fit_linear(pairs: Pairs, intercept: bool = False) -> LinearMap:
    """Least squares from inputs to targets over a stream of (inputs [n, p], targets [n, q])."""
    stats = LinearStats(intercept)
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
    fit: Pairs, test: Pairs, intercept: bool = False
) -> tuple[ErrorDecomposition, LinearMap]:
    """Fit a* on the (x, x_hat) stream ``fit``, score it on the (x, x_hat) stream ``test``.

    Returns the decomposition and the fitted map (e_lin = lmap(x), e_nl = e - lmap(x))."""
    lmap = fit_linear(error_pairs(fit), intercept)
    r2, xs = R2Stats(), _XStats()
    for x, x_hat in test:
        e = x.float() - x_hat.float()
        r2.update(e, lmap(x.float()))
        xs.update(x)
    if r2.n < 2:
        raise ValueError(f"the test stream holds {r2.n} rows; need at least 2")
    total = xs.total_variance
    return (
        ErrorDecomposition(
            n_fit=lmap.n_rows,
            n_test=r2.n,
            intercept=intercept,
            r2_per_dim=r2.r2_per_dim(),
            r2_vector=r2.r2_vector(),
            linear_norm_share=r2.uncentered_share(),
            nonlinear_norm_share=1.0 - r2.uncentered_share(),
            fvu_sae=r2.target_sq / total,
            fvu_sae_plus_linear=r2.residual_sq / total,
            error_sq_mean=r2.target_sq / r2.n,
            nonlinear_sq_mean=r2.residual_sq / r2.n,
        ),
        lmap,
    )
