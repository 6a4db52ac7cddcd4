"""Benchmark: does an SAE trained on activations from the bf16 model match one trained on fp32?

SmolLM2 layer 15: ``--tokens`` training activations captured twice from the same windows, once
with the model in fp32 and once in bf16 (``load_model(dtype="bfloat16")``, what
``data.model_dtype: auto`` picks on a CPU with bf16 matrix units), both stored as fp32. Two TopK
SAEs (d_sae 4,608, k 32, the project's default optimiser settings and lr) train on them with the
same seed and the same batch order; both are scored on the same held-out fp32 activations
(validation split). Also records each capture's speed, and the relative error of the bf16
activations. Target: held-out FVU of the bf16-trained SAE within 2% (relative) of the fp32 one.

Prints and saves ``--out`` (JSON). Not a test.

    python -m bench.bf16_model [--tokens 409600]
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from types import SimpleNamespace

import torch

from bench import sae_quality  # its activation capture and cache: the fp32 activations
from bench._markdown import NM, fix, join_nonempty, num, para, pct, sci, table, verdict_target
from bench._provenance import provenance, renderer
from bench.lr import fvu, make_step
from interp.models import load_model

TITLE = "An SAE on bf16-model activations"  # its name in the docs (python -m bench.report)

ROOT = Path(__file__).resolve().parents[1]

HOOK = "blocks.15.hook_resid_post"


def train(train_x: torch.Tensor, d_sae: int, k: int, batch: int, seed: int = 0):
    steps = train_x.shape[0] // batch
    order = torch.randperm(train_x.shape[0], generator=torch.Generator().manual_seed(0))
    sample = train_x[order[:4096]].float()
    sae, step = make_step(train_x.shape[1], d_sae, k, steps, batch, None, sample, seed=seed)
    lr = step.lr  # the default for this width, length and schedule
    for i in range(steps):
        step(train_x[order[i * batch : (i + 1) * batch]].float())
    return sae, lr, steps


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--tokens", type=int, default=409_600)
    ap.add_argument("--eval-tokens", type=int, default=40_960)
    ap.add_argument("--d-sae", type=int, default=4608)
    ap.add_argument("--k", type=int, default=32)
    ap.add_argument("--batch", type=int, default=4096)
    ap.add_argument("--out", default=str(ROOT / "bench" / "results" / "bf16_model.json"))
    args = ap.parse_args()
    t_start = time.perf_counter()
    qa = SimpleNamespace(
        model="smollm2-135m", source="stdlib", context=128, tokens=args.tokens,
        eval_tokens=args.eval_tokens, cache_dir=str(ROOT / "runs" / "bench_cache"), no_cache=False,
    )  # fmt: skip
    x32, eval_x, info = sae_quality.activations(qa, HOOK)
    model16 = load_model("smollm2-135m", dtype="bfloat16")
    t0 = time.perf_counter()
    x16 = sae_quality.capture(model16, HOOK, "train", args.tokens, 128, "stdlib").float()
    capture16_s = time.perf_counter() - t0
    del model16
    if x16.shape != x32.shape:
        raise SystemExit(f"captures differ in shape: {tuple(x16.shape)} vs {tuple(x32.shape)}")
    rel = ((x16 - x32).norm(dim=-1) / x32.norm(dim=-1)).mean().item()
    results = {}
    for name, x in (("fp32", x32), ("bf16", x16)):
        t0 = time.perf_counter()
        sae, lr, steps = train(x, args.d_sae, args.k, args.batch)
        results[name] = {
            "heldout_fvu_on_fp32": fvu(sae, eval_x),
            "train_s": time.perf_counter() - t0,
            "lr": lr,
            "steps": steps,
        }
        print(
            f"  trained on {name} activations: held-out FVU {results[name]['heldout_fvu_on_fp32']:.4f}"
        )
    ratio = results["bf16"]["heldout_fvu_on_fp32"] / results["fp32"]["heldout_fvu_on_fp32"] - 1
    out = {
        "provenance": provenance(sys.argv),
        "hook": HOOK,
        "train_tokens": int(x32.shape[0]),
        "eval_tokens": int(eval_x.shape[0]),
        "d_sae": args.d_sae,
        "k": args.k,
        "batch": args.batch,
        "fp32_capture": {k: v for k, v in info.items() if k != "key"},
        "bf16_capture_s": capture16_s,
        "bf16_capture_tokens_per_s": x16.shape[0] / capture16_s,
        "bf16_activation_mean_rel_err": rel,
        "runs": results,
        "bf16_vs_fp32_fvu_relative": ratio,
        "target": "bf16-trained held-out FVU within 2% (relative) of the fp32-trained one",
        "met": abs(ratio) <= 0.02,
        "wall_s": time.perf_counter() - t_start,
    }
    print(
        json.dumps(
            {
                k: out[k]
                for k in ("bf16_vs_fp32_fvu_relative", "met", "bf16_activation_mean_rel_err")
            }
        )
    )
    Path(args.out).write_text(json.dumps(out, indent=1))
    print(f"saved {args.out}")


# ------------------------------------------------------------------------------------------------
# rendering: bench/results/bf16_model.json as markdown (python -m bench.report; see bench/_provenance.py)
# ------------------------------------------------------------------------------------------------
TOLERANCE = (
    0.02  # the target: bf16-trained held-out FVU within 2% (relative) of the fp32-trained one
)


@renderer()
def render(d: dict) -> str:
    """bench/bf16_model.py: an SAE trained on bf16-model activations vs on fp32 ones."""
    runs = d.get("runs") or {}
    rel = d.get("bf16_vs_fp32_fvu_relative")
    kept = verdict_target(
        abs(rel) if isinstance(rel, (int, float)) else None, TOLERANCE, at_least=False
    )
    said = {"met": "keeps quality", "missed": "loses quality"}.get(kept, kept)
    rows = [
        [
            name,
            fix((runs.get(name) or {}).get("heldout_fvu_on_fp32"), 4),
            sci((runs.get(name) or {}).get("lr")),
            "-" if name == "fp32" else f"{said}: {pct(rel, 2)}" if said != NM else NM,
        ]
        for name in ("fp32", "bf16")
    ]
    return join_nonempty(
        para(
            f"SmolLM2 {d.get('hook', NM)}, {num(d.get('train_tokens'))} training tokens captured "
            f"twice from the same windows (model in fp32, model in bf16; stored in fp32), d_sae "
            f"{num(d.get('d_sae'))}, k {num(d.get('k'))}, the same seed and batch order; held-out "
            f"FVU on {num(d.get('eval_tokens'))} fp32 validation activations. Criterion for the "
            f"last column: the bf16 model keeps quality where the held-out FVU is within "
            f"{pct(TOLERANCE)} (relative) of the fp32 one's (one run each, no spread recorded: as "
            "measured)."
        ),
        table(["activations from the model in", "held-out FVU (on fp32)", "lr", "vs fp32"], rows),
        para(
            f"bf16 vs fp32: {pct(rel, 2)} relative; target within {pct(TOLERANCE)}: {kept}. The bf16 "
            f"activations differ from the fp32 ones by {pct(d.get('bf16_activation_mean_rel_err'), 2)} "
            f"(mean relative L2); the bf16 capture ran at {num(d.get('bf16_capture_tokens_per_s'))} "
            "tokens/s."
        ),
    )


if __name__ == "__main__":
    main()
