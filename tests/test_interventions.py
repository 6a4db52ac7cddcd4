"""Interventions at hooks: each op changes exactly the chosen positions / heads, patching and
ablation identities on the logits, a direction's exact logit shift through the final norm, hook
clean-up after errors, and bad input."""

from __future__ import annotations

import pytest
import torch

from interp.interventions import (
    Intervention,
    add_direction,
    apply,
    intervened,
    mean_ablate,
    patch,
    replace_with,
    run_with_interventions,
    splice_with_error,
    zero_ablate,
)
from interp.logit_lens import residual_direction, unembed_direction

pytestmark = pytest.mark.usefixtures("one_thread_module")

RESID = "blocks.0.hook_resid_post"
Z = "blocks.1.attn.hook_z"


def _tokens(model, n=3, t=8, seed=0):
    g = torch.Generator().manual_seed(seed)
    toks = torch.randint(3, 250, (n, t), generator=g)
    toks[:, 0] = model.tokenizer.bos_token_id
    return toks


def _clean(model, toks, hooks):
    with torch.no_grad():
        logits, cache = model.run_with_cache(toks, names_filter=list(hooks))
    return logits, {h: cache[h].clone() for h in hooks}


def _seen(model, toks, interventions, hook):
    """The activation at ``hook`` after ``interventions`` (a recorder runs last at that hook)."""
    seen = {}

    def record(act):
        seen["act"] = act.clone()
        return act

    with torch.no_grad():
        logits = run_with_interventions(
            model, toks, [*interventions, Intervention(hook, apply(record))]
        )
    return seen["act"], logits


def _no_hooks_left(model) -> bool:
    return all(not hp.fwd_hooks and not hp._forward_hooks for hp in model.hook_dict.values())


# ---- where: positions, masks, heads, BOS ------------------------------------------------------


def _ops(model, other):
    d = torch.randn(model.cfg.d_model, generator=torch.Generator().manual_seed(1))
    mean = torch.randn(model.cfg.d_model, generator=torch.Generator().manual_seed(2))
    return {
        "replace_with": (replace_with(lambda x: 2.0 * x + 1.0), lambda x: 2.0 * x + 1.0),
        "splice_with_error": (splice_with_error(lambda x: 0.5 * x), lambda x: x),
        "patch": (patch(other), lambda x: other),
        "zero": (zero_ablate(), torch.zeros_like),
        "mean_given": (mean_ablate(mean), lambda x: mean.expand_as(x)),
        "add_direction": (add_direction(d, 3.0), lambda x: x + 3.0 * d),
        "apply": (apply(torch.neg), torch.neg),
    }


@pytest.mark.parametrize(
    "name",
    ["replace_with", "splice_with_error", "patch", "zero", "mean_given", "add_direction", "apply"],
)
def test_each_op_changes_exactly_the_chosen_positions(tiny, name):
    toks = _tokens(tiny)
    _, clean = _clean(tiny, toks, [RESID])
    x = clean[RESID]
    other = torch.randn(x.shape, generator=torch.Generator().manual_seed(3))
    op, want = _ops(tiny, other)[name]
    got, _ = _seen(tiny, toks, [Intervention(RESID, op, positions=[1, -2])], RESID)
    chosen = torch.zeros(toks.shape, dtype=torch.bool)
    chosen[:, [1, toks.shape[1] - 2]] = True
    torch.testing.assert_close(got[chosen], want(x)[chosen], rtol=1e-5, atol=1e-5)
    assert torch.equal(got[~chosen], x[~chosen])  # the rest exactly as it was
    if name != "splice_with_error":  # x_hat + (x - x_hat) is x again, the others change it
        assert (got[chosen] - x[chosen]).abs().max() > 1e-3
    # a bool mask [batch, pos] picks (row, position) pairs; keep_bos leaves position 0 alone
    mask = torch.zeros(toks.shape, dtype=torch.bool)
    mask[0, 0] = mask[1, 3] = mask[2, 0] = mask[2, 5] = True
    got, _ = _seen(tiny, toks, [Intervention(RESID, op, positions=mask, keep_bos=True)], RESID)
    mask[:, 0] = False
    torch.testing.assert_close(got[mask], want(x)[mask], rtol=1e-5, atol=1e-5)
    assert torch.equal(got[~mask], x[~mask])


