"""Products over the selected (row, latent) entries only: the sparse backward shared by every
selection rule, and the gathers/sums the decoder reuses.

With G the sparse [B, d_sae] gradient of the pre-activations (B*k nonzeros, ReLU-masked),
``grad_W_enc = x_in^T G`` sorts the entries by latent once (:class:`LatentOrder`, shared with the
decoder backward) and sums ``g * x_in[row]`` per latent with one ``embedding_bag`` (one bag per
latent); ``grad_b_enc`` is an ``index_add``; ``grad_x_in = G W_enc^T`` is an ``embedding_bag``
over the rows of ``W_enc^T``. No dense [B, d_sae] matrix exists anywhere in the backward.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from saes.kernels.native import _native_for


class LatentOrder:
    """The selected entries sorted by latent: computed once, shared by every backward using them.

    For ``cols`` [B, k] (row of entry n is n // k) or flat ``cols`` [N] with ``rows`` [N].
    ``topk_encode`` attaches one to the indices it returns, so ``sparse_decode`` of the same
    indices and the encoder backward sort the B*k entries only once per step.
    """

    __slots__ = ("_cache", "cols", "n_latents", "rows")

    def __init__(self, cols: Tensor, n_latents: int, rows: Tensor | None = None) -> None:
        self.cols, self.rows, self.n_latents = cols, rows, n_latents
        self._cache: tuple[Tensor, Tensor, Tensor] | None = None

    def get(self) -> tuple[Tensor, Tensor, Tensor]:
        """(perm, offsets [n_latents], rows in sorted order)."""
        if self._cache is None:
            cols = self.cols.reshape(-1)
            lib = _native_for(cols)
            if lib is not None and cols.dtype == torch.long:
                perm, offsets = lib.latent_order(cols, self.n_latents)  # counting sort, ~3x faster
                offsets = offsets[:-1]
            else:
                # int32 keys sort ~2x faster than int64; each latent's first position by binary search
                keys = cols.to(torch.int32) if self.n_latents < 2**31 else cols
                sorted_keys, perm = torch.sort(keys)
                latents = torch.arange(self.n_latents, dtype=keys.dtype, device=keys.device)
                offsets = torch.searchsorted(sorted_keys, latents)
            if self.rows is None:
                rows_s = torch.div(perm, self.cols.shape[1], rounding_mode="floor")
            else:
                rows_s = self.rows.reshape(-1)[perm]
            self._cache = (perm, offsets, rows_s)
        return self._cache


def _order_for(cols: Tensor, n_latents: int, rows: Tensor | None) -> LatentOrder:
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
    table: Tensor, cols: Tensor, weights: Tensor, rows: Tensor | None, n_rows: int
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


def _entry_dots(row_table: Tensor, col_table: Tensor, cols: Tensor, rows: Tensor | None) -> Tensor:
    """``row_table[r] . col_table[c]`` at the entries (r, c): [B, k] ``cols`` (entry (b, j) is at
    row b) or flat ``cols``/``rows`` [N]; flat [N] result, no [B, d_sae] matrix."""
    cols_f = cols.reshape(-1)
    if rows is None:
        B, k = cols.shape
        offsets = torch.arange(0, B * k, k, device=cols.device)
        rows_f = torch.arange(B, device=cols.device).repeat_interleave(k)
    else:
        rows_f = rows.reshape(-1)
        offsets = torch.zeros(1, dtype=torch.long, device=cols.device)
    return torch.ops.aten._embedding_bag_per_sample_weights_backward(
        row_table, col_table, cols_f, offsets, rows_f, 0, -1
    )


def _sddmm(x_in: Tensor, W_enc: Tensor, b_enc: Tensor, cols: Tensor, rows: Tensor | None) -> Tensor:
    """Exact pre-activations x_in[r] . W_enc[:, c] + b_enc[c] at the given entries (no autograd)."""
    with torch.no_grad():
        vals = _entry_dots(x_in, _rows_of(W_enc).to(x_in.dtype), cols, rows)
        vals += b_enc.to(vals.dtype)[cols.reshape(-1)]
        return vals.view(cols.shape)


def sparse_encode_backward(
    x_in: Tensor,
    W_enc: Tensor,
    cols: Tensor,
    grad: Tensor,
    rows: Tensor | None = None,
    *,
    need_x: bool = True,
    need_W: bool = True,
    need_b: bool = True,
    order: LatentOrder | None = None,
) -> tuple[Tensor | None, Tensor | None, Tensor | None]:
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


def _dense_codes(values: Tensor, local: Tensor, n: int) -> Tensor:
    return values.new_zeros(values.shape[0], n).scatter_(1, local, values)
