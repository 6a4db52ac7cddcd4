"""The trainer: run folders, resume equality, NaN stop, bad input, CLI."""

from __future__ import annotations

import json

import pytest
import torch
from _runs import tiny_config
from safetensors.torch import load_file, save_file

from saes.training.config import RunConfig, load_run_config
from saes.training.loop import TrainingDiverged, TrainStep, train
from saes.training.run_status import read_status

pytestmark = pytest.mark.usefixtures("one_thread_module")


# every run here: 12 steps, a checkpoint every 4
STEPS12 = {"data": {"train_tokens": 256 * 12}, "log": {"checkpoint_every_tokens": 256 * 4}}


def _weights(run_dir):
    return load_file(str(run_dir / "sae_weights.safetensors"))


def _assert_bit_identical(run_a, run_b):
    a, b = _weights(run_a), _weights(run_b)
    assert a.keys() == b.keys()
    for k in a:
        assert torch.equal(a[k], b[k]), (k, (a[k] - b[k]).abs().max().item())


def _logged_steps(run_dir):
    return [
        json.loads(line)["step"] for line in (run_dir / "train_log.jsonl").read_text().splitlines()
    ]


def test_run_folder_contents_and_metrics(tmp_path, tiny):
    """The run folder and metrics.json; the trained SAE beats, on the same held-out tokens, both the
    mean predictor (FVU 1) and the same SAE untrained (same seed and initial statistics, lr = 0)."""
    run = train(tiny_config(tmp_path, "run", STEPS12), progress=False)
    for name in (
        "cfg.json",
        "sae_weights.safetensors",
        "metrics.json",
        "train_log.jsonl",
        "run_config.json",
    ):
        assert (run / name).exists(), name
    m = json.loads((run / "metrics.json").read_text())
    for key in (
        "fvu",
        "explained_variance",
        "l0_mean",
        "dead_fraction",
        "dense_fraction",
        "cosine_mean",
        "norm_ratio_mean",
        "ce_clean",
        "ce_spliced",
        "ce_zero_ablated",
        "ce_loss_recovered",
        "kl_div",
        "feature_density_log10_hist",
        "l0_quantiles",
    ):
        assert key in m, key
    log = [json.loads(line) for line in (run / "train_log.jsonl").read_text().splitlines()]
    assert log[-1]["step"] == 12 and log[-1]["tokens"] == 256 * 12
    assert m["l0_mean"] <= 8

    untrained = json.loads(
        (
            train(
                tiny_config(tmp_path, "untrained", data={"train_tokens": 256}, optim={"lr": 0.0}),
                progress=False,
            )
            / "metrics.json"
        ).read_text()
    )
    assert (
        untrained["ce_clean"] == m["ce_clean"] and untrained["n_tokens"] == m["n_tokens"]
    )  # same tokens
    # "beats" means by 5% or more: a run that learns nothing differs from its start by rounding only (~1e-9)
    assert m["fvu"] < 1.0 and m["fvu"] < 0.95 * untrained["fvu"], (m["fvu"], untrained["fvu"])
    # the spliced model moves less far from the clean one (a random tiny model's zero-ablated CE can
    # be below the clean CE, so CE recovered means nothing here; tests/test_evals.py checks its formula)
    assert 0 < m["kl_div"] < 0.95 * untrained["kl_div"], (m["kl_div"], untrained["kl_div"])


@pytest.fixture(scope="module")
def reference(tmp_path_factory, tiny):
    """The uninterrupted run that the resumed ones must reproduce."""
    ref = tiny_config(tmp_path_factory.mktemp("ref"), "ref", STEPS12)
    return train(ref, progress=False, evaluate=False)


