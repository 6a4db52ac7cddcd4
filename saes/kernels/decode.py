"""The decoders: sparse codes times decoder rows, with no dense [B, d_sae] code.

:class:`SparseDecode` is an ``embedding_bag`` over the k selected decoder rows;
:class:`_DenseSubsetDecode` handles AuxK codes that are dense within a small latent subset
(``indices._sae_dense_subset``, set by :func:`saes.kernels.encode.topk_encode_with_aux`) with
[B, n] GEMMs instead.
"""

from __future__ import annotations

import torch
from torch import Tensor

from saes.kernels.sparse_ops import (
    _dense_codes,
    _entry_dots,
    _latent_major_sum,
    _order_for,
    _row_major_sum,
)


class SparseDecode(torch.autograd.Function):
    """x_hat[r] = sum over entries (r, c) of values * W_dec[c] (+ b_dec), sparse backward.

    ``apply(values, indices, W_dec, b_dec, rows, n_rows)``: ``indices``/``values`` [B, k], or flat
    [N] with ``rows`` [N] and ``n_rows``. ``grad_W_dec`` is a dense [d_sae, d_in] matrix that
    is zero outside the selected rows.
    """

    @staticmethod
    def forward(ctx, values, indices, W_dec, b_dec, rows, n_rows):  # type: ignore[override]
        out = _row_major_sum(W_dec, indices, values.to(W_dec.dtype), rows, n_rows)
        if b_dec is not None:
            out += b_dec
        ctx.save_for_backward(values, indices, W_dec, rows)
        ctx.order = _order_for(indices, W_dec.shape[0], rows)
        ctx.has_b_dec = b_dec is not None
        return out

    @staticmethod
    def backward(ctx, grad_out):  # type: ignore[override]
        values, indices, W_dec, rows = ctx.saved_tensors
        gv = gW = gb = None
        grad_out = grad_out.contiguous()
        if ctx.needs_input_grad[0]:
            gv = _entry_dots(grad_out, W_dec, indices, rows).view(values.shape).to(values.dtype)
        if ctx.needs_input_grad[2]:
            gW = _latent_major_sum(grad_out, values.to(W_dec.dtype), ctx.order)
        if ctx.has_b_dec and ctx.needs_input_grad[3]:
            gb = grad_out.sum(0)
        return gv, None, gW, gb, None, None


def sparse_decode(
    values: Tensor,
    indices: Tensor,
    W_dec: Tensor,
    b_dec: Tensor | None = None,
    *,
    rows: Tensor | None = None,
    n_rows: int | None = None,
) -> Tensor:
    """Sparse decode ``sum_j values[b, j] * W_dec[indices[b, j]] (+ b_dec)`` -> [B, d_in].

    ``values``/``indices`` [B, k], or flat COO [N] with ``rows`` [N] and ``n_rows``.
    Differentiable wrt ``values``, ``W_dec`` and ``b_dec``; no dense [B, d_sae] code is built.
    """
    if rows is not None and n_rows is None:
        raise ValueError("sparse_decode with flat COO entries needs n_rows")
    subset = getattr(indices, "_sae_dense_subset", None) if rows is None else None
    if subset is not None:  # AuxK codes over a small latent subset: dense GEMMs are cheaper
        return _DenseSubsetDecode.apply(values, subset[0], subset[1], W_dec, b_dec)
    if rows is None:
        n_rows = values.shape[0]
    return SparseDecode.apply(values, indices, W_dec, b_dec, rows, n_rows)


class _DenseSubsetDecode(torch.autograd.Function):
    """Decode of codes whose indices all lie in ``latents`` [n] (positions ``local`` [B, k])."""

    @staticmethod
    def forward(ctx, values, latents, local, W_dec, b_dec):  # type: ignore[override]
        Z = _dense_codes(values.to(W_dec.dtype), local, latents.numel())
        W_sub = W_dec.index_select(0, latents)
        out = Z @ W_sub if b_dec is None else torch.addmm(b_dec, Z, W_sub)
        ctx.save_for_backward(Z, W_sub, latents, local)
        ctx.d_sae = W_dec.shape[0]
        ctx.has_b_dec = b_dec is not None
        return out

    @staticmethod
    def backward(ctx, grad_out):  # type: ignore[override]
        Z, W_sub, latents, local = ctx.saved_tensors
        gv = gW = gb = None
        if ctx.needs_input_grad[0]:
            gv = (grad_out @ W_sub.t()).gather(1, local)
        if ctx.needs_input_grad[3]:
            gW = grad_out.new_zeros(ctx.d_sae, grad_out.shape[1]).index_copy_(
                0, latents, Z.t() @ grad_out
            )
        if ctx.has_b_dec and ctx.needs_input_grad[4]:
            gb = grad_out.sum(0)
        return gv, None, None, gW, gb
