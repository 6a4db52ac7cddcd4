"""Sparse CPU kernels for TopK-style SAE training.

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

import threading

import torch
import torch.nn.functional as F
from torch import Tensor

__all__ = [
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

# ------------------------------------------------------------------------------------------------
# workspace for the dense pre-activations (CPU only: CUDA has a caching allocator)
# ------------------------------------------------------------------------------------------------
_tls = threading.local()


def _workspace(
    name: str, shape: tuple[int, ...] | int, dtype: torch.dtype, device: torch.device
) -> Tensor | None:
    """A reused per-thread buffer (None off CPU). Valid until the next call with the same name."""
    if device.type != "cpu":
        return None
    shape = (shape,) if isinstance(shape, int) else shape
    numel = 1
    for s in shape:
        numel *= s
    bufs = getattr(_tls, "bufs", None)
    if bufs is None:
        bufs = _tls.bufs = {}
    buf = bufs.get((name, dtype))
    if buf is None or buf.numel() < numel:
        bufs[(name, dtype)] = buf = torch.empty(numel, dtype=dtype, device=device)
    return buf[:numel].view(shape)


def release_workspace() -> None:
    """Free this thread's cached pre-activation workspace."""
    _tls.bufs = {}


# ------------------------------------------------------------------------------------------------
# dense part: the encoder GEMM
# ------------------------------------------------------------------------------------------------
#: How the encoder bias enters the GEMM: "addmm" (torch.addmm), "mm_add" (mm, then add_) or
#: "augment" (one more GEMM column: [x, 1] @ [W_enc; b_enc], no extra pass over [B, d_sae]).
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


# ------------------------------------------------------------------------------------------------
# selection
# ------------------------------------------------------------------------------------------------
def topk_select(pre: Tensor, k: int, *, method: str = "auto") -> tuple[Tensor, Tensor]:
    """Exact top-k per row of ``pre`` [B, n] (raw values, unsorted order, int64 indices).

    No autograd. The values are the *pre*-activations (apply ReLU yourself); ties are broken
    arbitrarily (any valid top-k set). ``method``: ``"topk"`` (``torch.topk``), ``"tree"``
    (the max-tree below), ``"torch"`` (the tree when rows are long enough to pay off, else
    ``torch.topk``), ``"native"`` (the optional C++ kernel, see :func:`enable_native`) or
    ``"auto"`` (native when enabled, else ``"torch"``).

    The tree: ``torch.topk`` costs ~5-15 ns per element on CPU while a vectorised max over
    groups costs well under 1 ns, so we build group maxima level by level (level 1: groups of
    ``f1`` entries of ``pre``; higher levels: groups of ``f`` maxima) and descend from the top:
    the k largest entries of a row lie in the k groups with the largest maxima (each of those
    k maxima is itself >= anything in a group outside them), so each level only needs a top-k
    over the k*f children of the k winning groups. Group members are ``c`` apart inside blocks
    of ``f*c`` (a max over a middle axis vectorises); the plan uses one block per level.
    """
    with torch.no_grad():
        if method == "native" or (method == "auto" and _native_ready()):
            lib = _native_lib(build=True)
            if lib is not None and _native_ok(pre, k):
                return lib.topk_rows(pre, k, _native_group(pre.shape[1], k))
            if method == "native":
                raise RuntimeError("the native top-k kernel is unavailable for this input/platform")
        if method not in ("auto", "torch", "tree", "topk", "native"):
            raise ValueError(f"unknown top-k method {method!r}")
        plan = _tree_plan(pre.shape[1], k) if method != "topk" else None
        if plan is None:
            return torch.topk(pre, k, dim=1, sorted=False)
        return _tree_topk(pre, k, plan)