def test_resume_matches_uninterrupted(
    tmp_path, tiny, reference, monkeypatch, capsys, count_train_steps
):
    """A crash during step 7 (checkpoint at step 4): --resume starts at step 4, not 0 (status record,
    message, log, the 8 steps it executes) and ends bit-identical to the uninterrupted run."""
    ref = reference
    calls = {"n": 0}
    orig = TrainStep.__call__

    def crashing(self, x, grad=None):
        calls["n"] += 1
        if calls["n"] == 7:  # dies after the checkpoint at step 4, in the middle of a block
            raise RuntimeError("simulated crash")
        return orig(self, x, grad)

    monkeypatch.setattr(TrainStep, "__call__", crashing)
    with pytest.raises(RuntimeError, match="simulated crash"):
        train(tiny_config(tmp_path, "crash", STEPS12), progress=False, evaluate=False)
    monkeypatch.setattr(TrainStep, "__call__", orig)
    with pytest.raises(FileExistsError, match="--resume"):
        train(tiny_config(tmp_path, "crash", STEPS12), progress=False, evaluate=False)
    assert _logged_steps(tmp_path / "crash") == [2, 4, 6]
    executed = count_train_steps()
    capsys.readouterr()
    out = train(
        tiny_config(tmp_path, "crash", STEPS12), resume=True, progress=False, evaluate=False
    )
    assert "from step_000000004 (step 4, 1,024 tokens)" in capsys.readouterr().out
    assert executed["n"] == 12 - 4
    assert _logged_steps(out) == [2, 4, 6, 6, 8, 10, 12]  # the resumed run logs from step 5 on
    status = read_status(out)
    assert status["resumed_from"] == "step_000000004" and status["attempts"] == 2
    assert status["state"] == "finished" and status["step"] == 12
    _assert_bit_identical(ref, out)


def _handmade_cache(folder, x):
    """A cache written by hand in the documented format (activations from anywhere)."""
    folder.mkdir(parents=True)
    save_file({"blocks.0.hook_resid_post": x}, str(folder / "shard_00000.safetensors"))
    manifest = {
        "format": "interp-activations",
        "version": 1,
        "model": "tiny",
        "hooks": {"blocks.0.hook_resid_post": x.shape[1]},
        "dtype": "float32",
        "has_grads": False,
        "shards": [{"file": "shard_00000.safetensors", "tokens": x.shape[0]}],
    }
    (folder / "manifest.json").write_text(json.dumps(manifest))


def test_nan_stops_with_clear_message_and_keeps_checkpoint(tmp_path, tiny):
    x = torch.randn(4096, tiny.cfg.d_model)
    x[3000:] = float("nan")
    _handmade_cache(tmp_path / "cache", x)
    cache = {"cache": str(tmp_path / "cache"), "buffer_tokens": 512, "train_tokens": 256 * 14}
    cfg = tiny_config(tmp_path, "nan", STEPS12, data=cache)
    with pytest.raises(TrainingDiverged, match="nan"):
        train(cfg, progress=False, evaluate=False)
    ckpts = sorted((tmp_path / "nan" / "checkpoints").glob("step_*"))
    assert ckpts, "the last good checkpoint must be kept"
    state = load_file(str(ckpts[-1] / "state.safetensors"))
    assert all(torch.isfinite(v.float()).all() for v in state.values())


def test_trains_from_cache(tmp_path, tiny):
    x = torch.randn(4096, tiny.cfg.d_model)
    _handmade_cache(tmp_path / "cache", x)
    run = train(
        tiny_config(
            tmp_path, "c", STEPS12, data={"cache": str(tmp_path / "cache"), "buffer_tokens": 512}
        ),
        progress=False,
        evaluate=False,
    )
    assert (run / "sae_weights.safetensors").exists()


def test_bad_input_fails_before_work(tmp_path, tiny):
    with pytest.raises(ValueError, match="unknown config keys.*d_saee"):
        load_run_config(None, ["d_saee=10"])
    with pytest.raises(ValueError, match="k must satisfy"):
        load_run_config(None, ["sae.k=64", "sae.d_sae=64"])
    with pytest.raises(ValueError, match="unknown hook"):
        train(tiny_config(tmp_path, "h", data={"hook": "blocks.0.hook_resid_pots"}), progress=False)
    _handmade_cache(tmp_path / "cache", torch.randn(512, tiny.cfg.d_model))
    cfg = tiny_config(tmp_path, "d", data={"cache": str(tmp_path / "cache")}, sae={"d_in": 77})
    with pytest.raises(ValueError, match=f"d_in={tiny.cfg.d_model}.*d_in=77"):
        train(cfg, progress=False)
    assert not (tmp_path / "h" / "checkpoints").exists()


