"""Sparse CPU kernels for TopK-style SAE training.

Shapes: ``x_in`` [B, d_in] (the b_dec-centred input), ``W_enc`` [d_in, d_sae], ``b_enc`` [d_sae],
``W_dec`` [d_sae, d_in], ``b_dec`` [d_in].

Only the encoder forward GEMM (B x d_in x d_sae) is dense. Everything else touches only the
B*k selected entries:

* selection: exact top-k on the pre-activations (no ReLU pass over the dense matrix; ReLU is
  applied to the k kept values: ReLU-then-top-k and top-k-then-ReLU keep the same values since
  ReLU is monotone; when fewer than k entries are positive the kept non-positive entries become
  0 either way and get no gradient -- which zeros are kept is arbitrary in both orders);
* decode: ``embedding_bag`` over the k selected decoder rows (no dense [B, d_sae] code);
* encoder backward: with G the sparse [B, d_sae] gradient of the pre-activations (B*k
  nonzeros), ``grad_W_enc = x_in^T G`` is computed by sorting the entries by latent and
  summing ``g * x_in[row]`` per latent (``embedding_bag`` with one bag per latent),
  ``grad_b_enc`` by ``index_add``, ``grad_x_in = G W_enc^T`` by ``embedding_bag`` over the rows
  of ``W_enc^T``; no dense [B, d_sae] matrix is built anywhere in the backward.

Public API::

    pre_acts(x_in, W_enc, b_enc, *, dtype=None, out=None) -> [B, d_sae]      (no autograd)
    topk_select(pre, k) -> (pre values [B, k], indices [B, k])              (no autograd)
    topk_encode(x_in, W_enc, b_enc, k, *, b_dec=None, dtype=None, return_pre=False)
        -> (values [B, k], indices [B, k] int64) [+ pre]
    topk_encode_with_aux(x_in, W_enc, b_enc, k, dead_mask, k_aux, *, b_dec=None, dtype=None)
        -> (values, indices, aux_values | None, aux_indices | None)
    sparse_select_encode(x_in, W_enc, b_enc, cols, rows=None, *, pre=None, selected=None,
                         b_dec=None) -> values at the (row, col) entries of ReLU(pre)
    SparseSelectEncode  (the autograd.Function behind topk_encode & sparse_select_encode)
    sparse_encode_backward(x_in, W_enc, cols, grad, rows=None, *, need_x, need_W, need_b)
    sparse_decode(values, indices, W_dec, b_dec=None, *, rows=None, n_rows=None) -> [B, d_in]

``b_dec=`` (optional everywhere on the encoder side): pass the *raw* input as ``x_in`` and the
decoder bias; the centring ``x - b_dec`` happens inside and, when the raw input needs no
gradient, b_dec's encoder-side gradient is the GEMV ``-W_enc @ grad_b_enc`` instead of a
B*k*d_in gather for ``grad_x_in``. Results are identical to centring outside.

``dtype=torch.bfloat16``: the encoder GEMM (and the selection) run in bf16; the k kept values
are then recomputed exactly in the parameters' dtype from the selected (row, col) pairs, so the
outputs and gradients are full precision and only *which* latents win near-ties can differ.

The dense pre-activation matrix of the TopK paths lives in a reused per-thread workspace (a
fresh B x d_sae allocation costs more in page faults than the selection itself on CPU);
``release_workspace()`` frees it. ``return_pre=True`` returns a fresh copy instead.
"""
from __future__ import annotations

import threading
from typing import Optional

import torch
import torch.nn.functional as F
from torch import Tensor

__all__ = [
    "pre_acts",
    "topk_select",
    "topk_encode",
    "topk_encode_with_aux",
    "sparse_select_encode",
    "SparseSelectEncode",
    "sparse_encode_backward",
    "sparse_decode",
    "SparseDecode",
    "LatentOrder",
    "release_workspace",
]

# ------------------------------------------------------------------------------------------------
# workspace for the dense pre-activations (CPU only: CUDA has a caching allocator)
# ------------------------------------------------------------------------------------------------
_tls = threading.local()


