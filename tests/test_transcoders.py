"""Transcoders (per-layer, skip, cross-layer): planted answers, training jobs on the tiny model,
kill -9 and resume, the formats both ways, and the errors bad input gets."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
import yaml
from _runs import tiny_config
from safetensors.torch import load_file, save_file

from saes.config import SAEConfig
from saes.sae import SAE
from saes.training.config import RunConfig
from saes.training.loop import train
from saes.training.step import TrainStep, initialise_transcoder
from saes.transcoders import CrossLayerTranscoder
from saes.transcoders.evaluate import Replacement, evaluate_replacement
from saes.transcoders.files import (
    load_dictionary,
    load_transcoder_set,
    save_dictionary,
    write_transcoder_set,
)

REPO = Path(__file__).resolve().parent.parent
IN_HOOKS = "blocks.*.ln2.hook_normalized"


# ---- planted answers: an "MLP" whose output is a sparse code of its input -----------------------
def planted(seed: int, layers: int = 1, d: int = 32, n_true: int = 48, k: int = 3):
    """Inputs x_l = a_l D_in^l and outputs y_j = sum_{i <= j} a_i D_out^{i -> j} of sparse codes a
    (k of n_true latents on per token and layer, values in [1, 2]); with ``skip``, x also carries
    dense noise of norm about 1 and y adds x S^T (only a linear skip can predict that part). Returns (sample(m) -> (x, y) [m, layers, d], D_out [layers, layers, n, d], S)."""
    g = torch.Generator().manual_seed(1000 + seed)  # not the modules' seeds
    D_in = F.normalize(torch.randn(layers, n_true, d, generator=g), dim=-1)
    D_out = F.normalize(torch.randn(layers, layers, n_true, d, generator=g), dim=-1)
    S = torch.randn(d, d, generator=g) / d**0.5

    def sample(m: int, skip: bool = False):
        a = torch.zeros(m, layers, n_true)
        idx = torch.rand(m, layers, n_true, generator=g).argsort(-1)[..., :k]
        a.scatter_(-1, idx, 1 + torch.rand(m, layers, k, generator=g))
        x = torch.einsum("mlf,lfd->mld", a, D_in)
        if skip:  # a dense part of the input, independent of the code: only a linear map carries it
            x = x + torch.randn(m, layers, d, generator=g) / d**0.5
        y = torch.zeros(m, layers, d)
        for j in range(layers):
            for i in range(j + 1):
                y[:, j] += a[:, i] @ D_out[i, j]
            if skip:
                y[:, j] += x[:, j] @ S.T
        return x, y

    return sample, D_out, S


def recovered(W: torch.Tensor, D: torch.Tensor) -> float:
    """The share of true directions (rows of D) matched by some learned row of W at cosine > 0.9."""
    cos = F.normalize(D, dim=-1) @ F.normalize(W, dim=-1).T
    return (cos.max(1).values > 0.9).float().mean().item()


def _fit(module, sample, steps=1500, batch=256, skip=False, squeeze=True):
    x, y = sample(4096, skip)
    if squeeze:
        x, y = x[:, 0], y[:, 0]
    initialise_transcoder(module, x, y, True)
    step = TrainStep(
        module, total_steps=steps, warmup_steps=50, decay_fraction=0.2, dead_tokens=20_000
    )
    for _ in range(steps):
        x, y = sample(batch, skip)
        if squeeze:
            x, y = x[:, 0], y[:, 0]
        stats = step(x, target=y)
    return stats


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_planted_per_layer_transcoder_recovers_the_output_dictionary(seed):
    sample, D_out, _ = planted(seed)
    tc = SAE(SAEConfig(d_in=32, d_out=32, d_sae=96, k=3, kind="transcoder"), seed=seed)
    assert recovered(tc.W_dec.detach(), D_out[0, 0]) < 0.1  # a random start
    _fit(tc, sample)
    assert recovered(tc.W_dec.detach(), D_out[0, 0]) >= 0.95
    # the learned map is the MLP's, not the input's: an SAE on x alone does not find D_out
    sae = SAE(SAEConfig(d_in=32, d_sae=96, k=3), seed=seed)
    step = TrainStep(sae, total_steps=300, warmup_steps=10)
    for _ in range(300):
        step(sample(256)[0][:, 0])
    assert recovered(sae.W_dec.detach(), D_out[0, 0]) < 0.2


@pytest.mark.parametrize("seed", [0, 1])
def test_planted_skip_transcoder_recovers_the_linear_part(seed):
    sample, D_out, S = planted(seed)
    tc = SAE(SAEConfig(d_in=32, d_out=32, d_sae=96, k=3, kind="skip_transcoder"), seed=seed)
    _fit(tc, sample, skip=True)
    export = SAE(tc.cfg.model_copy(), seed=None)
    export.load_state_dict(tc.state_dict())
    export.fold_input_scale()  # W_skip in raw units
    err = (export.W_skip.detach() - S).norm() / S.norm()
    assert err < 0.35, err  # W_skip = 0 (its start) is 1.0 away

    assert recovered(tc.W_dec.detach(), D_out[0, 0]) >= 0.9
    plain = SAE(SAEConfig(d_in=32, d_out=32, d_sae=96, k=3, kind="transcoder"), seed=seed)
    fvu_plain = _fit(plain, sample, skip=True)["fvu"]
    fvu_skip = _fit(
        SAE(SAEConfig(d_in=32, d_out=32, d_sae=96, k=3, kind="skip_transcoder"), seed=seed),
        sample,
        skip=True,
    )["fvu"]
    assert fvu_skip < fvu_plain  # the linear part costs the plain transcoder latents


@pytest.mark.parametrize("seed", [0, 1])
def test_planted_clt_recovers_cross_layer_writes(seed):
    sample, D_out, _ = planted(seed, layers=2)
    cfg = SAEConfig(d_in=32, d_out=32, d_sae=96, k=3, kind="clt", layers=[0, 1])
    clt = CrossLayerTranscoder(cfg, seed=seed)
    _fit(clt, sample, squeeze=False)
    assert recovered(clt.W_dec[0][0].detach(), D_out[0, 0]) >= 0.95
    assert recovered(clt.W_dec[1][0].detach(), D_out[0, 1]) >= 0.95  # layer 0 -> layer 1
    assert recovered(clt.W_dec[1][1].detach(), D_out[1, 1]) >= 0.95
    # a per-layer transcoder at layer 1 sees only x_1 and cannot predict what layer 0 wrote there
    x, y = sample(4096)
    with torch.no_grad():
        fvu_clt = (clt(x)[0][:, 1] - y[:, 1]).pow(2).sum() / (y[:, 1] - y[:, 1].mean(0)).pow(
            2
        ).sum()
    plt1 = SAE(SAEConfig(d_in=32, d_out=32, d_sae=96, k=3, kind="transcoder"), seed=seed)
    fvu_plt = _fit(plt1, lambda m, s=False: tuple(t[:, 1:] for t in sample(m)))["fvu"]
    assert fvu_clt < 0.2 < fvu_plt


@pytest.mark.parametrize("rule", ["topk", "relu_l1"])
def test_clt_training_forward_is_its_inference_forward(rule):
    """The training path (per-target sparse decodes of the concatenated codes) and the inference
    path (encode, then decode) give the same outputs, for random weights and scales."""
    cfg = SAEConfig(d_in=12, d_out=10, d_sae=40, k=5, kind="clt", layers=[0, 1, 2], variant=rule)
    clt = _random(CrossLayerTranscoder(cfg, seed=1), seed=4)
    clt.set_scales([1.5, 0.5, 2.0], [0.8, 1.2, 3.0])
    x, y = torch.randn(30, 3, 12), torch.randn(30, 3, 10)
    out = clt.train_forward(clt.scale_input(x), target=clt.scale_target(y))
    with torch.no_grad():
        torch.testing.assert_close(out.x_hat, clt.scale_target(clt(x)[0]), rtol=1e-4, atol=1e-4)
    assert set(out.losses) == ({"fvu"} if rule == "topk" else {"fvu", "l1"})
    out.loss.backward()
    assert all(w.grad is not None and w.grad.abs().sum() > 0 for w in clt.W_dec)


# ---- training jobs on the tiny model ------------------------------------------------------------
def _tc_config(root, name, kind, **sections):
    return tiny_config(
        root,
        name,
        {
            "data": {"hook": "blocks.0.ln2.hook_normalized", "hooks": [IN_HOOKS]},
            "sae": {"kind": kind, "d_sae": 64, "k": 4},
        },
        **sections,
    )


@pytest.mark.parametrize("kind", ["transcoder", "skip_transcoder", "clt"])
def test_job_trains_every_layer_from_one_forward_and_evaluates(tmp_path, tiny, kind, monkeypatch):
    from interp.activations import ActivationCapture

    forwards = []
    orig = ActivationCapture.__call__

    def counted(self, tokens, *a, **kw):
        forwards.append(tuple(self.hooks) if hasattr(self, "hooks") else None)
        return orig(self, tokens, *a, **kw)

    monkeypatch.setattr(ActivationCapture, "__call__", counted)
    cfg = _tc_config(tmp_path, kind, kind)
    out = train(cfg, progress=False, evaluate=True, model=tiny)
    runs = [out] if kind == "clt" else [out / f"blocks.{i}.ln2.hook_normalized" for i in (0, 1)]
    for run in runs:
        m = json.loads((run / "metrics.json").read_text())
        rec = m["reconstruction"]
        assert len(rec["fvu"]) == (2 if kind == "clt" else 1)
        assert all(0 < f < 1.5 for f in rec["fvu"]) and m["l0"] > 0
        assert len(rec["fvu_no_sink"]) == len(rec["fvu"]) and m["fvu_no_sink"] > 0
        assert m["all_layers_replaced"]["n_predicted_tokens"] > 0
        assert m["output_hooks"] == [
            h.replace("ln2.hook_normalized", "hook_mlp_out") for h in m["input_hooks"]
        ]
    if kind != "clt":
        rep = json.loads((out / "replacement_metrics.json").read_text())
        assert rep["reconstruction"]["layers"] == [0, 1]
        assert rep["all_layers_replaced"]["ce_spliced"] != rep["all_layers_replaced"]["ce_clean"]
    # one capture per batch of windows, for every layer's input and output at once
    assert forwards and all(f is None or len(f) == 4 for f in forwards)
    module = load_dictionary(runs[0])
    assert isinstance(module, CrossLayerTranscoder) == (kind == "clt")


def test_trained_transcoder_beats_its_start_and_the_mean(tmp_path, tiny):
    """Training moves the prediction of the MLP output below the mean's error (FVU < 1) and
    well below the start (W_dec = 0 predicts mean(y): FVU about 1)."""
    cfg = _tc_config(tmp_path, "long", "transcoder", data={"train_tokens": 256 * 40})
    out = train(cfg, progress=False, evaluate=True, model=tiny)
    for i in (0, 1):
        m = json.loads((out / f"blocks.{i}.ln2.hook_normalized" / "metrics.json").read_text())
        assert m["fvu"] < 0.8, m["fvu"]


# ---- kill -9 and resume, bit for bit, for a CLT --------------------------------------------------
CHILD = textwrap.dedent("""
    import sys, time
    import torch
    torch.set_num_threads(1)
    from saes.training.loop import TrainStep, train
    from saes.training.config import RunConfig

    cfg = RunConfig.model_validate_json(open(sys.argv[1]).read())
    orig = TrainStep.__call__

    def step(self, x, grad=None, target=None):
        if self.step_index == 7:
            time.sleep(3600)
        return orig(self, x, grad, target=target)

    TrainStep.__call__ = step
    train(cfg, progress=False, evaluate=False)
