"""Sparse CPU kernels for TopK-style SAE training: this package's public names, re-exported.

Modules: :mod:`~saes.kernels.encode` (the encoder GEMM and the differentiable selected entries),
:mod:`~saes.kernels.select` (top-k), :mod:`~saes.kernels.sparse_ops` (the sparse backward
over selected entries, :class:`LatentOrder`), :mod:`~saes.kernels.decode`,
:mod:`~saes.kernels.decoder_norm` (unit-norm upkeep), :mod:`~saes.kernels.workspace` (reused
CPU buffers) and :mod:`~saes.kernels.native` (building and loading ``native.cpp``).

Shapes: ``x_in`` [B, d_in] (the b_dec-centred input), ``W_enc`` [d_in, d_sae], ``b_enc`` [d_sae],
``W_dec`` [d_sae, d_in], ``b_dec`` [d_in].

Only the encoder forward GEMM (B x d_in x d_sae) is dense. Everything else touches only the
B*k selected entries:

* selection: exact top-k on the pre-activations, with no ReLU pass over the dense matrix: ReLU
  is applied to the k kept values. ReLU-then-top-k and top-k-then-ReLU keep the same values
  (ReLU is monotone); when fewer than k entries are positive the kept non-positive entries are
  0 either way and get no gradient (which zeros are kept is arbitrary in both orders).
  ``torch.topk`` costs 5-15 ns per element on CPU, so rows are reduced by a max-tree first
  (:func:`topk_select`), or by the C++ kernel (:func:`enable_native`; ``make setup`` and
  ``interp kernels --build`` compile it once, and training then uses it by default; without a
  compiler everything runs in pure torch).
* decode: ``embedding_bag`` over the k selected decoder rows (no dense [B, d_sae] code).
* encoder backward: with G the sparse [B, d_sae] gradient of the pre-activations (B*k
  nonzeros, ReLU-masked), ``grad_W_enc = x_in^T G`` sorts the entries by latent once
  (:class:`LatentOrder`, shared with the decoder backward) and sums ``g * x_in[row]`` per latent
  with one ``embedding_bag`` (one bag per latent); ``grad_b_enc`` is an ``index_add``;
  ``grad_x_in = G W_enc^T`` is an ``embedding_bag`` over the rows of ``W_enc^T``. No dense
  [B, d_sae] matrix exists anywhere in the backward.

Public API::

    pre_acts(x_in, W_enc, b_enc, *, dtype=None, out=None) -> [B, d_sae]          (no autograd)
    topk_select(pre, k, *, method="auto") -> (pre values [B, k], indices [B, k]) (no autograd)
    topk_encode(x_in, W_enc, b_enc, k, *, b_dec=None, dtype=None, return_pre=False,
                select="auto") -> (values [B, k], indices [B, k] int64) [+ pre]
    topk_encode_with_aux(x_in, W_enc, b_enc, k, dead_mask, k_aux, *, b_dec=None, dtype=None,
                         select="auto") -> (values, indices, aux_values|None, aux_indices|None)
    sparse_select_encode(x_in, W_enc, b_enc, cols, rows=None, *, pre=None, selected=None,
                         b_dec=None) -> ReLU(pre) at the chosen (row, col) entries
    SparseSelectEncode      the autograd.Function behind all the encoders above
    sparse_encode_backward(x_in, W_enc, cols, grad, rows=None, *, need_x, need_W, need_b, order)
    sparse_decode(values, indices, W_dec, b_dec=None, *, rows=None, n_rows=None) -> [B, d_in]
    SparseDecode, LatentOrder
    remove_parallel_grad_(W_dec, grad=None), normalize_rows_(W_dec)   (unit-norm decoder upkeep)
    enable_native(enabled=True), native_status(), release_workspace()

Selection rules other than TopK (g-SAE, feature choice, mutual choice, ...) compute
``pre = pre_acts(...)``, choose entries without autograd (``cols`` [B, k] or flat COO
``rows``/``cols`` [N], any count per row), and call ``sparse_select_encode(..., pre=pre)``:
they get the same sparse backward, and ``sparse_decode(..., rows=rows, n_rows=B)`` for COO codes.

``b_dec=`` (encoder side): pass the *raw* input and the decoder bias; the centring happens
inside and, when the raw input needs no gradient, b_dec's encoder-side gradient is the GEMV
``-W_enc @ grad_b_enc`` instead of a B*k*d_in gather for ``grad_x_in`` (same result as centring
outside, cheaper).

Layout: the kernels accept any ``W_enc`` strides and return its gradient in the same layout.
Storing the encoder latent-major (a contiguous [d_sae, d_in] tensor passed as ``W.t()``, like
``nn.Linear``) saves two transposed copies of the weight per step.

``dtype=torch.bfloat16``: the encoder GEMM and the selection run in bf16 (AMX/AVX512-BF16 CPUs
do it ~3x faster); the k kept values are then recomputed exactly in the parameters' dtype from
the selected (row, col) pairs, so outputs and gradients are full precision and only *which*
latents win near-ties can differ from fp32.

The dense pre-activation matrix of the TopK paths lives in a reused per-thread workspace (a
fresh B x d_sae allocation costs more in page faults than the selection itself on CPU);
``release_workspace()`` frees it. ``return_pre=True`` returns a fresh matrix instead. Indices
returned by ``topk_encode`` carry their :class:`LatentOrder`; do not modify them in place.
"""

from __future__ import annotations

# The underscored names are re-exported on purpose, outside __all__: choice.py uses the workspace
# buffers; the tests and bench/sae_step.py read and set the native-kernel state through here.
from saes.kernels.decode import SparseDecode, sparse_decode
from saes.kernels.decoder_norm import normalize_rows_, remove_parallel_grad_
from saes.kernels.encode import (
    DENSE_SUBSET_RATIO,
    GEMM_BIAS,
    SparseSelectEncode,
    pre_acts,
    sparse_select_encode,
    topk_encode,
    topk_encode_with_aux,
)
from saes.kernels.native import (
    _native_lib,  # noqa: F401
    _native_state,  # noqa: F401
    cxx_compiler,
    enable_native,
    native_status,
    selection_kernel,
)
from saes.kernels.select import topk_select
from saes.kernels.sparse_ops import LatentOrder, sparse_encode_backward
from saes.kernels.workspace import (
    _workspace,  # noqa: F401
    release_workspace,
)

__all__ = [
    "DENSE_SUBSET_RATIO",
    "GEMM_BIAS",
    "LatentOrder",
    "SparseDecode",
    "SparseSelectEncode",
    "enable_native",
    "native_status",
    "cxx_compiler",
    "normalize_rows_",
    "pre_acts",
    "release_workspace",
    "remove_parallel_grad_",
    "selection_kernel",
    "sparse_decode",
    "sparse_encode_backward",
    "sparse_select_encode",
    "topk_encode",
    "topk_encode_with_aux",
    "topk_select",
]
