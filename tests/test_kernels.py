"""Sparse SAE kernels against dense autograd references (values, indices and every gradient)."""

from __future__ import annotations

import pytest
import torch

from saes.kernels import (
    SparseSelectEncode,
    pre_acts,
    sparse_decode,
    sparse_encode_backward,
    sparse_select_encode,
    topk_encode,
    topk_encode_with_aux,
    topk_select,
)

DT = torch.float64
TOL = {"rtol": 1e-5, "atol": 1e-5}


def _params(d_in, d_sae, seed=0, dtype=DT, bias_shift=0.0, enc_transposed=False):
    g = torch.Generator().manual_seed(seed)
    W_enc = torch.randn(d_in, d_sae, generator=g, dtype=dtype) / d_in**0.5
    if enc_transposed:  # W_enc as a transposed view of a contiguous [d_sae, d_in] leaf
        leaf = W_enc.t().contiguous().requires_grad_()
        W_enc = leaf.t()
    else:
        leaf = W_enc.requires_grad_()
    b_enc = (torch.randn(d_sae, generator=g, dtype=dtype) * 0.1 + bias_shift).requires_grad_()
    W_dec = torch.randn(d_sae, d_in, generator=g, dtype=dtype).requires_grad_()
    b_dec = (torch.randn(d_in, generator=g, dtype=dtype) * 0.1).requires_grad_()
    return leaf, W_enc, b_enc, W_dec, b_dec


def _dense_codes(x_in, W_enc, b_enc, k, indices=None):
    """Reference: z = ReLU(pre), keep the top-k (or the given indices) as a dense matrix."""
    z = torch.relu(x_in @ W_enc + b_enc)
    if indices is None:
        indices = torch.topk(z, k, dim=-1).indices
    mask = torch.zeros_like(z).scatter_(1, indices, 1.0)
    return z * mask, indices


def _grads(loss, tensors):
    return torch.autograd.grad(loss, tensors, allow_unused=True)


def _check_step(
    B,
    d_in,
    d_sae,
    k,
    seed=0,
    bias_shift=0.0,
    use_kernel_indices=False,
    centre_inside=False,
    enc_transposed=False,
    x_grad=False,
):
    leaf, W_enc, b_enc, W_dec, b_dec = _params(
        d_in, d_sae, seed, bias_shift=bias_shift, enc_transposed=enc_transposed
    )
    g = torch.Generator().manual_seed(seed + 1)
    x = torch.randn(B, d_in, generator=g, dtype=DT).requires_grad_(x_grad)
    target = torch.randn(B, d_in, generator=g, dtype=DT)

    if centre_inside:
        values, indices = topk_encode(x, W_enc, b_enc, k, b_dec=b_dec)
    else:
        values, indices = topk_encode(x - b_dec, W_enc, b_enc, k)
    assert values.shape == (B, k) and indices.shape == (B, k) and indices.dtype == torch.int64
    x_hat = sparse_decode(values, indices, W_dec, b_dec)
    loss = (x_hat - target).pow(2).sum() + 0.3 * values.pow(3).sum()
    wrt = [leaf, b_enc, W_dec, b_dec] + ([x] if x_grad else [])
    ours = _grads(loss, wrt)

    z, ref_idx = _dense_codes(x - b_dec, W_enc, b_enc, k, indices if use_kernel_indices else None)
    # same multiset of values as torch.topk on ReLU(pre)
    torch.testing.assert_close(values.sort(-1).values, z.gather(1, ref_idx).sort(-1).values, **TOL)
    ref_loss = (z @ W_dec + b_dec - target).pow(2).sum() + 0.3 * z.pow(3).sum()
    ref = _grads(ref_loss, wrt)
    for name, a, b in zip(["W_enc", "b_enc", "W_dec", "b_dec", "x"], ours, ref):
        torch.testing.assert_close(a, b, **TOL, msg=lambda m, n=name: f"{n}: {m}")
    torch.testing.assert_close(loss, ref_loss, **TOL)
    return ours


