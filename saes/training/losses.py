"""The SAE training losses: FVU, AuxK, and aux_zipf with its Zipf helpers.

**FVU** (the reconstruction loss of every variant): sum_n ||x_n - x_hat_n||^2 / sum_n ||x_n -
mean(x)||^2 over the batch, scale-free. Under data-parallel training the denominator is the whole
global batch's (:func:`saes.training.distributed.centred_sum_sq`).

**AuxK** (Gao et al. 2024, dead latents): the top ``k_aux`` pre-activations among dead latents
reconstruct the detached residual error e = x - x_hat, and the loss is that reconstruction's FVU
of e (0 when there is nothing to reconstruct); variants weight it by ``aux_k_coef``.

**aux_zipf** (Ayonrinde 2024, "Adaptive Sparse Allocation with
Mutual Choice & Feature Choice Sparse Autoencoders"): an auxiliary loss for dead *and* under-used
latents.

The paper observes that latent usage in trained SAEs roughly follows a Zipf law over latents
ranked by usage, and generalises the AuxK loss (which only helps latents that never fire) to
latents that fire less than their Zipf share. The paper gives no code; this is our reading of its
description, written down so that it can be checked:

Usage. ``u_j`` is an exponential moving average (decay ``threshold_decay``) of latent j's share of
the batch's kept (nonzero) token-latent matches, so ``sum_j u_j = 1``; it starts uniform, 1/F.

Target. Rank latents by usage (r(j) = 1 for the most used; ties by index). The Zipf share of rank
r over F latents with exponent a is

    p_r = r^-a / sum_{s=1..F} s^-a        (a = 0: the uniform share 1/F)

Under-used set and weights. A latent is under-used when it is below its Zipf share *and* below the
mean share,

    U = { j : u_j < min(p_{r(j)}, 1/F) },       w_j = 1 - u_j / p_{r(j)}  in (0, 1],

the "below the mean" clause keeps the head of the ranking (latents used more than average, where
a fixed Zipf curve can sit above a real SAE's flatter head) out of U: the loss exists to lift the
tail. Dead latents (u_j -> 0) get w_j = 1.

Loss. Exactly AuxK's residual reconstruction, with U in place of the dead set and the deficit as
a gradient weight: with e = (x - x_hat) detached, for each token n the top ``k_aux`` latents of U
by pre-activation (A_n) reconstruct e:

    e_hat_n = sum_{j in A_n} z~_nj W_dec[j],    z~_nj = ReLU(pre_nj) with d z~_nj / d pre_nj
                                                         scaled by w_j (value unchanged)
    aux_zipf = sum_n ||e_n - e_hat_n||^2 / sum_n ||e_n - mean(e)||^2

and the training loss adds ``aux_zipf_coef * aux_zipf``. With U = the dead set (all w = 1) this
is AuxK; the Zipf target extends it to latents that fire, but too rarely, and the weight w_j makes
the push proportional to the relative shortfall (a latent at 90% of its target is barely pushed).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from saes.kernels import sparse_decode, sparse_select_encode, topk_select
from saes.training.distributed import Comm, centred_sum_sq

__all__ = [
    "aux_k_loss",
    "aux_zipf_loss",
    "capped_allocation",
    "fvu_loss",
    "underused_weights",
    "usage_ranks",
    "zipf_shares",
]


def fvu_loss(x: Tensor, x_hat: Tensor, comm: Comm | None = None) -> Tensor:
    """sum ||x - x_hat||^2 / sum ||x - mean(x)||^2 over the batch (the global batch under comm)."""
    total = centred_sum_sq(x, comm).clamp_min(1e-12)
    return F.mse_loss(x_hat, x, reduction="sum") / total  # fused forward and backward


def aux_k_loss(
    x: Tensor,
    x_hat: Tensor,
    aux_values: Tensor,
    aux_indices: Tensor,
    W_dec: Tensor,
    comm: Comm | None = None,
) -> Tensor:
    """FVU of the selected (dead) latents' reconstruction of the detached residual error."""
    error = (x - x_hat).detach()
    error_hat = sparse_decode(aux_values, aux_indices, W_dec)
    return fvu_loss(error, error_hat, comm).nan_to_num(0.0)