def test_cli_train_and_eval(tmp_path, tiny):
    from typer.testing import CliRunner

    from interp.cli import app

    cfg = tiny_config(tmp_path, "cli", STEPS12).model_dump()
    (tmp_path / "c.json").write_text(json.dumps(cfg))
    runner = CliRunner()
    res = runner.invoke(app, ["train", "--config", str(tmp_path / "c.json"), "--set", "sae.k=4"])
    assert res.exit_code == 0, res.output
    assert json.loads((tmp_path / "cli" / "cfg.json").read_text())["k"] == 4
    res = runner.invoke(app, ["eval", str(tmp_path / "cli")])
    assert res.exit_code == 0 and "fvu" in res.output
    res = runner.invoke(app, ["train", "--config", str(tmp_path / "c.json"), "--set", "bogus=1"])
    assert res.exit_code == 2 and "bogus" in res.output


def test_ctrl_c_checkpoints_then_resume_matches(
    tmp_path, tiny, reference, monkeypatch, count_train_steps
):
    import os
    import signal

    ref = reference
    calls = {"n": 0}
    orig = TrainStep.__call__

    def interrupting(self, x, grad=None):
        calls["n"] += 1
        if (
            calls["n"] == 6
        ):  # Ctrl-C arrives mid-step: the step completes, then a checkpoint is written
            os.kill(os.getpid(), signal.SIGINT)
        return orig(self, x, grad)

    monkeypatch.setattr(TrainStep, "__call__", interrupting)
    with pytest.raises(KeyboardInterrupt):
        train(
            tiny_config(tmp_path, "int", STEPS12, log={"checkpoint_every_tokens": 10**9}),
            progress=False,
            evaluate=False,
        )
    ckpts = sorted((tmp_path / "int" / "checkpoints").glob("step_*"))
    assert [p.name for p in ckpts] == ["step_000000006"]
    assert read_status(tmp_path / "int")["state"] == "interrupted"
    monkeypatch.setattr(TrainStep, "__call__", orig)
    executed = count_train_steps()
    out = train(
        tiny_config(tmp_path, "int", STEPS12, log={"checkpoint_every_tokens": 10**9}),
        resume=True,
        progress=False,
        evaluate=False,
    )
    assert executed["n"] == 12 - 6
    assert _logged_steps(out) == [2, 4, 6, 8, 10, 12]  # steps 1-6 before Ctrl-C, 7-12 after
    assert read_status(out)["resumed_from"] == "step_000000006"
    _assert_bit_identical(ref, out)


def test_corrupt_checkpoint_falls_back_to_previous(tmp_path, tiny):
    from saes.training.checkpoint import latest_checkpoint

    run = train(tiny_config(tmp_path, "c", STEPS12), progress=False, evaluate=False)
    ckpts = sorted((run / "checkpoints").glob("step_*"))
    assert len(ckpts) == 2
    state = ckpts[-1] / "state.safetensors"
    state.write_bytes(state.read_bytes()[:-100])
    with pytest.warns(UserWarning, match=ckpts[-1].name):
        assert latest_checkpoint(run) == ckpts[-2]


