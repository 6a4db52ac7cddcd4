"""Adding a variant is one file: a toy variant defined here trains, saves and loads with no other
change; the registry's facts (knobs, SAELens name, memory factor, buffers) reach every consumer."""

from __future__ import annotations

import pytest
import torch
from _runs import tiny_run
from pydantic import BaseModel, ConfigDict, Field

from saes import variants as variants_pkg
from saes.artifacts import load_sae, sae_lens_cfg, save_sae
from saes.codes import SparseCode, TrainOutput
from saes.config import SAEConfig
from saes.sae import SAE
from saes.training.loop import TrainStep
from saes.training.losses import fvu_loss
from saes.training.memory import step_temp_bytes
from saes.variants import Variant, register, variant_class, variant_names
from saes.variants.base import _REGISTRY

pytestmark = pytest.mark.usefixtures("one_thread_module")


class ShrinkKnobs(BaseModel):
    model_config = ConfigDict(extra="forbid", use_attribute_docstrings=True)

    shrink: float = Field(0.5, ge=0, le=1)
    """How far each kept value is pulled towards its row's mean kept value (0: plain TopK)."""


class ShrinkTopK(Variant):
    """Toy rule: TopK on ReLU(pre), then every kept value is multiplied by (1 - shrink) plus
    shrink times the row's mean kept value (so shrink = 0 is plain TopK)."""

    name = "toy_shrink_topk"
    Knobs = ShrinkKnobs
    step_arrays = 5
    saelens_architecture = None

    def init_module(self, sae) -> None:
        sae.register_buffer("calls", torch.zeros(1))

    training_buffers = ("calls",)

    def _code(self, sae, x_in):
        pre = torch.addmm(sae.b_enc, x_in, sae.W_enc).relu()
        values, indices = pre.topk(self.cfg.k, dim=-1)
        s = self.cfg.shrink
        values = (1 - s) * values + s * values.mean(-1, keepdim=True)
        return SparseCode(values, indices)

    def encode(self, sae, x_in, grad=None):
        return self._code(sae, x_in)

    def train_forward(self, sae, x, grad, dead_mask, comm=None):
        sae.calls += 1
        code = self._code(sae, x - sae.b_dec)
        x_hat = torch.addmm(sae.b_dec, code.to_dense(self.cfg.d_sae), sae.W_dec)
        return TrainOutput(x_hat, code, {"fvu": fvu_loss(x, x_hat, comm)})


@pytest.fixture
def toy_variant():
    register(ShrinkTopK)
    yield ShrinkTopK
    _REGISTRY.pop(ShrinkTopK.name, None)


def test_builtin_variants_are_registered_with_their_facts():
    assert {"topk", "gtopk", "relu_l1", "mutual_choice", "feature_choice"} <= set(variant_names())
    assert variant_class("topk").saelens_architecture == "topk"
    assert variant_class("relu_l1").saelens_architecture == "standard"
    assert not variant_class("relu_l1").uses_k and variant_class("gtopk").needs_grads
    assert set(variant_class("mutual_choice").training_buffers) == {"usage", "ema_steps"}
    # every variant gives the memory planner its own factor (none falls back to a default)
    assert all(variant_class(n).step_arrays >= 1 for n in variant_names())
    assert step_temp_bytes(8, 64, "topk", 16) < step_temp_bytes(8, 64, "feature_choice", 16)


def test_knobs_are_checked_against_the_variant():
    cfg = SAEConfig(d_in=8, d_sae=64, variant="gtopk", beta=2.0)
    assert cfg.beta == 2.0 and cfg.aux_k_coef == pytest.approx(1 / 32)  # inherited from TopK
    assert set(cfg.knobs) == {"beta", "aux_k_coef"}
    with pytest.raises(
        ValueError, match=r"'beta' is a key of variant\(s\) \['gtopk'\], not of 'topk'"
    ):
        SAEConfig(d_in=8, d_sae=64, variant="topk", beta=2.0)
    with pytest.raises(ValueError, match=r"unknown key 'bogus' \(no SAE variant has it\)"):
        SAEConfig(d_in=8, d_sae=64, bogus=1)
    with pytest.raises(ValueError, match="unknown SAE variant 'nope'"):
        SAEConfig(d_in=8, d_sae=64, variant="nope")
    with pytest.raises(ValueError, match="greater than or equal to 0"):
        cfg.beta = -1.0  # assignment is validated like construction
    assert cfg.beta == 2.0
    # configs written before knobs were per variant stored every knob: the others are dropped
    old = {"d_in": 8, "d_sae": 64, "variant": "topk", "beta": 1.0, "allocation": "zipf"}
    assert SAEConfig.from_saved(old).knobs == {"aux_k_coef": pytest.approx(1 / 32)}


def test_toy_variant_trains_saves_and_loads(tmp_path, toy_variant, tiny):
    cfg = SAEConfig(d_in=16, d_sae=64, k=4, variant="toy_shrink_topk", shrink=0.25)
    assert cfg.shrink == 0.25
    with pytest.raises(ValueError, match="'shrink' is a key of variant"):
        SAEConfig(d_in=16, d_sae=64, k=4, shrink=0.25)
    sae = SAE(cfg, seed=0)
    g = torch.Generator().manual_seed(0)
    x = torch.randn(512, 16, generator=g) @ torch.randn(16, 16, generator=g)
    step = TrainStep(sae, lr=3e-3, total_steps=60, warmup_steps=2, decay_fraction=0.2)
    first = last = None
    for i in range(60):
        out = step(x[(i * 128) % 512 :][:128])
        first = first if first is not None else float(out["fvu"])
        last = float(out["fvu"])
    assert last < 0.8 * first  # it learns
    assert int(sae.calls) == 60
    folder = save_sae(sae, tmp_path / "toy")
    art = sae_lens_cfg(sae)
    assert art["architecture"] == "toy_shrink_topk" and art["interp"]["shrink"] == 0.25
    loaded = load_sae(folder)
    assert isinstance(loaded.variant, ShrinkTopK) and loaded.cfg.shrink == 0.25
    assert "calls" not in dict(loaded.named_buffers()) or int(loaded.calls) == 0  # not exported
    torch.testing.assert_close(loaded.encode(x[:32]), sae.encode(x[:32]))

    # and the whole trainer (run folder, memory plan, eval on the tiny model) with no other change
    run_dir = tiny_run(
        tmp_path,
        data={"train_tokens": 256 * 6},
        sae={"variant": "toy_shrink_topk", "d_sae": 64, "k": 4},
        optim={"warmup_steps": 1},
        eval={"tokens": 256, "ce_windows": 2},
        evaluate=True,
    )
    trained = load_sae(run_dir)
    assert isinstance(trained.variant, ShrinkTopK)
    assert trained.cfg.shrink == ShrinkKnobs().shrink  # the default, as the run set none


def test_register_rejects_bad_classes():
    class NoName(Variant):
        pass

    with pytest.raises(ValueError, match="non-empty class attribute `name`"):
        register(NoName)

    class BadKnobs(Variant):
        name = "bad_knobs"
        Knobs = dict  # type: ignore[assignment]

    with pytest.raises(TypeError, match="pydantic BaseModel"):
        register(BadKnobs)
    assert "bad_knobs" not in variants_pkg.variant_names()
