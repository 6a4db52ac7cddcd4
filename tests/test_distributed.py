"""torch.distributed (gloo, 2 CPU processes under torchrun) trains the same SAEs as one process;
choice variants' buffers are the rank average. One torchrun launch serves every test here."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch
from _runs import tiny_config, tiny_run
from safetensors.torch import load_file

REPO = Path(__file__).resolve().parent.parent
HOOKS = ["blocks.0.hook_resid_post", "blocks.1.hook_resid_post"]
# every run here: 6 steps of k = 4, a checkpoint every 3, each step logged; AuxK on (a latent is
# dead after one step without firing)
BASE = {
    "data": {"train_tokens": 256 * 6},
    "sae": {"k": 4},
    "optim": {"dead_tokens": 256, "lr": 3e-3},
    "log": {"checkpoint_every_tokens": 256 * 3, "log_every": 1},
}
CFGS = {
    # data parallel from the cache: a TopK (AuxK on: dead_tokens is one step) and a ReLU/L1 on two hooks
    "dp_cache": {
        "data": {"hooks": HOOKS},
        "saes": [
            {"sae": {"k": 4}},
            {"name": "relu", "sae": {"variant": "relu_l1", "l1_coefficient": 0.5}},
        ],
    },
    # data parallel on live capture: each rank runs the model on its half of every block's windows
    "dp_live": {"data": {"hook": "blocks.1.hook_resid_post"}},
    # hook sharding on live capture: rank r owns hook r and receives its activations from the other
    "shard_live": {"data": {"hooks": HOOKS, "shard_hooks": True}},
    # transcoders, data parallel on live capture: a skip transcoder per layer, and one CLT
    "dp_skip": {
        "data": {"hooks": ["blocks.*.ln2.hook_normalized"]},
        "sae": {"kind": "skip_transcoder"},
    },
    "dp_clt": {"data": {"hooks": ["blocks.*.ln2.hook_normalized"]}, "sae": {"kind": "clt"}},
}
CHOICE = [("mutual_choice", "zipf"), ("feature_choice", "zipf"), ("feature_choice", "uniform")]
CHOICE_BUFFERS = ("threshold", "usage", "ema_steps")
CHOICE_ROWS = 96

# Each rank: (1) choice variants, two data-parallel steps on its slice of one global batch; before
# each step, the same step alone (no comm) on every rank's slice, from the same state; the buffers
# and weights are saved per rank. "first": a fresh SAE (its first step rescales the encoder);
# "warm": the EMAs have already run (ema_steps > 0). (2) the training configs, in order.
SCRIPT = (
    textwrap.dedent("""
    import copy, sys
    import torch
    torch.set_num_threads(1)
    from safetensors.torch import save_file
    from saes.config import SAEConfig
    from saes.training.distributed import init_from_env
    from saes.sae import SAE
    from saes.training.loop import TrainStep, train
    from saes.training.config import RunConfig

    comm = init_from_env("cpu")
    out, B = {}, CHOICE_ROWS
    for variant, allocation in CHOICE:
        for start in ("first", "warm"):
            tag = f"{variant}.{allocation}.{start}"
            sae = SAE(SAEConfig(d_in=16, d_sae=64, k=4, variant=variant, allocation=allocation), seed=0)
            if start == "warm":
                g = torch.Generator().manual_seed(2)
                with torch.no_grad():
                    sae.threshold.copy_(torch.rand(64, generator=g))
                    u = torch.rand(64, generator=g)
                    sae.usage.copy_(u / u.sum())
                    sae.ema_steps.fill_(5)
            step = TrainStep(sae, lr=1e-2, comm=comm)
            g = torch.Generator().manual_seed(1)
            for t in range(2):
                X = torch.randn(B, 16, generator=g) * (torch.rand(B, 1, generator=g) * 3 + 0.2)
                for r in range(comm.world):
                    alone = copy.deepcopy(sae)
                    TrainStep(alone, lr=1e-2)(X[comm.row_slice(B, r)])
                    for name, b in alone.named_buffers():
                        out[f"{tag}.{t}.alone{r}.{name}"] = b.clone()
                step(X[comm.row_slice(B)])
                for name, v in sae.state_dict().items():
                    out[f"{tag}.{t}.dp.{name}"] = v.detach().clone().contiguous()
    save_file(out, f"{sys.argv[1]}/choice_rank{comm.rank}.safetensors")
    for path in sys.argv[2:]:
        train(RunConfig.model_validate_json(open(path).read()), progress=False, evaluate=False)
