"""The encoders: the dense pre-activation GEMM and the differentiable selected entries.

:func:`pre_acts` is the only dense step (B x d_in x d_sae). :class:`SparseSelectEncode` returns
ReLU of the chosen entries with the sparse backward of :mod:`saes.kernels.sparse_ops`;
:func:`topk_encode` / :func:`topk_encode_with_aux` choose those entries by top-k (and AuxK).
"""

from __future__ import annotations

import torch
from torch import Tensor

from saes.kernels.select import topk_select
from saes.kernels.sparse_ops import (
    LatentOrder,
    _dense_codes,
    _order_for,
    _sddmm,
    sparse_encode_backward,
)
from saes.kernels.workspace import _workspace

#: How the encoder bias enters the GEMM: "addmm" (torch.addmm), "mm_add" (mm, then add_) or
#: "augment" (one more GEMM column: [x, 1] @ [W_enc; b_enc], no extra pass over [B, d_sae]).
#: pre_acts reads it from this module: set ``saes.kernels.encode.GEMM_BIAS`` to change it.
GEMM_BIAS = "augment"


def pre_acts(
    x_in: Tensor,
    W_enc: Tensor,
    b_enc: Tensor,
    *,
    dtype: torch.dtype | None = None,
    out: Tensor | None = None,
) -> Tensor:
    """Dense pre-activations ``x_in @ W_enc + b_enc`` [B, d_sae], computed without autograd.

    This is the selection input of every sparse variant; gradients flow through
    :func:`sparse_select_encode` / :func:`topk_encode`, never through this matrix.
    ``dtype`` (e.g. ``torch.bfloat16``) runs the GEMM in that precision. ``out``: write there.
    """
    with torch.no_grad():
        dtype = dtype or W_enc.dtype
        B, K = x_in.shape
        m = W_enc.shape[1]
        if out is None:
            out = torch.empty(B, m, dtype=dtype, device=x_in.device)
        if GEMM_BIAS == "augment":
            # [x, 1] @ [W; b]: the bias costs one GEMM column instead of a pass over [B, d_sae].
            # The augmented weight copy keeps W_enc's memory layout (no transposition).
            xa = _workspace("x_aug", (B, K + 1), dtype, x_in.device)
            Wa = _workspace("W_aug", (K + 1) * m, dtype, x_in.device)
            if xa is not None and Wa is not None:
                xa[:, :K].copy_(x_in)
                xa[:, K].fill_(1)
                if W_enc.t().is_contiguous() and not W_enc.is_contiguous():  # [d_sae, d_in] storage
                    Wa_t = Wa.view(m, K + 1)
                    Wa_t[:, :K].copy_(W_enc.t())
                    Wa_t[:, K].copy_(b_enc)
                    Wa = Wa_t.t()
                else:
                    Wa = Wa.view(K + 1, m)
                    Wa[:K].copy_(W_enc)
                    Wa[K].copy_(b_enc)
                return torch.mm(xa, Wa, out=out)
        x_in, W_enc, b_enc = x_in.to(dtype), W_enc.to(dtype), b_enc.to(dtype)
        if GEMM_BIAS == "mm_add":
            return torch.mm(x_in, W_enc, out=out).add_(b_enc)
        return torch.addmm(b_enc, x_in, W_enc, out=out)


#: AuxK selects k_aux of the n dead latents for every row: when k_aux * DENSE_SUBSET_RATIO >= n
#: its codes are dense enough that [B, n] GEMMs beat row gathers (a gathered row costs ~10-20x a
#: GEMM multiply-add per element on CPU), for the encoder backward and for sparse_decode.
DENSE_SUBSET_RATIO = 8


class SparseSelectEncode(torch.autograd.Function):
    """values = ReLU(pre[rows, cols]) with pre = (x - b_dec) @ W_enc + b_enc, sparse backward.

    ``apply(x, W_enc, b_enc, b_dec, x_c, cols, rows, selected)``:

    * ``x`` [B, d_in]: the encoder input; when ``b_dec`` is None it is already centred and
      ``x_c`` must be ``x`` itself; otherwise ``x_c = x - b_dec`` (computed by the caller without
      autograd) and gradients reach ``b_dec`` (through the GEMV ``-W_enc @ grad_b_enc`` when ``x``
      needs no gradient).
    * ``cols`` [B, k] (row of entry (b, j) is b; ``rows`` None) or flat [N] with ``rows`` [N].
    * ``selected``: the pre-activation values at those entries, computed without autograd (from
      the dense matrix the selection ran on, or recomputed exactly).

    The selection itself (which entries) is a non-differentiable choice made outside.
    """

    @staticmethod
    def forward(ctx, x, W_enc, b_enc, b_dec, x_c, cols, rows, selected):  # type: ignore[override]
        values = torch.relu(selected)
        ctx.order = _order_for(cols, W_enc.shape[1], rows)
        ctx.save_for_backward(x_c, W_enc, cols, rows, values)
        return values

    @staticmethod
    def backward(ctx, grad_values):  # type: ignore[override]
        x_c, W_enc, cols, rows, values = ctx.saved_tensors
        need_x, need_W, need_b, need_bdec = ctx.needs_input_grad[:4]
        g = grad_values * (values > 0)
        # grad wrt b_dec is -sum_b grad_x_c[b] = -W_enc @ grad_b_enc: no gather needed for it
        gx, gW, gb = sparse_encode_backward(
            x_c,
            W_enc,
            cols,
            g,
            rows,
            need_x=need_x,
            need_W=need_W,
            need_b=need_b or need_bdec,
            order=ctx.order,
        )
        gbd = None
        if need_bdec:
            gbd = -torch.mv(W_enc, gb.to(W_enc.dtype))
        return gx, gW, gb if need_b else None, gbd, None, None, None, None