# ------------------------------------------------------------------------------------------------
# native kernels (C++, JIT-built once with torch.utils.cpp_extension, cached on disk): the top-k
# selection and the counting sort behind LatentOrder
# ------------------------------------------------------------------------------------------------
_NATIVE_SRC = r"""
#include <torch/extension.h>
#include <ATen/Parallel.h>
#include <algorithm>
#include <functional>
#include <limits>
#include <type_traits>
#include <utility>
#include <vector>

// Exact top-k (largest) per row. Per row: maxima of G = n / g strided groups (group j holds
// entries j, j + G, ..., j + (g-1) G: a vertical, vectorisable max); t = the k-th largest group
// maximum is a lower bound on the row's k-th largest entry (k groups reach t), and only groups
// with maximum >= t (plus the n - gG tail entries) can hold entries >= t: collect those and
// select the k largest. NaN never wins unless a row has fewer than k non-NaN entries.
template <typename T>
static void topk_rows_impl(const T* P, int64_t B, int64_t n, int64_t ld, int64_t k, int64_t g,
                           T* V, int64_t* I) {
  using acc_t = typename std::conditional<std::is_same<T, double>::value, double, float>::type;
  const int64_t G = n / g, tail0 = G * g;
  at::parallel_for(0, B, 4, [&](int64_t b0, int64_t b1) {
    const acc_t ninf = -std::numeric_limits<acc_t>::infinity();
    std::vector<acc_t> gm(G), tmp(G);
    std::vector<std::pair<acc_t, int64_t>> cand;
    cand.reserve(8 * k);
    for (int64_t b = b0; b < b1; ++b) {
      const T* row = P + b * ld;
      acc_t* m = gm.data();
      for (int64_t j = 0; j < G; ++j) { acc_t v = acc_t(row[j]); m[j] = v == v ? v : ninf; }
      for (int64_t i = 1; i < g; ++i) {
        const T* r = row + i * G;
        for (int64_t j = 0; j < G; ++j) { acc_t v = acc_t(r[j]); m[j] = v > m[j] ? v : m[j]; }
      }
      std::copy(m, m + G, tmp.begin());
      std::nth_element(tmp.begin(), tmp.begin() + (k - 1), tmp.end(), std::greater<acc_t>());
      const acc_t t = tmp[k - 1];
      cand.clear();
      for (int64_t j = 0; j < G; ++j) {
        if (m[j] >= t) {
          for (int64_t i = 0; i < g; ++i) {
            acc_t v = acc_t(row[i * G + j]);
            if (v >= t) cand.emplace_back(v, i * G + j);
          }
        }
      }
      for (int64_t j = tail0; j < n; ++j) { acc_t v = acc_t(row[j]); if (v >= t) cand.emplace_back(v, j); }
      for (int64_t j = 0; j < n && (int64_t)cand.size() < k; ++j) {  // only rows with NaN
        acc_t v = acc_t(row[j]);
        if (v != v) cand.emplace_back(v, j);
      }
      if ((int64_t)cand.size() > k)  // no NaN in cand here
        std::nth_element(cand.begin(), cand.begin() + (k - 1), cand.end(),
                         [](const std::pair<acc_t, int64_t>& a, const std::pair<acc_t, int64_t>& c) {
                           return a.first > c.first;
                         });
      for (int64_t j = 0; j < k; ++j) {
        I[b * k + j] = cand[j].second;
        V[b * k + j] = row[cand[j].second];
      }
    }
  });
}

std::tuple<at::Tensor, at::Tensor> topk_rows(const at::Tensor& pre, int64_t k, int64_t g) {
  TORCH_CHECK(pre.dim() == 2 && pre.device().is_cpu() && pre.stride(1) == 1, "pre: [B, n] CPU, unit column stride");
  const int64_t B = pre.size(0), n = pre.size(1);
  TORCH_CHECK(k >= 1 && k <= n && g >= 1 && n / g >= k, "bad k / group size");
  auto vals = at::empty({B, k}, pre.options());
  auto idx = at::empty({B, k}, pre.options().dtype(at::kLong));
  AT_DISPATCH_FLOATING_TYPES_AND(at::kBFloat16, pre.scalar_type(), "topk_rows", [&] {
    topk_rows_impl<scalar_t>(pre.data_ptr<scalar_t>(), B, n, pre.stride(0), k, g,
                             vals.data_ptr<scalar_t>(), idx.data_ptr<int64_t>());
  });
  return {vals, idx};
}

// The selected entries e in [0, N) grouped by latent (counting sort; ascending e inside a latent):
// perm [N] and offsets [m + 1] (latent c owns perm[offsets[c] : offsets[c + 1]]).
std::tuple<at::Tensor, at::Tensor> latent_order(const at::Tensor& cols, int64_t m) {
  TORCH_CHECK(cols.device().is_cpu() && cols.scalar_type() == at::kLong, "cols: CPU int64");
  auto c = cols.contiguous().view(-1);
  const int64_t N = c.numel();
  const int64_t* cp = c.data_ptr<int64_t>();
  auto offsets = at::zeros({m + 1}, c.options());
  auto perm = at::empty({N}, c.options());
  int64_t* off = offsets.data_ptr<int64_t>();
  for (int64_t e = 0; e < N; ++e) {
    TORCH_CHECK(cp[e] >= 0 && cp[e] < m, "latent index ", cp[e], " out of range [0, ", m, ")");
    off[cp[e] + 1]++;
  }
  for (int64_t j = 0; j < m; ++j) off[j + 1] += off[j];
  std::vector<int64_t> pos(off, off + m);
  int64_t* pp = perm.data_ptr<int64_t>();
  for (int64_t e = 0; e < N; ++e) pp[pos[cp[e]]++] = e;
  return {perm, offsets};
}

"""