def zipf_shares(
    n: int, exponent: float, dtype: torch.dtype = torch.float64, device: torch.device | str = "cpu"
) -> Tensor:
    """p_r = r^-exponent / sum_s s^-exponent for ranks r = 1..n (sums to 1; exponent 0: uniform)."""
    if n < 1:
        raise ValueError(f"zipf_shares needs n >= 1, got {n}")
    if exponent < 0:
        raise ValueError(f"zipf exponent must be >= 0, got {exponent}")
    p = torch.arange(1, n + 1, dtype=torch.float64, device=device).pow(-exponent)
    return (p / p.sum()).to(dtype)


def usage_ranks(usage: Tensor) -> Tensor:
    """0-based rank of each latent by usage, most used first (ties broken by index)."""
    order = torch.sort(usage, descending=True, stable=True).indices
    ranks = torch.empty_like(order)
    ranks[order] = torch.arange(order.numel(), device=order.device)
    return ranks


def capped_allocation(total: int, weights: Tensor, cap: int) -> Tensor:
    """Integers m_j >= 0 with sum m_j = total, m_j <= cap, proportional to ``weights`` [F].

    Water-filling: latents whose proportional share exceeds ``cap`` get ``cap`` and the rest is
    shared among the others in proportion; then largest-remainder rounding keeps the sum exact.
    """
    F = weights.numel()
    if total < 0 or cap < 0 or total > cap * F:
        raise ValueError(f"cannot allocate {total} matches over {F} latents capped at {cap} each")
    w = weights.to(torch.float64).clamp_min(0)
    if not bool((w > 0).any()):
        raise ValueError("capped_allocation needs at least one positive weight")
    alloc = torch.zeros(F, dtype=torch.float64, device=weights.device)
    capped = torch.zeros(F, dtype=torch.bool, device=weights.device)
    for _ in range(F):
        free = ~capped
        rest = total - cap * int(capped.sum())
        wf = torch.where(free, w, torch.zeros_like(w))
        if float(wf.sum()) <= 0:  # every positive-weight latent is capped: spread over the others
            wf = free.to(torch.float64)
        alloc = torch.where(free, rest * wf / wf.sum(), torch.full_like(w, float(cap)))
        over = free & (alloc > cap)
        if not bool(over.any()):
            break
        capped |= over
    m = alloc.floor().clamp(0, cap)
    short = total - int(m.sum())
    if short > 0:
        frac = torch.where(m < cap, alloc - m, torch.full_like(m, -1.0))
        m[torch.topk(frac, short).indices] += 1
    elif short < 0:  # float round-off only
        frac = torch.where(m > 0, alloc - m, torch.full_like(m, 2.0))
        m[torch.topk(frac, -short, largest=False).indices] -= 1
    return m.to(torch.long)


def underused_weights(usage: Tensor, exponent: float) -> Tensor:
    """w_j = 1 - u_j / p_{r(j)} for under-used latents (see the module docstring), else 0."""
    F = usage.numel()
    target = zipf_shares(F, exponent, dtype=usage.dtype, device=usage.device)[usage_ranks(usage)]
    under = usage < torch.minimum(target, torch.full_like(target, 1.0 / F))
    return torch.where(under, 1.0 - usage / target, torch.zeros_like(usage))


def aux_zipf_loss(
    x: Tensor,
    x_hat: Tensor,
    pre: Tensor,
    weights: Tensor,
    k_aux: int,
    sae,
    pre_is_transposed: bool = False,
    comm: Comm | None = None,
) -> Tensor | None:
    """The aux_zipf term (unweighted by its coefficient) for one batch, or None when U is empty.

    ``x`` [B, d_in] is the scaled (uncentred) input, ``x_hat`` its reconstruction, ``pre`` the
    batch's pre-activations without autograd ([B, F], or [F, B] with ``pre_is_transposed``),
    ``weights`` [F] from :func:`underused_weights`.
    """
    under = weights.nonzero().squeeze(1)
    if under.numel() == 0:
        return None
    ka = min(k_aux, under.numel())
    with torch.no_grad():
        sub = pre.index_select(0, under).t() if pre_is_transposed else pre.index_select(1, under)
        sel, local = topk_select(sub.contiguous(), ka)
        idx = under[local]
    values = sparse_select_encode(
        x, sae.W_enc, sae.b_enc, idx, selected=sel.to(sae.W_enc.dtype), b_dec=sae.b_dec
    )
    w = weights[idx].to(values.dtype)
    scaled = values.detach() + w * (values - values.detach())  # same values, gradient times w_j
    return aux_k_loss(x, x_hat, scaled, idx, sae.W_dec, comm)
