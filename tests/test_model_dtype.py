"""The dtype a model runs in: names, ``auto``'s rule, and bf16 capture through the run config."""

from __future__ import annotations

import json

import pytest
import torch
from _runs import tiny_run
from pydantic import ValidationError

from interp.activations import ActivationCapture
from interp.models import dtypes, load_model, resolve_model_dtype
from saes.training.config import RunConfig

HOOK = "blocks.1.hook_resid_post"


def test_names_resolve_and_bad_names_are_refused():
    assert resolve_model_dtype("float32") is torch.float32
    assert resolve_model_dtype("bfloat16") is torch.bfloat16
    assert resolve_model_dtype(torch.float16) is torch.float16
    with pytest.raises(ValueError, match="'fp16' is not one of"):
        resolve_model_dtype("fp16")
    with pytest.raises(ValidationError, match="model_dtype"):
        RunConfig(data={"model_dtype": "fp16"})


@pytest.mark.parametrize(
    ("flags", "want"),
    [(("amx_bf16",), torch.bfloat16), (("avx512_bf16",), torch.bfloat16), ((), torch.float32)],
)
def test_auto_on_cpu_follows_the_bf16_matrix_units(monkeypatch, flags, want):
    monkeypatch.setattr(dtypes, "cpu_bf16_flags", lambda: flags)
    assert resolve_model_dtype("auto", "cpu") is want


def test_auto_on_cuda_asks_the_gpu(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *a, **k: False)
    assert resolve_model_dtype("auto", "cuda") is torch.float32
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *a, **k: True)
    assert resolve_model_dtype("auto", "cuda") is torch.bfloat16
    assert resolve_model_dtype("auto", "mps") is torch.float32


def test_cpu_flags_are_read_from_cpuinfo(monkeypatch, tmp_path):
    fake = tmp_path / "cpuinfo"
    fake.write_text("processor\t: 0\nflags\t\t: fpu sse2 avx512f avx512_bf16\n")
    real_path = dtypes.Path
    monkeypatch.setattr(dtypes, "Path", lambda p: fake if p == "/proc/cpuinfo" else real_path(p))
    dtypes.cpu_bf16_flags.cache_clear()
    try:
        assert dtypes.cpu_bf16_flags() == ("avx512_bf16",)
    finally:
        dtypes.cpu_bf16_flags.cache_clear()


def test_bf16_model_captures_close_to_fp32():
    m32 = load_model("tiny", dtype="float32")
    m16 = load_model("tiny", dtype="bfloat16")
    assert next(m16.parameters()).dtype is torch.bfloat16
    tokens = torch.randint(1, m32.cfg.d_vocab, (4, 24), generator=torch.Generator().manual_seed(0))
    a32 = ActivationCapture(m32, [HOOK])(tokens).acts[HOOK]
    a16 = ActivationCapture(m16, [HOOK])(tokens).acts[HOOK]
    assert a16.dtype is torch.float32  # the stored dtype is the capture's, not the model's
    rel = ((a16 - a32).norm(dim=-1) / a32.norm(dim=-1)).mean().item()
    assert 0 < rel < 0.05  # bf16 rounding: different, but close


def test_a_run_in_bf16_states_its_model_dtype(tmp_path):
    """Capture, training and evaluation use data.model_dtype; metrics.json says which it was."""
    metrics = {}
    for name in ("float32", "bfloat16"):
        run = tiny_run(
            tmp_path,
            name,
            data={"model_dtype": name, "hook": HOOK, "train_tokens": 256 * 6},
            sae={"d_sae": 64, "k": 4},
            optim={"warmup_steps": 1},
            evaluate=True,
        )
        metrics[name] = json.loads((run / "metrics.json").read_text())
        assert metrics[name]["model_dtype"] == name
    # the same seed and windows: clean CE differs only by the model's rounding
    a, b = metrics["float32"]["ce_clean"], metrics["bfloat16"]["ce_clean"]
    assert a != b and abs(a - b) < 0.05 * a


def test_ce_and_kl_are_summed_in_float32_for_a_bf16_model():
    """A bf16 model's logits are turned into log-probabilities in float32: the per-prediction CE
    is not rounded to bf16 (whose step near 3 is 1/64), so sums over many predictions keep their
    digits. Checked against float64 on random logits."""
    from saes.evaluation.metrics import _ce, _kl_per_position

    g = torch.Generator().manual_seed(0)
    logits = (torch.randn(4, 33, 50, generator=g) * 3).to(torch.bfloat16)
    tokens = torch.randint(0, 50, (4, 33), generator=g)
    ce = _ce(logits, tokens)
    assert ce.dtype == torch.float32
    exact = -logits.double().log_softmax(-1)[:, :-1].gather(-1, tokens[:, 1:, None])[..., 0]
    assert torch.allclose(ce.double(), exact, atol=1e-5)
    other = (torch.randn(4, 33, 50, generator=g) * 3).to(torch.bfloat16)
    kl = _kl_per_position(logits.double().log_softmax(-1), other)
    assert kl.dtype == torch.float64 and bool((kl >= -1e-6).all())
