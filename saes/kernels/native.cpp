// The C++ kernels behind saes/kernels/native.py: the exact per-row top-k selection (topk_rows)
// and the counting sort of the selected entries by latent (latent_order). native.py reads this
// file and JIT-builds it with torch.utils.cpp_extension.load_inline, which adds the pybind11
// module exporting both functions; the build's cache name hashes this file's contents.
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