def _workspace(shape: tuple[int, ...], dtype: torch.dtype, device: torch.device) -> Optional[Tensor]:
    if device.type != "cpu":
        return None
    numel = 1
    for s in shape:
        numel *= s
    bufs = getattr(_tls, "bufs", None)
    if bufs is None:
        bufs = _tls.bufs = {}
    buf = bufs.get(dtype)
    if buf is None or buf.numel() < numel:
        bufs[dtype] = buf = torch.empty(numel, dtype=dtype, device=device)
    return buf[:numel].view(shape)


def release_workspace() -> None:
    """Free this thread's cached pre-activation workspace."""
    _tls.bufs = {}


# ------------------------------------------------------------------------------------------------
# dense part: the encoder GEMM
# ------------------------------------------------------------------------------------------------
def pre_acts(
    x_in: Tensor,
    W_enc: Tensor,
    b_enc: Tensor,
    *,
    dtype: Optional[torch.dtype] = None,
    out: Optional[Tensor] = None,
) -> Tensor:
    """Dense pre-activations ``x_in @ W_enc + b_enc`` [B, d_sae], computed without autograd.

    This is the selection input of every sparse variant; gradients flow through
    :func:`sparse_select_encode` / :func:`topk_encode`, never through this matrix.
    ``dtype`` (e.g. ``torch.bfloat16``) runs the GEMM in that precision.
    """
    with torch.no_grad():
        if dtype is not None and dtype != W_enc.dtype:
            x_in, W_enc, b_enc = x_in.to(dtype), W_enc.to(dtype), b_enc.to(dtype)
        if out is None:
            return torch.addmm(b_enc, x_in, W_enc)
        return torch.addmm(b_enc, x_in, W_enc, out=out)


# ------------------------------------------------------------------------------------------------
# selection
# ------------------------------------------------------------------------------------------------
def topk_select(pre: Tensor, k: int, *, method: str = "auto") -> tuple[Tensor, Tensor]:
    """Exact top-k per row of ``pre`` [B, n] (raw values, unsorted order, int64 indices).

    No autograd. The values are the *pre*-activations (apply ReLU yourself); ties are broken
    arbitrarily (any valid top-k set). ``method``: ``"topk"`` (``torch.topk``), ``"tree"``
    (the max-tree below) or ``"auto"`` (the tree when the rows are long enough to pay off).

    The tree: ``torch.topk`` costs ~5-15 ns per element on CPU while a vectorised max over
    groups costs well under 1 ns, so we build group maxima level by level (level 1: groups of
    ``f1`` entries of ``pre``; higher levels: groups of ``f`` maxima) and descend from the top:
    the k largest entries of a row lie in the k groups with the largest maxima (each of those
    k maxima is itself >= anything in a group outside them), so each level only needs a top-k
    over the k*f children of the k winning groups. Group members are ``c`` apart inside blocks
    of ``f*c`` (a max over a middle axis vectorises; the members are still close in memory).
    """
    with torch.no_grad():
        plan = _tree_plan(pre.shape[1], k) if method in ("auto", "tree") else None
        if plan is None:
            return torch.topk(pre, k, dim=1, sorted=False)
        return _tree_topk(pre, k, plan)


def _lane_width(n: int, f: int, c_max: int = 32) -> int:
    c = c_max
    while c > 1 and n % (f * c):
        c //= 2
    return c if n % (f * c) == 0 else 0


def _tree_plan(n: int, k: int) -> Optional[list[tuple[int, int]]]:
    """[(fanout, lane width)] per level, or None when a plain torch.topk is as good."""
    if n < 96 * k:
        return None
    plan = []
    f = 8 if n < 512 * k else 16
    while n // f >= 3 * k:
        c = _lane_width(n, f)
        if not c:
            break
        plan.append((f, c))
        n //= f
        f = 4
    return plan or None


