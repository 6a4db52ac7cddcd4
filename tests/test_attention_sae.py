"""Attention-output SAEs on hook_z: head layout (GQA), head attribution, DFA, logit effect,
induction-feature search on a hand-built attention-only model with planted heads, training, SAELens."""

from __future__ import annotations

import json

import pytest
import torch
from _runs import tiny_run

from interp.hooks import HeadLayout, head_layout, layout_for_spec
from saes.analysis.attention_heads import (
    attention_inputs,
    dfa_head_attribution,
    direct_feature_attribution,
    direct_logit_effect,
    encode_z,
    head_attribution,
    reconstruct_z,
)
from saes.analysis.head_roles import head_roles
from saes.analysis.induction import (
    InductionSearchConfig,
    find_induction_features,
    repeated_random_tokens,
)
from saes.analysis.prompts import explore_prompt
from saes.config import SAEConfig
from saes.sae import SAE

# ---- the planted model ------------------------------------------------------------------------
# Residual subspaces: E (token one-hot, 24 tokens = ids 100..123), P (position one-hot, 64),
# Q (previous token, written by L0H0), R (token two back, written by L0H1), a constant dim, a BOS dim.
N_TOK, N_CTX, D_HEAD = 24, 64, 64
E, P, Q, R = 0, N_TOK, N_TOK + N_CTX, 2 * N_TOK + N_CTX
CONST, BOSD = 3 * N_TOK + N_CTX, 3 * N_TOK + N_CTX + 1
D_MODEL = 3 * N_TOK + N_CTX + 2
TOK0, BOS = 100, 256
C = 10.0 * D_HEAD**0.5  # score of one match, after TransformerLens's 1/sqrt(d_head)
# Layer 1 heads: 0 uniform "context" head, 1 long-prefix induction (needs 2 matching tokens),
# 2 short-prefix induction (one matching token), 3 previous-token head.
UNIFORM, LONG, SHORT, PREV = 0, 1, 2, 3
CTX, MIXED = 3 * N_TOK, 3 * N_TOK + 1  # SAE features: see _planted_sae


def _planted_model():
    from transformer_lens import HookedTransformer, HookedTransformerConfig

    from interp.models import byte_tokenizer

    cfg = HookedTransformerConfig(
        n_layers=2,
        d_model=D_MODEL,
        n_ctx=N_CTX,
        d_head=D_HEAD,
        n_heads=4,
        attn_only=True,
        d_vocab=258,
        normalization_type=None,
        act_fn=None,
        default_prepend_bos=True,
    )
    model = HookedTransformer(cfg)
    with torch.no_grad():
        for p in model.parameters():
            p.zero_()
        e = torch.arange(N_TOK)
        model.embed.W_E[TOK0 + e, E + e] = 1.0
        model.embed.W_E[BOS, BOSD] = 1.0
        pos = torch.arange(N_CTX)
        model.pos_embed.W_pos[pos, P + pos] = 1.0
        model.pos_embed.W_pos[:, CONST] = 1.0
        model.unembed.W_U[E + e, TOK0 + e] = 1.0
        a0, a1 = model.blocks[0].attn, model.blocks[1].attn

        def positional(attn, h, back):  # attend from t to t - back
            attn.W_Q[h, P + pos[back:], pos[:-back] if back else pos] = C
            attn.W_K[h, P + pos, pos] = 1.0

        def copy_token(attn, h, out_dim):  # value = token one-hot, written to out_dim subspace
            attn.W_V[h, E + e, e] = 1.0
            attn.W_O[h, e, out_dim + e] = 1.0

        positional(a0, 0, 1)
        copy_token(a0, 0, Q)
        positional(a0, 1, 2)
        copy_token(a0, 1, R)
        copy_token(a1, UNIFORM, E)
        a1.W_O[UNIFORM].zero_()
        # short induction: query = current token, key = previous token of the source
        a1.W_Q[SHORT, E + e, e] = C
        a1.W_K[SHORT, Q + e, e] = 1.0
        copy_token(a1, SHORT, E)
        # long induction: both the current and the previous token must match; BOS sink at 1.5 C
        a1.W_Q[LONG, E + e, e] = C
        a1.W_K[LONG, Q + e, e] = 1.0
        a1.W_Q[LONG, Q + e, N_TOK + e] = C
        a1.W_K[LONG, R + e, N_TOK + e] = 1.0
        a1.W_Q[LONG, CONST, 2 * N_TOK] = 1.5 * C
        a1.W_K[LONG, BOSD, 2 * N_TOK] = 1.0
        copy_token(a1, LONG, E)
        positional(a1, PREV, 1)
        copy_token(a1, PREV, E)
    model.tokenizer = byte_tokenizer()
    return model


