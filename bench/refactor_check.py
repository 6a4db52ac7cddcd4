"""Benchmark: is a refactor behaviour-preserving? The same work on the code at ``--before`` (a git
commit, checked out in a temporary worktree) and on this checkout, compared.

1. **Weights.** Tiny runs (the ``tiny`` model, 12 steps of 256 rows, d_sae 128) of every trainable
   selection rule listed in ``--variants``, trained through the command line (``interp train -c``)
   on both trees: a SHA-256 of every weight tensor, and the held-out FVU / L0 / dead fraction.
   Criterion: every tensor bit-identical.
2. **Speed.** ``bench.sae_step``'s default row (``TrainStep``, C++ top-k) at d_sae ``--d-sae``,
   ``--steps`` timed steps per call, in ``--rounds`` rounds that alternate which tree goes first,
   so load from other processes falls on both alike. Criterion (``bench._markdown.verdict_repeats``
   over the per-call medians, paired by round): a tree is faster only where it is ahead in every
   round, else "within noise".

The older tree runs as it was then (its own ``interp`` command line and ``bench/sae_step.py``), each
tree on ``PYTHONPATH``, in child processes. Prints and saves ``--out`` (JSON). Not a test.

    python -m bench.refactor_check --before 70ed810
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

import torch
import yaml
from safetensors.torch import load_file

from bench._markdown import NM, fix, num, para, table, verdict_repeats
from bench._provenance import provenance, renderer
from interp.atomic_files import atomic_write_json

TITLE = "A refactor, before and after"  # its name in the docs (python -m bench.report)

ROOT = Path(__file__).resolve().parents[1]
VARIANTS = "topk,relu_l1,gtopk,mutual_choice,feature_choice"
METRICS = ("fvu", "l0_mean", "dead_fraction")


def run_config(out_dir: Path, variant: str) -> dict:
    """The tiny run of one selection rule (nested sections; k only where the rule uses one)."""
    sae = {"d_sae": 128, "variant": variant} | ({"k": 8} if variant in ("topk", "gtopk") else {})
    return {
        "data": {
            "model": "tiny",
            "hook": "blocks.0.hook_resid_post",
            "context_size": 33,
            "batch_windows": 8,
            "buffer_tokens": 1024,
            "train_tokens": 256 * 12,
            "batch_tokens": 256,
        },
        "sae": sae,
        "log": {"checkpoint_every_tokens": 1024, "out_dir": str(out_dir), "log_every": 2},
        "optim": {"warmup_steps": 2},
        "eval": {"tokens": 512, "ce_windows": 4},
    }


def _env(tree: Path) -> dict[str, str]:
    return {**os.environ, "PYTHONPATH": str(tree), "PYTHONWARNINGS": "ignore::DeprecationWarning"}


def weights_of(tree: Path, variant: str, tmp: Path) -> dict:
    """Train the tiny run of ``variant`` with ``tree``'s command line; its weights' digests."""
    out = tmp / f"{tree.name}-{variant}"
    cfg = tmp / f"{tree.name}-{variant}.yaml"
    cfg.write_text(yaml.safe_dump(run_config(out, variant)))
    cli = "from interp.cli import app; app()"
    subprocess.run(
        [sys.executable, "-c", cli, "train", "-c", str(cfg)],
        cwd=tree,
        env=_env(tree),
        check=True,
        capture_output=True,
    )
    weights = load_file(str(out / "sae_weights.safetensors"))
    metrics = json.loads((out / "metrics.json").read_text())
    return {
        "sha256": {
            k: hashlib.sha256(v.contiguous().view(torch.uint8).numpy().tobytes()).hexdigest()
            for k, v in sorted(weights.items())
        },
        "metrics": {k: metrics.get(k) for k in METRICS},
    }


def step_times(tree: Path, d_sae: int, steps: int, tmp: Path) -> list[float]:
    """One call of ``tree``'s sae_step benchmark: the default row's timed steps (seconds)."""
    out = tmp / f"step-{tree.name}.json"
    module = (
        ["-m", "bench.sae_step"]
        if (tree / "bench" / "__init__.py").exists()
        else ["bench/sae_step.py"]
    )
    args = ["--sizes", str(d_sae), "--impls", "ours_trainstep_native", "--steps", str(steps)]
    args += ["--warmup", "1", "--no-profile", "--bf16", "never", "--out", str(out)]
    subprocess.run(
        [sys.executable, *module, *args], cwd=tree, env=_env(tree), check=True, capture_output=True
    )
    row = json.loads(out.read_text())["sizes"][str(d_sae)]["results"]["ours_trainstep_native"]
    return row["times_s"]


def main(argv: list[str] | None = None) -> dict:
    p = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--before", required=True, help="the git commit before the refactor")
    p.add_argument("--variants", default=VARIANTS, help="comma-separated selection rules")
    p.add_argument("--d-sae", type=int, default=4608)
    p.add_argument("--steps", type=int, default=5, help="timed steps per sae_step call")
    p.add_argument("--rounds", type=int, default=4)
    p.add_argument("--out", default=str(ROOT / "bench" / "results" / "refactor_check.json"))
    args = p.parse_args(argv)

    commit = subprocess.run(
        ["git", "rev-parse", args.before], cwd=ROOT, check=True, capture_output=True, text=True
    ).stdout.strip()
    with tempfile.TemporaryDirectory() as t:
        tmp = Path(t)
        before = tmp / "before"
        subprocess.run(
            ["git", "worktree", "add", "--detach", str(before), commit],
            cwd=ROOT,
            check=True,
            capture_output=True,
        )
        try:
            trees = {"before": before, "after": ROOT}
            weights = {}
            for variant in args.variants.split(","):
                pair = {side: weights_of(tree, variant, tmp) for side, tree in trees.items()}
                pair["identical"] = pair["before"]["sha256"] == pair["after"]["sha256"]
                weights[variant] = pair
                print(
                    f"{variant}: weights {'identical' if pair['identical'] else 'DIFFER'}",
                    flush=True,
                )
            times: dict[str, list[list[float]]] = {"before": [], "after": []}
            for r in range(args.rounds):
                order = ("before", "after") if r % 2 == 0 else ("after", "before")
                for side in order:
                    times[side].append(step_times(trees[side], args.d_sae, args.steps, tmp))
                print(
                    f"round {r + 1}: "
                    + ", ".join(
                        f"{s} {statistics.median(times[s][-1]):.3f} s" for s in ("before", "after")
                    ),
                    flush=True,
                )
        finally:
            subprocess.run(
                ["git", "worktree", "remove", "--force", str(before)], cwd=ROOT, capture_output=True
            )
    result = {
        "provenance": provenance(),
        "before": commit,
        "config": {
            "variants": args.variants.split(","),
            "d_sae": args.d_sae,
            "steps": args.steps,
            "rounds": args.rounds,
            "batch_tokens": 4096,
        },
        "weights": weights,
        "step_times_s": times,
    }
    atomic_write_json(Path(args.out), result)
    print(render(result))
    return result


@renderer()
def render(d: dict | None) -> str:
    d = d or {}
    c = d.get("config") or {}
    before = str(d["before"])[:7] if d.get("before") else NM
    rows = []
    for variant, pair in (d.get("weights") or {}).items():
        b, a = pair.get("before") or {}, pair.get("after") or {}
        n = len(a.get("sha256") or {})
        same = sum(b.get("sha256", {}).get(k) == v for k, v in (a.get("sha256") or {}).items())
        rows.append(
            [
                f"`{variant}`",
                f"{same} of {n}",
                " / ".join(fix(b.get("metrics", {}).get(m), 4) for m in METRICS),
                " / ".join(fix(a.get("metrics", {}).get(m), 4) for m in METRICS),
                "bit-identical" if pair.get("identical") else "differ",
            ]
        )
    weights = table(
        "selection rule|weight tensors identical|FVU / L0 / dead before|FVU / L0 / dead after|"
        "verdict (criterion: every tensor bit-identical)",
        rows,
    )
    t = d.get("step_times_s") or {}
    med = {s: [statistics.median(x) for x in t.get(s) or []] for s in ("before", "after")}
    speed = table(
        "tree|median step per call (s), by round|verdict of after against before (criterion: "
        "ahead in every round, else within noise)",
        [
            [f"before ({before})", ", ".join(fix(x, 3) for x in med["before"]), ""],
            [
                "after (this checkout)",
                ", ".join(fix(x, 3) for x in med["after"]),
                verdict_repeats(med["after"], med["before"], lower_better=True, paired=True),
            ],
        ],
    )
    return "\n\n".join(
        [
            para(
                f"Before: commit `{before}`; after: the commit in the provenance line. Weights: tiny "
                f"runs of each rule through `interp train`. Speed: `bench.sae_step`'s default row at "
                f"d_sae {num(c.get('d_sae'))}, {num(c.get('steps'))} timed steps per call, "
                f"{num(c.get('rounds'))} rounds alternating which tree goes first."
            ),
            weights,
            speed,
        ]
    )


if __name__ == "__main__":
    main()
