"""Many SAEs per forward pass: hook patterns x per-SAE overrides, equal to separate runs; memory plan."""

from __future__ import annotations

import json

import pytest
import torch
from _runs import tiny_config
from safetensors.torch import load_file

from saes.training.loop import TrainStep, train
from saes.training.memory import (
    GiB,
    MemoryPlanError,
    SAEItem,
    plan_memory,
    sae_state_bytes,
    step_temp_bytes,
)
from saes.training.shared_stream import expand_job, resolve_hooks

pytestmark = pytest.mark.usefixtures("one_thread_module")


# every run here: 6 steps, a checkpoint every 3
STEPS6 = {"data": {"train_tokens": 256 * 6}, "log": {"checkpoint_every_tokens": 256 * 3}}


def _same(run_a, run_b):
    """Bit-identical weights."""
    a = load_file(str(run_a / "sae_weights.safetensors"))
    b = load_file(str(run_b / "sae_weights.safetensors"))
    assert a.keys() == b.keys()
    for key in a:
        assert torch.equal(a[key], b[key]), (
            run_a,
            run_b,
            key,
            (a[key] - b[key]).abs().max().item(),
        )


def test_job_equals_separate_runs_with_one_forward_per_batch(tmp_path, tiny, count_calls):
    from interp.activations import ActivationCapture

    calls = count_calls(ActivationCapture)
    relu = {"d_sae": 192, "k": 8, "variant": "relu_l1", "l1_coefficient": 0.3}
    job = tiny_config(
        tmp_path,
        "job",
        STEPS6,
        data={"hooks": ["blocks.*.hook_resid_post"]},
        saes=[{"sae": {"k": 4}}, {"name": "wide", "sae": relu, "optim": {"lr": 1e-3}}],
    )
    out = train(job, progress=False, evaluate=False, model=tiny)
    job_forwards = calls["n"]
    runs = sorted(p.parent for p in out.glob("*/*/sae_weights.safetensors"))
    assert [str(p.relative_to(out)) for p in runs] == [
        "blocks.0.hook_resid_post/k4",
        "blocks.0.hook_resid_post/wide",
        "blocks.1.hook_resid_post/k4",
        "blocks.1.hook_resid_post/wide",
    ]
    plan = json.loads((out / "memory_plan.json").read_text())
    assert plan["fits"] and len(plan["saes"]) == 4

    calls["n"] = 0
    single = train(
        tiny_config(
            tmp_path, "one", STEPS6, data={"hook": "blocks.1.hook_resid_post"}, sae={"k": 4}
        ),
        progress=False,
        evaluate=False,
        model=tiny,
    )
    assert calls["n"] == job_forwards, "four SAEs on two hooks cost the forwards of one run"
    _same(out / "blocks.1.hook_resid_post" / "k4", single)
    wide = train(
        tiny_config(tmp_path, "wide", STEPS6, sae=relu, optim={"lr": 1e-3}),
        progress=False,
        evaluate=False,
        model=tiny,
    )
    _same(out / "blocks.0.hook_resid_post" / "wide", wide)
    cfg = json.loads((out / "blocks.0.hook_resid_post" / "wide" / "cfg.json").read_text())
    assert cfg["d_sae"] == 192 and cfg["metadata"]["hook_name"] == "blocks.0.hook_resid_post"