def _planted_sae() -> SAE:
    """Features 0..23: 'token e next' read from the short-induction head's block; 24..47: the same
    from the long-induction head; 48..71: previous token (head 3); 72: context (head 0);
    73: never fires, decoder split 3:4 between heads 0 and 3."""
    d_in = 4 * D_HEAD
    sae = SAE(
        SAEConfig(
            d_in=d_in,
            d_sae=3 * N_TOK + 2,
            variant="relu_l1",
            hook_name="blocks.1.attn.hook_z",
            model_name="planted",
        ),
        seed=0,
    )
    with torch.no_grad():
        sae.W_enc.zero_()
        sae.W_dec.zero_()
        sae.b_dec.zero_()
        sae.b_enc.fill_(-0.6)
        e = torch.arange(N_TOK)
        for block, head in enumerate((SHORT, LONG, PREV)):
            f = block * N_TOK + e
            sae.W_enc[head * D_HEAD + e, f] = 1.0
            sae.W_dec[f, head * D_HEAD + e] = 1.0
        sae.W_enc[UNIFORM * D_HEAD + e, CTX] = 1.0
        sae.b_enc[CTX] = -0.2
        sae.W_dec[CTX, UNIFORM * D_HEAD + e] = 1 / N_TOK**0.5
        sae.b_enc[MIXED] = -1.0
        sae.W_dec[MIXED, UNIFORM * D_HEAD] = 3.0
        sae.W_dec[MIXED, PREV * D_HEAD + 5] = 4.0
    return sae


@pytest.fixture(scope="module")
def planted():
    return _planted_model(), _planted_sae()


def _search_cfg(**kw):
    base = {
        "n_sequences": 16,
        "seq_len": 16,
        "batch_size": 8,
        "prefix_lengths": [1, 2, 4],
        "token_pool": list(range(TOK0, TOK0 + N_TOK)),
        "min_second_density": 0.005,
    }
    base.update(kw)
    return InductionSearchConfig(**base)


def _random_sae(
    d_in, d_sae=96, k=8, hook="blocks.1.attn.hook_z", model_name="tiny", scale=1.7, variant="topk"
):
    sae = SAE(
        SAEConfig(
            d_in=d_in, d_sae=d_sae, k=k, variant=variant, hook_name=hook, model_name=model_name
        ),
        seed=3,
    )
    sae.cfg.input_scale = scale
    with torch.no_grad():
        sae.b_dec.normal_(std=0.1)
        sae.b_enc.normal_(std=0.1)
    return sae


# ---- layout -------------------------------------------------------------------------------------


def test_head_layout_gqa_and_spec(tiny):
    from interp.models import load_model

    gqa = load_model("tiny:n_key_value_heads=2,attn_only=true")
    lay = head_layout(gqa, "blocks.1.attn.hook_z")
    assert (lay.n_heads, lay.d_head, lay.n_kv_heads, lay.layer) == (4, 16, 2, 1)
    assert [lay.kv_head(h) for h in range(4)] == [0, 0, 1, 1]
    assert layout_for_spec("tiny:n_key_value_heads=2,attn_only=true", "blocks.1.attn.hook_z") == lay
    assert head_layout(tiny, "blocks.0.attn.hook_z").n_kv_heads == 4
    with pytest.raises(ValueError, match="hook_z"):
        head_layout(tiny, "blocks.0.hook_resid_post")
    with pytest.raises(ValueError, match="layer 7"):
        head_layout(tiny, "blocks.7.attn.hook_z")
    with pytest.raises(ValueError, match="multiple"):
        HeadLayout(0, 9, 64, 4)