def sparse_select_encode(
    x_in: Tensor,
    W_enc: Tensor,
    b_enc: Tensor,
    cols: Tensor,
    rows: Tensor | None = None,
    *,
    pre: Tensor | None = None,
    selected: Tensor | None = None,
    b_dec: Tensor | None = None,
) -> Tensor:
    """Differentiable ``ReLU(pre)`` at chosen entries, with the sparse backward.

    For selection rules (g-SAE, feature choice, mutual choice, ...) that decide *which* entries
    of the pre-activation matrix to keep outside autograd: ``cols`` [B, k] (k per row) or flat
    COO ``rows`` [N], ``cols`` [N]. The values are read from ``pre`` (the matrix returned by
    :func:`pre_acts`) or ``selected`` when given, else recomputed exactly from the weights.
    """
    with torch.no_grad():
        x_c = x_in - b_dec if b_dec is not None else x_in
        if selected is None:
            if pre is not None:
                selected = (
                    pre.gather(1, cols) if rows is None else pre[rows.reshape(-1), cols.reshape(-1)]
                ).to(W_enc.dtype)
            else:
                selected = _sddmm(x_c, W_enc, b_enc, cols, rows)
    return SparseSelectEncode.apply(x_in, W_enc, b_enc, b_dec, x_c, cols, rows, selected)


def _centred_pre(x_in, W_enc, b_enc, b_dec, dtype, return_pre):
    x_c = x_in.detach() - b_dec.detach() if b_dec is not None else x_in.detach()
    gemm_dtype = dtype if dtype is not None else W_enc.dtype
    out = (
        None
        if return_pre
        else _workspace("pre", (x_c.shape[0], W_enc.shape[1]), gemm_dtype, x_c.device)
    )
    pre = pre_acts(x_c, W_enc.detach(), b_enc.detach(), dtype=dtype, out=out)
    return x_c, pre


def topk_encode(
    x_in: Tensor,
    W_enc: Tensor,
    b_enc: Tensor,
    k: int,
    *,
    b_dec: Tensor | None = None,
    dtype: torch.dtype | None = None,
    return_pre: bool = False,
    select: str = "auto",
    margin: int = 0,
):
    """TopK encoder: ``(values [B, k], indices [B, k] int64)`` of ReLU(x_in @ W_enc + b_enc).

    Differentiable wrt ``x_in``, ``W_enc``, ``b_enc`` (and ``b_dec`` when given) with the
    sparse backward. ``return_pre=True`` also returns the dense pre-activations (a fresh
    tensor, no autograd). Values are in unspecified order within a row.

    With a GEMM ``dtype`` below the weights' (bf16), the selected values are recomputed exactly;
    ``margin`` > 0 selects the top ``k + margin`` in that dtype, recomputes them, and keeps the
    top k of the exact values, so near-ties at the k-th place no longer pick differently from
    the full-precision encoder (none of 524,288 codes differed on SmolLM2 at margin 4).
    """
    with torch.no_grad():
        x_c, pre = _centred_pre(x_in, W_enc, b_enc, b_dec, dtype, return_pre)
        low = pre.dtype != W_enc.dtype
        wide = min(k + margin, pre.shape[1]) if low else k
        sel, idx = topk_select(pre, wide, method=select)
        if low:
            sel = _sddmm(x_c, W_enc, b_enc, idx, None)
            if wide > k:
                best = sel.topk(k, dim=1)
                sel, idx = best.values, idx.gather(1, best.indices)
        idx._sae_latent_order = LatentOrder(
            idx.detach(), W_enc.shape[1]
        )  # shared with sparse_decode
    values = SparseSelectEncode.apply(x_in, W_enc, b_enc, b_dec, x_c, idx, None, sel)
    return (values, idx, pre) if return_pre else (values, idx)


