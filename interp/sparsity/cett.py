"""CETT (cumulative errors of tail truncation) of an MLP layer, and the threshold search.

For one token, h [d_mlp] is the MLP hidden activation (TransformerLens ``mlp.hook_post``: act(pre)
for a plain MLP, act(gate) * up (+ b_in) for a gated one), W_out [d_mlp, d_model] the output matrix,
y = h @ W_out + b_out the MLP output. Neuron i's output norm is ``n_i = |h_i| * ||W_out[i]||``.
Truncating the tail at threshold eps drops every neuron with ``n_i <= eps``:

    CETT(eps) = mean over tokens of || sum_{i: n_i <= eps} h_i W_out[i] || / || y ||

(the relative error of the MLP output when those neurons are zeroed). Sparsity at eps keeps the
neurons with ``n_i > eps``; the activation ratio is the mean fraction kept.

:func:`threshold_for_cett` finds, for a target CETT, the threshold by binary search over the sorted
neuron norms of a calibration set (CETT grows with eps except for cancellations between dropped
neurons, so the search returns the largest sampled threshold whose CETT is <= target), stopping at
``rtol`` of the target or when the bracket holds a single norm value.

The top-k baseline keeps the k neurons of largest n_i per token; :func:`topk_cett` is its CETT.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

__all__ = ["Calibration", "cett", "keep_mask", "neuron_norms", "threshold_for_cett", "topk_cett"]


def neuron_norms(w_out: torch.Tensor) -> torch.Tensor:
    """||W_out[i]|| for each hidden neuron: W_out [d_mlp, d_model] -> [d_mlp] (float32)."""
    if w_out.ndim != 2:
        raise ValueError(f"W_out must be [d_mlp, d_model], got shape {tuple(w_out.shape)}")
    return w_out.float().norm(dim=1)


def keep_mask(h: torch.Tensor, norms: torch.Tensor, eps: float) -> torch.Tensor:
    """The neurons kept at threshold eps: ``|h_i| * ||W_out[i]|| > eps`` (h [..., d_mlp])."""
    return h.abs() * norms.to(h.device, h.dtype) > eps


def _check(h: torch.Tensor, w_out: torch.Tensor) -> torch.Tensor:
    if h.ndim < 2 or h.shape[-1] != w_out.shape[0]:
        raise ValueError(
            f"h must be [..., d_mlp] with d_mlp = {w_out.shape[0]} (W_out's rows), got {tuple(h.shape)}"
        )
    return h.reshape(-1, h.shape[-1]).float()


def _ratio(dropped_out: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Per-token ||dropped_out|| / ||y|| (tokens with y = 0 count as 0 error)."""
    yn = y.norm(dim=-1)
    err = dropped_out.norm(dim=-1)
    return torch.where(yn > 0, err / yn.clamp_min(1e-30), torch.zeros_like(err))


def cett(
    h: torch.Tensor,
    w_out: torch.Tensor,
    b_out: torch.Tensor | None,
    eps: float,
    norms: torch.Tensor | None = None,
) -> float:
    """Mean over tokens of ||sum_{n_i <= eps} h_i W_out[i]|| / ||y||, y = h W_out + b_out."""
    rows = _check(h, w_out)
    w = w_out.float()
    norms = neuron_norms(w) if norms is None else norms.float()
    y = rows @ w + (b_out.float() if b_out is not None else 0.0)
    dropped = rows * ~keep_mask(rows, norms, eps)
    return float(_ratio(dropped @ w, y).mean())


def topk_cett(h: torch.Tensor, w_out: torch.Tensor, b_out: torch.Tensor | None, k: int) -> float:
    """CETT of the top-k baseline: per token, keep the k neurons of largest |h_i| ||W_out[i]||."""
    rows = _check(h, w_out)
    d_mlp = rows.shape[1]
    if not 0 <= k <= d_mlp:
        raise ValueError(f"k must be in [0, {d_mlp}], got {k}")
    w = w_out.float()
    n = rows.abs() * neuron_norms(w)
    keep = torch.zeros_like(rows, dtype=torch.bool)
    if k:
        keep.scatter_(1, n.topk(k, dim=1).indices, True)
    y = rows @ w + (b_out.float() if b_out is not None else 0.0)
    return float(_ratio((rows * ~keep) @ w, y).mean())


@dataclass
class Calibration:
    """One layer's calibration activations with what every threshold search on them reuses: the
    rows [N, d_mlp] and W_out in float32, the neuron norms, the sorted distinct n_i, and y."""

    rows: torch.Tensor
    w: torch.Tensor
    norms: torch.Tensor
    values: torch.Tensor
    y: torch.Tensor

    @classmethod
    def of(cls, h: torch.Tensor, w_out: torch.Tensor, b_out: torch.Tensor | None) -> Calibration:
        rows = _check(h, w_out)
        w = w_out.float()
        norms = neuron_norms(w)
        y = rows @ w + (b_out.float() if b_out is not None else 0.0)
        return cls(rows, w, norms, torch.unique(rows.abs() * norms), y)

    def cett(self, eps: float) -> float:
        dropped = self.rows * ~keep_mask(self.rows, self.norms, eps)
        return float(_ratio(dropped @ self.w, self.y).mean())


def threshold_for_cett(
    h: torch.Tensor | Calibration,
    w_out: torch.Tensor | None,
    b_out: torch.Tensor | None,
    target: float,
    rtol: float = 1e-3,
    max_iter: int = 40,
    bracket: tuple[float, float] | None = None,
) -> tuple[float, float]:
    """The threshold eps whose CETT on the calibration activations ``h`` (or a prepared
    :class:`Calibration`, with ``w_out``, ``b_out`` unused) is ``target``: binary search over the
    sorted values of n_i (optionally inside ``bracket`` = (lo, hi) thresholds known to bound the
    answer). Returns (eps, CETT at eps)."""
    if not target >= 0:
        raise ValueError(f"the target CETT must be >= 0, got {target}")
    cal = h if isinstance(h, Calibration) else Calibration.of(h, w_out, b_out)
    values = cal.values
    if bracket is not None:
        values = values[(values >= bracket[0]) & (values <= bracket[1])]
        if values.numel() == 0:
            values = torch.tensor([float(bracket[0])])
    at = cal.cett

    # invariant: CETT(values[lo]) <= target (or lo = -1: at the lower end), CETT(values[hi]) > target
    lo, hi = -1, values.numel()
    best_eps = 0.0 if bracket is None else float(bracket[0])
    best_c = at(best_eps)
    if best_c > target:
        if bracket is not None:  # the bracket was wrong (a non-monotone stretch): search it all
            return threshold_for_cett(cal, None, None, target, rtol, max_iter)
        return 0.0, best_c  # even eps = 0 (dropping exact zeros) overshoots: nothing to drop
    for _ in range(max_iter):
        if hi - lo <= 1:
            break
        mid = (lo + hi) // 2
        eps = float(values[mid])
        c = at(eps)
        if c <= target:
            lo, best_eps, best_c = mid, eps, c
            if target - c <= rtol * target:
                break
        else:
            hi = mid
    return best_eps, best_c