@pytest.mark.parametrize(
    "B,d_in,d_sae,k", [(7, 5, 24, 3), (16, 8, 64, 8), (5, 6, 10, 9), (4, 3, 6, 6)]
)
def test_topk_step_matches_dense(B, d_in, d_sae, k):
    _check_step(B, d_in, d_sae, k)


@pytest.mark.parametrize(
    "opts",
    [
        {"centre_inside": True},
        {"enc_transposed": True},
        {"x_grad": True},
        {"centre_inside": True, "x_grad": True},
    ],
)
def test_topk_step_options(opts):
    _check_step(12, 7, 40, 5, seed=3, **opts)


def test_centring_inside_equals_outside():
    a = _check_step(9, 6, 30, 4, seed=5, centre_inside=False)
    b = _check_step(9, 6, 30, 4, seed=5, centre_inside=True)
    for x, y in zip(a, b):
        torch.testing.assert_close(x, y, **TOL)


def test_relu_zeros_among_topk_get_no_gradient():
    # strongly negative bias: most rows have fewer than k positive pre-activations
    ours = _check_step(10, 6, 20, 8, seed=1, bias_shift=-1.2)
    _leaf, W_enc, b_enc, _, _ = _params(6, 20, 1, bias_shift=-1.2)
    x = torch.randn(10, 6, generator=torch.Generator().manual_seed(2), dtype=DT)
    values, _indices = topk_encode(x, W_enc, b_enc, 8)
    assert (values == 0).any()  # the case is exercised
    assert (values >= 0).all()
    assert ours[1] is not None


def test_ties_use_any_valid_topk():
    # duplicated encoder columns make exact ties among positive values
    _leaf, W_enc, b_enc, W_dec, b_dec = _params(5, 12, 7)
    with torch.no_grad():
        W_enc[:, 6:] = W_enc[:, :6]
        b_enc[6:] = b_enc[:6]
    x = torch.randn(9, 5, dtype=DT, generator=torch.Generator().manual_seed(8))
    values, indices = topk_encode(x - b_dec, W_enc, b_enc, 5)
    pre = (x - b_dec) @ W_enc + b_enc
    kth = torch.relu(pre).topk(5, dim=-1).values[:, -1:]
    assert (torch.relu(pre).gather(1, indices) >= kth - 1e-12).all()  # a valid top-k set
    assert (indices.sort(-1).values.diff(dim=-1) > 0).all()  # distinct latents per row
    # gradients equal the dense reference that keeps the same (valid) set
    x_hat = sparse_decode(values, indices, W_dec, b_dec)
    loss = x_hat.pow(2).sum()
    ours = _grads(loss, [W_enc, b_enc, W_dec, b_dec])
    z, _ = _dense_codes(x - b_dec, W_enc, b_enc, 5, indices)
    ref = _grads((z @ W_dec + b_dec).pow(2).sum(), [W_enc, b_enc, W_dec, b_dec])
    for a, b in zip(ours, ref):
        torch.testing.assert_close(a, b, **TOL)


def test_k_equals_d_sae_and_all_negative():
    _check_step(6, 4, 8, 8, seed=2)
    _check_step(6, 4, 8, 7, seed=2, bias_shift=-5.0)  # nothing fires: all-zero gradients
    _leaf, W_enc, b_enc, _W_dec, _b_dec = _params(4, 8, 2, bias_shift=-5.0)
    x = torch.randn(6, 4, dtype=DT) * 0.01
    v, _i = topk_encode(x, W_enc, b_enc, 7)
    (g,) = torch.autograd.grad(v.sum(), [b_enc])
    assert (v == 0).all() and (g == 0).all()


