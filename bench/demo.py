"""Record of `make demo`: runs the demo command (`interp demo`, what `make demo` runs after setup) in a
subprocess, times it end to end, and saves its configuration, training throughput (from the run's
own log) and held-out metrics (the run's metrics.json) to bench/results/demo.json, with provenance.
Its page's figures are rendered from that file (its ``render``, python -m bench.report).

    python -m bench.demo [--out-dir runs/demo-topk] [--train-tokens 400000]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

from bench._markdown import NM, fix, isnum, num, para, pct
from bench._provenance import provenance, renderer
from saes.rundir import RunDir
from saes.training.config import RunConfig

TITLE = "The demo"  # its name in the docs (python -m bench.report)

ROOT = Path(__file__).resolve().parents[1]

CONFIG_KEYS = (
    "model",
    "hook",
    "variant",
    "k",
    "d_sae",
    "train_tokens",
    "batch_tokens",
    "context_size",
    "source",
)


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--out-dir", default="runs/demo-topk")
    ap.add_argument(
        "--train-tokens", type=int, default=None, help="default: the demo's own default"
    )
    ap.add_argument("--out", default=str(ROOT / "bench" / "results" / "demo.json"))
    args = ap.parse_args(argv)
    record = {"provenance": provenance()}
    cmd = [sys.executable, "-m", "interp.cli", "demo", "--out-dir", args.out_dir]
    if args.train_tokens is not None:
        cmd += ["--train-tokens", str(args.train_tokens)]
    t0 = time.perf_counter()
    subprocess.run(cmd, cwd=ROOT, check=True)
    record["wall_s"] = time.perf_counter() - t0
    run_dir = RunDir(ROOT / args.out_dir)
    metrics = run_dir.metrics(required=True)
    saved = RunConfig.from_saved(run_dir.config(required=True))
    # the demo record keeps short names (the README table reads them)
    cfg = {
        k: v
        for section in ("data", "sae", "optim", "log")
        for k, v in saved.model_dump()[section].items()
    }
    record["command"] = " ".join(["interp"] + cmd[3:])
    record["config"] = {k: cfg[k] for k in CONFIG_KEYS if k in cfg}
    record["tokens_per_s"] = (
        cfg["train_tokens"] / record["wall_s"]
    )  # end to end, setup of the run included
    record["train_tokens_per_s"] = metrics.get(
        "train_tokens_per_s"
    )  # the training loop alone (its log)
    record["metrics"] = metrics
    Path(args.out).write_text(json.dumps(record, indent=2))
    print(
        f"demo: {record['wall_s']:.0f} s end to end, {record['tokens_per_s']:,.0f} tok/s "
        f"(training loop {record['train_tokens_per_s'] or float('nan'):,.0f} tok/s); saved {args.out}"
    )
    return record


# ------------------------------------------------------------------------------------------------
# rendering: bench/results/demo.json as markdown (python -m bench.report; see bench/_provenance.py)
# ------------------------------------------------------------------------------------------------
@renderer()
def render(d: dict | None) -> str:
    """From bench/results/demo.json: wall_s, tokens_per_s, config (variant, k, d_sae, hook,
    train_tokens) and metrics (the run's metrics.json); keys may also sit at the top level."""
    if d is None:
        return para(
            "Wall time, throughput and held-out metrics: not recorded (no `bench/results/demo.json`; "
            "`python -m bench.demo` records it)."
        )
    m = d.get("metrics") if isinstance(d.get("metrics"), dict) else d
    cfg = d.get("config") if isinstance(d.get("config"), dict) else d
    wall = d.get("wall_s")
    wall_s = f"{int(wall // 60)} min {wall % 60:.0f} s" if isnum(wall) else NM
    what = ", ".join(
        x
        for x in [
            str(cfg["variant"]) if "variant" in cfg else "",
            f"k = {num(cfg['k'])}" if "k" in cfg else "",
            f"d_sae = {num(cfg['d_sae'])}" if "d_sae" in cfg else "",
            f"on `{cfg['hook']}`" if "hook" in cfg else "",
            f"{num(cfg['train_tokens'])} training tokens" if "train_tokens" in cfg else "",
        ]
        if x
    )
    loop = (
        f"; the training loop alone {num(d['train_tokens_per_s'])} tokens/s"
        if isnum(d.get("train_tokens_per_s"))
        else ""
    )
    run = (
        f"{what}: " if what else ""
    ) + f"{wall_s} end to end ({num(d.get('tokens_per_s'))} tokens/s{loop})."
    shown = [
        ("FVU", "fvu", fix),
        ("cosine", "cosine_mean", fix),
        ("dead", "dead_fraction", lambda v: pct(v, 1)),
        ("spliced CE", "ce_spliced", lambda v: fix(v, 2)),
        ("clean CE", "ce_clean", lambda v: fix(v, 2)),
        ("zero-ablated CE", "ce_zero_ablated", lambda v: fix(v, 2)),
        ("CE loss recovered", "ce_loss_recovered", lambda v: pct(v, 1)),
        ("KL", "kl_div", lambda v: fix(v, 2)),
    ]
    held = ", ".join(f"{label} {fmt(m.get(key))}" for label, key, fmt in shown)
    return para(run, f"Held-out: {held}.")


if __name__ == "__main__":
    main()
