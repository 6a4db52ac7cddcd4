"""The SAE module, TopK and ReLU/L1 variants, evaluation formulas, and SAELens artifacts."""

from __future__ import annotations

import json

import pytest
import torch

from interp.synthetic import SyntheticDictionary, direction_recovery
from saes.artifacts import load_sae, save_sae
from saes.config import SAEConfig
from saes.evaluation.evaluate import fvu, reconstruction_metrics
from saes.sae import SAE
from saes.training.geometric_median import geometric_median
from saes.training.loop import TrainStep, lr_factor


def _sae(d_in=16, d_sae=64, k=4, variant="topk", seed=0):
    return SAE(
        SAEConfig(
            d_in=d_in,
            d_sae=d_sae,
            k=k,
            variant=variant,
            hook_name="blocks.0.hook_resid_post",
            model_name="tiny",
        ),
        seed=seed,
    )


def test_fvu_hand_computed():
    # x rows (1,0), (3,0): mean (2,0); sum ||x - mean||^2 = 1 + 1 = 2
    x = torch.tensor([[1.0, 0.0], [3.0, 0.0]])
    x_hat = torch.tensor([[1.0, 1.0], [2.0, 0.0]])  # errors: 1 and 1 -> 2
    assert fvu(x, x_hat) == pytest.approx(1.0)
    x_hat2 = torch.tensor([[1.5, 0.0], [3.0, 0.0]])  # error 0.25
    assert fvu(x, x_hat2) == pytest.approx(0.125)
    # the wrong formula some peers use (variance around 0, or per-row mean) gives other numbers
    assert fvu(x, x_hat2) != pytest.approx(0.25 / (1 + 9))


def test_streamed_metrics_equal_one_batch_fvu():
    sae = _sae()
    x = torch.randn(300, 16) * 3 + 1
    with torch.no_grad():
        x_hat, z = sae(x)
    m = reconstruction_metrics(sae, x.split(70))
    assert m["fvu"] == pytest.approx(fvu(x, x_hat), rel=1e-6)
    assert m["explained_variance"] == pytest.approx(1 - m["fvu"])
    assert m["l0_mean"] == pytest.approx((z != 0).sum(-1).float().mean().item())
    assert 0 <= m["dead_fraction"] <= 1 and m["n_tokens"] == 300


def test_topk_keeps_k_largest_after_relu():
    sae = _sae(k=4)
    x = torch.randn(8, 16)
    z = sae.encode(x)
    pre = sae.pre_acts(x)
    assert ((z != 0).sum(-1) <= 4).all()
    ref = torch.relu(pre).topk(4, dim=-1)
    torch.testing.assert_close(z.gather(-1, ref.indices), ref.values)


def test_geometric_median_exact_cases():
    pts = torch.tensor([[0.0, 0.0], [1.0, 0.0], [0.0, 1.0], [100.0, 100.0]])
    gm = geometric_median(pts)
    # for 4 points, the median of a triangle plus a far outlier sits inside the triangle region
    assert gm.norm() < 1.0
    collinear = torch.tensor([[0.0], [1.0], [10.0]])
    assert geometric_median(collinear).item() == pytest.approx(1.0, abs=1e-3)