def test_keep_bos_and_all_positions(tiny):
    toks = _tokens(tiny)
    _, clean = _clean(tiny, toks, [RESID])
    x = clean[RESID]
    got, _ = _seen(tiny, toks, [Intervention(RESID, zero_ablate(), keep_bos=True)], RESID)
    assert torch.equal(got[:, 0], x[:, 0]) and not got[:, 1:].any()
    got, _ = _seen(tiny, toks, [Intervention(RESID, zero_ablate())], RESID)
    assert not got.any()


def test_heads_and_positions_at_hook_z(tiny):
    """Only head 2 at position 4 (and head 0 everywhere but the BOS) change; with the SAE-style
    flattened [n_heads * d_head] direction, each head gets its own block of it."""
    toks = _tokens(tiny)
    _, clean = _clean(tiny, toks, [Z])
    z = clean[Z]  # [batch, pos, head, d_head]
    H, dh = tiny.cfg.n_heads, tiny.cfg.d_head
    got, _ = _seen(tiny, toks, [Intervention(Z, zero_ablate(), positions=4, heads=[2])], Z)
    changed = torch.zeros(z.shape[:3], dtype=torch.bool)
    changed[:, 4, 2] = True
    assert not got[changed].any() and torch.equal(got[~changed], z[~changed])
    d = torch.randn(H * dh, generator=torch.Generator().manual_seed(0))
    iv = Intervention(Z, add_direction(d, 2.0), heads=[0], keep_bos=True)
    got, _ = _seen(tiny, toks, [iv], Z)
    changed = torch.zeros(z.shape[:3], dtype=torch.bool)
    changed[:, 1:, 0] = True
    torch.testing.assert_close(got[:, 1:, 0], z[:, 1:, 0] + 2.0 * d[:dh])
    assert torch.equal(got[~changed], z[~changed])


def test_per_row_and_per_position_scales(tiny):
    toks = _tokens(tiny)
    _, clean = _clean(tiny, toks, [RESID])
    x = clean[RESID]
    d = torch.randn(tiny.cfg.d_model, generator=torch.Generator().manual_seed(4))
    rows = torch.tensor([0.0, 1.0, -2.5])
    got, _ = _seen(tiny, toks, [Intervention(RESID, add_direction(d, rows), keep_bos=True)], RESID)
    torch.testing.assert_close(got[:, 1:], x[:, 1:] + rows[:, None, None] * d)
    assert torch.equal(got[0], x[0]) and torch.equal(got[:, 0], x[:, 0])
    per = torch.arange(toks.numel(), dtype=torch.float32).reshape(toks.shape)
    got, _ = _seen(tiny, toks, [Intervention(RESID, add_direction(d, per))], RESID)
    torch.testing.assert_close(got, x + per[..., None] * d)


# ---- identities on the logits -----------------------------------------------------------------


def test_patching_own_activations_is_a_no_op_and_another_prompts_reproduces_it(tiny):
    toks, other = _tokens(tiny, seed=0), _tokens(tiny, seed=1)
    hooks = [RESID, Z, "blocks.1.hook_resid_mid"]
    clean_logits, own = _clean(tiny, toks, hooks)
    other_logits, theirs = _clean(tiny, other, hooks)
    with torch.no_grad():
        same = run_with_interventions(tiny, toks, [Intervention(h, patch(own)) for h in hooks])
        torch.testing.assert_close(same, clean_logits, rtol=0, atol=1e-5)
        # the whole residual stream after block 0 is the other prompt's: so is everything after
        patched = run_with_interventions(tiny, toks, Intervention(RESID, patch(theirs)))
    torch.testing.assert_close(patched, other_logits, rtol=1e-5, atol=1e-5)
    assert (patched - clean_logits).abs().max() > 1e-2
    # a captured activation flattened per token ([batch, pos, n_heads * d_head]) fits hook_z too
    flat = theirs[Z].reshape(*theirs[Z].shape[:2], -1)
    got, _ = _seen(tiny, toks, [Intervention(Z, patch(flat), positions=[2])], Z)
    assert torch.equal(got[:, 2], theirs[Z][:, 2]) and torch.equal(got[:, 3], own[Z][:, 3])