def _cpu_fingerprint() -> str:
    """This CPU's model and feature flags ("" when unknown): part of the build's name, so that a
    kernel compiled for one CPU (``-march=native``) is never loaded on another."""
    try:
        with open("/proc/cpuinfo") as f:
            lines = [ln for ln in f if ln.startswith(("model name", "flags"))]
        return "".join(sorted(set(lines)))
    except OSError:
        return ""


_CPU = _cpu_fingerprint()
# -march=native: the group-max scan vectorises with the CPU's widest registers (~15% faster)
_NATIVE_FLAGS = ["-O3", "-fopenmp"] + (["-march=native"] if _CPU else [])
_NATIVE_NAME = (
    "saes_native_"
    + __import__("hashlib")
    .sha1((_NATIVE_SRC + " ".join(_NATIVE_FLAGS) + _CPU).encode())
    .hexdigest()[:12]
)
_native_state: dict = {"enabled": None, "lib": None, "error": None}


def enable_native(enabled: bool = True) -> bool:
    """Use (or stop using) the C++ kernels: top-k in :func:`topk_select` ``method="auto"`` and the
    counting sort of :class:`LatentOrder`.

    ``enable_native(True)`` builds the kernel if needed: the first build compiles a small torch
    extension (~30-60 s, needs a C++ compiler with OpenMP) cached by torch under
    ``TORCH_EXTENSIONS_DIR`` (default ``~/.cache/torch_extensions``); later processes load it in
    ~0.2 s. Returns whether the kernel is in use; on any build failure the pure-torch selection
    stays in use.

    Without a call, ``"auto"`` follows the environment: ``SAES_NATIVE=1`` builds and uses it,
    ``SAES_NATIVE=0`` never uses it, and when unset the kernel is used only if this exact
    version is already built (``make setup`` builds it; it is never compiled implicitly
    during training). Both give the same top-k sets (only tie-breaking may differ).
    """
    _native_state["enabled"] = bool(enabled)
    return bool(enabled) and _native_lib(build=True) is not None


def native_status() -> dict:
    """Whether the native top-k is in use, built, the build error if any, and the C++ compiler
    a build would use (None: there is none, so the pure-torch selection is the only one)."""
    return {
        "in_use": _native_ready() and _native_state["lib"] is not None,
        "built": _native_cached(),
        "error": _native_state["error"],
        "name": _NATIVE_NAME,
        "compiler": cxx_compiler(),
    }


def cxx_compiler() -> str | None:
    """The path of the C++ compiler torch's extension builder uses (``$CXX``, else ``c++``), or
    None when this machine has none."""
    import os
    import shutil

    return shutil.which(os.environ.get("CXX", "c++"))


def selection_kernel() -> str:
    """A sentence naming the CPU top-k selection that ``method="auto"`` uses in this process."""
    if _native_ready():
        return "C++ kernel (saes.kernels native top-k)"
    if _native_state["error"]:
        reason = f"the C++ kernel failed to build: {_native_state['error']}"
    elif _native_cached():
        reason = "the C++ kernel is built but disabled (SAES_NATIVE=0 or enable_native(False))"
    else:
        reason = "the C++ kernel is not built: `interp kernels --build` compiles it once"
    return f"pure torch max-tree ({reason})"


def _native_cached() -> bool:
    try:
        import glob
        import os

        from torch.utils.cpp_extension import _get_build_directory

        return bool(glob.glob(os.path.join(_get_build_directory(_NATIVE_NAME, False), "*.so")))
    except Exception:  # noqa: BLE001
        return False


def _native_ready() -> bool:
    """Decide (once) whether "auto" uses the native kernel; loads it when it will."""
    if _native_state["enabled"] is None:
        import os

        env = os.environ.get("SAES_NATIVE", "")
        _native_state["enabled"] = env not in ("0", "") or (env == "" and _native_cached())
    if not _native_state["enabled"] or _native_state["error"] is not None:
        return False
    return _native_lib(build=True) is not None