def test_smollm2_layout_from_cache_without_loading(smollm2):  # noqa: ARG001 - the fixture converts it once
    from interp.models import model_cache_dir

    folder = model_cache_dir("smollm2-135m")
    assert folder is not None and (folder / "config.json").is_file(), (
        "SmolLM2's converted cache is missing"
    )
    lay = layout_for_spec("smollm2-135m", "blocks.15.attn.hook_z")
    assert (lay.n_heads, lay.d_head, lay.n_kv_heads, lay.d_in) == (9, 64, 3, 576)


# ---- head attribution ---------------------------------------------------------------------------


def test_head_attribution_planted(planted):
    _, sae = planted
    lay = HeadLayout(1, 4, D_HEAD, 4)
    att = head_attribution(sae, lay)
    n = sae.cfg.d_sae
    torch.testing.assert_close(att.shares.sum(-1), torch.ones(n))
    assert (att.dominant_head[:N_TOK] == SHORT).all() and (
        att.dominant_head[N_TOK : CTX - N_TOK] == LONG
    ).all()
    assert (att.dominant_head[CTX - N_TOK : CTX] == PREV).all() and att.dominant_head[
        CTX
    ] == UNIFORM
    assert torch.allclose(att.max_share[:MIXED], torch.ones(MIXED))
    torch.testing.assert_close(att.shares[MIXED], torch.tensor([3 / 7, 0.0, 0.0, 4 / 7]))
    assert att.effective_heads[MIXED] > 1.9 and att.effective_heads[0] == pytest.approx(1.0)
    assert att.features_dominated == [1, N_TOK, N_TOK, N_TOK + 1]
    assert set(att.top_features(SHORT, 10).tolist()) <= set(range(N_TOK))
    assert att.top_features(UNIFORM, 10, min_share=0.3).tolist() == [CTX, MIXED]
    alive = torch.ones(n, dtype=torch.bool)
    alive[MIXED] = False
    assert head_attribution(sae, lay, alive=alive).features_dominated == [1, N_TOK, N_TOK, N_TOK]


# ---- DFA ----------------------------------------------------------------------------------------


