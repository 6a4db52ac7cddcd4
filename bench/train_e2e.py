"""Benchmark: end-to-end SAE training on live SmolLM2 activations vs capture alone (one run).

Capture alone: blocks.L.hook_resid_post captured with stop_at_layer on the same windows the
trainer reads, once before and once after training (the reference is the mean). Training: the real trainer (``saes.training.loop.train``: capture -> shuffling buffer ->
TopK step) on those windows; its tokens/s comes from its own log. Target: training reaches at least
90% of capture throughput, so the SAE never holds the model back. On a GPU (if present) the same is
run at d_sae = 65536. Prints and saves bench/results/train_e2e.json. Not a test.

    python -m bench.train_e2e [--tokens 65536] [--d-sae 4608]
"""

from __future__ import annotations

import argparse
import json
import platform
import tempfile
import time
from pathlib import Path

import torch

from bench._markdown import (
    NM,
    join_nonempty,
    num,
    para,
    parse_target,
    pct,
    ratio,
    table,
    verdict_target,
)
from bench._provenance import renderer
from interp.activations import ActivationCapture, capture_blocks
from interp.data import token_windows
from interp.models import load_model
from saes.rundir import RunDir
from saes.training.config import RunConfig
from saes.training.loop import train

TITLE = "Training on live activations"  # its name in the docs (python -m bench.report)


def capture_only(model, cfg: RunConfig, n_windows: int) -> float:
    cap = ActivationCapture(model, [cfg.data.hook])
    wins = token_windows(
        model.tokenizer,
        source=cfg.data.source,
        context_size=cfg.data.context_size,
        split="train",
        seed=cfg.data.seed,
    )
    windows = [w for _, w in zip(range(n_windows), wins)]
    rows = 0
    t0 = time.perf_counter()
    for block in capture_blocks(cap, windows, cfg.data.windows_per_block, cfg.data.batch_windows):
        rows += len(block)
    return rows / (time.perf_counter() - t0)


def run(model, device: str, d_sae: int, tokens: int, layer: int) -> dict:
    out_dir = Path(tempfile.mkdtemp(prefix="e2e-"))
    cfg = RunConfig(
        data={
            "model": "smollm2-135m",
            "hook": f"blocks.{layer}.hook_resid_post",
            "train_tokens": tokens,
            "batch_tokens": 4096,
            "buffer_tokens": 16384,
            "batch_windows": 16,
        },
        sae={"d_sae": d_sae, "k": 32},
        log={"out_dir": str(out_dir), "checkpoint_every_tokens": 10**12, "log_every": 1},
        device=device,
    )
    n_windows = cfg.data.windows_per_block * -(-tokens // cfg.data.buffer_tokens)
    # capture alone before and after training (the machine's speed drifts; the first run is also
    # the model's first forwards): the reference is their mean
    cap_before = capture_only(model, cfg, n_windows)
    t0 = time.perf_counter()
    train(cfg, progress=False, evaluate=False, model=model)
    wall = time.perf_counter() - t0
    cap_after = capture_only(model, cfg, n_windows)
    cap_tps = (cap_before + cap_after) / 2
    log = RunDir(out_dir).log_records()
    train_tps = log[-1]["tokens_per_s"]
    return {
        "device": device,
        "d_sae": d_sae,
        "layer": layer,
        "tokens": log[-1]["tokens"],
        "capture_tokens_per_s": cap_tps,
        "capture_tokens_per_s_before_after": [cap_before, cap_after],
        "train_tokens_per_s": train_tps,
        "train_over_capture": train_tps / cap_tps,
        "train_tokens_per_s_incl_init": log[-1]["tokens"] / wall,
        "train_wall_s_incl_init": wall,
        "final_fvu_train_batch": log[-1]["fvu"],
        "target": ">= 0.90",
    }


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--tokens", type=int, default=65536)
    ap.add_argument("--d-sae", type=int, default=4608)
    ap.add_argument("--layer", type=int, default=15)
    ap.add_argument("--out", default="bench/results/train_e2e.json")
    args = ap.parse_args()
    results = []
    model = load_model("smollm2-135m")
    results.append(run(model, "cpu", args.d_sae, args.tokens, args.layer))
    if torch.cuda.is_available():
        gpu = load_model("smollm2-135m", device="cuda")
        results.append(run(gpu, "cuda", 65536, args.tokens * 8, args.layer))
    out = {
        "runs": results,
        "torch": torch.__version__,
        "threads": torch.get_num_threads(),
        "machine": platform.machine(),
        "gpu": torch.cuda.get_device_name() if torch.cuda.is_available() else None,
    }
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(out, indent=2))
    for r in results:
        print(
            f"[{r['device']}] d_sae={r['d_sae']} capture {r['capture_tokens_per_s']:,.0f} tok/s, "
            f"training {r['train_tokens_per_s']:,.0f} tok/s -> {r['train_over_capture']:.1%} of capture"
        )
    print(f"saved {args.out}")


# ------------------------------------------------------------------------------------------------
# rendering: bench/results/train_e2e.json as markdown (python -m bench.report; see bench/_provenance.py)
# ------------------------------------------------------------------------------------------------
# bench/results/train_e2e.json predates recorded provenance: the command that measured it
@renderer("python bench/train_e2e.py --tokens {runs[0][tokens]}")
def render(d: dict) -> str:
    rows = []
    for r in d.get("runs") or []:
        ba = r.get("capture_tokens_per_s_before_after") or []
        goal = parse_target(r.get("target"))
        each = [ratio(r.get("train_tokens_per_s"), c) for c in ba]
        rows.append(
            [
                str(r.get("device", NM)),
                num(r.get("layer")),
                num(r.get("d_sae")),
                num(r.get("tokens")),
                f"{num(r.get('capture_tokens_per_s'))} ({' / '.join(num(x) for x in ba) or NM})",
                f"**{num(r.get('train_tokens_per_s'))}**",
                f"**{pct(r.get('train_over_capture'), 1)}** ({r.get('target', NM)})",
                (
                    f"{num(r.get('train_tokens_per_s_incl_init'))} "
                    f"({pct(ratio(r.get('train_tokens_per_s_incl_init'), r.get('capture_tokens_per_s')))})"
                ),
                verdict_target(each, goal[1], at_least=goal[0], fmt=pct) if goal else NM,
            ]
        )
    if not rows:
        rows = [[NM] * 9]
    header = [
        "device",
        "layer",
        "d_sae",
        "tokens",
        "capture alone, tok/s (mean of before / after)",
        "training, tok/s",
        "training / capture (target)",
        "training incl. initial statistics, tok/s (/ capture)",
        "verdict (criterion above)",
    ]
    gpu = d.get("gpu")
    has_gpu_row = any(str(r.get("device", "")).startswith("cuda") for r in d.get("runs") or [])
    note = (
        ""
        if has_gpu_row
        else para(
            f"GPU: {'none on the measuring machine' if gpu is None else gpu}; no GPU run recorded "
            "(the script adds one when CUDA is present)."
        )
    )
    crit = para(
        "Criterion for the verdict: the target is met where training / capture meets it against "
        "both capture measurements (before and after training), missed where it meets it against "
        "neither, else not resolved (the two ratios follow)."
    )
    return join_nonempty(crit, table(header, rows), note)


if __name__ == "__main__":
    main()
