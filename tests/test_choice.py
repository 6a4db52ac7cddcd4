"""Mutual choice / feature choice SAEs: exact budgets, the sparse backward, thresholds at inference,
aux_zipf_loss, the SAELens JumpReLU round trip, and the trainer/CLI plumbing."""

from __future__ import annotations

import json

import pytest
import torch
from _runs import tiny_run, tiny_sections

from interp.synthetic import SyntheticDictionary
from saes.config import SAEConfig
from saes.sae import SAE
from saes.training.config import RunConfig
from saes.training.loop import TrainStep
from saes.training.losses import capped_allocation, underused_weights, zipf_shares
from saes.variants.choice import column_top_m, flat_top_n

pytestmark = pytest.mark.usefixtures("one_thread")  # many small ops: one thread is faster


def _sae(variant: str, d_in=16, d_sae=64, k=4, seed=0, **kw) -> SAE:
    return SAE(SAEConfig(d_in=d_in, d_sae=d_sae, k=k, variant=variant, **kw), seed=seed)


def _dense_pre(sae: SAE, x: torch.Tensor) -> torch.Tensor:
    return torch.addmm(sae.b_enc, sae.scale_input(x) - sae.b_dec, sae.W_enc).detach()


# ---- selection primitives ---------------------------------------------------------------------
@pytest.mark.parametrize(
    "N,n", [(4096, 100), (10_007, 333), (64 * 64 * 5 + 3, 700), (50, 50), (50, 7)]
)
def test_flat_top_n_is_exact_topn(N, n):
    g = torch.Generator().manual_seed(N + n)
    for flat in (
        torch.randn(N, generator=g),
        torch.randint(0, 20, (N,), generator=g).float(),
    ):  # ties too
        idx = flat_top_n(flat, n)
        assert idx.numel() == n and bool(
            (idx[1:] > idx[:-1]).all()
        )  # exactly n, ascending, distinct
        ref = torch.topk(flat, n).values
        assert torch.equal(flat[idx].sort(descending=True).values, ref)


def test_capped_allocation_exact_sum_cap_and_zipf_order():
    m = capped_allocation(32 * 100, torch.ones(72, dtype=torch.float64), cap=100)
    assert int(m.sum()) == 3200 and set(m.tolist()) <= {44, 45}  # 3200 / 72 = 44.4
    p = zipf_shares(200, 1.0)
    assert float(p.sum()) == pytest.approx(1.0) and torch.all(p[1:] <= p[:-1])
    assert float(p[0] / p[9]) == pytest.approx(10.0)
    m = capped_allocation(4 * 256, p, cap=100)
    assert int(m.sum()) == 1024 and int(m.max()) <= 100 and bool((m[1:] <= m[:-1]).all())
    assert int(m[0]) == 100  # p_1 * 1024 = 174 exceeds the cap: capped, the excess re-shared
    assert int(m[1]) > round(float(p[1]) * 1024)
    with pytest.raises(ValueError, match="cannot allocate"):
        capped_allocation(1000, torch.ones(4), cap=10)


def test_underused_weights_by_hand():
    u = torch.tensor([0.5, 0.3, 0.2, 0.0], dtype=torch.float64)
    # exponent 0: target 1/4 for all; under-used are 0.2 (w = 1 - 0.2/0.25) and the dead one (w = 1)
    assert torch.allclose(
        underused_weights(u, 0.0), torch.tensor([0, 0, 0.2, 1.0], dtype=torch.float64)
    )
    # exponent 1: targets [12, 6, 4, 3] / 25; only the dead latent is below its target
    assert torch.allclose(
        underused_weights(u, 1.0), torch.tensor([0, 0, 0, 1.0], dtype=torch.float64)
    )
    u = torch.tensor(
        [0.7, 0.1, 0.2, 0.0], dtype=torch.float64
    )  # rank 2: 0.2 < 6/25, rank 3: 0.1 < 4/25
    expect = torch.tensor([0, 1 - 0.1 / 0.16, 1 - 0.2 / 0.24, 1.0], dtype=torch.float64)
    assert torch.allclose(underused_weights(u, 1.0), expect)


# ---- budgets ------------------------------------------------------------------------------------
def _positive(sae: SAE) -> SAE:
    with torch.no_grad():
        sae.b_enc.fill_(50.0)  # every pre-activation positive: kept entries are all nonzero
    return sae


