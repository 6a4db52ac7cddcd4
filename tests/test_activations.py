"""Activation capture, gradients, and the shuffling buffer on tiny models."""

from __future__ import annotations

import pytest
import torch

from interp.activations import ActivationBatch, ActivationCapture, capture_blocks, shuffled_batches


def _tokens(model, b=3, t=12, seed=0):
    g = torch.Generator().manual_seed(seed)
    toks = torch.randint(3, model.cfg.d_vocab, (b, t), generator=g)
    toks[:, 0] = model.tokenizer.bos_token_id
    return toks


def test_many_hooks_one_pass_match_run_with_cache(tiny):
    hooks = ["blocks.0.hook_resid_post", "blocks.1.attn.hook_z", "blocks.0.mlp.hook_post"]
    toks = _tokens(tiny)
    cap = ActivationCapture(tiny, hooks, drop_bos=False)
    assert cap.stop_at_layer is None or cap.stop_at_layer == 2
    batch = cap(toks)
    _, cache = tiny.run_with_cache(toks, names_filter=hooks)
    for h in hooks:
        ref = cache[h].reshape(toks.numel(), -1)
        assert batch.acts[h].shape == ref.shape
        torch.testing.assert_close(batch.acts[h], ref)
    assert batch.acts["blocks.1.attn.hook_z"].shape[1] == tiny.cfg.n_heads * tiny.cfg.d_head


def test_stop_at_layer_skips_later_blocks(tiny):
    cap = ActivationCapture(tiny, ["blocks.0.hook_resid_post"])
    assert cap.stop_at_layer == 1
    ran = []
    handle = tiny.blocks[1].register_forward_hook(lambda *a: ran.append(1))
    try:
        cap(_tokens(tiny))
    finally:
        handle.remove()
    assert not ran, "block 1 ran although only block 0 was hooked"


def test_drop_bos_and_storage_dtype(tiny):
    toks = _tokens(tiny, b=2, t=10)
    full = ActivationCapture(tiny, ["blocks.0.hook_resid_post"], drop_bos=False)(toks)
    dropped = ActivationCapture(tiny, ["blocks.0.hook_resid_post"], dtype="bfloat16")(toks)
    assert len(full) == 20 and len(dropped) == 18
    assert dropped.acts["blocks.0.hook_resid_post"].dtype == torch.bfloat16
    keep = torch.ones(2, 10, dtype=torch.bool)
    keep[:, 0] = False
    ref = full.acts["blocks.0.hook_resid_post"][keep.reshape(-1)]
    torch.testing.assert_close(
        dropped.acts["blocks.0.hook_resid_post"].float(), ref, atol=0.05, rtol=0.02
    )
    assert (dropped.tokens == toks[:, 1:].reshape(-1)).all()


def test_padding_positions_dropped_with_attention_mask(tiny):
    toks = _tokens(tiny, b=2, t=8)
    mask = torch.ones_like(toks)
    mask[1, 5:] = 0
    out = ActivationCapture(tiny, ["blocks.0.hook_resid_post"])(toks, attention_mask=mask)
    assert len(out) == 2 * 7 - 3


def test_unknown_hook_suggests_names(tiny):
    with pytest.raises(ValueError, match="blocks.1.hook_resid_post"):
        ActivationCapture(tiny, ["blocks.1.hook_resid_pots"])


@pytest.fixture(scope="module")
def tiny64():
    """The tiny model in float64 (its own copy: the shared fixture stays float32)."""
    from interp.models import load_model

    return load_model("tiny", dtype=torch.float64)


def _loss_with_delta(model, toks, hook, delta):
    """The capture's loss, sum_t CE(logits[t], token[t+1]), in float64, with ``delta`` added at ``hook``."""
    import torch.nn.functional as F

    def add(act, hook):  # noqa: ARG001
        return act + delta.reshape(act.shape)

    logits = model.run_with_hooks(toks, fwd_hooks=[(hook, add)])
    assert logits.dtype == torch.float64
    return F.cross_entropy(
        logits[:, :-1].reshape(-1, logits.shape[-1]), toks[:, 1:].reshape(-1), reduction="sum"
    )


