"""Gradient TopK (g-SAE): beta = 0 is TopK exactly; the gradient changes selection as designed."""

from __future__ import annotations

import pytest
import torch
from _runs import tiny_config

from saes.config import SAEConfig
from saes.sae import SAE
from saes.training.loop import TrainStep


def _pair(beta: float, seed: int = 0):
    cfg = dict(d_in=16, d_sae=64, k=4)
    return SAE(SAEConfig(**cfg), seed=seed), SAE(
        SAEConfig(**cfg, variant="gtopk", beta=beta), seed=seed
    )


def test_beta_zero_equals_topk_bit_for_bit(one_thread):
    topk, gsae = _pair(beta=0.0)
    a, b = TrainStep(topk, lr=1e-3, dead_tokens=64), TrainStep(gsae, lr=1e-3, dead_tokens=64)
    g = torch.Generator().manual_seed(1)
    for _ in range(30):
        x = torch.randn(128, 16, generator=g)
        grad = torch.randn(128, 16, generator=g)
        a(x)
        b(x, grad)
    for name, p in topk.named_parameters():
        assert torch.equal(p, dict(gsae.named_parameters())[name]), name


def test_gradient_free_mode_is_topk_on_same_weights():
    topk, gsae = _pair(beta=2.0)
    x = torch.randn(32, 16)
    assert torch.equal(topk.encode(x), gsae.encode(x))  # no grad given: plain TopK
    grad = torch.randn(32, 16) * 10
    assert not torch.equal(topk.encode(x), gsae.encode(x, grad=grad))


def test_selection_prefers_low_activation_latent_with_large_gradient_effect():
    d_in, d_sae = 4, 8
    sae = SAE(SAEConfig(d_in=d_in, d_sae=d_sae, k=1, variant="gtopk", beta=10.0), seed=None)
    with torch.no_grad():
        sae.W_enc.zero_()
        sae.b_enc.zero_()
        sae.b_dec.zero_()
        sae.W_dec.copy_(torch.eye(d_sae, d_in) + torch.eye(d_sae, d_in).roll(4, 0))
        sae.W_dec[4:] = torch.eye(d_in)
        sae.W_enc[0, 0] = 1.0  # latent 0 reads x_0 strongly
        sae.W_enc[1, 1] = 1.0  # latent 1 reads x_1
    x = torch.tensor([[2.0, 0.5, 0.0, 0.0]])  # z_0 = 2.0, z_1 = 0.5
    grad_small_on_0 = torch.tensor([[0.0, 1.0, 0.0, 0.0]])  # the loss is sensitive along d_1 only
    code = sae.encode_sparse(x, grad=grad_small_on_0)
    assert code.indices.item() == 1, "g-SAE should pick the latent whose decoder moves the loss"
    assert code.values.item() == 0.5  # its own activation, not the score
    plain = sae.encode_sparse(x)
    assert plain.indices.item() == 0  # without gradients the larger activation wins


def test_gradient_selection_drives_the_training_gradient():
    """beta > 0 and a nonzero dL/dx: the training code keeps other latents than TopK would, exactly
    the top k of z_i * (1 + beta |d_i . g / input_scale|), and the loss gradient reaches the parameters
    through that selection: it equals the gradient of a dense reference FVU that keeps ReLU(pre) on
    the gradient-selected set (zero for latents it never selected), not TopK's gradient."""
    gen = torch.Generator().manual_seed(0)
    topk, gsae = _pair(beta=1.0)
    for sae in (topk, gsae):
        sae.cfg.input_scale = 2.0
    x = torch.randn(
        12, 16, generator=gen
    )  # 12 tokens x k = 4 picks leave some of the 64 latents unpicked
    grad = torch.randn(12, 16, generator=gen) * 3
    xs = gsae.scale_input(x)
    out = gsae.variant.train_forward(gsae, xs, grad, None)
    plain = topk.variant.train_forward(topk, xs, None, None)

    pre = (xs - gsae.b_dec) @ gsae.W_enc + gsae.b_enc
    score = pre.detach().relu() * (1 + 1.0 * ((grad / 2.0) @ gsae.W_dec.detach().T).abs())
    chosen = score.topk(4, dim=-1).indices
    assert torch.equal(out.code.indices.sort(-1).values, chosen.sort(-1).values)
    differs = (out.code.indices.sort(-1).values != plain.code.indices.sort(-1).values).any(-1)
    assert differs.float().mean() > 0.25, "the gradient changed the selection of few tokens"
    torch.testing.assert_close(
        out.code.values, pre.gather(1, out.code.indices).relu()
    )  # z, not the score

    z = torch.zeros_like(pre).scatter(1, chosen, 1.0) * pre.relu()
    x_hat = z @ gsae.W_dec + gsae.b_dec
    ref = (xs - x_hat).pow(2).sum() / (xs - xs.mean(0)).pow(2).sum()
    torch.testing.assert_close(out.loss, ref, rtol=1e-5, atol=1e-7)
    params = list(gsae.parameters())
    ours = dict(zip(("W_dec", "W_enc", "b_enc", "b_dec"), torch.autograd.grad(out.loss, params)))
    want = torch.autograd.grad(ref, params)
    for (name, mine), theirs in zip(ours.items(), want):
        torch.testing.assert_close(mine, theirs, rtol=1e-4, atol=1e-6, msg=name)
    never = torch.ones(64, dtype=torch.bool)
    never[chosen.unique()] = False
    assert (
        never.any()
        and ours["W_enc"][:, never].abs().max() == 0
        and ours["b_enc"][never].abs().max() == 0
    )
    topk_grad = torch.autograd.grad(plain.loss, list(topk.parameters()))[1]
    assert (ours["W_enc"] - topk_grad).abs().max() > 0.1 * topk_grad.abs().max()