def _tree_topk(pre: Tensor, k: int, plan: list[tuple[int, int]]) -> tuple[Tensor, Tensor]:
    B, n = pre.shape
    levels = [pre]
    for f, c in plan:
        n = levels[-1].shape[1]
        levels.append(levels[-1].view(B, n // (f * c), f, c).amax(2).view(B, n // f))
    _, idx = torch.topk(levels[-1], k, dim=1, sorted=False)
    for (f, c), src in zip(reversed(plan), reversed(levels[:-1])):
        blk = torch.div(idx, c, rounding_mode="floor")
        base = blk * (f * c - c) + idx  # blk*f*c + lane
        cols = (base.unsqueeze(2) + torch.arange(0, f * c, c, device=pre.device)).view(B, k * f)
        vals, j = torch.topk(src.gather(1, cols), k, dim=1, sorted=False)
        idx = cols.gather(1, j)
    return vals, idx


# ------------------------------------------------------------------------------------------------
# the sparse backward shared by every selection rule
# ------------------------------------------------------------------------------------------------
class LatentOrder:
    """The selected entries sorted by latent: computed once, shared by every backward using them.

    For ``cols`` [B, k] (row of entry n is n // k) or flat ``cols`` [N] with ``rows`` [N].
    ``topk_encode`` attaches one to the indices it returns, so ``sparse_decode`` of the same
    indices and the encoder backward sort the B*k entries only once per step.
    """

    __slots__ = ("cols", "rows", "n_latents", "_cache")

    def __init__(self, cols: Tensor, n_latents: int, rows: Optional[Tensor] = None) -> None:
        self.cols, self.rows, self.n_latents = cols, rows, n_latents
        self._cache: Optional[tuple[Tensor, Tensor, Tensor]] = None

    def get(self) -> tuple[Tensor, Tensor, Tensor]:
        """(perm, offsets [n_latents], rows in sorted order)."""
        if self._cache is None:
            cols = self.cols.reshape(-1)
            # int32 keys sort ~2x faster than int64
            keys = cols.to(torch.int32) if self.n_latents < 2**31 else cols
            perm = torch.argsort(keys)
            counts = torch.bincount(cols, minlength=self.n_latents)
            offsets = torch.cumsum(counts, 0).sub_(counts)
            if self.rows is None:
                rows_s = torch.div(perm, self.cols.shape[1], rounding_mode="floor")
            else:
                rows_s = self.rows.reshape(-1)[perm]
            self._cache = (perm, offsets, rows_s)
        return self._cache


def _order_for(cols: Tensor, n_latents: int, rows: Optional[Tensor]) -> LatentOrder:
    order = getattr(cols, "_sae_latent_order", None)
    if isinstance(order, LatentOrder) and order.n_latents == n_latents and rows is None:
        return order
    return LatentOrder(cols, n_latents, rows)


def _latent_major_sum(table: Tensor, weights: Tensor, order: LatentOrder) -> Tensor:
    """out[c] = sum over entries (r, c) of weights * table[r]: a [n_latents, table.shape[1]] matrix."""
    perm, offsets, rows_s = order.get()
    return F.embedding_bag(
        rows_s, table, offsets, mode="sum", per_sample_weights=weights.reshape(-1)[perm]
    )


def _row_major_sum(
    table: Tensor, cols: Tensor, weights: Tensor, rows: Optional[Tensor], n_rows: int
) -> Tensor:
    """out[r] = sum over entries (r, c) of weights * table[c]: a [n_rows, table.shape[1]] matrix."""
    if rows is None:
        return F.embedding_bag(cols, table, mode="sum", per_sample_weights=weights)
    rows = rows.reshape(-1)
    if rows.numel() > 1 and not bool((rows[1:] >= rows[:-1]).all()):
        order = torch.argsort(rows)
        rows, cols, weights = rows[order], cols.reshape(-1)[order], weights.reshape(-1)[order]
    counts = torch.bincount(rows, minlength=n_rows)
    offsets = torch.cumsum(counts, 0) - counts
    return F.embedding_bag(
        cols.reshape(-1), table, offsets, mode="sum", per_sample_weights=weights.reshape(-1)
    )


def _rows_of(W: Tensor) -> Tensor:
    """``W.t()`` as a row-contiguous matrix (free when W is already a transposed view)."""
    Wt = W.t()
    return Wt if Wt.is_contiguous() else Wt.contiguous()


def _like_layout(grad_t: Tensor, W: Tensor) -> Tensor:
    """``grad_t.t()`` with W's memory layout (no copy when W is a transposed contiguous view)."""
    g = grad_t.t()
    if W.t().is_contiguous() and not W.is_contiguous():
        return g
    return g.contiguous()


def _sddmm(x_in: Tensor, W_enc: Tensor, b_enc: Tensor, cols: Tensor, rows: Optional[Tensor]) -> Tensor:
    """Exact pre-activations x_in[r] . W_enc[:, c] + b_enc[c] at the given entries (no autograd)."""
    with torch.no_grad():
        W_t = _rows_of(W_enc).to(x_in.dtype)
        cols_f = cols.reshape(-1)
        if rows is None:
            B, k = cols.shape
            offsets = torch.arange(0, B * k, k, device=cols.device)
            rows_f = torch.arange(B, device=cols.device).repeat_interleave(k)
        else:
            rows_f = rows.reshape(-1)
            offsets = torch.zeros(1, dtype=torch.long, device=cols.device)
        vals = torch.ops.aten._embedding_bag_per_sample_weights_backward(
            x_in, W_t, cols_f, offsets, rows_f, 0, -1
        )
        vals += b_enc.to(vals.dtype)[cols_f]
        return vals.view(cols.shape)


def sparse_encode_backward(
    x_in: Tensor,
    W_enc: Tensor,
    cols: Tensor,
    grad: Tensor,
    rows: Optional[Tensor] = None,
    *,
    need_x: bool = True,
    need_W: bool = True,
    need_b: bool = True,
    order: Optional[LatentOrder] = None,
) -> tuple[Optional[Tensor], Optional[Tensor], Optional[Tensor]]:
    """Gradients of a sparse selection of ``pre = x_in @ W_enc + b_enc`` entries.

    ``grad`` is dL/dpre at the selected entries (already ReLU-masked), either [B, k] with
    ``cols`` [B, k] (entry (b, j) is at row b) or flat [N] with ``cols`` [N] and ``rows`` [N]
    (any number of entries per row, any order). Returns ``(grad_x_in [B, d_in],
    grad_W_enc [d_in, d_sae] in W_enc's memory layout, grad_b_enc [d_sae])``, each ``None``
    unless requested. Repeated (row, col) entries add up.
    """
    d_sae = W_enc.shape[1]
    grad = grad.to(W_enc.dtype)
    gx = gW = gb = None
    if need_b:
        gb = torch.zeros(d_sae, dtype=grad.dtype, device=grad.device)
        gb.index_add_(0, cols.reshape(-1), grad.reshape(-1))
    if need_W:
        if order is None:
            order = _order_for(cols, d_sae, rows)
        gW = _like_layout(_latent_major_sum(x_in.to(grad.dtype), grad, order), W_enc)
    if need_x:
        gx = _row_major_sum(_rows_of(W_enc), cols, grad, rows, x_in.shape[0]).to(x_in.dtype)
    return gx, gW, gb


# ------------------------------------------------------------------------------------------------
# autograd: selected encoder entries
# ------------------------------------------------------------------------------------------------
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
            x_c, W_enc, cols, g, rows, need_x=need_x, need_W=need_W, need_b=need_b or need_bdec,
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
    rows: Optional[Tensor] = None,
    *,
    pre: Optional[Tensor] = None,
    selected: Optional[Tensor] = None,
    b_dec: Optional[Tensor] = None,
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
    out = None if return_pre else _workspace((x_c.shape[0], W_enc.shape[1]), gemm_dtype, x_c.device)
    pre = pre_acts(x_c, W_enc.detach(), b_enc.detach(), dtype=dtype, out=out)
    return x_c, pre


def topk_encode(
    x_in: Tensor,
    W_enc: Tensor,
    b_enc: Tensor,
    k: int,
    *,
    b_dec: Optional[Tensor] = None,
    dtype: Optional[torch.dtype] = None,
    return_pre: bool = False,
):
    """TopK encoder: ``(values [B, k], indices [B, k] int64)`` of ReLU(x_in @ W_enc + b_enc).

    Differentiable wrt ``x_in``, ``W_enc``, ``b_enc`` (and ``b_dec`` when given) with the
    sparse backward. ``return_pre=True`` also returns the dense pre-activations (a fresh
    tensor, no autograd). Values are in unspecified order within a row.
    """
    with torch.no_grad():
        x_c, pre = _centred_pre(x_in, W_enc, b_enc, b_dec, dtype, return_pre)
        sel, idx = topk_select(pre, k)
        if pre.dtype != W_enc.dtype:
            sel = _sddmm(x_c, W_enc, b_enc, idx, None)
        idx._sae_latent_order = LatentOrder(idx.detach(), W_enc.shape[1])  # shared with sparse_decode
    values = SparseSelectEncode.apply(x_in, W_enc, b_enc, b_dec, x_c, idx, None, sel)
    return (values, idx, pre) if return_pre else (values, idx)


def topk_encode_with_aux(
    x_in: Tensor,
    W_enc: Tensor,
    b_enc: Tensor,
    k: int,
    dead_mask: Optional[Tensor],
    k_aux: int,
    *,
    b_dec: Optional[Tensor] = None,
    dtype: Optional[torch.dtype] = None,
):
    """TopK plus AuxK selection from ONE encoder GEMM.

    Returns ``(values, indices, aux_values, aux_indices)``: the top-k of ReLU(pre) and the
    top-min(k_aux, n_dead) of ReLU(pre) among the latents where ``dead_mask`` [d_sae] is True
    (``None, None`` when there are no dead latents). Both sets share one sparse backward: the
    aux entries' gradients flow into the same W_enc / b_enc columns.
    """
    n_dead = 0 if dead_mask is None else int(dead_mask.sum())
    if n_dead == 0 or k_aux <= 0:
        values, idx = topk_encode(x_in, W_enc, b_enc, k, b_dec=b_dec, dtype=dtype)
        return values, idx, None, None
    with torch.no_grad():
        x_c, pre = _centred_pre(x_in, W_enc, b_enc, b_dec, dtype, False)
        sel, idx = topk_select(pre, k)
        ka = min(k_aux, n_dead)
        if n_dead == pre.shape[1]:
            asel, aidx = topk_select(pre, ka)
        else:
            dead_idx = dead_mask.nonzero().squeeze(1)
            asel, j = topk_select(pre.index_select(1, dead_idx), ka)
            aidx = dead_idx[j]
        cols = torch.cat([idx, aidx], 1)
        selected = torch.cat([sel, asel], 1)
        if pre.dtype != W_enc.dtype:
            selected = _sddmm(x_c, W_enc, b_enc, cols, None)
        idx._sae_latent_order = LatentOrder(idx.detach(), W_enc.shape[1])
    both = SparseSelectEncode.apply(x_in, W_enc, b_enc, b_dec, x_c, cols, None, selected)
    return both[:, :k], idx, both[:, k:], aidx


# ------------------------------------------------------------------------------------------------
# decoder
# ------------------------------------------------------------------------------------------------
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
            idx_f = indices.reshape(-1)
            if rows is None:
                B, k = indices.shape
                offsets = torch.arange(0, B * k, k, device=idx_f.device)
                rows_f = torch.arange(B, device=idx_f.device).repeat_interleave(k)
            else:
                rows_f = rows.reshape(-1)
                offsets = torch.zeros(1, dtype=torch.long, device=idx_f.device)
            gv = torch.ops.aten._embedding_bag_per_sample_weights_backward(
                grad_out, W_dec, idx_f, offsets, rows_f, 0, -1
            ).view(values.shape).to(values.dtype)
        if ctx.needs_input_grad[2]:
            gW = _latent_major_sum(grad_out, values.to(W_dec.dtype), ctx.order)
        if ctx.has_b_dec and ctx.needs_input_grad[3]:
            gb = grad_out.sum(0)
        return gv, None, gW, gb, None, None


def sparse_decode(
    values: Tensor,
    indices: Tensor,
    W_dec: Tensor,
    b_dec: Optional[Tensor] = None,
    *,
    rows: Optional[Tensor] = None,
    n_rows: Optional[int] = None,
) -> Tensor:
    """Sparse decode ``sum_j values[b, j] * W_dec[indices[b, j]] (+ b_dec)`` -> [B, d_in].

    ``values``/``indices`` [B, k], or flat COO [N] with ``rows`` [N] and ``n_rows``.
    Differentiable wrt ``values``, ``W_dec`` and ``b_dec``; no dense [B, d_sae] code is built.
    """
    if rows is not None and n_rows is None:
        raise ValueError("sparse_decode with flat COO entries needs n_rows")
    if rows is None:
        n_rows = values.shape[0]
    return SparseDecode.apply(values, indices, W_dec, b_dec, rows, n_rows)