""")
    .replace("CHOICE_ROWS", str(CHOICE_ROWS))
    .replace("CHOICE", repr(CHOICE))
)


def _weights(run: Path) -> dict[str, torch.Tensor]:
    """An SAE's or transcoder's weights, or a CLT's (one file per layer, circuit-tracer's layout)."""
    if (run / "sae_weights.safetensors").exists():
        return load_file(str(run / "sae_weights.safetensors"))
    out = {}
    for path in sorted(run.glob("W_*.safetensors")):
        out.update(load_file(str(path)))
    assert out, f"{run} holds no weights"
    return out


def _close(a: Path, b: Path, tol: float) -> None:
    wa, wb = _weights(a), _weights(b)
    for key in wa:
        torch.testing.assert_close(
            wa[key], wb[key], rtol=tol, atol=tol, msg=lambda m, key=key: f"{a} vs {b} {key}: {m}"
        )


def _equal(a: Path, b: Path) -> None:
    wa, wb = _weights(a), _weights(b)
    assert wa.keys() == wb.keys()
    for key in wa:
        assert torch.equal(wa[key], wb[key]), (a, b, key, (wa[key] - wb[key]).abs().max().item())


def _fvus(run: Path) -> list[float]:
    return [json.loads(x)["fvu"] for x in (run / "train_log.jsonl").read_text().splitlines()]


@pytest.fixture(scope="module")
def cache(tmp_path_factory, tiny):
    from interp.activation_files import ActivationFilesWriter
    from interp.activations import ActivationCapture
    from interp.data import token_windows

    folder = tmp_path_factory.mktemp("dist") / "cache"
    writer = ActivationFilesWriter(
        folder, ActivationCapture(tiny, HOOKS), {"model": "tiny"}, windows_per_shard=32
    )
    writer.write(
        token_windows(tiny.tokenizer, context_size=33),
        batch_windows=8,
        max_windows=96,
        progress=False,
    )
    return folder


@pytest.fixture(scope="module")
def torchrun(tmp_path_factory, cache):
    """One torchrun launch of two gloo ranks: the choice-buffer steps, then every config of CFGS."""
    root = tmp_path_factory.mktemp("torchrun")
    paths = []
    for name, job in CFGS.items():
        data = {"cache": str(cache)} if name == "dp_cache" else {}
        p = root / f"{name}.json"
        p.write_text(tiny_config(root / "dist", name, BASE, job, data=data).model_dump_json())
        paths.append(str(p))
    (root / "script.py").write_text(SCRIPT)
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "torch.distributed.run",
            "--standalone",
            "--nproc_per_node",
            "2",
            str(root / "script.py"),
            str(root),
            *paths,
        ],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return root


def test_two_gloo_ranks_match_one_process(tmp_path, tiny, cache, torchrun, one_thread):
    """Each rank runs one thread, so the single process does too: the GEMMs' results depend on the
    thread count (at 2 threads the sharded weights differ from these by ~4e-9)."""
    for name, job in CFGS.items():
        data = {"cache": str(cache)} if name == "dp_cache" else {}
        one = tiny_run(
            tmp_path / "one", name, BASE, job, data={**data, "shard_hooks": False}, model=tiny
        )
        two = torchrun / "dist" / name
        runs = sorted(p.parent.relative_to(one) for p in one.rglob("cfg.json"))
        assert runs and runs == sorted(p.parent.relative_to(two) for p in two.rglob("cfg.json"))
        for rel in runs:
            if name == "shard_live":
                _equal(one / rel, two / rel)  # sharding moves whole batches: bit for bit
            else:
                _close(
                    one / rel, two / rel, 2e-4
                )  # data parallel sums partial statistics: rounding only
            assert _fvus(one / rel) == pytest.approx(_fvus(two / rel), rel=1e-4, abs=1e-6), (
                "logged global FVU"
            )


def _choice(torchrun):
    return [load_file(str(torchrun / f"choice_rank{r}.safetensors")) for r in (0, 1)]


@pytest.mark.parametrize("variant,allocation", CHOICE)
@pytest.mark.parametrize("start", ["first", "warm"])
def test_choice_buffers_are_the_rank_average_after_every_step(torchrun, variant, allocation, start):
    """After each data-parallel step the thresholds, usage EMAs and EMA step counts are equal on both
    ranks. From a warm SAE (no first-step encoder rescale) they also equal the mean of what each
    rank's step alone would have produced from the same state (the thresholds of the two ranks' own
    steps differ: they select on different rows). A fresh SAE's first step rescales the encoder by a
    factor from the global batch, which a rank's step alone cannot reproduce, so there only the
    equality across ranks is checked."""
    ranks = _choice(torchrun)
    tag = f"{variant}.{allocation}.{start}"
    for t in range(2):
        for name in CHOICE_BUFFERS:
            dp0, dp1 = (r[f"{tag}.{t}.dp.{name}"] for r in ranks)
            assert torch.equal(dp0, dp1), (tag, t, name)
            if start == "warm":
                alone = [ranks[0][f"{tag}.{t}.alone{r}.{name}"] for r in (0, 1)]
                assert torch.equal(
                    alone[0], ranks[1][f"{tag}.{t}.alone0.{name}"]
                )  # both ranks computed the same
                torch.testing.assert_close(
                    dp0, (alone[0] + alone[1]) / 2, rtol=1e-6, atol=1e-9, msg=f"{tag} {t} {name}"
                )
        # (usage under uniform feature choice is the same on every rank: each latent keeps m_j tokens)
        assert not torch.equal(
            ranks[0][f"{tag}.{t}.alone0.threshold"], ranks[0][f"{tag}.{t}.alone1.threshold"]
        )


@pytest.mark.parametrize("variant,allocation", CHOICE)
def test_choice_weights_equal_on_both_ranks_once_the_emas_run(torchrun, variant, allocation):
    ranks = _choice(torchrun)
    for t in range(2):
        for name in ("W_enc", "W_dec", "b_enc", "b_dec"):
            key = f"{variant}.{allocation}.warm.{t}.dp.{name}"
            assert torch.equal(ranks[0][key], ranks[1][key]), (
                key,
                (ranks[0][key] - ranks[1][key]).abs().max(),
            )


@pytest.mark.parametrize("variant,allocation", CHOICE)
def test_choice_weights_equal_on_both_ranks_from_the_first_step(torchrun, variant, allocation):
    """The first step's encoder rescale uses the global batch's least-squares factor (summed over the
    ranks), so the ranks start, and stay, on the same weights."""
    ranks = _choice(torchrun)
    for t in range(2):
        for name in ("W_enc", "W_dec", "b_enc", "b_dec"):
            key = f"{variant}.{allocation}.first.{t}.dp.{name}"
            assert torch.equal(ranks[0][key], ranks[1][key]), (
                key,
                (ranks[0][key] - ranks[1][key]).abs().max(),
            )
