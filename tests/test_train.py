"""The trainer: run folders, resume equality, NaN stop, bad input, CLI."""
from __future__ import annotations

import json

import pytest
import torch
from safetensors.torch import load_file, save_file

from saes.train import TrainingDiverged, TrainStep, train
from saes.train_config import RunConfig, load_run_config


def _cfg(tmp_path, name="run", **kw):
    base = dict(model="tiny", hook="blocks.0.hook_resid_post", context_size=33, batch_windows=8,
                buffer_tokens=1024, d_sae=128, k=8, train_tokens=256 * 12, batch_tokens=256,
                checkpoint_every_tokens=256 * 4, warmup_steps=2, out_dir=str(tmp_path / name),
                eval_tokens=512, eval_ce_windows=4, log_every=2)
    base.update(kw)
    return RunConfig(**base)


def _weights(run_dir):
    return load_file(str(run_dir / "sae_weights.safetensors"))


def test_run_folder_contents_and_metrics(tmp_path, tiny):
    run = train(_cfg(tmp_path), progress=False)
    for name in ("cfg.json", "sae_weights.safetensors", "metrics.json", "train_log.jsonl", "run_config.json"):
        assert (run / name).exists(), name
    m = json.loads((run / "metrics.json").read_text())
    for key in ("fvu", "explained_variance", "l0_mean", "dead_fraction", "dense_fraction", "cosine_mean",
                "norm_ratio_mean", "ce_clean", "ce_spliced", "ce_zero_ablated", "ce_loss_recovered", "kl_div",
                "feature_density_log10_hist", "l0_quantiles"):
        assert key in m, key
    assert m["l0_mean"] <= 8 + 1e-9 and 0 < m["fvu"] < 1.5
    assert m["kl_div"] >= 0  # a random tiny model: zero-ablation need not hurt, so only the identity is checked
    assert m["ce_loss_recovered"] == pytest.approx(
        (m["ce_zero_ablated"] - m["ce_spliced"]) / (m["ce_zero_ablated"] - m["ce_clean"]))
    log = [json.loads(line) for line in (run / "train_log.jsonl").read_text().splitlines()]
    assert log[-1]["step"] == 12 and log[-1]["tokens"] == 256 * 12


def test_resume_matches_uninterrupted(tmp_path, tiny, monkeypatch):
    ref = train(_cfg(tmp_path, "ref"), progress=False, evaluate=False)
    calls = {"n": 0}
    orig = TrainStep.__call__

    def crashing(self, x, grad=None):
        calls["n"] += 1
        if calls["n"] == 7:  # dies after the checkpoint at step 4, in the middle of a block
            raise RuntimeError("simulated crash")
        return orig(self, x, grad)

    monkeypatch.setattr(TrainStep, "__call__", crashing)
    with pytest.raises(RuntimeError, match="simulated crash"):
        train(_cfg(tmp_path, "crash"), progress=False, evaluate=False)
    monkeypatch.setattr(TrainStep, "__call__", orig)
    with pytest.raises(FileExistsError, match="--resume"):
        train(_cfg(tmp_path, "crash"), progress=False, evaluate=False)
    out = train(_cfg(tmp_path, "crash"), resume=True, progress=False, evaluate=False)
    a, b = _weights(ref), _weights(out)
    for k in a:
        torch.testing.assert_close(a[k], b[k], rtol=1e-5, atol=1e-6)


def _handmade_cache(folder, x):
    """A cache written by hand in the documented format (activations from anywhere)."""
    folder.mkdir(parents=True)
    save_file({"blocks.0.hook_resid_post": x}, str(folder / "shard_00000.safetensors"))
    manifest = {"format": "interp-activations", "version": 1, "model": "tiny",
                "hooks": {"blocks.0.hook_resid_post": x.shape[1]}, "dtype": "float32", "has_grads": False,
                "shards": [{"file": "shard_00000.safetensors", "tokens": x.shape[0]}]}
    (folder / "manifest.json").write_text(json.dumps(manifest))