def test_z_is_pattern_times_v_with_gqa_mapping():
    """z_h[t] = sum_s A_h[t, s] v_{h // group}[s] (and not v_{h % n_kv}); hook_z captured on the fast
    forward equals the value computed by TransformerLens's attention (the pattern-hooked fallback)."""
    from interp.activations import ActivationCapture
    from interp.models import load_model

    model = load_model("tiny:n_key_value_heads=2,n_heads=4,attn_only=true")
    tokens = torch.randint(0, 256, (2, 12))
    inp = attention_inputs(model, tokens, 1)
    lay = head_layout(model, "blocks.1.attn.hook_z")
    assert inp.v.shape[2] == 2 and inp.z.shape[2] == 4
    z = torch.einsum("bhts,bshd->bthd", inp.pattern, inp.v[:, :, lay.kv_index])
    torch.testing.assert_close(z, inp.z, rtol=1e-5, atol=1e-6)
    wrong = torch.einsum("bhts,bshd->bthd", inp.pattern, inp.v[:, :, torch.arange(4) % 2])
    assert not torch.allclose(wrong, inp.z, atol=1e-3)
    fast = ActivationCapture(model, ["blocks.1.attn.hook_z"], drop_bos=False)(tokens).acts[
        "blocks.1.attn.hook_z"
    ]
    torch.testing.assert_close(fast, inp.z.reshape(24, -1), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("spec", ["tiny:n_key_value_heads=2,attn_only=true", "tiny"])
def test_dfa_identity(spec):
    from interp.models import load_model

    model = load_model(spec)
    lay = head_layout(model, "blocks.1.attn.hook_z")
    sae = _random_sae(lay.d_in, model_name=spec)
    tokens = torch.randint(0, 256, (3, 10))
    inp = attention_inputs(model, tokens, 1)
    feats = torch.arange(0, 96, 5)
    d = direct_feature_attribution(sae, inp, lay, feats)
    assert d.dfa.shape == (3, 10, feats.numel(), 4, 10)
    pre = sae.pre_acts(inp.z.reshape(30, -1)).reshape(3, 10, -1)[..., feats]
    torch.testing.assert_close(d.dfa.sum((3, 4)) + d.bias, pre, rtol=1e-4, atol=1e-4)
    torch.testing.assert_close(d.pre_acts, pre, rtol=1e-4, atol=1e-4)
    assert (
        d.dfa[:, 2, :, :, 3:].abs().max() == 0
    )  # causal: no DFA from sources after the destination
    active = d.acts > 0
    torch.testing.assert_close(d.acts[active], pre[active], rtol=1e-4, atol=1e-4)


def test_dfa_planted_source_is_induction_target(planted):
    model, sae = planted
    lay = HeadLayout(1, 4, D_HEAD, 4)
    a = torch.arange(TOK0, TOK0 + 10)
    tokens = torch.cat([torch.tensor([BOS]), a, a])
    inp = attention_inputs(model, tokens, 1)
    t = 14  # holds a[3]; earlier at position 4; the next token a[4] sits at 5
    f = int(a[4]) - TOK0  # "a[4] next by short induction"
    d = direct_feature_attribution(sae, inp, lay, [f, N_TOK + f])
    assert d.acts[0, t, 0] > 0.3 and d.acts[0, t, 1] > 0.3
    src = d.by_source[0, t]  # [F, S]
    assert int(src[0].argmax()) == 5 and int(src[1].argmax()) == 5
    assert src[0, 5] / src[0].abs().sum() > 0.95
    assert int(d.by_head[0, t, 0].argmax()) == SHORT and int(d.by_head[0, t, 1].argmax()) == LONG


def test_direct_logit_effect_planted(planted):
    model, sae = planted
    lay = HeadLayout(1, 4, D_HEAD, 4)
    eff = direct_logit_effect(sae, model, lay, 7, n=3)
    assert eff.top_ids[0] == TOK0 + 7 and eff.top_values[0] == pytest.approx(1.0)
    assert eff.top_tokens[0] == model.tokenizer.decode([TOK0 + 7])
    assert (
        direct_logit_effect(sae, model, lay, CTX).effect.abs().sum() == 0
    )  # the context head's W_O is 0
    with pytest.raises(ValueError, match="out of range"):
        direct_logit_effect(sae, model, lay, sae.cfg.d_sae)


# ---- induction search ---------------------------------------------------------------------------


def test_find_induction_features_planted(planted):
    model, sae = planted
    lay = HeadLayout(1, 4, D_HEAD, 4)
    rep = find_induction_features(model, sae, _search_cfg(), layout=lay)
    found = {f.feature for f in rep.features}
    assert found and found <= set(range(2 * N_TOK))  # only the induction heads' features
    assert (
        len(found & set(range(N_TOK))) >= N_TOK - 2
        and len(found & set(range(N_TOK, 2 * N_TOK))) >= N_TOK - 2
    )
    for f in rep.features:
        head = SHORT if f.feature < N_TOK else LONG
        assert f.top_head == head and f.weight_head == head and f.source_share > 0.9
        assert f.kind in ("", "short-prefix" if head == SHORT else "long-prefix"), f
    kinds = [f.kind for f in rep.features]
    assert kinds.count("short-prefix") >= N_TOK // 2 and kinds.count("long-prefix") >= N_TOK // 2
    assert rep.head_induction_score[SHORT] > 0.9 and rep.head_induction_score[LONG] > 0.9
    assert rep.head_induction_score[PREV] < 0.1 and rep.head_induction_score[UNIFORM] < 0.2
    assert rep.head_kind[SHORT] == "short-prefix" and rep.head_kind[LONG] == "long-prefix"
    assert (
        rep.head_attention_by_prefix[1][LONG] < 0.1 and rep.head_attention_by_prefix[4][LONG] > 0.7
    )
    assert rep.features_per_head[UNIFORM] == rep.features_per_head[PREV] == 0
    d = rep.to_dict()
    json.dumps(d)
    assert d["n_short_prefix"] + d["n_long_prefix"] + d["n_prefix_undetermined"] == len(
        rep.features
    )


def test_repeated_tokens_and_config_errors(planted):
    model, _ = planted
    toks = repeated_random_tokens(model, _search_cfg(n_sequences=3, seq_len=10))
    assert toks.shape == (3, 21) and (toks[:, 0] == BOS).all()
    assert torch.equal(toks[:, 1:11], toks[:, 11:])
    assert all(len(set(r[1:11].tolist())) == 10 for r in toks)
    with pytest.raises(ValueError, match="prefix_lengths"):
        InductionSearchConfig(prefix_lengths=[0, 2])
    with pytest.raises(ValueError, match="token_pool"):
        InductionSearchConfig(seq_len=10, token_pool=[1, 2, 3])
    with pytest.raises(ValueError, match="extra"):
        InductionSearchConfig(n_seq=3)


def test_head_roles_and_explorer(planted):
    model, sae = planted
    lay = HeadLayout(1, 4, D_HEAD, 4)
    cfg = _search_cfg(n_sequences=4)
    windows = repeated_random_tokens(model, cfg)
    roles = head_roles(model, sae, windows, layout=lay, top_n=10)
    assert all(roles.feature_roles[f] == "induction" for f in roles.head_top_features[SHORT])
    assert all(roles.feature_roles[f] == "previous" for f in roles.head_top_features[PREV])
    assert roles.polysemantic == [False] * 4 and roles.fraction_polysemantic == 0.0
    view = explore_prompt(model, sae, windows[0], layout=lay, top_k=3)
    assert len(view) == windows.shape[1]
    pos = view[25]  # second repeat
    assert pos.features and len(pos.source_dfa[0]) == 26 and len(pos.head_dfa[0]) == 4
    assert (
        pos.features[0] == CTX
    )  # the context feature is the strongest; then the two induction features
    i = next(i for i, f in enumerate(pos.features) if f < N_TOK)
    assert (
        int(torch.tensor(pos.source_dfa[i]).argmax()) == 25 - 16 + 1
    )  # the token after the earlier copy
    assert int(torch.tensor(pos.head_dfa[i]).argmax()) == SHORT


# ---- training, artifacts, SAELens ---------------------------------------------------------------


def test_train_on_hook_z_gqa_saelens_roundtrip(tmp_path):
    """A run of data.hook ...hook_z trains on a GQA model; cfg.json records the head layout; SAELens
    opens it and its hook_z reshaping gives our outputs on [..., n_heads, d_head] inputs."""
    from sae_lens import SAE as LensSAE

    from interp.activations import ActivationCapture
    from interp.models import load_model
    from saes.artifacts import load_sae

    spec = "tiny:n_key_value_heads=2,attn_only=true"
    model = load_model(spec)
    run = tiny_run(
        tmp_path, data={"model": spec, "hook": "blocks.1.attn.hook_z"}, model=model, evaluate=True
    )
    raw = json.loads((run / "cfg.json").read_text())
    assert raw["reshape_activations"] == "hook_z" and raw["d_in"] == 64
    assert {k: raw["metadata"][k] for k in ("n_heads", "d_head", "n_kv_heads")} == {
        "n_heads": 4,
        "d_head": 16,
        "n_kv_heads": 2,
    }
    m = json.loads((run / "metrics.json").read_text())
    assert 0 < m["fvu"] < 1 and m["ce_loss_recovered"] == pytest.approx(
        (m["ce_zero_ablated"] - m["ce_spliced"]) / (m["ce_zero_ablated"] - m["ce_clean"])
    )
    ours = load_sae(run)
    lens = LensSAE.load_from_disk(str(run))
    z = (
        ActivationCapture(model, ["blocks.1.attn.hook_z"], drop_bos=False)(
            torch.randint(0, 256, (2, 9))
        )
        .acts["blocks.1.attn.hook_z"]
        .reshape(2, 9, 4, 16)
    )
    torch.testing.assert_close(lens.encode(z), encode_z(ours, z), rtol=1e-4, atol=1e-5)
    out = lens(z)
    assert out.shape == z.shape
    torch.testing.assert_close(out, reconstruct_z(ours, z), rtol=1e-4, atol=1e-5)


def test_cli_induction(tmp_path):
    from typer.testing import CliRunner

    from interp.cli import app
    from saes.artifacts import save_sae

    spec = "tiny:n_key_value_heads=2,attn_only=true"
    save_sae(_random_sae(64, model_name=spec), tmp_path / "sae")
    out = tmp_path / "report.json"
    res = CliRunner().invoke(
        app,
        [
            "induction",
            str(tmp_path / "sae"),
            "--n-sequences",
            "2",
            "--seq-len",
            "12",
            "--prefix-length",
            "1",
            "--prefix-length",
            "2",
            "--json",
            str(out),
        ],
    )
    assert res.exit_code == 0, res.output
    assert "induction features" in res.output and "induction-score" in res.output
    rep = json.loads(out.read_text())
    assert rep["layout"] == {"n_heads": 4, "d_head": 16, "n_kv_heads": 2, "layer": 1}
    assert len(rep["head_induction_score"]) == 4
    bad = _random_sae(64, hook="blocks.1.hook_resid_post", model_name=spec)
    save_sae(bad, tmp_path / "bad")
    res = CliRunner().invoke(app, ["induction", str(tmp_path / "bad")])
    assert res.exit_code == 2 and "not an attention-output hook" in res.output


def test_spliced_metrics_at_hook_z_exact_sae():
    """An SAE that reconstructs exactly (z = [relu(x), relu(-x)]) spliced at hook_z leaves the CE
    unchanged (the [batch, pos, n_heads, d_head] reshaping round-trips on the fast forward)."""
    from interp.models import load_model
    from saes.evaluation.evaluate import spliced_metrics

    model = load_model("tiny:n_key_value_heads=2,attn_only=true")
    sae = SAE(
        SAEConfig(d_in=64, d_sae=128, variant="relu_l1", hook_name="blocks.0.attn.hook_z"), seed=0
    )
    with torch.no_grad():
        eye = torch.eye(64)
        sae.W_enc.copy_(torch.cat([eye, -eye], 1))
        sae.W_dec.copy_(torch.cat([eye, -eye], 0))
        sae.b_enc.zero_()
        sae.b_dec.zero_()
    m = spliced_metrics(sae, model, "blocks.0.attn.hook_z", torch.randint(0, 256, (2, 16)))
    assert m["ce_spliced"] == pytest.approx(m["ce_clean"], abs=1e-5) and m[
        "kl_div"
    ] == pytest.approx(0, abs=1e-6)
    assert m["ce_zero_ablated"] != pytest.approx(m["ce_clean"], abs=1e-3)


def test_dfa_head_attribution_planted(planted):
    """Data-based attribution agrees with the planted heads, and ignores decoder noise in unused heads."""
    model, _ = planted
    lay = HeadLayout(1, 4, D_HEAD, 4)
    noisy = _planted_sae()
    with (
        torch.no_grad()
    ):  # large decoder-only noise in head 0's block (like an undertrained decoder row)
        noisy.W_dec[:, UNIFORM * D_HEAD + N_TOK :] += 0.5
    windows = repeated_random_tokens(model, _search_cfg(n_sequences=4))
    att = dfa_head_attribution(model, noisy, windows, layout=lay)
    fired = att.alive.nonzero().squeeze(-1).tolist()
    assert set(range(N_TOK)) & set(fired) and CTX in fired and MIXED not in fired
    for f in fired:
        want = SHORT if f < N_TOK else LONG if f < 2 * N_TOK else PREV if f < CTX else UNIFORM
        assert int(att.dominant_head[f]) == want and att.max_share[f] > 0.99
    assert (
        head_attribution(noisy, lay).max_share[0] < 0.5
    )  # the weights alone are fooled by the noise
    roles = head_roles(model, noisy, windows, layout=lay, attribution=att)
    assert all(roles.feature_roles[f] == "induction" for f in roles.head_top_features[SHORT])