def test_mutual_choice_keeps_exactly_kB_largest_nonzeros():
    sae = _positive(_sae("mutual_choice", aux_zipf_coef=0.0))
    x = torch.randn(96, 16) * torch.rand(96, 1) * 4  # tokens of very different norms
    out = sae.variant.train_forward(sae, sae.scale_input(x), None, None)
    code = out.code
    assert int(code.l0.sum()) == 4 * 96
    pre = _dense_pre(sae, x)
    kept = code.to_dense(64) != 0
    assert torch.equal(
        kept.view(-1).nonzero().squeeze(1), torch.topk(pre.view(-1), 4 * 96).indices.sort().values
    )
    assert code.l0.float().std() > 0  # adaptive: tokens get different numbers of latents
    assert torch.allclose(
        sae.threshold, torch.full((64,), float(pre.view(-1).topk(4 * 96).values.min()))
    )


@pytest.mark.parametrize("allocation", ["uniform", "zipf"])
def test_feature_choice_keeps_exactly_m_per_feature(allocation):
    sae = _positive(_sae("feature_choice", allocation=allocation, aux_zipf_coef=0.0))
    x = torch.randn(80, 16)
    m = sae.variant.capacities(sae, 80)
    assert int(m.sum()) == 4 * 80 and int(m.max()) <= 80
    if allocation == "uniform":
        assert set(m.tolist()) == {5}
    else:
        assert int(m.max()) > 2 * int(m.min())
    code = sae.variant.train_forward(sae, sae.scale_input(x), None, None).code
    kept = code.to_dense(64) != 0
    assert torch.equal(kept.sum(0), m)
    assert int(code.l0.sum()) == 4 * 80 and code.l0.float().std() > 0
    pre = _dense_pre(sae, x)
    for j in (0, 7, 63):  # each latent's kept tokens are its top m_j
        mine = kept[:, j].nonzero().squeeze(1)
        assert torch.equal(mine, pre[:, j].topk(int(m[j])).indices.sort().values)


def test_column_top_m_with_zero_and_full_capacities():
    pre_t = torch.randn(5, 12)
    m = torch.tensor([0, 12, 3, 1, 7])
    f, t, v, th = column_top_m(pre_t, m)
    assert torch.equal(torch.bincount(f, minlength=5), m)
    assert th[0] == pre_t[0].max() and th[1] == pre_t[1].min() and th[3] == pre_t[3].max()
    assert th[2] == pre_t[2].topk(3).values.min()
    assert torch.equal(v, pre_t[f, t])


@pytest.mark.parametrize("variant", ["mutual_choice", "feature_choice"])
def test_sparse_backward_matches_dense_reference(variant):
    sae = _sae(variant, aux_zipf_coef=0.0, seed=3)
    with torch.no_grad():
        sae.b_dec.normal_()
    x = torch.randn(64, 16, generator=torch.Generator().manual_seed(0)) * 2
    code = sae.variant.encode_batch(sae, x)
    out = sae.variant.train_forward(sae, sae.scale_input(x), None, None)
    out.loss.backward()
    ours = {n: p.grad.clone() for n, p in sae.named_parameters()}
    sae.zero_grad()
    mask = code.to_dense(64) != 0
    pre = torch.addmm(sae.b_enc, x - sae.b_dec, sae.W_enc)
    z = torch.relu(pre) * mask
    x_hat = z @ sae.W_dec + sae.b_dec
    ((x_hat - x).pow(2).sum() / (x - x.mean(0)).pow(2).sum()).backward()
    for n, p in sae.named_parameters():
        err = (ours[n] - p.grad).abs().max() / p.grad.abs().max()
        assert err < 1e-5, (n, float(err))


# ---- thresholds at inference --------------------------------------------------------------------
def _train(
    variant: str, steps: int, seed: int = 0, batch: int = 512, shrink: float | None = None, **kw
):
    """A 128-latent SAE on a 512-feature synthetic dictionary (every latent has work to do);
    ``shrink`` scales half of the encoder columns at init, handicapping those latents."""
    syn = SyntheticDictionary(d_in=32, n_features=512, mean_active=4, alpha=1.0, seed=seed)
    sae = SAE(SAEConfig(d_in=32, d_sae=128, k=4, variant=variant, **kw), seed=seed)
    sample = syn.sample(4096)[0]
    sae.cfg.input_scale = 32**0.5 / sample.norm(dim=-1).mean().item()
    with torch.no_grad():
        sae.b_dec.copy_((sample * sae.cfg.input_scale).mean(0))
        if shrink is not None:
            sae.W_enc[:, 64:] *= shrink
    step = TrainStep(sae, lr=3e-3, total_steps=steps, decay_fraction=0.5, dead_tokens=batch * 10)
    for _ in range(steps):
        step(syn.sample(batch)[0])
    return sae, syn


