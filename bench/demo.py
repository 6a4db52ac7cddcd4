"""Record of `make demo`: runs the demo command (`interp demo`, what `make demo` runs after setup) in a
subprocess, times it end to end, and saves its configuration, training throughput (from the run's
own log) and held-out metrics (the run's metrics.json) to bench/results/demo.json, with provenance.
The README's demo figures are rendered from that file (bench/report.py).

    python -m bench.demo [--out-dir runs/demo-topk] [--train-tokens 400000]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

from bench._provenance import provenance
from saes.rundir import RunDir
from saes.train_config import RunConfig

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


if __name__ == "__main__":
    main()
