"""Evaluation formulas on hand-made inputs: spliced CE / KL against a hand computation, the
perfect and the zero SAE, and the dead / dense / under-used latent definitions."""

from __future__ import annotations

import json

import pytest
import torch
from safetensors.torch import save_file
from torch import nn

from saes.config import SAEConfig
from saes.evaluation.evaluate import (
    DENSE_THRESHOLD,
    UNDERUSED_RATIO,
    ReconstructionStats,
    evaluate_sae,
    held_out_rows,
    spliced_metrics,
)
from saes.sae import SAE
from saes.training.config import RunConfig

HOOK = "blocks.0.hook_resid_post"


class _Stub(nn.Module):
    """An 'SAE' whose reconstruction is a fixed function of its input (what spliced_metrics calls)."""

    def __init__(self, fn):
        super().__init__()
        self.fn = fn

    @property
    def device(self):
        return torch.device("cpu")

    def forward(self, x, grad=None):  # noqa: ARG002
        return self.fn(x), x


def _windows(model, n=3, t=10, seed=0):
    g = torch.Generator().manual_seed(seed)
    w = torch.randint(3, model.cfg.d_vocab, (n, t), generator=g)
    w[:, 0] = model.tokenizer.bos_token_id
    return w


def _by_hand(model, windows, replace):
    """Mean next-token CE over every predicted token and mean KL(clean || patched), with the hook's
    activation at every position but 0 replaced by ``replace(act)``; one window at a time."""
    ce_clean = ce_patched = kl = 0.0
    n = 0
    for w in windows:
        toks = w[None]
        with torch.no_grad():
            clean = model(toks)[0].double()

            def patch(act, hook):  # noqa: ARG001
                out = act.clone()
                out[0, 1:] = replace(act[0, 1:])
                return out

            patched = model.run_with_hooks(toks, fwd_hooks=[(HOOK, patch)])[0].double()
        for t in range(w.numel() - 1):
            p, q = clean[t].log_softmax(-1), patched[t].log_softmax(-1)
            ce_clean -= p[w[t + 1]].item()
            ce_patched -= q[w[t + 1]].item()
            kl += (p.exp() * (p - q)).sum().item()
            n += 1
    return ce_clean / n, ce_patched / n, kl / n, n


def test_spliced_metrics_equal_a_hand_computation(tiny, one_thread):
    """CE clean / spliced / zero-ablated, CE recovered and KL of a real (random) SAE, batched, against
    a per-window, per-token hand computation in float64."""
    sae = SAE(SAEConfig(d_in=tiny.cfg.d_model, d_sae=96, k=6), seed=3)
    windows = _windows(tiny, n=5)
    m = spliced_metrics(sae, tiny, HOOK, windows, batch_size=2)
    ce_clean, ce_spliced, kl, n = _by_hand(tiny, windows, lambda a: sae(a)[0])
    _, ce_zero, _, _ = _by_hand(tiny, windows, torch.zeros_like)
    assert m["n_predicted_tokens"] == n == 5 * 9
    assert m["ce_clean"] == pytest.approx(ce_clean, rel=1e-5)
    assert m["ce_spliced"] == pytest.approx(ce_spliced, rel=1e-5)
    assert m["ce_zero_ablated"] == pytest.approx(ce_zero, rel=1e-5)
    assert m["kl_div"] == pytest.approx(kl, rel=1e-4)
    assert m["ce_loss_recovered"] == pytest.approx(
        (ce_zero - ce_spliced) / (ce_zero - ce_clean), rel=1e-4
    )
    assert m["kl_div"] > 1e-3 and abs(ce_spliced - ce_clean) > 1e-3  # the SAE changes something


def test_perfect_and_zero_sae_bound_ce_recovered_and_kl(tiny, one_thread):
    """A perfect reconstruction recovers all of the CE loss with no KL; a zero reconstruction is the
    zero ablation (nothing recovered); a half-way one lies strictly between on KL."""
    windows = _windows(tiny, n=4)
    perfect = spliced_metrics(_Stub(lambda x: x.clone()), tiny, HOOK, windows)
    assert perfect["ce_spliced"] == pytest.approx(perfect["ce_clean"], abs=1e-6)
    assert perfect["ce_loss_recovered"] == pytest.approx(1.0, abs=1e-5)
    assert perfect["kl_div"] == pytest.approx(0.0, abs=1e-6)
    zero = spliced_metrics(_Stub(torch.zeros_like), tiny, HOOK, windows)
    assert zero["ce_spliced"] == pytest.approx(zero["ce_zero_ablated"], abs=1e-6)
    assert zero["ce_loss_recovered"] == pytest.approx(0.0, abs=1e-5)
    assert abs(zero["ce_zero_ablated"] - zero["ce_clean"]) > 1e-2  # so 0 and 1 are far apart
    half = spliced_metrics(_Stub(lambda x: 0.5 * x), tiny, HOOK, windows)
    assert 1e-4 < half["kl_div"] < zero["kl_div"]


def _hand_codes():
    """Codes of 200 tokens x 8 latents (two batches of 100) with known firing counts."""
    fires = [200, 20, 21, 0, 1, 100, 10, 4]  # densities 1, .1, .105, 0, .005, .5, .05, .02
    z = torch.zeros(200, 8)
    g = torch.Generator().manual_seed(0)
    for j, n in enumerate(fires):
        rows = torch.randperm(200, generator=g)[:n]
        z[rows, j] = torch.rand(n, generator=g) + 0.1
    return z