@pytest.mark.parametrize(
    "variant,allocation",
    [("mutual_choice", "zipf"), ("feature_choice", "uniform"), ("feature_choice", "zipf")],
)
def test_thresholds_reproduce_batch_selection_on_held_out_batch(variant, allocation):
    """Tolerance: on a held-out batch of 2048 tokens, the JumpReLU code (learned thresholds) and
    the batch-level selection agree on >= 90% of their nonzero (token, latent) entries (F1), and
    the mean L0 differs by <= 10%."""
    sae, syn = _train(variant, steps=60, allocation=allocation, threshold_decay=0.9)
    x = syn.sample(2048)[0]
    batch = sae.variant.encode_batch(sae, x).to_dense(128) != 0
    thresh = sae.encode(x) != 0
    f1 = 2 * (batch & thresh).sum() / (batch.sum() + thresh.sum())
    assert f1 >= 0.9, float(f1)
    assert abs(thresh.sum(1).float().mean() / batch.sum(1).float().mean() - 1) <= 0.1
    assert thresh.sum(1).float().std() > 0  # still adaptive at inference
    # and the code of one token does not depend on the rest of the batch
    torch.testing.assert_close(sae.encode(x[:3]), sae.encode(x)[:3], rtol=1e-5, atol=1e-5)


# ---- aux_zipf_loss ------------------------------------------------------------------------------
def test_aux_zipf_lowers_dead_and_underused_fractions():
    """Half the latents start with encoder columns scaled by 0.1: they lose every batch-level
    competition. Without an auxiliary loss many stay dead; aux_zipf_loss (default weight) revives
    them, and reconstruction does not get worse."""
    from saes.evaluation.evaluate import reconstruction_metrics

    results = {}
    for coef in (0.0, 1 / 32):
        sae, syn = _train("mutual_choice", steps=120, shrink=0.1, aux_zipf_coef=coef)
        results[coef] = reconstruction_metrics(sae, [syn.sample(8192)[0]])
    off, on = results[0.0], results[1 / 32]
    assert off["dead_fraction"] >= 0.1  # the handicap bites without the auxiliary loss
    assert on["dead_fraction"] < off["dead_fraction"] / 4, (
        on["dead_fraction"],
        off["dead_fraction"],
    )
    assert on["underused_fraction"] < off["underused_fraction"] / 2, (
        on["underused_fraction"],
        off["underused_fraction"],
    )
    assert on["fvu"] <= off["fvu"] + 0.01


