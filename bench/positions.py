"""Benchmark: which positions should an SAE train on? (SmolLM2 layer 15, the demo's job.)

SmolLM2's first token after BOS has a residual norm of 2,000-18,000 at layer 15 against a median
of about 175 (an attention sink). Three choices of the positions capture keeps for training:

  all_but_bos     every position but the window's BOS (``skip_positions: 0``, ``max_norm_ratio: null``)
  skip_first      also the first position after BOS (``skip_positions: 1``, ``max_norm_ratio: null``)
  norm_limit_10x  also rows whose norm exceeds 10x the batch median (``max_norm_ratio: 10``, the
                  default since this benchmark)

Each trains the demo's SAE (configs/demo_topk.json: d_sae 4,608, k 32, 400k tokens, the model in
``auto`` dtype) for each ``--seeds`` seed, and is evaluated the same way, on every position but
BOS: spliced CE loss recovered and KL (ours), SAELens's ce_loss_score, FVU, and FVU without the
massive-norm tokens (``massive_norm_tokens``). Prints and saves ``--out`` (JSON). Not a test.

    python -m bench.positions [--seeds 0,1] [--tokens 400000]
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import sys
import time
from pathlib import Path

from bench._markdown import (
    NM,
    criterion_repeats,
    fix,
    join_nonempty,
    num,
    para,
    table,
    verdict_repeats,
)
from bench._provenance import provenance, renderer
from interp.models import load_model
from saes.training.config import RunConfig, apply_changes
from saes.training.loop import train

TITLE = "Which positions to train on"  # its name in the docs (python -m bench.report)

ROOT = Path(__file__).resolve().parents[1]

CHOICES = {
    "all_but_bos": {"data.skip_positions": 0, "data.max_norm_ratio": None},
    "skip_first": {"data.skip_positions": 1, "data.max_norm_ratio": None},
    "norm_limit_10x": {"data.max_norm_ratio": 10.0},
}
KEYS = ("ce_loss_recovered", "kl_div", "fvu")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--seeds", default="0", help="comma-separated training seeds")
    ap.add_argument("--tokens", type=int, default=400_000)
    ap.add_argument("--out", default=str(ROOT / "bench" / "results" / "positions.json"))
    args = ap.parse_args()
    t0 = time.perf_counter()
    base = RunConfig(**json.loads((ROOT / "configs" / "demo_topk.json").read_text()))
    model = load_model(base.data.model, dtype=base.data.model_dtype)
    runs = []
    for seed in [int(s) for s in args.seeds.split(",")]:
        for name, change in CHOICES.items():
            out = ROOT / "runs" / "bench_positions" / f"{name}-seed{seed}"
            cfg = apply_changes(
                base,
                {
                    **change,
                    "data.seed": seed,
                    "data.train_tokens": args.tokens,
                    "log.out_dir": str(out),
                },
            )
            if out.exists():
                shutil.rmtree(out)  # a rerun starts afresh
            t1 = time.perf_counter()
            run = train(cfg, progress=False, model=model)
            m = json.loads((run / "metrics.json").read_text())
            row = {
                "choice": name,
                "seed": seed,
                "change": change,
                **{k: m.get(k) for k in KEYS},
                "fvu_without_massive": (m.get("massive_norm_tokens") or {}).get("fvu_without"),
                "massive_tokens": (m.get("massive_norm_tokens") or {}).get("count"),
                "saelens_ce_loss_score": (m.get("saelens") or {}).get("ce_loss_score"),
                "model_dtype": m.get("model_dtype"),
                "n_tokens": m.get("n_tokens"),
                "seconds": time.perf_counter() - t1,
            }
            print(json.dumps(row))
            runs.append(row)
    summary = {}
    for name in CHOICES:
        rows = [r for r in runs if r["choice"] == name]
        summary[name] = {
            k: statistics.mean(r[k] for r in rows)
            for k in (*KEYS, "fvu_without_massive", "saelens_ce_loss_score")
            if all(r[k] is not None for r in rows)
        }
    best = max(summary, key=lambda n: summary[n].get("ce_loss_recovered", float("-inf")))
    out = {
        "provenance": provenance(sys.argv),
        "config": "configs/demo_topk.json",
        "train_tokens": args.tokens,
        "seeds": args.seeds,
        "runs": runs,
        "summary": summary,
        "best_by_ce_loss_recovered": best,
        "wall_s": time.perf_counter() - t0,
    }
    print(json.dumps(summary, indent=1))
    Path(args.out).write_text(json.dumps(out, indent=1))
    print(f"saved {args.out}")


# ------------------------------------------------------------------------------------------------
# rendering: bench/results/positions.json as markdown (python -m bench.report; see bench/_provenance.py)
# ------------------------------------------------------------------------------------------------
POSITION_LABELS = {
    "all_but_bos": "every position but BOS (`skip_positions: 0`, `max_norm_ratio: null`)",
    "skip_first": "also the first after BOS (`skip_positions: 1`)",
    "norm_limit_10x": "also rows over 10x the median norm (`max_norm_ratio: 10`, now the default)",
}


@renderer()
def render(d: dict) -> str:
    """bench/positions.py: which positions the demo's SAE should train on."""
    summ = d.get("summary") or {}
    if not summ:
        return para(f"Positions: {NM}.")
    runs = d.get("runs") or []
    first = next(iter(summ))

    def seeds(choice: str, key: str) -> list:
        return [r.get(key) for r in runs if r.get("choice") == choice]

    def versus(choice: str, key: str, words: tuple[str, str], **how) -> str:
        if choice == first:
            return "-"
        return verdict_repeats(seeds(choice, key), seeds(first, key), words, **how)

    rows = [
        [
            ("**" + POSITION_LABELS.get(n, n) + "**")
            if n == d.get("best_by_ce_loss_recovered")
            else POSITION_LABELS.get(n, n),
            fix(m.get("ce_loss_recovered"), 4),
            fix(m.get("saelens_ce_loss_score"), 4),
            fix(m.get("kl_div"), 4),
            fix(m.get("fvu"), 4),
            fix(m.get("fvu_without_massive"), 4),
            versus(n, "ce_loss_recovered", ("higher", "lower"), points=True),
            versus(n, "fvu_without_massive", ("lower", "higher"), lower_better=True),
        ]
        for n, m in summ.items()
    ]
    massive = sorted({r.get("massive_tokens") for r in runs if r.get("massive_tokens") is not None})
    return join_nonempty(
        para(
            f"The demo's SAE ({d.get('config', NM)}, {num(d.get('train_tokens'))} tokens), trained on "
            f"three choices of positions, means over seeds {d.get('seeds', NM)}; every run is "
            "evaluated the same way, on every position but BOS (the massive-norm tokens included: "
            f"{', '.join(str(m) for m in massive) or NM} of them among the held-out tokens). The "
            "last two columns: each choice against the first row, per seed (CE loss recovered in "
            f"percentage points, FVU as a ratio). Criterion: {criterion_repeats('seed')}."
        ),
        table(
            [
                "trained on",
                "CE loss recovered",
                "SAELens ce_loss_score",
                "KL",
                "FVU",
                "FVU without massive-norm tokens",
                "CE loss recovered vs the first row",
                "FVU without massive-norm tokens vs the first row",
            ],
            rows,
        ),
    )


if __name__ == "__main__":
    main()