def test_job_from_cache_and_resume(tmp_path, tiny, monkeypatch, capsys):
    """A two-hook job from a cache; a crash mid-job resumes every SAE from the step-3 checkpoint they
    share (status records, logs, the 3 x 4 steps executed) to the uninterrupted weights."""
    from interp.activation_files import ActivationFilesWriter
    from interp.activations import ActivationCapture
    from interp.data import token_windows
    from saes.training.run_status import read_status

    cap = ActivationCapture(tiny, ["blocks.0.hook_resid_post", "blocks.1.hook_resid_post"])
    writer = ActivationFilesWriter(tmp_path / "cache", cap, {"model": "tiny"}, windows_per_shard=32)
    writer.write(
        token_windows(tiny.tokenizer, context_size=33),
        batch_windows=8,
        max_windows=96,
        progress=False,
    )
    job = {
        "data": {
            "cache": str(tmp_path / "cache"),
            "hooks": ["blocks.0.hook_resid_post", "blocks.1.hook_resid_post"],
        },
        "saes": [{"sae": {"k": 4}}, {"sae": {"k": 16}}],
    }
    ref = train(tiny_config(tmp_path, "ref", STEPS6, job), progress=False, evaluate=False)
    orig = TrainStep.__call__
    calls = {"n": 0}

    def crashing(self, x, grad=None):
        calls["n"] += 1
        if calls["n"] == 4 * 4 + 2:  # during step 5, after one of the four SAEs stepped
            raise RuntimeError("simulated crash")
        return orig(self, x, grad)

    monkeypatch.setattr(TrainStep, "__call__", crashing)
    with pytest.raises(RuntimeError, match="simulated crash"):
        train(tiny_config(tmp_path, "crash", STEPS6, job), progress=False, evaluate=False)
    monkeypatch.setattr(TrainStep, "__call__", orig)
    with pytest.raises(FileExistsError, match="--resume"):
        train(tiny_config(tmp_path, "crash", STEPS6, job), progress=False, evaluate=False)
    calls["n"] = 0
    monkeypatch.setattr(TrainStep, "__call__", crashing)  # counts; the count is reset, so no crash
    capsys.readouterr()
    out = train(
        tiny_config(tmp_path, "crash", STEPS6, job), resume=True, progress=False, evaluate=False
    )
    assert "resuming 4 runs from step_000000003" in capsys.readouterr().out
    assert calls["n"] == (6 - 3) * 4, "steps 4-6 of each of the four SAEs, nothing before"
    runs = sorted(ref.glob("*/*/sae_weights.safetensors"))
    assert len(runs) == 4
    for run in runs:
        resumed = out / run.parent.relative_to(ref)
        _same(run.parent, resumed)
        assert read_status(resumed)["resumed_from"] == "step_000000003"
        # logged every 2 steps: 2 and 4 before the crash during step 5, then 4 and 6 after the resume
        assert [
            json.loads(x)["step"] for x in (resumed / "train_log.jsonl").read_text().splitlines()
        ] == [2, 4, 4, 6]


def test_bad_jobs_fail_before_work(tmp_path, tiny):
    names = list(tiny.hook_dict)
    assert resolve_hooks(["blocks.*.hook_resid_post"], names) == [
        "blocks.0.hook_resid_post",
        "blocks.1.hook_resid_post",
    ]
    with pytest.raises(ValueError, match="matches no hook"):
        resolve_hooks(["blocks.*.hook_resid_pots"], names)
    with pytest.raises(ValueError, match="batch_tokens.*shared by the whole job"):
        expand_job(tiny_config(tmp_path, "j", saes=[{"data": {"batch_tokens": 512}}]), names)
    with pytest.raises(ValueError, match="distinct names"):
        saes = [{"name": "a", "sae": {"k": 4}}, {"name": "a", "sae": {"k": 8}}]
        expand_job(tiny_config(tmp_path, "j", saes=saes), names)
    with pytest.raises(ValueError, match="k must satisfy"):
        expand_job(tiny_config(tmp_path, "j", saes=[{"sae": {"k": 500}}]), names)
    with pytest.raises(ValueError, match="unknown hook"):
        train(
            tiny_config(
                tmp_path,
                "j",
                data={"hooks": ["blocks.0.hook_resid_post", "blocks.0.hook_resid_pots"]},
            ),
            progress=False,
            model=tiny,
        )
    assert not (tmp_path / "j").exists()


