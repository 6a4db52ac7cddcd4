"""torch.distributed (gloo, 2 CPU processes under torchrun) trains the same SAEs as one process."""
from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from saes.train import train
from saes.train_config import RunConfig

REPO = Path(__file__).resolve().parent.parent
HOOKS = ["blocks.0.hook_resid_post", "blocks.1.hook_resid_post"]
BASE = dict(model="tiny", hook="blocks.0.hook_resid_post", context_size=33, batch_windows=8, buffer_tokens=1024,
            d_sae=128, k=4, train_tokens=256 * 6, batch_tokens=256, checkpoint_every_tokens=256 * 3,
            warmup_steps=2, log_every=1, dead_tokens=256, lr=3e-3)

# each rank trains the listed configs in order; the process group comes from torchrun's environment
SCRIPT = textwrap.dedent("""
    import sys
    import torch
    torch.set_num_threads(1)
    from saes.train import train
    from saes.train_config import RunConfig
    for path in sys.argv[1:]:
        train(RunConfig.model_validate_json(open(path).read()), progress=False, evaluate=False)
""")


def _weights(run: Path) -> dict[str, torch.Tensor]:
    return load_file(str(run / "sae_weights.safetensors"))


def _close(a: Path, b: Path, tol: float) -> None:
    wa, wb = _weights(a), _weights(b)
    for key in wa:
        torch.testing.assert_close(wa[key], wb[key], rtol=tol, atol=tol, msg=lambda m: f"{a} vs {b} {key}: {m}")


def _fvus(run: Path) -> list[float]:
    return [json.loads(x)["fvu"] for x in (run / "train_log.jsonl").read_text().splitlines()]


@pytest.fixture(scope="module")
def cache(tmp_path_factory, tiny):
    from interp.activations import ActivationCapture
    from interp.cache import CacheWriter
    from interp.data import token_windows

    folder = tmp_path_factory.mktemp("dist") / "cache"
    writer = CacheWriter(folder, ActivationCapture(tiny, HOOKS), {"model": "tiny"}, windows_per_shard=32)
    writer.write(token_windows(tiny.tokenizer, context_size=33), batch_windows=8, max_windows=96, progress=False)
    return folder


def test_two_gloo_ranks_match_one_process(tmp_path, tiny, cache):
    cfgs = {
        # data parallel from the cache: a TopK (AuxK on: dead_tokens is one step) and a ReLU/L1 on two hooks
        "dp_cache": dict(cache=str(cache), hooks=HOOKS, saes=[{"k": 4}, {"name": "relu", "variant": "relu_l1",
                                                                        "l1_coefficient": 0.5}]),
        # data parallel on live capture: each rank runs the model on its half of every block's windows
        "dp_live": dict(hook="blocks.1.hook_resid_post"),
        # hook sharding on live capture: rank r owns hook r and receives its activations from the other
        "shard_live": dict(hooks=HOOKS, shard_hooks=True),
    }
    paths = []
    for name, kw in cfgs.items():
        p = tmp_path / f"{name}.json"
        p.write_text(RunConfig(**{**BASE, **kw, "out_dir": str(tmp_path / "dist" / name)}).model_dump_json())
        paths.append(str(p))
    (tmp_path / "script.py").write_text(SCRIPT)
    proc = subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
         str(tmp_path / "script.py"), *paths], cwd=REPO, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]

    for name, kw in cfgs.items():
        one = train(RunConfig(**{**BASE, **kw, "shard_hooks": False, "out_dir": str(tmp_path / "one" / name)}),
                    progress=False, evaluate=False, model=tiny)
        two = tmp_path / "dist" / name
        runs = sorted(p.parent.relative_to(one) for p in one.rglob("sae_weights.safetensors"))
        assert runs and runs == sorted(p.parent.relative_to(two) for p in two.rglob("sae_weights.safetensors"))
        for rel in runs:
            # sharding moves whole batches: bit-for-bit; data parallel sums partial statistics: rounding only
            _close(one / rel, two / rel, 1e-6 if name == "shard_live" else 2e-4)
            assert _fvus(one / rel) == pytest.approx(_fvus(two / rel), rel=1e-4, abs=1e-6), "logged global FVU"