def test_gradients_match_finite_differences(tiny64):
    """dL/d(activation) against central differences, model and inputs in float64: relative error
    <= 1e-5 along random directions (measured ~1e-7, from the capture's float32 cross-entropy),
    so a gradient that is off by a few percent, let alone half its size, fails."""
    model = tiny64
    g = torch.Generator().manual_seed(0)
    # hook_dict is in registration order, not forward order: resid_pre is listed after attn there
    hooks = [
        "blocks.1.attn.hook_z",
        "blocks.0.hook_resid_post",
        "blocks.1.hook_resid_pre",
        "blocks.1.hook_resid_mid",
    ]
    toks = _tokens(model, b=2, t=8)
    cap = ActivationCapture(model, hooks, with_grads=True, drop_bos=False, dtype=torch.float64)
    batch = cap(toks)
    for p in model.parameters():
        assert p.grad is None  # the model's parameters get no gradient
    eps = 1e-5
    for h in hooks:
        grad = batch.grads[h]
        assert grad.dtype == torch.float64
        for _ in range(2):
            v = torch.randn(grad.shape, generator=g, dtype=torch.float64)
            v /= v.norm()
            with torch.no_grad():
                fd = (
                    (
                        _loss_with_delta(model, toks, h, eps * v)
                        - _loss_with_delta(model, toks, h, -eps * v)
                    )
                    / (2 * eps)
                ).item()
            analytic = (grad * v).sum().item()
            assert abs(analytic) > 1e-3, (h, analytic)  # a direction the loss actually depends on
            assert abs(fd - analytic) <= 1e-5 * abs(analytic), (h, fd, analytic)
    # the last position influences no loss term, so its gradient is zero
    last = batch.grads["blocks.0.hook_resid_post"].reshape(2, 8, -1)[:, -1]
    assert last.abs().max() < 1e-12

    # with gradients the forward runs to the logits even when every hook is in block 0: without
    # gradients this capture stops after block 0; with them the last block runs, and the gradient
    # at the hook does not depend on which other hooks are captured
    early = ActivationCapture(
        model, ["blocks.0.hook_resid_post"], with_grads=True, drop_bos=False, dtype=torch.float64
    )
    assert early.stop_at_layer == 1
    ran = []
    handle = model.blocks[model.cfg.n_layers - 1].register_forward_hook(lambda *a: ran.append(1))
    try:
        alone = early(toks)
    finally:
        handle.remove()
    assert ran, "the last block did not run although gradients were asked for"
    torch.testing.assert_close(
        alone.grads["blocks.0.hook_resid_post"],
        batch.grads["blocks.0.hook_resid_post"],
        rtol=1e-10,
        atol=1e-12,
    )


def test_shuffled_batches_fixed_size_permutation_and_resume():
    rows = torch.arange(100, dtype=torch.float32)[:, None].repeat(1, 3)
    blocks = [ActivationBatch({"h": rows[i : i + 25]}) for i in range(0, 100, 25)]
    out = list(shuffled_batches(blocks, batch_tokens=10, seed=3))
    assert all(len(b) == 10 for _, _, b in out)
    assert len(out) == 4 * 2  # 25 rows -> 2 full batches per block, 5 dropped each
    seen = torch.cat([b.acts["h"][:, 0] for _, _, b in out])
    assert len(set(seen.tolist())) == len(seen)  # no row served twice
    assert not torch.equal(seen[:10], torch.arange(10.0))  # shuffled
    # resume at block 2, batch 1 re-reads one block and reproduces the rest exactly
    tail = list(
        shuffled_batches(blocks[2:], batch_tokens=10, seed=3, start_block=2, skip_batches=1)
    )
    assert [(b, i) for b, i, _ in tail] == [(b, i) for b, i, _ in out[5:]]
    for (_, _, x), (_, _, y) in zip(tail, out[5:]):
        assert torch.equal(x.acts["h"], y.acts["h"])


def test_capture_blocks_skip_without_forward(tiny):
    windows = [w for w in _tokens(tiny, b=12, t=6)]
    cap = ActivationCapture(tiny, ["blocks.0.hook_resid_post"])
    all_blocks = list(capture_blocks(cap, windows, windows_per_block=4, batch_windows=2))
    assert len(all_blocks) == 3 and all(len(b) == 4 * 5 for b in all_blocks)
    calls = []
    orig = cap.__call__
    later = list(capture_blocks(lambda t: calls.append(1) or orig(t), windows, 4, 2, start_block=2))
    assert len(calls) == 2  # only the last block's two forwards ran
    torch.testing.assert_close(
        later[0].acts["blocks.0.hook_resid_post"], all_blocks[2].acts["blocks.0.hook_resid_post"]
    )


def test_skip_positions_leaves_out_the_first_after_bos(tiny):
    hook = "blocks.0.hook_resid_post"
    toks = _tokens(tiny, b=3, t=10)
    toks[2, 0] = 7 if tiny.tokenizer.bos_token_id != 7 else 8  # a window without BOS
    full = ActivationCapture(tiny, [hook], drop_bos=False)(toks).acts[hook].reshape(3, 10, -1)
    got = ActivationCapture(tiny, [hook], skip_positions=2)(toks).acts[hook]
    want = torch.cat([full[0, 3:], full[1, 3:], full[2, 2:]])  # BOS + 2 after it; no BOS: first 2
    assert torch.equal(got, want)
    with pytest.raises(ValueError, match="skip_positions"):
        ActivationCapture(tiny, [hook], skip_positions=-1)


def test_max_norm_ratio_leaves_out_rows_at_every_hook(tiny):
    hooks = ["blocks.0.hook_resid_post", "blocks.1.hook_resid_post"]
    toks = _tokens(tiny, b=4, t=16)
    full = ActivationCapture(tiny, hooks)(toks)
    norms = torch.stack([full.acts[h].norm(dim=-1) for h in hooks])
    ratio = 1.2  # tight enough that some rows of this random model go
    within = (norms <= ratio * norms.median(dim=1, keepdim=True).values).all(0)
    assert 0 < int((~within).sum()) < len(within)
    got = ActivationCapture(tiny, hooks, max_norm_ratio=ratio)(toks)
    for h in hooks:  # the same rows at both hooks, exactly those within the limit at both
        assert torch.equal(got.acts[h], full.acts[h][within])
    assert torch.equal(got.tokens, full.tokens[within])
    with pytest.raises(ValueError, match="max_norm_ratio"):
        ActivationCapture(tiny, hooks, max_norm_ratio=0.5)
