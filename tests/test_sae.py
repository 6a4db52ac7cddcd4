"""The SAE module, TopK and ReLU/L1 variants, evaluation formulas, and SAELens artifacts."""
from __future__ import annotations

import json

import pytest
import torch

from interp.synthetic import SyntheticDictionary, direction_recovery
from saes.artifacts import load_sae, save_sae
from saes.config import SAEConfig
from saes.evals import fvu, reconstruction_metrics
from saes.geometric_median import geometric_median
from saes.sae import SAE
from saes.train import TrainStep, lr_factor


def _sae(d_in=16, d_sae=64, k=4, variant="topk", seed=0):
    return SAE(SAEConfig(d_in=d_in, d_sae=d_sae, k=k, variant=variant, hook_name="blocks.0.hook_resid_post",
                         model_name="tiny"), seed=seed)


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
    sae = _sae()
    sae.cfg.input_scale = 3.7
    with torch.no_grad():
        sae.b_dec.normal_()
        sae.b_enc.normal_(std=0.1)
    x = torch.randn(10, 16)
    before = sae(x)
    sae.fold_input_scale()
    after = sae(x)
    assert sae.cfg.input_scale is None
    torch.testing.assert_close(before[0], after[0], rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(before[1] / 3.7, after[1] / 3.7, rtol=1e-4, atol=1e-5)


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


def test_bad_sae_config_rejected():
    with pytest.raises(ValueError, match="k must satisfy"):
        SAEConfig(d_in=8, d_sae=16, k=16)
    with pytest.raises(ValueError, match="extra|unknown|Extra"):
        SAEConfig(d_in=8, d_sae=16, k=4, bogus=1)
    sae = _sae()
    with pytest.raises(ValueError, match="d_in=16.*17"):
        sae.encode(torch.randn(2, 17))


def _dead_after_training(aux_k_coef: float) -> tuple[float, float]:
    torch.manual_seed(0)
    data = SyntheticDictionary(d_in=16, n_features=128, mean_active=4, alpha=0.2, seed=1)
    sae = SAE(SAEConfig(d_in=16, d_sae=64, k=2, aux_k=16, aux_k_coef=aux_k_coef), seed=0)
    with torch.no_grad():  # handicap half the latents so that they die early
        sae.b_enc[32:] = -1.5
    step = TrainStep(sae, lr=1e-2, dead_tokens=512)
    for _ in range(5):
        step(data.sample(256)[0])
    early = step.dead_mask[32:].float().mean().item()
    saw_aux = False
    for _ in range(300):
        saw_aux |= "aux_k" in step(data.sample(256)[0])
    assert saw_aux == (aux_k_coef > 0)
    return early, step.dead_mask[32:].float().mean().item()


def test_aux_k_revives_dead_latents():
    early, without = _dead_after_training(0.0)
    early_aux, with_aux = _dead_after_training(1 / 32)
    assert early > 0.5 and early_aux > 0.5  # the handicap killed most of them
    assert with_aux < 0.5 * without, (with_aux, without)


@pytest.mark.parametrize("variant", ["topk", "relu_l1"])
def test_training_recovers_synthetic_dictionary(variant):
    """A TopK SAE recovers >= 90% of true directions with cosine > 0.9 (ReLU/L1: trains, improves FVU)."""
    torch.manual_seed(0)
    data = SyntheticDictionary(d_in=32, n_features=64, mean_active=4, alpha=0.3, noise_std=0.01, seed=0)
    sae = SAE(SAEConfig(d_in=32, d_sae=128, k=4, variant=variant, l1_coefficient=0.3), seed=0)
    step = TrainStep(sae, lr=4e-3, total_steps=1500, warmup_steps=20, decay_fraction=0.3, dead_tokens=20_000)
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

    cfg = TopKSAEConfig(d_in=12, d_sae=40, k=5) if arch == "topk" else StandardSAEConfig(d_in=12, d_sae=40)
    lens = LensSAE.from_dict(cfg.to_dict())
    with torch.no_grad():
        for p in lens.parameters():
            p.normal_(std=0.3)
    lens.save_model(str(tmp_path / "lens"))
    ours = load_sae(tmp_path / "lens")
    x = torch.randn(9, 12)
    torch.testing.assert_close(ours.encode(x), lens.encode(x), rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(ours.decode(ours.encode(x)), lens.decode(lens.encode(x)), rtol=1e-4, atol=1e-5)


def test_load_sae_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="cfg.json"):
        load_sae(tmp_path)
    sae = _sae()
    save_sae(sae, tmp_path / "a")
    (tmp_path / "a" / "sae_weights.safetensors").write_bytes(b"\x00\x01garbage")
    with pytest.raises(ValueError, match="sae_weights.safetensors"):
        load_sae(tmp_path / "a")


def test_bf16_encoder_option_trains_close_to_fp32():
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