# ---- artifacts, SAELens, trainer, CLI -----------------------------------------------------------
@pytest.mark.parametrize("variant", ["mutual_choice", "feature_choice"])
def test_saelens_jumprelu_round_trip(tmp_path, variant):
    from sae_lens import SAE as LensSAE
    from safetensors.torch import load_file

    from saes.artifacts import load_sae, save_sae

    sae = _sae(variant, input_scale=2.5, seed=1)
    step = TrainStep(sae, lr=1e-2)
    for _ in range(5):
        step(torch.randn(128, 16) * 0.4)
    assert sae.threshold.abs().sum() > 0
    x = torch.randn(50, 16) * 0.4
    z_ref, x_hat_ref = sae.encode(x), sae(x)[0]
    save_sae(sae, tmp_path)
    cfg = json.loads((tmp_path / "cfg.json").read_text())
    assert cfg["architecture"] == "jumprelu"
    assert set(load_file(str(tmp_path / "sae_weights.safetensors"))) == {
        "W_enc",
        "W_dec",
        "b_enc",
        "b_dec",
        "threshold",
    }
    lens = LensSAE.load_from_disk(str(tmp_path))
    torch.testing.assert_close(lens.encode(x), z_ref, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(lens.decode(lens.encode(x)), x_hat_ref, rtol=1e-5, atol=1e-5)
    ours = load_sae(tmp_path)
    assert ours.cfg.variant == variant and torch.equal(ours.threshold, sae.threshold)
    torch.testing.assert_close(ours(x)[0], x_hat_ref, rtol=1e-5, atol=1e-5)


def test_checkpoint_state_resumes_bit_identical():
    """Thresholds, usage and the EMA step count travel in TrainStep's checkpoint tensors: a step
    restored from them continues exactly like the uninterrupted one."""
    xs = [torch.randn(64, 16, generator=torch.Generator().manual_seed(i)) for i in range(8)]
    ref = TrainStep(_sae("feature_choice"), lr=1e-2)
    for x in xs:
        ref(x)
    first = TrainStep(_sae("feature_choice"), lr=1e-2)
    for x in xs[:4]:
        first(x)
    tensors = {k: v.clone() for k, v in first.state_tensors().items()}
    for key in ("sae.threshold", "sae.usage", "sae.ema_steps"):
        assert key in tensors
    resumed = TrainStep(_sae("feature_choice", seed=5), lr=1e-2)
    resumed.load_state_tensors(tensors)
    resumed.step_index = first.step_index
    for x in xs[4:]:
        resumed(x)
    for name, t in ref.sae.state_dict().items():
        assert torch.equal(t, resumed.sae.state_dict()[name]), name


def test_config_validation_names_the_field():
    for bad, field in (
        ({"zipf_exponent": -1}, "zipf_exponent"),
        ({"threshold_decay": 1.0}, "threshold_decay"),
        ({"aux_zipf_coef": -0.1}, "aux_zipf_coef"),
        ({"allocation": "pareto"}, "allocation"),
    ):
        with pytest.raises(ValueError, match=field):
            SAEConfig(d_in=8, d_sae=16, variant="feature_choice", **bad)

    cfg = RunConfig(
        sae={
            "variant": "feature_choice",
            "allocation": "uniform",
            "zipf_exponent": 0.7,
            "aux_zipf_coef": 0.0,
        }
    )
    s = cfg.sae_config(16)
    assert (s.variant, s.allocation, s.zipf_exponent, s.aux_zipf_coef) == (
        "feature_choice",
        "uniform",
        0.7,
        0.0,
    )


def test_cli_train_and_eval(tmp_path, tiny):
    """Both variants through the real trainer, CLI, artifacts and evaluation. On the same held-out
    tokens each trained SAE beats the mean predictor (FVU 1) and, by 5% or more in FVU and KL, the
    same SAE untrained (lr = 0: its first batch sets the thresholds and the encoder scale only)."""
    from safetensors.torch import load_file
    from typer.testing import CliRunner

    from interp.cli import app

    config = tiny_sections(data={"train_tokens": 256 * 6}, log={"out_dir": str(tmp_path / "fc")})
    (tmp_path / "c.json").write_text(json.dumps(config))
    runner = CliRunner()
    for variant, out in (("feature_choice", "fc"), ("mutual_choice", "mc")):
        res = runner.invoke(
            app,
            [
                "train",
                "--config",
                str(tmp_path / "c.json"),
                "--set",
                f"sae.variant={variant}",
                "--set",
                f"log.out_dir={tmp_path / out}",
            ],
        )
        assert res.exit_code == 0, res.output
        m = json.loads((tmp_path / out / "metrics.json").read_text())
        assert "underused_fraction" in m and "ce_loss_recovered" in m
        untrained = json.loads(
            (
                tiny_run(
                    tmp_path,
                    f"{out}-untrained",
                    data={"train_tokens": 256},
                    sae={"variant": variant},
                    optim={"lr": 0.0},
                    model=tiny,
                    evaluate=True,
                )
                / "metrics.json"
            ).read_text()
        )
        assert untrained["n_tokens"] == m["n_tokens"] and untrained["ce_clean"] == m["ce_clean"]
        assert m["fvu"] < 1.0 and m["fvu"] < 0.95 * untrained["fvu"], (
            variant,
            m["fvu"],
            untrained["fvu"],
        )
        assert 0 < m["kl_div"] < 0.95 * untrained["kl_div"], (
            variant,
            m["kl_div"],
            untrained["kl_div"],
        )
        assert set(load_file(str(tmp_path / out / "sae_weights.safetensors"))) == {
            "W_enc",
            "W_dec",
            "b_enc",
            "b_dec",
            "threshold",
        }
        assert json.loads((tmp_path / out / "cfg.json").read_text())["architecture"] == "jumprelu"
    res = runner.invoke(app, ["eval", str(tmp_path / "mc")])
    assert res.exit_code == 0 and "fvu" in res.output


@pytest.mark.parametrize("per_row", [2, 5, 40, 64])
def test_batch_top_n_is_exact_whatever_the_row_budget(per_row):
    from saes.variants.choice import batch_top_n

    g = torch.Generator().manual_seed(per_row)
    pre = (
        torch.randn(48, 64, generator=g) * torch.rand(48, 1, generator=g).pow(3) * 5
    )  # a few heavy rows
    n = 4 * 48
    rows, cols, vals = batch_top_n(pre, n, per_row)
    assert rows.numel() == n and bool((rows[1:] >= rows[:-1]).all())
    flat = rows * 64 + cols
    assert torch.equal(flat.sort().values, torch.topk(pre.view(-1), n).indices.sort().values)
    assert torch.equal(vals, pre[rows, cols])