def test_gsae_trains_and_its_gradient_changes_training(one_thread):
    """Training with dL/dx lowers the FVU, and ends elsewhere than TopK trained on the same batches."""
    torch.manual_seed(0)
    topk, gsae = _pair(beta=1.0)
    step, plain = TrainStep(gsae, lr=1e-2), TrainStep(topk, lr=1e-2)
    x, grad = torch.randn(256, 16), torch.randn(256, 16)
    first = step(x, grad)["fvu"]
    plain(x)
    for _ in range(40):
        last = step(x, grad)["fvu"]
        plain(x)
    assert last < 0.8 * first, (first, last)
    assert (gsae.W_enc - topk.W_enc).abs().max() > 1e-2


def test_gsae_trains_from_cache_with_grads_and_evaluates_both_modes(tmp_path, tiny):
    """cache (with dL/dx) -> g-SAE run -> metrics.json with both inference modes -> SAELens opens it as TopK."""
    import json

    from sae_lens import SAE as LensSAE

    from interp.activation_files import ActivationFilesWriter
    from saes.artifacts import load_sae
    from saes.training.loop import train

    hook = "blocks.1.hook_resid_post"
    g = torch.Generator().manual_seed(0)
    windows = torch.randint(3, tiny.cfg.d_vocab, (48, 17), generator=g)
    windows[:, 0] = tiny.tokenizer.bos_token_id
    from interp.activations import ActivationCapture

    cap = ActivationCapture(tiny, [hook], with_grads=True)
    ActivationFilesWriter(
        tmp_path / "cache", cap, {"model": "tiny", "context_size": 17}, windows_per_shard=8
    ).write(iter(list(windows)), batch_windows=4, progress=False)
    rows = {"train_tokens": 512, "batch_tokens": 128, "buffer_tokens": 256}
    cfg = tiny_config(
        tmp_path,
        data={"hook": hook, "cache": str(tmp_path / "cache"), "context_size": 17, **rows},
        sae={"variant": "gtopk", "beta": 2.0, "d_sae": 64, "k": 4},
        optim={"warmup_steps": 1},
        eval={"tokens": 256},
    )
    run = train(cfg, progress=False)
    metrics = json.loads((run / "metrics.json").read_text())
    assert metrics["inference_mode"] == "with_grads"
    plain = metrics["without_grads"]
    for key in ("fvu", "l0_mean", "dead_fraction", "ce_loss_recovered", "kl_div"):
        assert key in metrics and key in plain, key
    assert metrics["fvu"] != plain["fvu"]  # the modes select differently on the same weights
    assert metrics["ce_clean"] == pytest.approx(plain["ce_clean"])  # same clean model, same windows
    raw = json.loads((run / "cfg.json").read_text())
    assert raw["architecture"] == "topk" and raw["selection_rule"] == "gradient topk, beta=2.0"
    ours = load_sae(run)
    assert ours.cfg.variant == "gtopk" and ours.cfg.beta == 2.0
    lens = LensSAE.load_from_disk(str(run))
    x = torch.randn(32, tiny.cfg.d_model)
    torch.testing.assert_close(
        lens.encode(x), ours.encode(x), rtol=1e-4, atol=1e-5
    )  # gradient-free mode


def test_gsae_needs_grads_from_cache(tmp_path, tiny):
    from interp.activation_files import ActivationFilesWriter
    from interp.activations import ActivationCapture
    from saes.training.loop import train

    hook = "blocks.0.hook_resid_post"
    windows = torch.randint(3, tiny.cfg.d_vocab, (8, 17))
    ActivationFilesWriter(
        tmp_path / "cache", ActivationCapture(tiny, [hook]), {"model": "tiny"}, windows_per_shard=4
    ).write(iter(list(windows)), batch_windows=4, progress=False)
    rows = {"train_tokens": 64, "batch_tokens": 64, "buffer_tokens": 64}
    cfg = tiny_config(
        tmp_path,
        data={"hook": hook, "cache": str(tmp_path / "cache"), **rows},
        sae={"variant": "gtopk", "d_sae": 32, "k": 4},
    )
    with pytest.raises(ValueError, match="needs gradients"):
        train(cfg, progress=False)