def test_memory_estimate_of_sae_state_is_exact(tiny):
    from saes.config import SAEConfig
    from saes.sae import SAE

    sae = SAE(SAEConfig(d_in=64, d_sae=96, k=4))
    step = TrainStep(sae, dead_tokens=1)
    step(torch.randn(32, 64))
    held = sum(p.numel() * p.element_size() for p in sae.parameters())
    held += sum(p.grad.numel() * p.grad.element_size() for p in sae.parameters())
    held += sum(
        v.numel() * v.element_size()
        for s in step.optimizer.state.values()
        for v in s.values()
        if torch.is_tensor(v) and v.dim() > 0
    )
    assert sae_state_bytes(64, 96) == held


def test_plan_table_and_clear_error_at_known_sizes():
    # one SAE d_in=512, d_sae=2^15: state 16 * (2*512*32768 + 32768 + 512) bytes; temps 4 B (3*32768 + 8*512)
    item = SAEItem("a", 512, 2**15, "topk")
    state = 16 * (2 * 512 * 2**15 + 2**15 + 512)
    assert item.state == state
    assert step_temp_bytes(512, 2**15, "topk", 4096) == 4 * 4096 * (3 * 2**15 + 8 * 512)
    buffers = 3 * 65536 * 512 * 4
    # budget (90% of available) between the totals at batch 4096 and 8192
    at = {b: state + step_temp_bytes(512, 2**15, "topk", b) + buffers for b in (4096, 8192)}
    available = int((at[4096] + at[8192]) / 2 / 0.9)
    plan = plan_memory([item], {"h": 512}, 8192, 65536, available=available)
    assert plan.total() == at[8192] and not plan.fits
    assert plan.largest_batch() == 4096
    rows = {r["batch_tokens"]: r["fits"] for r in plan.by_batch_size()}
    assert rows[4096] and not rows[8192] and rows[1024]
    with pytest.raises(MemoryPlanError, match="largest batch_tokens that fits is 4096"):
        plan.check()
    plan_memory([item], {"h": 512}, 4096, 65536, available=available).check()  # fits: no error


def test_impossible_job_fails_before_anything_is_allocated(tmp_path, tiny):
    # 2^27 latents x 64 inputs: 16 * (129 * 2^27 + 64) bytes = 258 GiB of parameters, gradients and Adam
    cfg = tiny_config(
        tmp_path, "huge", data={"hooks": ["blocks.0.hook_resid_post"]}, sae={"d_sae": 2**27}
    )
    with pytest.raises(
        MemoryPlanError, match=r"needs about .* GiB .*largest: .*d_sae=134217728"
    ) as e:
        train(cfg, progress=False, model=tiny)
    assert "no batch size fits" in str(e.value) and "258.00 GiB (largest" in str(e.value)
    assert not (tmp_path / "huge" / "blocks.0.hook_resid_post" / "checkpoints").exists()
    assert sae_state_bytes(64, 2**27) / GiB == pytest.approx(258, rel=1e-6)


def test_cli_plan_and_impossible_job(tmp_path, tiny):
    from typer.testing import CliRunner

    from interp.cli import app

    cfg = tiny_config(
        tmp_path,
        "cli",
        data={"hooks": ["blocks.*.hook_resid_post"]},
        saes=[{"sae": {"k": 4}}, {"sae": {"k": 8}}],
    )
    (tmp_path / "job.json").write_text(cfg.model_dump_json())
    res = CliRunner().invoke(app, ["train", "--config", str(tmp_path / "job.json"), "--plan"])
    assert res.exit_code == 0, res.output
    assert (
        "memory plan on cpu" in res.output
        and "fits" in res.output
        and "batch_tokens -> total GiB" in res.output
    )
    plan = json.loads((tmp_path / "cli" / "memory_plan.json").read_text())
    assert (
        len(plan["saes"]) == 4 and plan["largest_fitting_batch"] == 1024
    )  # the buffer holds 1024 rows
    assert not list((tmp_path / "cli").glob("*/*/checkpoints")), "--plan trains nothing"
    res = CliRunner().invoke(
        app, ["train", "--config", str(tmp_path / "job.json"), "--set", "sae.d_sae=134217728"]
    )
    assert res.exit_code == 2 and "GiB" in res.output and "no batch size fits" in res.output