def topk_encode_with_aux(
    x_in: Tensor,
    W_enc: Tensor,
    b_enc: Tensor,
    k: int,
    dead_mask: Tensor | None,
    k_aux: int,
    *,
    b_dec: Tensor | None = None,
    dtype: torch.dtype | None = None,
    select: str = "auto",
):
    """TopK plus AuxK selection from ONE encoder GEMM.

    Returns ``(values, indices, aux_values, aux_indices)``: the top-k of ReLU(pre) and the
    top-min(k_aux, n_dead) of ReLU(pre) among the latents where ``dead_mask`` [d_sae] is True
    (``None, None`` when there are no dead latents); ReLU applies to both (a dead latent with a
    negative pre-activation contributes 0). Both sets are differentiated in one backward: the
    aux entries' gradients flow into the same W_enc / b_enc columns. When the aux codes are
    dense within the dead set (``k_aux * DENSE_SUBSET_RATIO >= n_dead``) their part of the
    backward, and ``sparse_decode(aux_values, aux_indices, W_dec)``, use [B, n_dead] GEMMs
    instead of B*k_aux row gathers (still nothing of size [B, d_sae]).
    """
    n_dead = 0 if dead_mask is None else int(dead_mask.sum())
    if n_dead == 0 or k_aux <= 0:
        values, idx = topk_encode(x_in, W_enc, b_enc, k, b_dec=b_dec, dtype=dtype, select=select)
        return values, idx, None, None
    with torch.no_grad():
        x_c, pre = _centred_pre(x_in, W_enc, b_enc, b_dec, dtype, False)
        sel, idx = topk_select(pre, k, method=select)
        ka = min(k_aux, n_dead)
        dead_idx = dead_mask.nonzero().squeeze(1)
        sub = pre if n_dead == pre.shape[1] else pre.index_select(1, dead_idx)
        asel, local = topk_select(sub, ka, method=select)
        aidx = dead_idx[local]
        if pre.dtype != W_enc.dtype:
            sel = _sddmm(x_c, W_enc, b_enc, idx, None)
            asel = _sddmm(x_c, W_enc, b_enc, aidx, None)
        idx._sae_latent_order = LatentOrder(idx.detach(), W_enc.shape[1])
        dense_aux = ka * DENSE_SUBSET_RATIO >= n_dead
        if dense_aux:  # sparse_decode of these indices then uses dense GEMMs over the dead set
            aidx._sae_dense_subset = (dead_idx, local)
    if dense_aux:
        values, aux_values = _TopKDenseAuxEncode.apply(
            x_in, W_enc, b_enc, b_dec, x_c, idx, sel, dead_idx, local, asel
        )
        return values, idx, aux_values, aidx
    cols = torch.cat([idx, aidx], 1)
    both = SparseSelectEncode.apply(
        x_in, W_enc, b_enc, b_dec, x_c, cols, None, torch.cat([sel, asel], 1)
    )
    return both[:, :k], idx, both[:, k:], aidx


class _TopKDenseAuxEncode(torch.autograd.Function):
    """Main top-k entries (sparse backward) + AuxK entries over a small latent subset (dense)."""

    @staticmethod
    def forward(ctx, x, W_enc, b_enc, b_dec, x_c, idx, sel, latents, local, asel):  # type: ignore[override]
        values, aux_values = torch.relu(sel), torch.relu(asel)
        ctx.order = _order_for(idx, W_enc.shape[1], None)
        ctx.save_for_backward(x_c, W_enc, idx, values, latents, local, aux_values)
        return values, aux_values

    @staticmethod
    def backward(ctx, grad_values, grad_aux):  # type: ignore[override]
        x_c, W_enc, idx, values, latents, local, aux_values = ctx.saved_tensors
        need_x, need_W, need_b, need_bdec = ctx.needs_input_grad[:4]
        if grad_values is None:
            grad_values = torch.zeros_like(values)
        g = grad_values * (values > 0)
        gx, gW, gb = sparse_encode_backward(
            x_c, W_enc, idx, g, None, need_x=need_x, need_W=need_W, need_b=True, order=ctx.order
        )
        if grad_aux is not None:
            G = _dense_codes((grad_aux * (aux_values > 0)).to(W_enc.dtype), local, latents.numel())
            gb.index_add_(0, latents, G.sum(0))
            if need_W:
                gW.index_add_(1, latents, x_c.t().to(G.dtype) @ G)
            if need_x:
                gx = gx + (G @ W_enc.index_select(1, latents).t()).to(gx.dtype)
        gbd = -torch.mv(W_enc, gb.to(W_enc.dtype)) if need_bdec else None
        return gx, gW, gb if need_b else None, gbd, None, None, None, None, None, None
