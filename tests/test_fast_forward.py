"""interp.models.fast_forward: same logits, hooks, activations and gradients as TransformerLens's own
forwards; fallbacks where the fast path cannot serve (patterns, padding, KV cache)."""

from __future__ import annotations

import copy
import io

import pytest
import torch
from transformer_lens.components import (
    AbstractAttention,
    LayerNorm,
    LayerNormPre,
    RMSNorm,
    RMSNormPre,
    TransformerBlock,
)

from interp.activations import ActivationCapture
from interp.models import load_model, tiny_model
from interp.models.fast_forward import (
    install_fast_forward,
    is_fast_forward_installed,
    uninstall_fast_forward,
)

ATOL = 1e-5
CONFIGS = {
    "mlp": {},
    "attn_only": {"attn_only": True},
    "gqa_rotary_rms_gated": {
        "n_heads": 4,
        "n_key_value_heads": 2,
        "positional_embedding_type": "rotary",
        "normalization_type": "RMS",
        "gated_mlp": True,
        "act_fn": "silu",
    },
}
NOT_SCORES = ("hook_pattern", "hook_attn_scores")


def _randomize_biases(model, seed: int = 1) -> None:
    """TL initialises biases to zero; give them values so the bias paths are exercised too."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name.split(".")[-1].startswith(("b_", "_b_", "b")) and p.dim() <= 2:
                p.copy_(torch.randn(p.shape, generator=g) * 0.1)


def _pair(kw: dict, biases: bool = False, fold: bool = False):
    """(original, fast) copies of the same tiny model."""
    ref = tiny_model(**kw)
    if biases:
        _randomize_biases(ref)
    if fold:  # LN -> LNPre / RMS -> RMSPre, as load_model's converted models have
        ref.process_weights_(fold_ln=True, center_writing_weights=False, center_unembed=False)
    uninstall_fast_forward(ref)  # load paths install it; tiny_model itself does not
    fast = install_fast_forward(copy.deepcopy(ref))
    return ref, fast


def _tokens(model, b: int = 3, t: int = 14, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    toks = torch.randint(0, 256, (b, t), generator=g)
    toks[:, 0] = model.tokenizer.bos_token_id
    return toks


@pytest.fixture
def fallbacks(monkeypatch):
    """Counts calls of the original (class) forwards, which the fast path only makes on fallback."""
    counts: dict[str, int] = {}
    for cls in (AbstractAttention, TransformerBlock, LayerNorm, LayerNormPre, RMSNorm, RMSNormPre):
        orig = cls.forward

        def spy(self, *a, _orig=orig, _name=cls.__name__, **k):
            counts[_name] = counts.get(_name, 0) + 1
            return _orig(self, *a, **k)

        monkeypatch.setattr(cls, "forward", spy)
    return counts


def _assert_caches_equal(cache, ref_cache, names) -> None:
    for name in names:
        a, b = cache[name], ref_cache[name]
        assert a.shape == b.shape, name
        torch.testing.assert_close(a, b, atol=ATOL, rtol=1e-4, msg=name)


@pytest.mark.parametrize("name", list(CONFIGS))
@pytest.mark.parametrize("biases", [False, True], ids=["zero_bias", "bias"])
def test_logits_and_every_hook_match(name, biases, fallbacks):
    ref, fast = _pair(CONFIGS[name], biases=biases)
    toks = _tokens(ref)
    with torch.inference_mode():
        ref_logits, ref_cache = ref.run_with_cache(toks)
        fallbacks.clear()
        torch.testing.assert_close(fast(toks), ref_logits, atol=ATOL, rtol=1e-4)
        assert not fallbacks, f"fast path fell back: {fallbacks}"

        # all hooks (patterns included): attention and norms fall back, the values must still agree
        logits, cache = fast.run_with_cache(toks)
        assert set(cache.keys()) == set(ref_cache.keys())
        _assert_caches_equal(cache, ref_cache, ref_cache.keys())
        torch.testing.assert_close(logits, ref_logits, atol=ATOL, rtol=1e-4)

        # no pattern/score hooks: attention runs on SDPA
        fallbacks.clear()
        _, cache = fast.run_with_cache(toks, names_filter=lambda n: not n.endswith(NOT_SCORES))
        assert "AbstractAttention" not in fallbacks
        _assert_caches_equal(cache, ref_cache, cache.keys())
        assert len(cache) == len(ref_cache) - 2 * ref.cfg.n_layers

        # nor norm hooks: everything (norms, blocks) on the fast path
        fallbacks.clear()

        def no_ln(n):
            return not n.endswith(NOT_SCORES) and ".ln" not in n and not n.startswith("ln")

        _, cache = fast.run_with_cache(toks, names_filter=no_ln)
        assert not fallbacks, f"fast path fell back: {fallbacks}"
        _assert_caches_equal(cache, ref_cache, cache.keys())


@pytest.mark.parametrize("name", list(CONFIGS))
def test_hooks_fire_in_the_same_order_with_the_same_shapes(name):
    ref, fast = _pair(CONFIGS[name])
    toks = _tokens(ref)

    def fired(model):
        seen = []
        model.run_with_hooks(
            toks,
            fwd_hooks=[
                (
                    lambda n: not n.endswith(NOT_SCORES),
                    lambda x, hook: seen.append((hook.name, x.shape)),
                )
            ],
        )
        return seen

    with torch.inference_mode():
        assert fired(fast) == fired(ref)


def test_folded_norms_and_hook_edits():
    """LNPre/RMSPre (what load_model's folded models use) and a hook that edits activations."""
    for kw in (CONFIGS["mlp"], CONFIGS["gqa_rotary_rms_gated"]):
        ref, fast = _pair(kw, biases=True, fold=True)
        assert isinstance(fast.blocks[0].ln1, (LayerNormPre, RMSNormPre))
        toks = _tokens(ref)

        def ablate(x, hook):
            x[..., 1] = 0.0
            return x

        hooks = [
            ("blocks.0.attn.hook_v", ablate),
            ("blocks.0.hook_resid_mid", lambda x, hook: 2 * x),
        ]
        with torch.inference_mode():
            torch.testing.assert_close(
                fast.run_with_hooks(toks, fwd_hooks=hooks),
                ref.run_with_hooks(toks, fwd_hooks=hooks),
                atol=ATOL,
                rtol=1e-4,
            )
            torch.testing.assert_close(fast(toks), ref(toks), atol=ATOL, rtol=1e-4)


@pytest.mark.parametrize("name", list(CONFIGS))
def test_gradients_match(name):
    ref, fast = _pair(CONFIGS[name], biases=True)
    toks = _tokens(ref)
    grads = []
    for model in (ref, fast):
        model.zero_grad(set_to_none=True)
        model(toks, return_type="loss").backward()
        grads.append({n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None})
    assert grads[0].keys() == grads[1].keys()
    for n in grads[0]:
        torch.testing.assert_close(grads[1][n], grads[0][n], atol=ATOL, rtol=1e-4, msg=n)


@pytest.mark.parametrize("name", list(CONFIGS))
@pytest.mark.parametrize("frozen", [False, True])
def test_capture_with_grads_matches(name, frozen):
    """Gradients w.r.t. activations (the attribution path), with trainable or frozen weights."""
    ref, fast = _pair(CONFIGS[name])
    for model in (ref, fast):
        model.requires_grad_(not frozen)
    hooks = ["blocks.0.hook_resid_post", "blocks.1.attn.hook_z", "blocks.1.hook_resid_post"]
    toks = _tokens(ref)
    a = ActivationCapture(ref, hooks, with_grads=True)(toks)
    b = ActivationCapture(fast, hooks, with_grads=True)(toks)
    for h in hooks:
        torch.testing.assert_close(b.acts[h], a.acts[h], atol=ATOL, rtol=1e-4)
        torch.testing.assert_close(b.grads[h], a.grads[h], atol=ATOL, rtol=1e-4)


def test_pattern_hook_falls_back_and_sees_the_real_pattern(fallbacks):
    ref, fast = _pair(CONFIGS["gqa_rotary_rms_gated"])
    toks = _tokens(ref)
    got = {}

    def grab(x, hook):
        got[hook.name] = x.clone()

    def zero_head0(x, hook):  # patching a pattern must change the output as it does originally
        x[:, 0] = 0.0
        return x

    with torch.inference_mode():
        fallbacks.clear()
        fast.run_with_hooks(toks, fwd_hooks=[("blocks.1.attn.hook_pattern", grab)])
        assert fallbacks.get("AbstractAttention") == 1  # only the hooked layer falls back
        _, cache = ref.run_with_cache(toks, names_filter="blocks.1.attn.hook_pattern")
        torch.testing.assert_close(
            got["blocks.1.attn.hook_pattern"], cache["blocks.1.attn.hook_pattern"]
        )
        hooks = [("blocks.0.attn.hook_pattern", zero_head0)]
        torch.testing.assert_close(
            fast.run_with_hooks(toks, fwd_hooks=hooks),
            ref.run_with_hooks(toks, fwd_hooks=hooks),
            atol=ATOL,
            rtol=1e-4,
        )
        # a backward hook on the scores also forces the original path
        fallbacks.clear()
        fast.blocks[0].attn.hook_attn_scores.add_hook(lambda g, hook: None, dir="bwd")
        try:
            fast(toks)
        finally:
            fast.reset_hooks()
        assert fallbacks.get("AbstractAttention") == 1


def test_padding_mask_and_kv_cache_fall_back(fallbacks):
    ref, fast = _pair(CONFIGS["gqa_rotary_rms_gated"], biases=True)
    toks = _tokens(ref, b=2, t=10)
    mask = torch.ones_like(toks)
    mask[1, 6:] = 0
    with torch.inference_mode():
        fallbacks.clear()
        out = fast(toks, attention_mask=mask)
        assert fallbacks.get("AbstractAttention") == ref.cfg.n_layers
        torch.testing.assert_close(out, ref(toks, attention_mask=mask), atol=ATOL, rtol=1e-4)
        expected = ref(toks)
        fallbacks.clear()  # an all-ones mask needs no fallback
        out = fast(toks, attention_mask=torch.ones_like(toks))
        assert not fallbacks
        torch.testing.assert_close(out, expected, atol=ATOL, rtol=1e-4)
    kw = {"max_new_tokens": 6, "do_sample": False, "verbose": False, "use_past_kv_cache": True}
    torch.testing.assert_close(fast.generate(toks[:1], **kw), ref.generate(toks[:1], **kw))


class _CountingF:
    """Stands in for torch.nn.functional inside interp.models.fast_forward, counting F.linear calls."""

    def __init__(self):
        self.linear_calls = 0

    def linear(self, *args, **kwargs):
        self.linear_calls += 1
        return torch.nn.functional.linear(*args, **kwargs)

    def __getattr__(self, name):
        return getattr(torch.nn.functional, name)


@pytest.mark.parametrize("name", ["mlp", "gqa_rotary_rms_gated"])
def test_fused_projections_track_weight_updates(name, monkeypatch):
    import interp.models.fast_forward as ff

    ref, fast = _pair(CONFIGS[name], biases=True)
    gated = CONFIGS[name].get("gated_mlp", False)
    attn, mlp = fast.blocks[0].attn, fast.blocks[0].mlp
    assert ff._qkv_buffers(attn) is not None
    assert (ff._gate_in_buffer(mlp) is not None) == gated
    assert fast.state_dict().keys() == ref.state_dict().keys()
    for key, value in ref.state_dict().items():  # same values and strides as before the fusion
        assert fast.state_dict()[key].stride() == value.stride(), key
        torch.testing.assert_close(fast.state_dict()[key], value, rtol=0, atol=0)
    counting = _CountingF()
    monkeypatch.setattr(ff, "F", counting)
    toks = _tokens(ref)
    n = fast.cfg.n_layers
    with torch.inference_mode():
        torch.testing.assert_close(fast(toks), ref(toks), atol=ATOL, rtol=1e-4)
        # per block: QKV, O, MLP in (gate + in fused), MLP out; then the unembedding
        assert counting.linear_calls == n * 4 + 1
        other = tiny_model(**CONFIGS[name], seed=5)
        fast.load_state_dict(other.state_dict())  # in place: lands in the fused buffers
        torch.testing.assert_close(fast(toks), other(toks), atol=ATOL, rtol=1e-4)
    with torch.no_grad():
        attn.W_Q.data[0, 0, 0] += 1.0  # untracked .data edits
        attn.b_V.data[0] += 1.0
        if gated:
            mlp.W_in.data[0, 0] += 1.0
        ref.load_state_dict(fast.state_dict())
        torch.testing.assert_close(fast(toks), ref(toks), atol=ATOL, rtol=1e-4)
        # parameters no longer in the buffers: separate GEMMs, still right
        attn.W_Q.data = attn.W_Q.data.clone() * 2
        if gated:
            mlp.W_gate.data = mlp.W_gate.data.clone() * 2
        assert ff._qkv_buffers(attn) is None and ff._gate_in_buffer(mlp) is None
        ref.load_state_dict(fast.state_dict())
        torch.testing.assert_close(fast(toks), ref(toks), atol=ATOL, rtol=1e-4)


def test_hooks_on_fused_outputs_see_contiguous_tensors_and_can_edit_them():
    ref, fast = _pair(CONFIGS["gqa_rotary_rms_gated"], biases=True)
    toks = _tokens(ref)
    seen = []

    def zero_in_place(x, hook):
        seen.append(x.is_contiguous())
        x[..., 0] = 0.0

    def replace(x, hook):
        seen.append(x.is_contiguous())
        return x * 1.5

    hooks = [
        ("blocks.0.attn.hook_q", zero_in_place),
        ("blocks.0.attn.hook_k", replace),
        ("blocks.1.attn.hook_rot_k", zero_in_place),
        ("blocks.1.attn.hook_v", replace),
        ("blocks.0.mlp.hook_pre", zero_in_place),
        ("blocks.1.mlp.hook_pre_linear", replace),
    ]
    with torch.inference_mode():
        expected = ref.run_with_hooks(toks, fwd_hooks=hooks)
        seen.clear()
        torch.testing.assert_close(
            fast.run_with_hooks(toks, fwd_hooks=hooks), expected, atol=ATOL, rtol=1e-4
        )
    assert seen == [True] * len(hooks)


def test_install_uninstall_copy_pickle():
    model = load_model("tiny:gated_mlp=true,act_fn=silu,normalization_type=RMS")
    assert is_fast_forward_installed(model)
    assert is_fast_forward_installed(load_model("tiny-attn-only"))
    plain = load_model("tiny", fast=False)
    assert not is_fast_forward_installed(plain)
    assert all("forward" not in m.__dict__ for m in plain.modules())
    toks = _tokens(model)
    with torch.inference_mode():
        expected = model(toks)
        install_fast_forward(model)  # idempotent
        for clone in (copy.deepcopy(model), _pickle_round_trip(model)):
            assert is_fast_forward_installed(clone)
            assert clone.blocks[0].forward.args[0] is clone.blocks[0]  # bound to the copy
            torch.testing.assert_close(clone(toks), expected)
        uninstall_fast_forward(model)
        assert not is_fast_forward_installed(model)
        assert all("forward" not in m.__dict__ for m in model.modules())
        torch.testing.assert_close(model(toks), expected, atol=ATOL, rtol=1e-4)


def _pickle_round_trip(model):
    buf = io.BytesIO()
    torch.save(model, buf)
    buf.seek(0)
    return torch.load(buf, weights_only=False)


def test_smollm2_logits_match_original(smollm2):
    assert is_fast_forward_installed(smollm2)
    toks = smollm2.to_tokens("The Eiffel Tower is in the city of")
    with torch.inference_mode():
        fast_logits = smollm2(toks)
        uninstall_fast_forward(smollm2)
        try:
            ref_logits = smollm2(toks)
        finally:
            install_fast_forward(smollm2)
    torch.testing.assert_close(fast_logits, ref_logits, atol=1e-4, rtol=1e-4)