def test_dead_dense_underused_definitions_on_hand_made_codes():
    """dead: never fires; dense: fires on more than 10% of tokens (strictly); under-used: fires on
    fewer than a tenth of the mean density l0_mean / d_sae (dead ones included)."""
    z = _hand_codes()
    x = torch.randn(200, 5, generator=torch.Generator().manual_seed(1))
    stats = ReconstructionStats(d_sae=8)
    for part in (slice(0, 100), slice(100, 200)):  # streamed over two batches
        stats.update(x[part], 0.5 * x[part], z[part])
    m = stats.metrics()
    assert m["l0_mean"] == pytest.approx(356 / 200)  # sum of the counts / tokens
    assert m["dead_fraction"] == pytest.approx(1 / 8)  # latent 3
    assert m["feature_density_log10_hist"]["dead"] == 1
    # latents 0, 2, 5: density 1, 0.105, 0.5; latent 1 sits at exactly 0.1 and is not dense
    assert DENSE_THRESHOLD == 0.1 and m["dense_fraction"] == pytest.approx(3 / 8)
    # mean density 356 / 1600 = 0.2225, a tenth of it 0.02225: latents 3 (0), 4 (0.005), 7 (0.02);
    # latent 6 (0.05) is rare but above the line
    assert UNDERUSED_RATIO == 0.1 and m["underused_fraction"] == pytest.approx(3 / 8)
    assert m["fvu"] == pytest.approx(
        0.25 * (x**2).sum().item() / ((x - x.mean(0)) ** 2).sum().item()
    )


def test_cached_rows_with_a_model_and_no_ce_windows(tiny, tmp_path, one_thread):
    """Reconstruction metrics on an eval cache's rows while CE/KL (ours and SAELens's) run on the
    model's validation windows; ``ce_windows`` 0 skips the spliced metrics with the reason."""
    x = torch.randn(300, tiny.cfg.d_model, generator=torch.Generator().manual_seed(2))
    (tmp_path / "c").mkdir()
    save_file({HOOK: x}, str(tmp_path / "c" / "shard_00000.safetensors"))
    manifest = {
        "format": "interp-activations",
        "version": 1,
        "hooks": {HOOK: tiny.cfg.d_model},
        "dtype": "float32",
        "shards": [{"file": "shard_00000.safetensors", "tokens": 300}],
    }
    (tmp_path / "c" / "manifest.json").write_text(json.dumps(manifest))
    cfg = RunConfig(data={"model": "tiny", "hook": HOOK}, eval={"cache": str(tmp_path / "c")})
    rows = held_out_rows(cfg)
    assert (rows.start, rows.stop, rows.kind) == (0, 300, "eval_cache")
    sae = SAE(SAEConfig(d_in=tiny.cfg.d_model, d_sae=96, k=6), seed=3)
    kw = dict(source="stdlib", context_size=17, rows=rows)
    m = evaluate_sae(sae, tiny, HOOK, ce_windows=3, **kw)
    with torch.no_grad():
        x_hat = sae(x)[0].double()
    hand = ((x.double() - x_hat) ** 2).sum() / ((x.double() - x.double().mean(0)) ** 2).sum()
    assert m["n_tokens"] == 300 and m["fvu"] == pytest.approx(hand.item(), rel=1e-6)
    assert m["n_predicted_tokens"] == 3 * 16 and m["saelens"]["n_windows"] == 3
    assert "skipped" not in m and m["eval_split"] == "eval_cache"
    m0 = evaluate_sae(sae, tiny, HOOK, ce_windows=0, **kw)
    assert m0["skipped"]["ce_loss_recovered"] == "eval.ce_windows is 0"
    assert "ce_clean" not in m0 and "saelens" not in m0 and m0["fvu"] == m["fvu"]


def test_massive_norm_tokens_are_counted_and_fvu_reported_without_them():
    """A few planted huge-norm rows: counted exactly; fvu_without equals FVU on the other rows."""
    from saes.evaluation.metrics import ReconstructionStats

    g = torch.Generator().manual_seed(0)
    x = torch.randn(2000, 16, generator=g)
    x[[5, 700, 1900]] *= 80.0  # norms ~80x the median
    x_hat = x + 0.3 * torch.randn(2000, 16, generator=g)
    x_hat[[5, 700, 1900]] = 0.0  # the SAE misses them entirely
    stats = ReconstructionStats(d_sae=8)
    for a, b in zip(x.split(500), x_hat.split(500)):
        stats.update(a, b, torch.ones(a.shape[0], 8))
    m = stats.metrics()
    keep = torch.ones(2000, dtype=torch.bool)
    keep[[5, 700, 1900]] = False
    xk, hk = x[keep].double(), x_hat[keep].double()
    want = ((xk - hk).pow(2).sum() / (xk - xk.mean(0)).pow(2).sum()).item()
    assert m["massive_norm_tokens"]["count"] == 3
    assert m["massive_norm_tokens"]["fvu_without"] == pytest.approx(want, rel=1e-9)
    assert m["fvu"] > 5 * want  # the three rows dominate the plain FVU