def test_fold_input_scale_preserves_outputs():
    """(s x - b) W_enc + c = (x - b/s)(s W_enc) + c: folding leaves the pre-activations, the codes and
    the reconstruction of raw inputs unchanged (compared directly, nothing rescaled)."""
    sae = _sae()
    sae.cfg.input_scale = 3.7
    with torch.no_grad():
        sae.b_dec.normal_()
        sae.b_enc.normal_(std=0.1)
    x = torch.randn(10, 16)
    with torch.no_grad():
        pre_before = sae.pre_acts(x)
        x_hat_before, z_before = sae(x)
        sae.fold_input_scale()
        pre_after = sae.pre_acts(x)
        x_hat_after, z_after = sae(x)
    assert sae.cfg.input_scale is None
    torch.testing.assert_close(pre_after, pre_before, rtol=1e-5, atol=1e-5)
    assert torch.equal(z_after != 0, z_before != 0)  # the same latents fire
    torch.testing.assert_close(z_after, z_before, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(x_hat_after, x_hat_before, rtol=1e-5, atol=1e-5)
    # the codes live on the scale of the pre-activations: folding must not divide them by s
    assert z_before.abs().max() > 0.1


def test_decoder_gradient_projection_and_unit_norm():
    sae = _sae()
    step = TrainStep(sae, lr=1e-2)
    x = torch.randn(64, 16)
    step(x)
    torch.testing.assert_close(sae.W_dec.norm(dim=-1), torch.ones(64))
    sae.W_dec.grad = torch.randn_like(sae.W_dec)
    sae.remove_gradient_parallel_to_decoder()
    assert (sae.W_dec.grad * sae.W_dec).sum(-1).abs().max() < 1e-5


def test_lr_schedule_warmup_and_decay():
    assert lr_factor(0, 100, 10, 0.2) == pytest.approx(0.1)
    assert lr_factor(50, 100, 10, 0.2) == 1.0
    assert lr_factor(90, 100, 10, 0.2) == pytest.approx(0.5)


def test_default_lr_formula_and_documented_values():
    """Without a length: the width rule 2e-4 / sqrt(d_sae / 2^14) (2e-4 at 16,384 latents, halved
    for every 4x wider). With one: max(width rule, min(cap, budget / effective steps) / sqrt(d_in)),
    where the effective steps are the schedule's area (warm-up counts half, the decay half)."""
    from saes.training.loop import default_lr
    from saes.training.step import LR_CAP, LR_STEP_BUDGET, effective_steps, legacy_lr

    assert default_lr(2**14) == pytest.approx(2e-4, rel=1e-12) == legacy_lr(2**14)
    assert default_lr(4608) == pytest.approx(2e-4 * (2**14 / 4608) ** 0.5, rel=1e-12)
    assert default_lr(4 * 2**14) == pytest.approx(1e-4, rel=1e-12)
    # the schedule's area, by hand and as the sum of lr_factor over the run
    assert effective_steps(440, 50, 0.2) == pytest.approx(440 - 25 - 44)
    area = sum(lr_factor(i, 440, 50, 0.2) for i in range(440))
    assert area == pytest.approx(effective_steps(440, 50, 0.2), abs=1.5)  # (the +1 of each ramp)
    # a short run: the budget; a very short one: the cap; a long one: the width rule; all per
    # sqrt(d_in) (a decoder entry of a unit-norm row is about 1 / sqrt(d_in))
    assert default_lr(1536, 1000, 50, 0.2, d_in=64) == pytest.approx(LR_STEP_BUDGET / 875 / 8)
    assert default_lr(1536, 1000, 50, 0.2, d_in=256) == pytest.approx(LR_STEP_BUDGET / 875 / 16)
    assert default_lr(4608, 20, 10, 0.2, d_in=576) == pytest.approx(LR_CAP / 24)
    assert default_lr(4608, 20, 10, 0.2, d_in=576) == pytest.approx(4e-3)  # (the README's value)
    assert default_lr(2**14, 10**6, 50, 0.2, d_in=576) == pytest.approx(2e-4)
    long_budget = LR_STEP_BUDGET / effective_steps(10**6, 50, 0.2) / 24
    assert default_lr(2**14, 10**6, 50, 0.2, d_in=576) > long_budget
    with pytest.raises(TypeError, match="d_in"):
        default_lr(1536, 1000)
    sae = _sae(d_sae=64)
    d_in = sae.cfg.d_in
    assert TrainStep(sae).lr == default_lr(64)
    assert TrainStep(sae).optimizer.param_groups[0]["lr"] == default_lr(64)
    step = TrainStep(sae, total_steps=1000, warmup_steps=50, decay_fraction=0.2)
    assert step.lr == default_lr(64, 1000, 50, 0.2, d_in=d_in)
    assert step.lr == pytest.approx(min(LR_CAP, LR_STEP_BUDGET / 875) / d_in**0.5)
    assert TrainStep(sae, lr=1e-3).lr == 1e-3


def test_bad_sae_config_rejected():
    with pytest.raises(ValueError, match="k must satisfy"):
        SAEConfig(d_in=8, d_sae=16, k=16)
    with pytest.raises(ValueError, match="extra|unknown|Extra"):
        SAEConfig(d_in=8, d_sae=16, k=4, bogus=1)
    sae = _sae()
    with pytest.raises(ValueError, match="d_in=16.*17"):
        sae.encode(torch.randn(2, 17))


AUX_SEEDS = (0, 1, 2, 3)


def _handicapped_dead_fraction(
    aux_k_coef: float, seed: int, steps: int = 60
) -> tuple[float, float]:
    """Train a TopK SAE whose latents 32..63 start with b_enc = -3 (they cannot win the top-k, so they
    die at once); returns the fraction of those latents dead after 5 steps (the trainer's
    dead_mask) and after ``steps`` more (never firing on 4,096 held-out tokens, the eval's definition)."""
    data = SyntheticDictionary(d_in=16, n_features=128, mean_active=4, alpha=0.2, seed=seed + 1)
    sae = SAE(SAEConfig(d_in=16, d_sae=64, k=2, aux_k=16, aux_k_coef=aux_k_coef), seed=seed)
    with torch.no_grad():
        sae.b_enc[32:] = -3.0
    step = TrainStep(sae, lr=1e-2, dead_tokens=512)
    for _ in range(5):
        step(data.sample(256)[0])
    early = step.dead_mask[32:].float().mean().item()
    saw_aux = False
    for _ in range(steps):
        saw_aux |= "aux_k" in step(data.sample(256)[0])
    assert saw_aux == (aux_k_coef > 0)
    with torch.no_grad():
        z = sae.encode(data.sample(4096)[0])
    return early, ((z[:, 32:] != 0).sum(0) == 0).float().mean().item()


def test_aux_k_revives_dead_latents(one_thread):
    """Over several seeds, the same runs with and without AuxK (paired by seed): AuxK lowers the
    dead fraction of the handicapped latents by many standard errors of the paired difference, and
    at least halves it."""
    without, with_aux = [], []
    for seed in AUX_SEEDS:
        early, dead = _handicapped_dead_fraction(0.0, seed)
        early_aux, dead_aux = _handicapped_dead_fraction(1 / 32, seed)
        assert early > 0.5 and early_aux > 0.5, (
            seed,
            early,
            early_aux,
        )  # the handicap killed most of them
        without.append(dead)
        with_aux.append(dead_aux)
    diff = torch.tensor(without) - torch.tensor(with_aux)
    sem = diff.std().item() / len(AUX_SEEDS) ** 0.5
    assert diff.mean().item() > 4 * sem, (without, with_aux)
    assert sum(with_aux) < 0.5 * sum(without), (without, with_aux)


def test_aux_k_loss_matches_the_documented_formula():
    """aux_k = aux_k_coef * sum_n ||e_n - e_hat_n||^2 / sum_n ||e_n - mean(e)||^2 with e = x - x_hat
    detached and e_hat_n = sum_{j in A_n} ReLU(pre_nj) W_dec[j] (no b_dec), A_n the top k_aux
    pre-activations among dead latents; value and every parameter gradient against a dense
    autograd reference, on both kernel paths: k_aux * DENSE_SUBSET_RATIO >= n_dead (dense GEMMs
    over the dead set) and < n_dead (row gathers)."""
    from saes.kernels import DENSE_SUBSET_RATIO
    from saes.variants.topk import TopK

    g = torch.Generator().manual_seed(0)
    cases = ((12, 4), (40, 4))
    assert [k_aux * DENSE_SUBSET_RATIO >= n_dead for n_dead, k_aux in cases] == [True, False]
    for n_dead, k_aux in cases:
        sae = _sae(d_in=16, d_sae=64, k=4)
        sae.cfg.aux_k, sae.cfg.aux_k_coef = k_aux, 0.1
        sae.variant = TopK(sae.cfg)
        with torch.no_grad():
            sae.b_dec.normal_(generator=g)
            sae.b_enc.normal_(std=0.3, generator=g)
        dead = torch.zeros(64, dtype=torch.bool)
        dead[torch.randperm(64, generator=g)[:n_dead]] = True
        x = torch.randn(48, 16, generator=g) * 2
        out = sae.variant.train_forward(sae, x, None, dead)
        params = list(sae.parameters())
        ours = torch.autograd.grad(out.losses["aux_k"], params)

        pre = (x - sae.b_dec) @ sae.W_enc + sae.b_enc
        top = pre.detach().relu().topk(4, dim=-1).indices
        z = torch.zeros_like(pre).scatter(1, top, 1.0) * pre.relu()
        x_hat = z @ sae.W_dec + sae.b_dec
        e = (x - x_hat).detach()
        aux_idx = pre.detach().masked_fill(~dead, float("-inf")).topk(k_aux, dim=-1).indices
        z_aux = torch.zeros_like(pre).scatter(1, aux_idx, 1.0) * pre.relu()
        e_hat = z_aux @ sae.W_dec
        ref = 0.1 * (e - e_hat).pow(2).sum() / (e - e.mean(0)).pow(2).sum()
        torch.testing.assert_close(out.losses["aux_k"], ref, rtol=1e-5, atol=1e-7)
        torch.testing.assert_close(
            out.losses["fvu"],
            (x - x_hat).pow(2).sum() / (x - x.mean(0)).pow(2).sum(),
            rtol=1e-5,
            atol=1e-7,
        )
        for _p, mine, theirs in zip(params, ours, torch.autograd.grad(ref, params)):
            assert theirs.abs().max() > 0
            torch.testing.assert_close(mine, theirs, rtol=1e-4, atol=1e-6)


def test_l1_loss_matches_the_documented_formula():
    """relu_l1: l1 = l1_coefficient * mean_n[sum_i z_ni ||W_dec[i]||] / mean_n ||x_n - mean(x)||,
    z = ReLU((x - b_dec) W_enc + b_enc), with decoder rows of different norms; value and gradients
    against a hand-written reference."""
    g = torch.Generator().manual_seed(1)
    sae = _sae(variant="relu_l1")
    sae.cfg.l1_coefficient = 0.7
    with torch.no_grad():
        sae.W_dec.mul_(torch.rand(64, 1, generator=g) * 2 + 0.1)  # norms in (0.1, 2.1), not 1
        sae.b_dec.normal_(generator=g)
        sae.b_enc.normal_(std=0.3, generator=g)
    x = torch.randn(40, 16, generator=g) * 3 + 1
    out = sae.variant.train_forward(sae, x, None, None)
    params = list(sae.parameters())
    ours = torch.autograd.grad(out.losses["l1"], params)
    z = torch.relu((x - sae.b_dec) @ sae.W_enc + sae.b_enc)
    ref = 0.7 * (z * sae.W_dec.norm(dim=-1)).sum(-1).mean() / (x - x.mean(0)).norm(dim=-1).mean()
    torch.testing.assert_close(out.losses["l1"], ref, rtol=1e-5, atol=1e-7)
    x_hat = z @ sae.W_dec + sae.b_dec
    torch.testing.assert_close(
        out.losses["fvu"],
        (x - x_hat).pow(2).sum() / (x - x.mean(0)).pow(2).sum(),
        rtol=1e-5,
        atol=1e-7,
    )
    for mine, theirs in zip(ours, torch.autograd.grad(ref, params)):
        assert theirs.abs().max() > 0
        torch.testing.assert_close(mine, theirs, rtol=1e-5, atol=1e-7)


@pytest.mark.parametrize("variant", ["topk", "relu_l1"])
def test_training_recovers_synthetic_dictionary(variant, one_thread):
    """A TopK SAE recovers >= 90% of true directions with cosine > 0.9 (ReLU/L1: trains, improves FVU)."""
    torch.manual_seed(0)
    data = SyntheticDictionary(
        d_in=32, n_features=64, mean_active=4, alpha=0.3, noise_std=0.01, seed=0
    )
    knobs = {"l1_coefficient": 0.3} if variant == "relu_l1" else {}  # relu_l1's own key
    sae = SAE(SAEConfig(d_in=32, d_sae=128, k=4, variant=variant, **knobs), seed=0)
    step = TrainStep(
        sae, lr=4e-3, total_steps=1500, warmup_steps=20, decay_fraction=0.3, dead_tokens=20_000
    )
    with torch.no_grad():
        sae.b_dec.copy_(geometric_median(data.sample(2048)[0]))
    x0 = data.sample(2048)[0]
    fvu0 = fvu(x0, sae(x0)[0].detach())
    for _ in range(1500):
        step(data.sample(512)[0])
    x = data.sample(4096)[0]
    with torch.no_grad():
        f = fvu(x, sae(x)[0])
    assert f < 0.5 * fvu0
    if variant == "topk":
        rec = direction_recovery(data.directions, sae.W_dec.detach())
        assert rec >= 0.9, f"recovered {rec:.2f} of true directions (fvu {f:.3f})"
        assert f < 0.2


def test_artifact_opens_in_saelens_and_back(tmp_path):
    from sae_lens import SAE as LensSAE

    sae = _sae(d_in=16, d_sae=64, k=4)
    sae.cfg.input_scale = 2.0
    with torch.no_grad():
        sae.b_dec.normal_()
        sae.b_enc.normal_(std=0.1)
    x = torch.randn(20, 16)
    x_hat, z = sae(x)
    save_sae(sae, tmp_path / "a")
    cfg = json.loads((tmp_path / "a" / "cfg.json").read_text())
    assert cfg["architecture"] == "topk" and cfg["k"] == 4
    lens = LensSAE.load_from_disk(str(tmp_path / "a"))
    torch.testing.assert_close(lens.encode(x), z, rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(lens.decode(lens.encode(x)), x_hat.detach(), rtol=1e-4, atol=1e-5)
    ours = load_sae(tmp_path / "a")
    torch.testing.assert_close(ours(x)[0], x_hat, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("arch", ["standard", "topk"])
def test_load_sae_saved_by_saelens(tmp_path, arch):
    from sae_lens import SAE as LensSAE
    from sae_lens.saes.standard_sae import StandardSAEConfig
    from sae_lens.saes.topk_sae import TopKSAEConfig

    cfg = (
        TopKSAEConfig(d_in=12, d_sae=40, k=5)
        if arch == "topk"
        else StandardSAEConfig(d_in=12, d_sae=40)
    )
    lens = LensSAE.from_dict(cfg.to_dict())
    with torch.no_grad():
        for p in lens.parameters():
            p.normal_(std=0.3)
    lens.save_model(str(tmp_path / "lens"))
    ours = load_sae(tmp_path / "lens")
    x = torch.randn(9, 12)
    torch.testing.assert_close(ours.encode(x), lens.encode(x), rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(
        ours.decode(ours.encode(x)), lens.decode(lens.encode(x)), rtol=1e-4, atol=1e-5
    )


def test_load_sae_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="cfg.json"):
        load_sae(tmp_path)
    sae = _sae()
    save_sae(sae, tmp_path / "a")
    (tmp_path / "a" / "sae_weights.safetensors").write_bytes(b"\x00\x01garbage")
    with pytest.raises(ValueError, match="sae_weights.safetensors"):
        load_sae(tmp_path / "a")


def test_bf16_encoder_option_trains_close_to_fp32(one_thread):
    torch.manual_seed(0)
    data = SyntheticDictionary(d_in=32, n_features=64, mean_active=4, seed=0)
    fvus = {}
    for enc in (None, "bfloat16"):
        sae = SAE(SAEConfig(d_in=32, d_sae=128, k=4, encoder_dtype=enc), seed=0)
        step = TrainStep(sae, lr=4e-3)
        for _ in range(200):
            step(data.sample(512)[0])
        x = data.sample(2048)[0]
        with torch.no_grad():
            fvus[enc] = fvu(x, sae(x)[0])
        assert sae.W_enc.dtype == torch.float32
    assert abs(fvus[None] - fvus["bfloat16"]) < 0.05, fvus