@pytest.mark.parametrize(
    "n_dead,k_aux,opts",
    [
        (0, 6, {}),
        (3, 6, {}),  # all dead latents kept: dense-subset aux path
        (17, 6, {"centre_inside": True}),
        (40, 6, {"x_grad": True, "enc_transposed": True}),
        (40, 2, {}),  # sparse aux path (k_aux * DENSE_SUBSET_RATIO < n_dead)
        (40, 3, {"centre_inside": True, "x_grad": True, "enc_transposed": True}),
    ],
)
def test_aux_matches_dense(n_dead, k_aux, opts):
    B, d_in, d_sae, k = 11, 6, 40, 4
    leaf, W_enc, b_enc, W_dec, b_dec = _params(
        d_in, d_sae, 4, enc_transposed=opts.get("enc_transposed", False)
    )
    x = torch.randn(B, d_in, dtype=DT, generator=torch.Generator().manual_seed(9))
    x.requires_grad_(opts.get("x_grad", False))
    dead = torch.zeros(d_sae, dtype=torch.bool)
    dead[torch.randperm(d_sae, generator=torch.Generator().manual_seed(1))[:n_dead]] = True
    if opts.get("centre_inside"):
        v, i, av, ai = topk_encode_with_aux(
            x, W_enc, b_enc, k, dead if n_dead else None, k_aux, b_dec=b_dec
        )
    else:
        v, i, av, ai = topk_encode_with_aux(
            x - b_dec, W_enc, b_enc, k, dead if n_dead else None, k_aux
        )
    if n_dead == 0:
        assert av is None and ai is None
        return
    ka = min(k_aux, n_dead)
    assert av.shape == (B, ka) and dead[ai].all()
    x_hat = sparse_decode(v, i, W_dec, b_dec)
    e_hat = sparse_decode(av, ai, W_dec)
    loss = x_hat.pow(2).sum() + 0.5 * (e_hat - x).pow(2).sum() + av.pow(3).sum()
    wrt = [leaf, b_enc, W_dec, b_dec] + ([x] if opts.get("x_grad") else [])
    ours = _grads(loss, wrt)

    xc = x - b_dec
    z, ref_i = _dense_codes(xc, W_enc, b_enc, k)
    pre = xc @ W_enc + b_enc
    masked = torch.where(dead, pre, torch.full_like(pre, -torch.inf))
    a_idx = masked.topk(ka, dim=-1).indices
    za = torch.relu(pre) * torch.zeros_like(pre).scatter_(1, a_idx, 1.0)
    torch.testing.assert_close(i.sort(-1).values, ref_i.sort(-1).values)
    torch.testing.assert_close(ai.sort(-1).values, a_idx.sort(-1).values)
    ref_loss = (
        (z @ W_dec + b_dec).pow(2).sum() + 0.5 * (za @ W_dec - x).pow(2).sum() + za.pow(3).sum()
    )
    ref = _grads(ref_loss, wrt)
    for a, b in zip(ours, ref):
        torch.testing.assert_close(a, b, **TOL)


