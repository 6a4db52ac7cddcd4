"""Steering utility: exact zero at alpha = 0, a known target direction, batching, CLI, bad input."""

from __future__ import annotations

import json

import pytest
import torch

from interp.logit_lens import direct_logit_effect
from saes.analysis.steering import mean_activation_norm, steer_latents, summarize
from saes.config import SAEConfig
from saes.sae import SAE


def _prompts(model, n=4, t=12, seed=0):
    g = torch.Generator().manual_seed(seed)
    toks = torch.randint(3, model.cfg.d_vocab, (n, t), generator=g)
    toks[:, 0] = model.tokenizer.bos_token_id
    return toks


def _sae_with_row(model, hook, row: torch.Tensor, latent=3):
    sae = SAE(SAEConfig(d_in=model.cfg.d_model, d_sae=16, k=2, hook_name=hook), seed=0)
    with torch.no_grad():
        sae.W_dec[latent] = row / row.norm()
    return sae


def test_steering_toward_a_token_raises_it_and_costs_kl(tiny):
    hook = f"blocks.{tiny.cfg.n_layers - 1}.hook_resid_post"
    token = 42
    w = tiny.W_U[:, token].detach() - tiny.W_U.detach().mean(
        1
    )  # the direction that raises token 42 most
    sae = _sae_with_row(tiny, hook, w)
    assert direct_logit_effect(tiny, hook, sae.W_dec[3].detach()).argmax().item() == token
    res = steer_latents(
        tiny, sae, [3], alphas=[0.0, 1.0, 2.0, 4.0], tokens=_prompts(tiny), n_targets=1
    )[0]
    assert res.target_tokens == [token]
    assert res.kl[0] == pytest.approx(0.0, abs=1e-6) and res.target_logprob_change[
        0
    ] == pytest.approx(0.0, abs=1e-6)
    assert all(b > a for a, b in zip(res.kl, res.kl[1:]))  # more push, further from clean
    assert all(b > a for a, b in zip(res.target_logprob_change, res.target_logprob_change[1:]))
    assert res.effect_per_alpha > 0 and res.effect_per_kl > 0
    # a random direction moves the output too, but does not land on token 42 as much
    other = steer_latents(
        tiny,
        _sae_with_row(tiny, hook, torch.randn(tiny.cfg.d_model)),
        [3],
        [2.0],
        _prompts(tiny),
        n_targets=1,
    )[0]
    assert res.target_logprob_change[2] > other.target_logprob_change[0]


def test_batched_rows_match_a_hand_written_hook(tiny):
    hook = "blocks.0.hook_resid_post"
    sae = _sae_with_row(tiny, hook, torch.randn(tiny.cfg.d_model))
    toks = _prompts(tiny, n=3)
    res = steer_latents(tiny, sae, [3], alphas=[0.5, 1.5], tokens=toks, batch_rows=4)[0]
    d = sae.W_dec[3].detach() / sae.W_dec[3].detach().norm()
    with torch.no_grad():
        clean = tiny(toks).log_softmax(-1)[:, 1:]

        def hand(act, hook):  # noqa: ARG001
            act = act.clone()
            act[:, 1:] += 1.5 * d
            return act

        steered = tiny.run_with_hooks(toks, fwd_hooks=[(hook, hand)]).log_softmax(-1)[:, 1:]
    kl = (clean.exp() * (clean - steered)).sum(-1).mean().item()
    assert res.kl[1] == pytest.approx(kl, rel=1e-4, abs=1e-6)
    t = torch.tensor(res.target_tokens)
    eff = (steered[..., t] - clean[..., t]).mean().item()
    assert res.target_logprob_change[1] == pytest.approx(eff, rel=1e-4, abs=1e-6)
    s = summarize([res])
    assert s["n_latents"] == 1 and s["kl_per_alpha"] > 0


def test_bad_input(tiny):
    sae = _sae_with_row(tiny, "blocks.0.hook_resid_post", torch.randn(tiny.cfg.d_model))
    with pytest.raises(ValueError, match="out of range"):
        steer_latents(tiny, sae, [99], [1.0], _prompts(tiny))
    with pytest.raises(ValueError, match="does not exist"):
        steer_latents(tiny, sae, [1], [1.0], _prompts(tiny), hook="blocks.9.hook_nope")
    with pytest.raises(ValueError, match="direct path"):
        steer_latents(tiny, sae, [1], [1.0], _prompts(tiny), hook="blocks.0.attn.hook_q")


def test_cli_steer(tmp_path, tiny):
    from typer.testing import CliRunner

    from interp.cli import app
    from saes.artifacts import save_sae

    sae = SAE(
        SAEConfig(
            d_in=tiny.cfg.d_model,
            d_sae=16,
            k=2,
            hook_name="blocks.1.hook_resid_post",
            model_name="tiny",
        ),
        seed=0,
    )
    save_sae(sae, tmp_path / "sae")
    out = tmp_path / "steer.json"
    r = CliRunner().invoke(
        app,
        [
            "steer",
            str(tmp_path / "sae"),
            "--latent",
            "2",
            "--latent",
            "5",
            "--alpha",
            "0.5",
            "--alpha",
            "1",
            "--n-prompts",
            "2",
            "--context-size",
            "16",
            "--json",
            str(out),
        ],
    )
    assert r.exit_code == 0, r.output
    data = json.loads(out.read_text())
    assert [x["latent"] for x in data["latents"]] == [2, 5]
    assert len(data["latents"][0]["kl"]) == 2
    # the unit of --alpha: the mean activation norm at the hook over the same prompts (by hand)
    from interp.data import token_windows

    windows = torch.stack(
        [
            w
            for _, w in zip(
                range(2), token_windows(tiny.tokenizer, context_size=16, split="validation")
            )
        ]
    )
    _, cache = tiny.run_with_cache(windows, names_filter=["blocks.1.hook_resid_post"])
    unit = cache["blocks.1.hook_resid_post"][:, 1:].norm(dim=-1).mean().item()
    assert data["alpha_unit"] == pytest.approx(unit, rel=1e-5)
    assert data["latents"][0]["alphas"] == pytest.approx([0.5 * unit, 1.0 * unit], rel=1e-5)
    r = CliRunner().invoke(app, ["steer", str(tmp_path / "nope"), "--latent", "2"])
    assert r.exit_code == 2 and "not an SAE folder" in r.output


def test_mean_activation_norm_by_hand(tiny):
    """Mean ||x|| over every position but the BOS (the unit of `interp steer --alpha`)."""
    toks = _prompts(tiny, n=3, t=9)
    for hook in ("blocks.0.hook_resid_post", "blocks.1.attn.hook_z"):
        _, cache = tiny.run_with_cache(toks, names_filter=[hook])
        act = cache[hook].reshape(3, 9, -1)
        want = act[:, 1:].norm(dim=-1).mean().item()
        assert mean_activation_norm(tiny, hook, toks) == pytest.approx(want, rel=1e-5)
        assert want != pytest.approx(
            act.norm(dim=-1).mean().item(), rel=1e-3
        )  # BOS left out, visibly