""")
CLT_RUN = {
    "data": {"train_tokens": 256 * 12},
    "log": {"checkpoint_every_tokens": 256 * 4, "log_every": 1},
}


def _clt_weights(run: Path) -> dict[str, torch.Tensor]:
    out = {}
    for p in sorted(run.glob("W_*.safetensors")):
        out.update(load_file(str(p)))
    return out


def test_clt_sigkill_then_resume_is_bit_exact(tmp_path, one_thread):
    ref = train(_tc_config(tmp_path, "ref", "clt", **CLT_RUN), progress=False, evaluate=False)
    cfg = _tc_config(tmp_path, "killed", "clt", **CLT_RUN)
    path = tmp_path / "killed.json"
    path.write_text(cfg.model_dump_json())
    run = Path(cfg.log.out_dir)
    child = subprocess.Popen(
        [sys.executable, "-c", CHILD, str(path)],
        cwd=REPO,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )
    try:
        give_up = time.monotonic() + 600
        while (
            not (run / "checkpoints" / "step_000000004" / "meta.json").exists()
            or not (run / "train_log.jsonl").exists()
            or len((run / "train_log.jsonl").read_text().splitlines()) < 7
        ):
            if child.poll() is not None:
                pytest.fail(f"child exited early: {child.stdout.read().decode()[-2000:]}")
            if time.monotonic() > give_up:
                pytest.fail("the child never reached step 7")
            time.sleep(0.05)
        child.send_signal(signal.SIGKILL)
        child.wait(timeout=30)
    finally:
        if child.poll() is None:
            child.kill()
            child.wait()
    assert child.returncode == -signal.SIGKILL
    assert not (run / "W_enc_0.safetensors").exists()
    train(cfg, resume=True, progress=False, evaluate=False)
    a, b = _clt_weights(ref), _clt_weights(run)
    assert a.keys() == b.keys() and len(a) == 8  # W_enc, b_enc, b_dec, W_dec per layer
    for key in a:
        assert torch.equal(a[key], b[key]), key


# ---- formats ----------------------------------------------------------------------------------
def _random(module, seed=0):
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in module.parameters():
            p.copy_(torch.randn(p.shape, generator=g) * 0.3)
    return module


def _tc(kind="transcoder", variant="relu_l1", d_in=16, d_out=12, layer=0, **kw):
    cfg = SAEConfig(
        d_in=d_in,
        d_out=d_out,
        d_sae=24,
        kind=kind,
        variant=variant,
        hook_name=f"blocks.{layer}.ln2.hook_normalized",
        output_hook_name=f"blocks.{layer}.hook_mlp_out",
        model_name="m",
        **kw,
    )
    return _random(SAE(cfg, seed=0), seed=layer)


@pytest.mark.parametrize("kind", ["transcoder", "skip_transcoder"])
def test_saelens_opens_our_transcoders_and_we_open_theirs(tmp_path, kind):
    from sae_lens import SAE as LensSAE

    ours = _tc(kind)
    save_dictionary(ours, tmp_path / "ours")
    lens = LensSAE.load_from_disk(str(tmp_path / "ours"))
    assert type(lens).__name__ == ("SkipTranscoder" if kind == "skip_transcoder" else "Transcoder")
    x = torch.randn(20, 16)
    with torch.no_grad():
        torch.testing.assert_close(lens(x), ours(x)[0], rtol=1e-5, atol=1e-5)
    lens.save_model(str(tmp_path / "theirs"))
    back = load_dictionary(tmp_path / "theirs")
    assert back.cfg.kind == kind and back.cfg.width_out == 12
    with torch.no_grad():
        torch.testing.assert_close(back(x)[0], lens(x), rtol=1e-5, atol=1e-5)


def test_saelens_jumprelu_transcoder_opens(tmp_path):
    from sae_lens import JumpReLUTranscoder, JumpReLUTranscoderConfig

    lens = JumpReLUTranscoder(
        JumpReLUTranscoderConfig(d_in=16, d_sae=24, d_out=12, apply_b_dec_to_input=False)
    )
    _random(lens)
    with torch.no_grad():
        lens.threshold.copy_(torch.rand(24) * 0.5)
    lens.save_model(str(tmp_path / "jr"))
    ours = load_dictionary(tmp_path / "jr")
    assert ours.cfg.variant == "jumprelu" and ours.cfg.kind == "transcoder"
    x = torch.randn(20, 16)
    with torch.no_grad():
        torch.testing.assert_close(ours(x)[0], lens(x), rtol=1e-5, atol=1e-5)


def test_topk_transcoder_roundtrip_keeps_its_scales(tmp_path):
    tc = _tc("skip_transcoder", "topk", k=4)
    tc.cfg.input_scale, tc.cfg.output_scale = 2.5, 0.4
    x = torch.randn(30, 16)
    with torch.no_grad():
        want = tc(x)[0]
    save_dictionary(tc, tmp_path / "tk")
    back = load_dictionary(tmp_path / "tk")
    assert back.cfg.input_scale is None and back.cfg.kind == "skip_transcoder"
    with torch.no_grad():
        torch.testing.assert_close(back(x)[0], want, rtol=1e-5, atol=1e-5)


def _hand_forward(sd: dict, x: torch.Tensor, act) -> torch.Tensor:
    """circuit-tracer's documented per-layer transcoder: act(x W_enc^T + b_enc) W_dec + b_dec
    (+ x W_skip^T), with W_enc stored [d_tc, d_model]."""
    out = act(x @ sd["W_enc"].T + sd["b_enc"]) @ sd["W_dec"] + sd["b_dec"]
    return out + x @ sd["W_skip"].T if "W_skip" in sd else out


def test_circuit_tracer_set_written_by_hand_opens_and_ours_reads_back(tmp_path):
    folder = tmp_path / "set"
    folder.mkdir()
    g = torch.Generator().manual_seed(3)
    files = []
    for i in range(3):
        sd = {
            "W_enc": torch.randn(24, 16, generator=g),
            "W_dec": torch.randn(24, 16, generator=g),
            "b_enc": torch.randn(24, generator=g),
            "b_dec": torch.randn(16, generator=g),
            "W_skip": torch.randn(16, 16, generator=g),
            "activation_function.threshold": torch.rand(24, generator=g),
        }
        save_file(sd, str(folder / f"layer_{i}.safetensors"))
        files.append(sd)
    (folder / "config.yaml").write_text(
        yaml.safe_dump(
            {
                "model_kind": "transcoder_set",
                "model_name": "m",
                "feature_input_hook": "hook_resid_mid",
                "feature_output_hook": "hook_mlp_out",
            }
        )
    )
    tcs = load_transcoder_set(folder)
    x = torch.randn(10, 16)
    for i, (tc, sd) in enumerate(zip(tcs, files)):
        assert tc.cfg.hook_name == f"blocks.{i}.hook_resid_mid" and tc.cfg.variant == "jumprelu"

        def jump(p, t=sd["activation_function.threshold"]):
            return p * (p > t)

        with torch.no_grad():
            torch.testing.assert_close(tc(x)[0], _hand_forward(sd, x, jump), rtol=1e-4, atol=1e-4)
    write_transcoder_set(tcs, tmp_path / "again")
    for i in range(3):
        again = load_file(str(tmp_path / "again" / f"layer_{i}.safetensors"))
        for key, value in files[i].items():
            torch.testing.assert_close(again[key], value)


def test_circuit_tracer_topk_set_and_clt_roundtrip(tmp_path):
    tcs = [_tc("transcoder", "topk", d_in=16, d_out=16, layer=i, k=5) for i in range(2)]
    write_transcoder_set(tcs, tmp_path / "set")
    cfg = yaml.safe_load((tmp_path / "set" / "config.yaml").read_text())
    assert cfg["activation"] == "topk" and cfg["k"] == 5
    assert cfg["feature_input_hook"] == "ln2.hook_normalized"
    back = load_transcoder_set(tmp_path / "set")
    x = torch.randn(10, 16)
    for a, b in zip(tcs, back):
        with torch.no_grad():
            torch.testing.assert_close(a(x)[0], b(x)[0])

    clt = _random(
        CrossLayerTranscoder(
            SAEConfig(
                d_in=16,
                d_out=16,
                d_sae=24,
                k=5,
                kind="clt",
                layers=[0, 1, 2],
                hook_name="blocks.{layer}.hook_resid_mid",
                output_hook_name="blocks.{layer}.hook_mlp_out",
            )
        )
    )
    clt.set_scales([1.5, 2.0, 0.5], [0.7, 1.1, 3.0])
    xs = torch.randn(10, 3, 16)
    with torch.no_grad():
        want = clt(xs)[0]
    save_dictionary(clt, tmp_path / "clt")
    w_dec = load_file(str(tmp_path / "clt" / "W_dec_1.safetensors"))["W_dec_1"]
    assert tuple(w_dec.shape) == (24, 2, 16)  # [d_tc, L - i, d_model]
    back = load_dictionary(tmp_path / "clt")
    with torch.no_grad():
        torch.testing.assert_close(back(xs)[0], want, rtol=1e-5, atol=1e-5)
    # circuit-tracer's own CLT (no cfg.json of ours): ReLU, by its documented formula
    (tmp_path / "clt" / "cfg.json").unlink()
    cfg = yaml.safe_load((tmp_path / "clt" / "config.yaml").read_text())
    cfg.pop("activation"), cfg.pop("k")
    (tmp_path / "clt" / "config.yaml").write_text(yaml.safe_dump(cfg))
    relu = load_dictionary(tmp_path / "clt")
    assert relu.cfg.variant == "relu_l1" and relu.cfg.layers == [0, 1, 2]
    enc = [load_file(str(tmp_path / "clt" / f"W_enc_{i}.safetensors")) for i in range(3)]
    dec = [
        load_file(str(tmp_path / "clt" / f"W_dec_{i}.safetensors"))[f"W_dec_{i}"] for i in range(3)
    ]
    a = [torch.relu(xs[:, i] @ enc[i][f"W_enc_{i}"].T + enc[i][f"b_enc_{i}"]) for i in range(3)]
    hand = torch.stack(
        [
            enc[j][f"b_dec_{j}"] + sum(a[i] @ dec[i][:, j - i] for i in range(j + 1))
            for j in range(3)
        ],
        1,
    )
    with torch.no_grad():
        torch.testing.assert_close(relu(xs)[0], hand, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("skip", [False, True])
def test_sparsify_transcoders_open(tmp_path, skip):
    from sparsify import SparseCoder, SparseCoderConfig

    coder = SparseCoder(
        16, SparseCoderConfig(k=5, num_latents=24, transcode=True, skip_connection=skip)
    )
    _random(coder)
    coder.save_to_disk(tmp_path / "layers.4.mlp")
    ours = load_dictionary(tmp_path / "layers.4.mlp")
    assert ours.cfg.kind == ("skip_transcoder" if skip else "transcoder")
    assert ours.cfg.output_hook_name == "blocks.4.hook_mlp_out"
    x = torch.randn(12, 16)
    with torch.no_grad():
        torch.testing.assert_close(ours(x)[0], coder(x).sae_out, rtol=1e-4, atol=1e-4)


# ---- the CLI, end to end ---------------------------------------------------------------------
def test_cli_trains_a_clt_end_to_end(tmp_path):
    from typer.testing import CliRunner

    from interp.cli import app

    out = tmp_path / "clt"
    res = CliRunner().invoke(
        app,
        [
            "train",
            "--set",
            "data.model=tiny",
            "--set",
            f'data.hooks=["{IN_HOOKS}"]',
            "--set",
            "sae.kind=clt",
            "--set",
            "sae.d_sae=32",
            "--set",
            "sae.k=4",
            "--set",
            "data.context_size=33",
            "--set",
            "data.train_tokens=1024",
            "--set",
            "data.batch_tokens=256",
            "--set",
            "data.buffer_tokens=1024",
            "--set",
            "eval.tokens=256",
            "--set",
            "eval.ce_windows=2",
            "--set",
            f"log.out_dir={out}",
        ],
    )
    assert res.exit_code == 0, res.output
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["kind"] == "clt" and metrics["l0"] == 8.0
    assert (out / "config.yaml").exists() and (out / "W_dec_1.safetensors").exists()


# ---- bad input ---------------------------------------------------------------------------------
def test_output_hook_the_model_lacks_is_named(tmp_path, tiny):
    cfg = _tc_config(tmp_path, "bad", "transcoder", data={"output_hook": "blocks.{layer}.hook_mlp"})
    with pytest.raises(ValueError, match=r"blocks\.0\.hook_mlp"):
        train(cfg, progress=False, model=tiny)


def test_clt_over_non_contiguous_layers_is_refused(tmp_path):
    with pytest.raises(ValueError, match=r"jumps from 0 to 2"):
        SAEConfig(d_in=8, d_sae=64, kind="clt", layers=[0, 2])
    cfg = _tc_config(
        tmp_path,
        "gap",
        "clt",
        data={
            "model": "tiny:n_layers=3",
            "hooks": ["blocks.0.ln2.hook_normalized", "blocks.2.ln2.hook_normalized"],
        },
    )
    with pytest.raises(ValueError, match=r"contiguous.*jumps from 0 to 2"):
        train(cfg, progress=False)


def test_transcoder_shapes_that_do_not_match_the_model(tmp_path, tiny):
    wrong = [_tc("transcoder", "relu_l1", d_in=16, d_out=16, layer=0)]
    with pytest.raises(ValueError, match=r"width 16 at blocks\.0\.ln2\.hook_normalized.*width 64"):
        Replacement(wrong).check_model(tiny)
    with pytest.raises(ValueError, match=r"width 16"):
        evaluate_replacement(wrong, tiny)
    folder = tmp_path / "set"
    write_transcoder_set(wrong, folder)
    sd = load_file(str(folder / "layer_0.safetensors"))
    sd["W_dec"] = sd["W_dec"][:, :8].contiguous()  # d_out no longer 16: the skip stays [16, 16]
    sd["W_enc"] = sd["W_enc"][:20].contiguous()
    save_file(sd, str(folder / "layer_0.safetensors"))
    with pytest.raises(ValueError, match=r"layer_0.safetensors.*W_enc is \(20, 16\)"):
        load_transcoder_set(folder)


def test_sae_run_with_an_output_hook_and_tied_clt_are_refused():
    with pytest.raises(ValueError, match=r"data.output_hook .* sae.kind is 'sae'"):
        RunConfig(data={"output_hook": "blocks.0.hook_mlp_out"})
    with pytest.raises(ValueError, match=r"set data.hooks"):
        RunConfig(sae={"kind": "clt"})
    with pytest.raises(ValueError, match=r"cannot.*rules that can"):
        SAEConfig(d_in=8, d_sae=64, kind="transcoder", variant="mutual_choice")


# ---- the explorer's feature store ------------------------------------------------------------
def test_transcoder_feature_store_reads_the_input_and_writes_to_the_output(tmp_path, tiny):
    """A transcoder's store: activations at its input hook, logit effects of its decoder rows
    written where they land, its output hook (an MLP output joins the residual stream)."""
    from interp.logit_lens import top_logit_effects
    from saes.analysis.attention_heads import raw_decoder
    from saes.features import FeatureStore, StoreConfig, build_store

    cfg = tiny_config(
        tmp_path,
        "plt",
        data={"hook": "blocks.1.ln2.hook_normalized"},
        sae={"kind": "transcoder", "d_sae": 64, "k": 4},
    )
    run = train(cfg, progress=False, evaluate=False, model=tiny)
    out = build_store(run, model=tiny, config=StoreConfig(tokens=2048))
    store = FeatureStore(out)
    assert store.manifest["hook"] == "blocks.1.ln2.hook_normalized"
    sae = load_dictionary(run)
    live = store.alive
    assert live.numel() > 0
    top = store.array("logit_top_ids")
    n = top.shape[1]
    ids, *_ = top_logit_effects(tiny, "blocks.1.hook_mlp_out", raw_decoder(sae)[live], n)
    assert torch.equal(top[live].long(), ids.long())


# ---- caches hold both hooks ----------------------------------------------------------------------
def test_transcoder_trains_from_a_cache_of_both_hooks(tmp_path, tiny):
    from interp.activation_files import ActivationFilesWriter
    from interp.activations import ActivationCapture
    from interp.data import token_windows

    def write(folder, hooks):
        wins = token_windows(tiny.tokenizer, source="stdlib", context_size=33, split="train")
        cap = ActivationCapture(tiny, hooks)
        meta = {"model": "tiny", "source": "stdlib", "seed": 0, "context_size": 33}
        ActivationFilesWriter(folder, cap, meta, windows_per_shard=16).write(
            wins, batch_windows=8, max_windows=96, progress=False
        )

    both = ["blocks.0.ln2.hook_normalized", "blocks.0.hook_mlp_out"]
    write(tmp_path / "both", both)
    cfg = tiny_config(
        tmp_path,
        "cached",
        data={"hook": both[0], "cache": str(tmp_path / "both"), "model": "tiny"},
        sae={"kind": "transcoder", "d_sae": 64, "k": 4},
    )
    run = train(cfg, progress=False, evaluate=True, model=tiny)
    metrics = json.loads((run / "metrics.json").read_text())
    assert metrics["output_hooks"] == ["blocks.0.hook_mlp_out"] and metrics["fvu"] < 1.0
    write(tmp_path / "input_only", both[:1])
    cfg = tiny_config(
        tmp_path,
        "lacking",
        data={"hook": both[0], "cache": str(tmp_path / "input_only"), "model": "tiny"},
        sae={"kind": "transcoder", "d_sae": 64, "k": 4},
    )
    with pytest.raises(Exception, match=r"blocks\.0\.hook_mlp_out"):
        train(cfg, progress=False, model=tiny)