def test_aux_bf16_values_exact():
    torch.manual_seed(0)
    x = torch.randn(32, 24)
    W = torch.randn(24, 200) / 24**0.5
    b = torch.randn(200) * 0.1
    dead = torch.zeros(200, dtype=torch.bool)
    dead[::5] = True
    v, i, av, ai = topk_encode_with_aux(x, W, b, 6, dead, 12, dtype=torch.bfloat16)
    pre = x @ W + b
    torch.testing.assert_close(v, torch.relu(pre.gather(1, i)), rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(av, torch.relu(pre.gather(1, ai)), rtol=1e-5, atol=1e-5)
    assert dead[ai].all()


def test_sparse_select_encode_coo_variable_per_row():
    """Flat COO selection (feature choice style: a different number of entries per row)."""
    B, d_in, d_sae = 9, 5, 16
    _leaf, W_enc, b_enc, W_dec, b_dec = _params(d_in, d_sae, 6)
    x = torch.randn(B, d_in, dtype=DT, generator=torch.Generator().manual_seed(3))
    xc = x - b_dec
    pre = pre_acts(xc, W_enc, b_enc)
    # feature choice: each latent keeps its top-2 tokens -> rows unsorted, variable count per row
    top_rows = pre.topk(2, dim=0).indices  # [2, d_sae]
    rows = top_rows.reshape(-1)
    cols = torch.arange(d_sae).repeat(2)
    for source in ("pre", "recompute"):
        vals = sparse_select_encode(
            xc, W_enc, b_enc, cols, rows, pre=pre if source == "pre" else None
        )
        x_hat = sparse_decode(vals, cols, W_dec, b_dec, rows=rows, n_rows=B)
        loss = (x_hat - x).pow(2).sum()
        ours = _grads(loss, [W_enc, b_enc, W_dec, b_dec])
        z = torch.relu(xc @ W_enc + b_enc)
        mask = torch.zeros_like(z)
        mask[rows, cols] = 1.0
        ref = _grads(((z * mask) @ W_dec + b_dec - x).pow(2).sum(), [W_enc, b_enc, W_dec, b_dec])
        for a, b in zip(ours, ref):
            torch.testing.assert_close(a, b, **TOL)


def test_sparse_encode_backward_helper_matches_dense_matmul():
    B, d_in, d_sae, k = 8, 5, 20, 3
    x = torch.randn(B, d_in, dtype=DT)
    W = torch.randn(d_in, d_sae, dtype=DT)
    cols = torch.stack([torch.randperm(d_sae)[:k] for _ in range(B)])
    g = torch.randn(B, k, dtype=DT)
    G = torch.zeros(B, d_sae, dtype=DT).scatter_(1, cols, g)
    gx, gW, gb = sparse_encode_backward(x, W, cols, g)
    torch.testing.assert_close(gW, x.t() @ G, **TOL)
    torch.testing.assert_close(gb, G.sum(0), **TOL)
    torch.testing.assert_close(gx, G @ W.t(), **TOL)
    # flat COO with repeated entries: they add up
    rows = torch.tensor([0, 3, 3, 1, 0])
    cc = torch.tensor([2, 5, 5, 7, 2])
    gg = torch.randn(5, dtype=DT)
    G2 = torch.zeros(B, d_sae, dtype=DT).index_put_((rows, cc), gg, accumulate=True)
    gx, gW, gb = sparse_encode_backward(x, W, cc, gg, rows)
    torch.testing.assert_close(gW, x.t() @ G2, **TOL)
    torch.testing.assert_close(gb, G2.sum(0), **TOL)
    torch.testing.assert_close(gx, G2 @ W.t(), **TOL)


def test_topk_select_exact_on_larger_rows():
    torch.manual_seed(0)
    for m, k in [(4608, 32), (1000, 7), (256, 32), (64, 64)]:
        pre = torch.randn(33, m)
        v, i = topk_select(pre, k)
        ref = pre.topk(k, dim=-1)
        torch.testing.assert_close(v.sort(-1).values, ref.values.sort(-1).values)
        torch.testing.assert_close(pre.gather(1, i), v)
        assert (i.sort(-1).values.diff(dim=-1) > 0).all()


def test_gradcheck_tiny():
    torch.manual_seed(0)
    B, d_in, d_sae, k = 4, 3, 7, 3
    x = torch.randn(B, d_in, dtype=DT, requires_grad=True)
    W = torch.randn(d_in, d_sae, dtype=DT, requires_grad=True)
    b = (torch.randn(d_sae, dtype=DT) * 0.1).requires_grad_()
    bd = (torch.randn(d_in, dtype=DT) * 0.1).requires_grad_()
    Wd = torch.randn(d_sae, d_in, dtype=DT, requires_grad=True)
    _, idx = topk_encode(x, W, b, k)

    def enc(x, W, b):  # fixed selection so gradcheck's perturbations cannot flip it
        return sparse_select_encode(x, W, b, idx)

    assert torch.autograd.gradcheck(enc, (x, W, b))
    assert torch.autograd.gradcheck(
        lambda x, W, b, bd: topk_encode(x, W, b, k, b_dec=bd)[0], (x, W, b, bd)
    )
    assert torch.autograd.gradcheck(lambda x, W, b: topk_encode(x, W, b, k)[0], (x, W, b))
    v = torch.rand(B, k, dtype=DT, requires_grad=True)
    assert torch.autograd.gradcheck(lambda v, Wd, bd: sparse_decode(v, idx, Wd, bd), (v, Wd, bd))


def test_bf16_gemm_gives_exact_values_for_selected_entries():
    torch.manual_seed(0)
    x = torch.randn(64, 32)
    W = torch.randn(32, 256) / 32**0.5
    b = torch.randn(256) * 0.1
    v, i = topk_encode(x, W, b, 8, dtype=torch.bfloat16)
    exact = torch.relu((x @ W + b).gather(1, i))
    torch.testing.assert_close(v, exact, rtol=1e-5, atol=1e-5)
    ref = torch.relu(x @ W + b).topk(8, dim=-1).values
    # only near-ties may swap: the kept values are within bf16 rounding of the true top-k
    assert (v.sort(-1).values - ref.sort(-1).values).abs().max() < 0.05


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_bf16_selection_with_a_margin_is_the_float32_top_k(seed):
    """Near-ties at the k-th place: exact-k selection in bf16 swaps some entries; selecting
    k + margin in bf16 and keeping the top k of their exact values gives the float32 top-k."""
    gen = torch.Generator().manual_seed(seed)
    x = torch.randn(512, 64, generator=gen)
    W = torch.randn(64, 1024, generator=gen) / 8
    b = torch.randn(1024, generator=gen) * 0.1
    ref_v, ref_i = torch.relu(x @ W + b).topk(16, dim=-1)
    v0, i0 = topk_encode(x, W, b, 16, dtype=torch.bfloat16)
    v, i = topk_encode(x, W, b, 16, dtype=torch.bfloat16, margin=8)

    def sets(idx):
        return idx.sort(-1).values

    assert (sets(i0) != sets(ref_i)).any()  # the case exists without the margin
    assert torch.equal(sets(i), sets(ref_i))
    torch.testing.assert_close(v.sort(-1).values, ref_v.sort(-1).values, rtol=1e-5, atol=1e-5)


def test_sae_encode_sparse_in_bf16_matches_float32():
    from saes.config import SAEConfig
    from saes.sae import SAE

    sae = SAE(SAEConfig(d_in=64, d_sae=1024, variant="topk", k=16), seed=0)
    x = torch.randn(256, 64, generator=torch.Generator().manual_seed(3)) * 4
    with torch.no_grad():
        a = sae.encode_sparse(x)
        c = sae.encode_sparse(x, gemm_dtype=torch.bfloat16)
        d = torch.zeros(256, 1024).scatter_(1, a.indices, a.values)
        e = torch.zeros(256, 1024).scatter_(1, c.indices, c.values)
    torch.testing.assert_close(d, e, rtol=1e-5, atol=1e-5)


def test_return_pre_and_workspace_do_not_alias():
    x = torch.randn(16, 8)
    W = torch.randn(8, 40)
    b = torch.zeros(40)
    _v1, _i1, pre1 = topk_encode(x, W, b, 4, return_pre=True)
    keep = pre1.clone()
    topk_encode(torch.randn(16, 8), W, b, 4)  # reuses the workspace
    torch.testing.assert_close(pre1, keep)
    torch.testing.assert_close(pre1, x @ W + b)


def test_specialised_function_class_is_the_generic_one():
    x = torch.randn(3, 4, requires_grad=True)
    W = torch.randn(4, 9, requires_grad=True)
    v, _ = topk_encode(x, W, torch.zeros(9), 2)
    assert type(v.grad_fn).__name__.startswith(SparseSelectEncode.__name__)


@pytest.mark.parametrize("m,k", [(4608, 32), (16384, 32), (6144, 16), (3072, 32), (4000, 32)])
def test_tree_topk_exact(m, k):
    torch.manual_seed(m)
    pre = torch.randn(20, m)
    pre[3] = 0.0  # all ties
    pre[4, : m // 2] = 5.0  # many ties at the top
    pre[5] = -torch.arange(m, dtype=torch.float32)  # sorted rows
    pre[6] = torch.arange(m, dtype=torch.float32)
    ref = pre.topk(k, dim=-1).values.sort(-1).values
    for method in ("tree", "auto", "topk"):
        v, i = topk_select(pre, k, method=method)
        torch.testing.assert_close(v.sort(-1).values, ref)
        torch.testing.assert_close(pre.gather(1, i), v)
        assert (i.sort(-1).values.diff(dim=-1) > 0).all()


def _require_native() -> None:
    """The C++ kernels are the default path: build them if needed and fail (not skip) when the build
    fails. Only a machine with no C++ compiler skips these tests (and CI, with INTERP_NO_SKIPS=1,
    fails on that skip too)."""
    import saes.kernels as K

    if K._native_state["lib"] is not None:
        return
    if K.cxx_compiler() is None:
        pytest.skip("no C++ compiler on this machine ($CXX / c++): the C++ kernels cannot be built")
    if K._native_lib(build=True) is None:
        pytest.fail(
            f"the C++ kernels failed to build with {K.cxx_compiler()}: {K._native_state['error']}"
        )


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64, torch.bfloat16])
def test_native_topk_exact(dtype):
    _require_native()
    torch.manual_seed(0)
    for m, k in [(4608, 32), (4000, 7), (100, 100), (37, 5)]:
        pre = torch.randn(30, m).to(dtype)
        pre[3] = 0.0
        pre[4, : m // 2] = 5.0
        v, i = topk_select(pre, k, method="native")
        torch.testing.assert_close(v.sort(-1).values, pre.topk(k, dim=-1).values.sort(-1).values)
        torch.testing.assert_close(pre.gather(1, i), v)
        assert (i.sort(-1).values.diff(dim=-1) > 0).all()
    pre = torch.randn(3, 300)
    pre[1, 5] = float("nan")
    pre[2, :298] = float("nan")  # fewer than k non-NaN entries: NaN fills the rest
    v, i = topk_select(pre, 8, method="native")
    assert not v[1].isnan().any() and v[2].isnan().sum() == 6
    assert (i.sort(-1).values.diff(dim=-1) > 0).all()


def test_native_step_matches_dense():
    _require_native()
    import saes.kernels as K

    old = K._native_state["enabled"]
    K._native_state["enabled"] = True
    try:
        _check_step(16, 8, 256, 8, seed=4)
        _check_step(12, 7, 40, 5, seed=3, centre_inside=True)
    finally:
        K._native_state["enabled"] = old


def test_native_latent_order_equals_torch_sort():
    _require_native()
    import saes.kernels as K

    torch.manual_seed(0)
    cols = torch.randint(0, 50, (64, 6))
    cols[:, 0] = 7  # a popular latent; most of the 50 latents see few entries, some none
    old = K._native_state["enabled"]
    try:
        K._native_state["enabled"] = True
        perm_n, off_n, rows_n = K.LatentOrder(cols, 60).get()
        K._native_state["enabled"] = False
        perm_t, off_t, rows_t = K.LatentOrder(cols, 60).get()
    finally:
        K._native_state["enabled"] = old
    assert torch.equal(off_n, off_t) and off_n.shape == (60,)
    flat = cols.reshape(-1)
    ends = torch.cat([off_n[1:], torch.tensor([flat.numel()])])
    for c in range(60):  # the same entries per latent (the order inside a latent is free)
        a, b = int(off_n[c]), int(ends[c])
        assert (flat[perm_n[a:b]] == c).all()
        assert torch.equal(perm_n[a:b].sort().values, perm_t[a:b].sort().values)
    assert torch.equal(rows_n, torch.div(perm_n, 6, rounding_mode="floor"))
    with pytest.raises(RuntimeError, match="out of range"):
        K._native_state["lib"].latent_order(torch.tensor([3, 99]), 10)


def test_decoder_maintenance_helpers():
    from saes.kernels import normalize_rows_, remove_parallel_grad_

    torch.manual_seed(0)
    W = torch.randn(2500, 7, dtype=DT)
    normalize_rows_(W)
    torch.testing.assert_close(W.norm(dim=1), torch.ones(2500, dtype=DT))
    G = torch.randn(2500, 7, dtype=DT)
    ref = G - (G * W).sum(1, keepdim=True) * W
    remove_parallel_grad_(W, G, chunk_rows=1000)
    torch.testing.assert_close(G, ref)
    torch.testing.assert_close((G * W).sum(1), torch.zeros(2500, dtype=DT), atol=1e-12, rtol=0)
    W.grad = torch.randn_like(W)
    remove_parallel_grad_(W)
    assert (W.grad * W).sum(1).abs().max() < 1e-12