def test_nan_stops_with_clear_message_and_keeps_checkpoint(tmp_path, tiny):
    x = torch.randn(4096, tiny.cfg.d_model)
    x[3000:] = float("nan")
    _handmade_cache(tmp_path / "cache", x)
    cfg = _cfg(tmp_path, "nan", cache=str(tmp_path / "cache"), buffer_tokens=512, train_tokens=256 * 14)
    with pytest.raises(TrainingDiverged, match="nan"):
        train(cfg, progress=False, evaluate=False)
    ckpts = sorted((tmp_path / "nan" / "checkpoints").glob("step_*"))
    assert ckpts, "the last good checkpoint must be kept"
    state = load_file(str(ckpts[-1] / "state.safetensors"))
    assert all(torch.isfinite(v.float()).all() for v in state.values())


def test_trains_from_cache(tmp_path, tiny):
    x = torch.randn(4096, tiny.cfg.d_model)
    _handmade_cache(tmp_path / "cache", x)
    run = train(_cfg(tmp_path, "c", cache=str(tmp_path / "cache"), buffer_tokens=512), progress=False, evaluate=False)
    assert (run / "sae_weights.safetensors").exists()


def test_bad_input_fails_before_work(tmp_path, tiny):
    with pytest.raises(ValueError, match="unknown config keys.*d_saee"):
        load_run_config(None, ["d_saee=10"])
    with pytest.raises(ValueError, match="k must satisfy"):
        load_run_config(None, ["k=64", "d_sae=64"])
    with pytest.raises(ValueError, match="unknown hook"):
        train(_cfg(tmp_path, "h", hook="blocks.0.hook_resid_pots"), progress=False)
    _handmade_cache(tmp_path / "cache", torch.randn(512, tiny.cfg.d_model))
    with pytest.raises(ValueError, match=f"d_in={tiny.cfg.d_model}.*d_in=77"):
        train(_cfg(tmp_path, "d", cache=str(tmp_path / "cache"), d_in=77), progress=False)
    assert not (tmp_path / "h" / "checkpoints").exists()


def test_cli_train_and_eval(tmp_path, tiny):
    from typer.testing import CliRunner

    from interp.cli import app

    cfg = _cfg(tmp_path, "cli").model_dump()
    (tmp_path / "c.json").write_text(json.dumps(cfg))
    runner = CliRunner()
    res = runner.invoke(app, ["train", "--config", str(tmp_path / "c.json"), "--set", "k=4"])
    assert res.exit_code == 0, res.output
    assert json.loads((tmp_path / "cli" / "cfg.json").read_text())["k"] == 4
    res = runner.invoke(app, ["eval", str(tmp_path / "cli")])
    assert res.exit_code == 0 and "fvu" in res.output
    res = runner.invoke(app, ["train", "--config", str(tmp_path / "c.json"), "--set", "bogus=1"])
    assert res.exit_code == 2 and "bogus" in res.output


def test_ctrl_c_checkpoints_then_resume_matches(tmp_path, tiny, monkeypatch):
    import os
    import signal

    ref = train(_cfg(tmp_path, "ref"), progress=False, evaluate=False)
    calls = {"n": 0}
    orig = TrainStep.__call__

    def interrupting(self, x, grad=None):
        calls["n"] += 1
        if calls["n"] == 6:  # Ctrl-C arrives mid-step: the step completes, then a checkpoint is written
            os.kill(os.getpid(), signal.SIGINT)
        return orig(self, x, grad)

    monkeypatch.setattr(TrainStep, "__call__", interrupting)
    with pytest.raises(KeyboardInterrupt):
        train(_cfg(tmp_path, "int", checkpoint_every_tokens=10**9), progress=False, evaluate=False)
    ckpts = sorted((tmp_path / "int" / "checkpoints").glob("step_*"))
    assert [p.name for p in ckpts] == ["step_000000006"]
    monkeypatch.setattr(TrainStep, "__call__", orig)
    out = train(_cfg(tmp_path, "int", checkpoint_every_tokens=10**9), resume=True, progress=False, evaluate=False)
    a, b = _weights(ref), _weights(out)
    for k in a:
        torch.testing.assert_close(a[k], b[k], rtol=1e-5, atol=1e-6)


def test_corrupt_checkpoint_falls_back_to_previous(tmp_path, tiny):
    from saes.checkpoint import latest_checkpoint

    run = train(_cfg(tmp_path, "c"), progress=False, evaluate=False)
    ckpts = sorted((run / "checkpoints").glob("step_*"))
    assert len(ckpts) == 2
    state = ckpts[-1] / "state.safetensors"
    state.write_bytes(state.read_bytes()[:-100])
    with pytest.warns(UserWarning, match=ckpts[-1].name):
        assert latest_checkpoint(run) == ckpts[-2]