def _native_lib(build: bool = True):
    if _native_state["lib"] is None and _native_state["error"] is None and build:
        try:
            import warnings

            from torch.utils.cpp_extension import load_inline

            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                _native_state["lib"] = load_inline(
                    _NATIVE_NAME,
                    cpp_sources=_NATIVE_SRC,
                    functions=["topk_rows", "latent_order"],
                    extra_cflags=_NATIVE_FLAGS,
                    extra_ldflags=["-fopenmp"],
                    verbose=False,
                )
        except Exception as e:  # noqa: BLE001 - any build problem means: use pure torch
            _native_state["error"] = f"{type(e).__name__}: {e}"
    return _native_state["lib"]


def _native_ok(pre: Tensor, k: int) -> bool:
    return (
        pre.dim() == 2
        and pre.device.type == "cpu"
        and pre.dtype in (torch.float32, torch.float64, torch.bfloat16)
        and pre.stride(1) == 1
        and 1 <= k <= pre.shape[1]
    )


def _native_for(t: Tensor):
    """The C++ library when "auto" uses it and ``t`` lives on the CPU, else None."""
    return _native_state["lib"] if t.device.type == "cpu" and _native_ready() else None


def _native_group(n: int, k: int) -> int:
    """Group size: ~4k groups per row (measured best on a 2-core Xeon for n >= 4k)."""
    return max(1, min(64, n // (4 * k)))


def _tree_plan(n: int, k: int) -> list[tuple[int, int]] | None:
    """[(fanout, lane width)] per level, or None when a plain torch.topk is as good."""
    if n < 96 * k:
        return None
    plan = []
    f = 8 if n < 512 * k else 16
    while n // f >= 3 * k and n % f == 0:
        # group j of a level holds entries j, j + n/f, ..., j + (f-1) n/f: the max over the
        # middle axis of [B, 1, f, n/f] streams whole rows (2.5x faster than 32-wide lanes)
        plan.append((f, n // f))
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
):
    """TopK encoder: ``(values [B, k], indices [B, k] int64)`` of ReLU(x_in @ W_enc + b_enc).

    Differentiable wrt ``x_in``, ``W_enc``, ``b_enc`` (and ``b_dec`` when given) with the
    sparse backward. ``return_pre=True`` also returns the dense pre-activations (a fresh
    tensor, no autograd). Values are in unspecified order within a row.
    """
    with torch.no_grad():
        x_c, pre = _centred_pre(x_in, W_enc, b_enc, b_dec, dtype, return_pre)
        sel, idx = topk_select(pre, k, method=select)
        if pre.dtype != W_enc.dtype:
            sel = _sddmm(x_c, W_enc, b_enc, idx, None)
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


#: AuxK selects k_aux of the n dead latents for every row: when k_aux * DENSE_SUBSET_RATIO >= n
#: its codes are dense enough that [B, n] GEMMs beat row gathers (a gathered row costs ~10-20x a
#: GEMM multiply-add per element on CPU), for the encoder backward and for sparse_decode.
DENSE_SUBSET_RATIO = 8


def _dense_codes(values: Tensor, local: Tensor, n: int) -> Tensor:
    return values.new_zeros(values.shape[0], n).scatter_(1, local, values)


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


# ------------------------------------------------------------------------------------------------
# unit-norm decoder maintenance (in place, no [d_sae, d_in] temporaries)
# ------------------------------------------------------------------------------------------------
@torch.no_grad()
def remove_parallel_grad_(
    W_dec: Tensor, grad: Tensor | None = None, chunk_rows: int | None = None
) -> None:
    """``grad[i] -= <grad[i], W_dec[i]> W_dec[i]`` for every row (rows of W_dec are unit-norm).

    Row blocks keep the temporaries small (<= 8 MB, at most ~8 blocks): ~3x faster than
    ``(grad * W).sum(-1)`` on a whole [d_sae, d_in] matrix, whose temporary costs page faults.
    ``grad`` defaults to ``W_dec.grad`` (nothing to do when it is None).
    """
    grad = W_dec.grad if grad is None else grad
    if grad is None:
        return
    n, d = W_dec.shape
    if chunk_rows is None:
        chunk_rows = max(1024, min(-(-n // 8), (8 << 20) // (max(d, 1) * W_dec.element_size())))
    for s in range(0, n, chunk_rows):
        g, w = grad[s : s + chunk_rows], W_dec[s : s + chunk_rows]
        g.addcmul_(w, (g * w).sum(1, keepdim=True), value=-1.0)


@torch.no_grad()
def normalize_rows_(W_dec: Tensor, eps: float = 1e-8) -> None:
    """Rescale every row of ``W_dec`` to unit L2 norm, in place."""
    W_dec.div_(torch.linalg.vector_norm(W_dec, dim=1, keepdim=True).clamp_min_(eps))