def test_zero_ablation_equals_patching_zeros(tiny):
    toks = _tokens(tiny)
    _, clean = _clean(tiny, toks, [Z])
    with torch.no_grad():
        a = run_with_interventions(tiny, toks, Intervention(Z, zero_ablate(), keep_bos=True))
        b = run_with_interventions(
            tiny, toks, Intervention(Z, patch(torch.zeros_like(clean[Z])), keep_bos=True)
        )
    assert torch.equal(a, b)


def test_mean_ablation_uses_the_given_or_the_computed_mean(tiny):
    toks = _tokens(tiny)
    clean_logits, clean = _clean(tiny, toks, [RESID])
    x = clean[RESID]
    m = torch.randn(tiny.cfg.d_model, generator=torch.Generator().manual_seed(5))
    with torch.no_grad():
        a = run_with_interventions(tiny, toks, Intervention(RESID, mean_ablate(m), positions=[3]))
        b = run_with_interventions(
            tiny, toks, Intervention(RESID, patch(m.expand_as(x).clone()), positions=[3])
        )
    assert torch.equal(a, b) and (a - clean_logits).abs().max() > 1e-3
    # computed: over the selected (row, position)s (here: all but the BOS) / per position
    got, _ = _seen(tiny, toks, [Intervention(RESID, mean_ablate(), keep_bos=True)], RESID)
    want = x[:, 1:].reshape(-1, x.shape[-1]).mean(0)
    torch.testing.assert_close(got[:, 1:], want.expand_as(x[:, 1:]))
    assert torch.equal(got[:, 0], x[:, 0])
    got, _ = _seen(tiny, toks, [Intervention(RESID, mean_ablate(over="batch"))], RESID)
    torch.testing.assert_close(got, x.mean(0, keepdim=True).expand_as(x))


def test_added_direction_at_the_last_resid_shifts_logits_by_the_unembedded_direction(tiny):
    """x -> x + d with d = -2x at the last position of the last block's resid_post: a reflection,
    so the final LayerNorm's scale s is unchanged and its bias cancels, and the logits there move by
    exactly W_U^T (w * (d - mean(d))) / s (worked by hand), which is unembed_direction(d) / s (the
    function leaves the per-position scale out, as it documents). Other positions do not move."""
    hook = f"blocks.{tiny.cfg.n_layers - 1}.hook_resid_post"
    toks = _tokens(tiny, n=1, t=7)
    clean_logits, clean = _clean(tiny, toks, [hook, "ln_final.hook_scale"])
    x = clean[hook][0, -1]
    s = clean["ln_final.hook_scale"][0, -1, 0]
    d = -2.0 * x
    with torch.no_grad():
        steered = run_with_interventions(
            tiny, toks, Intervention(hook, add_direction(d), positions=-1)
        )
        w, W_U = tiny.ln_final.w.detach(), tiny.W_U.detach()
        by_hand = ((d - d.mean()) * w) @ W_U / s
        via_fn = unembed_direction(tiny, hook, d) / s
    torch.testing.assert_close(via_fn, by_hand, rtol=1e-5, atol=1e-5)
    shift = steered[0, -1] - clean_logits[0, -1]
    torch.testing.assert_close(shift, by_hand, rtol=1e-4, atol=1e-4)
    assert shift.abs().max() > 1.0
    # (the clean run hooked ln_final's scale, so its norm took TransformerLens's path: rounding)
    torch.testing.assert_close(steered[0, :-1], clean_logits[0, :-1], rtol=0, atol=1e-5)