def test_initial_statistics_scale_and_geometric_median():
    """scale = sqrt(d_in) / mean ||x|| (so E||scale * x|| = sqrt(d_in)) and the geometric median of
    the scaled sample; without normalize_input no scale and the raw sample's median."""
    from saes.training.geometric_median import geometric_median
    from saes.training.loop import initial_statistics

    g = torch.Generator().manual_seed(0)
    centre = torch.tensor([3.0, -1.0, 2.0, 0.5])
    v = torch.randn(50, 4, generator=g)
    x = torch.cat([centre + v, centre - v])  # point-symmetric about the centre
    cfg = RunConfig(optim={"normalize_input": True})
    scale, median = initial_statistics(x, cfg)
    assert scale == pytest.approx(
        2.0 / x.norm(dim=-1).mean().item(), rel=1e-6
    )  # sqrt(4) / mean norm
    assert (scale * x).norm(dim=-1).mean().item() == pytest.approx(2.0, rel=1e-6)
    torch.testing.assert_close(median, scale * centre, rtol=0, atol=1e-4 * scale)  # by symmetry

    # with an outlier: a minimiser of the summed distance, barely moved, while the mean moves far
    x = torch.cat([x, centre + torch.tensor([[400.0, 0, 0, 0]])])
    scale, median = initial_statistics(x, cfg)

    def cost(y):
        return (scale * x - y).norm(dim=-1).sum()

    for d in torch.eye(4):
        assert cost(median) <= cost(median + 0.01 * scale * d) and cost(median) <= cost(
            median - 0.01 * scale * d
        )
    assert (median - scale * centre).norm() < 0.01 * (scale * (x.mean(0) - centre)).norm()
    # the statistics of c * x: scale / c and the same median
    scale3, median3 = initial_statistics(3 * x, cfg)
    assert scale3 == pytest.approx(scale / 3, rel=1e-6)
    torch.testing.assert_close(median3, median, rtol=1e-4, atol=1e-4)
    raw_scale, raw_median = initial_statistics(x, RunConfig(optim={"normalize_input": False}))
    assert raw_scale is None
    torch.testing.assert_close(raw_median, geometric_median(x))


def test_resolved_dead_tokens_default_and_override():
    """dead_tokens defaults to min(10M, train_tokens / 10), never under one batch; a value given wins."""

    def dead(**data) -> int:
        return RunConfig(data=data).resolved_dead_tokens

    assert dead(train_tokens=2_000_000) == 200_000
    assert dead(train_tokens=10**9) == 10_000_000
    assert dead(train_tokens=100_000 + 9) == 10_000  # floor of train_tokens / 10
    assert dead(train_tokens=20_000, batch_tokens=4096) == 4096
    given = RunConfig(data={"train_tokens": 2_000_000}, optim={"dead_tokens": 123})
    assert given.resolved_dead_tokens == 123


def test_train_starts_from_initial_statistics_of_the_first_rows(tmp_path, tiny, monkeypatch):
    """train() sets input_scale and b_dec from initial_statistics of the stream's first
    init_sample_tokens rows, and gives TrainStep the resolved dead-latent window (lr = 0: one step
    leaves the initial weights as they were)."""
    from saes.training.activation_sources import LiveSource
    from saes.training.checkpoint import latest_checkpoint, load_checkpoint
    from saes.training.loop import initial_statistics

    seen = {}
    orig = TrainStep.__init__

    def recording(self, sae, *args, **kw):
        seen["dead_tokens"] = kw.get("dead_tokens")
        orig(self, sae, *args, **kw)

    monkeypatch.setattr(TrainStep, "__init__", recording)
    data = {"train_tokens": 256 * 2, "init_sample_tokens": 300}
    cfg = tiny_config(tmp_path, "init", data=data, optim={"lr": 0.0})
    run = train(cfg, progress=False, evaluate=False, model=tiny)
    assert seen["dead_tokens"] == cfg.resolved_dead_tokens == 256
    tensors, meta = load_checkpoint(latest_checkpoint(run))
    sample = LiveSource(cfg, model=tiny).sample_batch(300).acts[cfg.data.hook]
    assert sample.shape[0] == 300
    scale, median = initial_statistics(sample, cfg)
    assert meta["input_scale"] == pytest.approx(scale, rel=1e-6)
    torch.testing.assert_close(tensors["sae.b_dec"], median, rtol=1e-5, atol=1e-6)
    other = initial_statistics(
        LiveSource(cfg, model=tiny).sample_batch(600).acts[cfg.data.hook][300:], cfg
    )
    assert (other[1] - median).norm() > 1e-3  # other rows give another median: the test can tell