def test_direction_paths_through_w_o_and_w_out(tiny):
    """hook_z goes through W_O, mlp.hook_post through W_out, batched rows like single ones."""
    g = torch.Generator().manual_seed(6)
    H, dh = tiny.cfg.n_heads, tiny.cfg.d_head
    dz = torch.randn(3, H * dh, generator=g)
    W_O = tiny.blocks[1].attn.W_O.detach()
    by_hand = torch.einsum("nhd,hdm->nm", dz.reshape(3, H, dh), W_O)
    torch.testing.assert_close(residual_direction(tiny, Z, dz), by_hand)
    torch.testing.assert_close(
        unembed_direction(tiny, Z, dz), unembed_direction(tiny, RESID, by_hand)
    )
    torch.testing.assert_close(unembed_direction(tiny, Z, dz[1]), unembed_direction(tiny, Z, dz)[1])
    dm = torch.randn(tiny.cfg.d_mlp, generator=g)
    torch.testing.assert_close(
        residual_direction(tiny, "blocks.0.mlp.hook_post", dm),
        dm @ tiny.blocks[0].mlp.W_out.detach(),
    )
    with pytest.raises(ValueError, match="direct path"):
        unembed_direction(tiny, "blocks.0.attn.hook_q", dz[0])


# ---- hook clean-up and bad input --------------------------------------------------------------


def test_hooks_are_removed_even_when_the_forward_raises(tiny):
    toks = _tokens(tiny)
    with torch.no_grad():
        clean = tiny(toks)

        def boom(act):
            raise RuntimeError("boom")

        with pytest.raises(RuntimeError, match="boom"):
            run_with_interventions(
                tiny, toks, [Intervention(RESID, zero_ablate()), Intervention(Z, apply(boom))]
            )
        assert _no_hooks_left(tiny)
        with pytest.raises(ValueError, match="returned"):  # an op of the wrong shape
            run_with_interventions(tiny, toks, Intervention(RESID, apply(lambda a: a[:, :1])))
        assert _no_hooks_left(tiny)
        with pytest.raises(KeyError):
            with intervened(tiny, Intervention(RESID, zero_ablate())):
                assert not _no_hooks_left(tiny)
                raise KeyError("inside")
        assert _no_hooks_left(tiny)
        assert torch.equal(tiny(toks), clean)


def test_bad_input(tiny):
    toks = _tokens(tiny)
    with pytest.raises(ValueError, match="unknown hook"):
        run_with_interventions(tiny, toks, Intervention("blocks.0.hook_resid_pots", zero_ablate()))
    with pytest.raises(ValueError, match="per-head hook"):
        Intervention(RESID, zero_ablate(), heads=[0])
    with pytest.raises(ValueError, match="out of range"):
        run_with_interventions(tiny, toks, Intervention(Z, zero_ablate(), heads=[tiny.cfg.n_heads]))
    with pytest.raises(ValueError, match="out of range"):
        run_with_interventions(tiny, toks, Intervention(RESID, zero_ablate(), positions=[99]))
    with pytest.raises(ValueError, match="position mask"):
        run_with_interventions(
            tiny, toks, Intervention(RESID, zero_ablate(), positions=torch.ones(2, 2).bool())
        )
    with pytest.raises(ValueError, match="does not fit"):
        run_with_interventions(tiny, toks, Intervention(RESID, patch(torch.zeros(5, 3))))
    with pytest.raises(ValueError, match="query, key"):
        Intervention("blocks.0.attn.hook_pattern", zero_ablate(), positions=[1])
    with pytest.raises(ValueError, match="over must be"):
        mean_ablate(over="rows")
    assert _no_hooks_left(tiny)
