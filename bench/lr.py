"""Benchmark: the default learning rate against a sweep, on synthetic dictionaries and on SmolLM2.

Every row is ``saes.training.step.TrainStep`` set up as ``interp train`` sets it up (input scaled to
E||x|| = sqrt(d_in), b_dec at the geometric median of a sample, the default warm-up, decay and
dead window), with the same batches in the same order for every learning rate of a setting; only
the learning rate differs. ``default`` is what ``TrainStep`` picks with ``lr=None``
(``saes.training.step.default_lr`` of the width, the steps and the schedule); ``legacy``
is the old rule, 2e-4 / sqrt(d_sae / 2^14) (Gao et al. 2024's width scaling alone).

* synthetic (``interp.synthetic.SyntheticDictionary``, d_in 64-128): the fraction of the true
  directions some decoder row matches at cosine > 0.9, and FVU on fresh rows;
* SmolLM2 layer 15 (``--tokens`` training tokens, the held-out validation split for FVU, the
  activations shared with bench/sae_quality.py's cache): held-out FVU, with and without the
  tokens whose norm exceeds 10x the median (the first token after BOS, see the README). Training
  leaves those tokens out, as ``interp train`` does by default (``data.max_norm_ratio: 10``; here
  against the median of all training rows, where capture takes each batch's).

Every row also states the fraction of latents that never fire on the held-out rows
(``dead_fraction``): a rate that is too high kills latents before it lowers the FVU.

Prints a table and saves ``--out`` (JSON). Not a test.

    python -m bench.lr [--quick] [--only synthetic|smollm2]
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from types import SimpleNamespace

import torch

from bench._markdown import (
    NM,
    criterion_one_run,
    fix,
    join_nonempty,
    num,
    para,
    pct,
    sci,
    table,
    verdict_one_run,
    verdict_target,
)
from bench._provenance import provenance, renderer
from interp.synthetic import SyntheticDictionary, direction_recovery
from saes.config import SAEConfig
from saes.sae import SAE
from saes.training.config import RunConfig
from saes.training.step import TrainStep, default_lr, initial_statistics, legacy_lr

TITLE = "The default learning rate"  # its name in the docs (python -m bench.report)

ROOT = Path(__file__).resolve().parents[1]

# (name, dictionary, d_sae, k, rows, batch)
SYNTHETIC = [
    ("d96_f768_b4096", dict(d_in=96, n_features=768, mean_active=6.0), 1536, 8, 1_802_240, 4096),
    ("d96_f768_b1024", dict(d_in=96, n_features=768, mean_active=6.0), 1536, 8, 1_802_240, 1024),
    ("d64_f512_b4096", dict(d_in=64, n_features=512, mean_active=5.0), 1024, 8, 1_024_000, 4096),
    (
        "d128_f1024_b4096",
        dict(d_in=128, n_features=1024, mean_active=8.0),
        2048,
        12,
        2_048_000,
        4096,
    ),
]
SWEEP = (5e-4, 1e-3, 2e-3, 4e-3, 8e-3, 1.6e-2)


def make_step(d_in: int, d_sae: int, k: int, steps: int, batch: int, lr, sample, seed=0):
    cfg = RunConfig(
        data={"train_tokens": steps * batch, "batch_tokens": batch, "seed": seed},
        sae={"d_sae": d_sae, "k": k, "variant": "topk"},
    )
    sae = SAE(SAEConfig(d_in=d_in, d_sae=d_sae, k=k, variant="topk"), seed=seed)
    scale, median = initial_statistics(sample, cfg)
    sae.cfg.input_scale = scale
    with torch.no_grad():
        sae.b_dec.copy_(median)
    step = TrainStep(
        sae,
        lr=lr,
        total_steps=steps,
        warmup_steps=cfg.optim.warmup_steps,
        decay_fraction=cfg.optim.decay_fraction,
        dead_tokens=cfg.resolved_dead_tokens,
    )
    return sae, step


@torch.no_grad()
def dead_fraction(sae: SAE, x: torch.Tensor) -> float:
    """The fraction of latents that fire on none of the rows x."""
    fired = torch.zeros(sae.cfg.d_sae, dtype=torch.bool)
    for chunk in x.split(8192):
        fired |= (sae.encode(chunk.float()) > 0).any(0)
    return 1.0 - fired.float().mean().item()


@torch.no_grad()
def fvu(sae: SAE, x: torch.Tensor, keep: torch.Tensor | None = None) -> float:
    """Sum of squared errors over total variance (per dimension, around the mean), in chunks."""
    if keep is not None:
        x = x[keep]
    err = 0.0
    for chunk in x.split(8192):
        err += (sae(chunk.float())[0] - chunk.float()).pow(2).sum().item()
    return err / (x.float() - x.float().mean(0)).pow(2).sum().item()


def run_synthetic(lrs_extra: list[float], quick: bool) -> list[dict]:
    out = []
    for name, dcfg, d_sae, k, rows, batch in SYNTHETIC[:2] if quick else SYNTHETIC:
        rows = rows // 8 if quick else rows
        steps = rows // batch
        sd = SyntheticDictionary(**dcfg, seed=1)
        sample = sd.sample(4096)[0]  # the init sample (input scale, b_dec); then the training rows
        test = SyntheticDictionary(**dcfg, seed=1)
        test._gen.manual_seed(12345)
        test_x = test.sample(32_768)[0]
        lrs = {"default": None, "legacy": legacy_lr(d_sae)}
        lrs.update({f"{lr:g}": lr for lr in (*SWEEP, *lrs_extra)})
        data = torch.cat(list(sd.batches(steps, batch)))  # the same batches for every lr
        for label, lr in lrs.items():
            sae, step = make_step(dcfg["d_in"], d_sae, k, steps, batch, lr, sample)
            lr = step.lr  # (the default's value)
            t0 = time.perf_counter()
            for x in data.split(batch):
                step(x)
            rec = direction_recovery(sd.directions, sae.W_dec.detach())
            row = dict(
                setting=name, label=label, lr=lr, d_sae=d_sae, k=k, batch=batch, steps=steps,
                recovery_cos_0_9=rec, fvu=fvu(sae, test_x), dead_fraction=dead_fraction(sae, test_x),
                seconds=time.perf_counter() - t0,
            )  # fmt: skip
            print(
                f"  {name:18s} {label:8s} lr {lr:.2e}: recovery {rec:.1%}, FVU {row['fvu']:.4f}, "
                f"dead {row['dead_fraction']:.1%}"
            )
            out.append(row)
    return out


def run_smollm2(args) -> tuple[list[dict], dict]:
    from bench import sae_quality  # the activation cache it keeps (same capture, same file)

    qa = SimpleNamespace(
        model="smollm2-135m", source="stdlib", context=128, tokens=args.tokens,
        eval_tokens=args.eval_tokens, cache_dir=str(ROOT / "runs" / "bench_cache"), no_cache=False,
    )  # fmt: skip
    hook = "blocks.15.hook_resid_post"
    train_x, eval_x, info = sae_quality.activations(qa, hook)
    norms = eval_x.float().norm(dim=-1)
    typical = norms < 10 * norms.median()
    train_norms = train_x.float().norm(dim=-1)
    train_typical = train_norms <= RunConfig().data.max_norm_ratio * train_norms.median()
    n_captured = train_x.shape[0]
    train_x = train_x[train_typical]
    batch, d_sae, k = 4096, 4608, 32
    steps = train_x.shape[0] // batch
    order = torch.randperm(train_x.shape[0], generator=torch.Generator().manual_seed(0))
    sample = train_x[order[:4096]].float()
    lrs = {"default": None, "legacy": legacy_lr(d_sae)}
    lrs.update({f"{lr:g}": lr for lr in args.smollm2_lrs})
    rows = []
    for label, lr in lrs.items():
        sae, step = make_step(train_x.shape[1], d_sae, k, steps, batch, lr, sample)
        lr = step.lr  # (the default's value)
        t0 = time.perf_counter()
        for i in range(steps):
            step(train_x[order[i * batch : (i + 1) * batch]].float())
        row = dict(
            label=label, lr=lr, d_sae=d_sae, k=k, batch=batch, steps=steps,
            fvu=fvu(sae, eval_x), fvu_typical_tokens=fvu(sae, eval_x, typical),
            dead_fraction=dead_fraction(sae, eval_x), seconds=time.perf_counter() - t0,
        )  # fmt: skip
        print(
            f"  smollm2 L15 {label:8s} lr {lr:.2e}: held-out FVU {row['fvu']:.4f} "
            f"(typical tokens {row['fvu_typical_tokens']:.4f}), dead {row['dead_fraction']:.1%}"
        )
        rows.append(row)
    meta = {
        "hook": hook,
        "train_tokens": int(train_x.shape[0]),
        "train_tokens_captured": int(n_captured),
        "train_tokens_left_out_over_max_norm_ratio": int((~train_typical).sum()),
        "max_norm_ratio": RunConfig().data.max_norm_ratio,
        "eval_tokens": int(eval_x.shape[0]),
        "eval_tokens_over_10x_median_norm": int((~typical).sum()),
        "activations": {k: v for k, v in info.items() if k != "key"},
    }
    return rows, meta


def summarize(synth: list[dict], smol: list[dict]) -> dict:
    s: dict = {}
    for name in dict.fromkeys(r["setting"] for r in synth):
        rows = [r for r in synth if r["setting"] == name]
        sweep = [r for r in rows if r["label"] not in ("default", "legacy")]
        best = max(sweep, key=lambda r: (r["recovery_cos_0_9"], -r["fvu"]))
        by = {r["label"]: r for r in rows}
        s[name] = {
            "default_lr": by["default"]["lr"],
            "default_recovery": by["default"]["recovery_cos_0_9"],
            "legacy_recovery": by["legacy"]["recovery_cos_0_9"],
            "best_sweep_lr": best["lr"],
            "best_sweep_recovery": best["recovery_cos_0_9"],
            "default_at_least_90pct": by["default"]["recovery_cos_0_9"] >= 0.9,
        }
    if smol:
        sweep = [r for r in smol if r["label"] not in ("default", "legacy")]
        best = min(sweep, key=lambda r: r["fvu"])
        by = {r["label"]: r for r in smol}
        s["smollm2_L15"] = {
            "default_lr": by["default"]["lr"],
            "default_fvu": by["default"]["fvu"],
            "default_dead_fraction": by["default"]["dead_fraction"],
            "best_sweep_dead_fraction": best["dead_fraction"],
            "legacy_fvu": by["legacy"]["fvu"],
            "best_sweep_lr": best["lr"],
            "best_sweep_fvu": best["fvu"],
            "default_vs_best": by["default"]["fvu"] / best["fvu"] - 1,
            "default_within_3pct_of_best": by["default"]["fvu"] <= 1.03 * best["fvu"],
        }
    return s


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--quick", action="store_true", help="2 synthetic settings at 1/8 the rows")
    ap.add_argument("--only", choices=("synthetic", "smollm2"), default=None)
    ap.add_argument("--tokens", type=int, default=409_600, help="SmolLM2 training tokens")
    ap.add_argument("--eval-tokens", type=int, default=40_960, help="SmolLM2 held-out tokens")
    ap.add_argument("--extra-lr", type=float, action="append", default=[])
    ap.add_argument(
        "--smollm2-lrs",
        type=lambda v: [float(x) for x in v.split(",")],
        default=[1e-3, 2e-3, 4e-3, 8e-3, 1.6e-2, 3.2e-2],
        help="the SmolLM2 sweep",
    )
    ap.add_argument("--out", default=str(ROOT / "bench" / "results" / "lr.json"))
    args = ap.parse_args()
    torch.manual_seed(0)
    t0 = time.perf_counter()
    synth = run_synthetic(args.extra_lr, args.quick) if args.only != "smollm2" else []
    smol, smol_meta = run_smollm2(args) if args.only != "synthetic" and not args.quick else ([], {})
    result = {
        "provenance": provenance(sys.argv),
        "rule": default_lr.__doc__,
        "sweep": list(SWEEP),
        "synthetic": synth,
        "smollm2": smol,
        "smollm2_setup": smol_meta,
        "summary": summarize(synth, smol),
        "wall_s": time.perf_counter() - t0,
    }
    print(json.dumps(result["summary"], indent=1))
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(result, indent=1))
    print(f"saved {args.out} ({result['wall_s'] / 60:.1f} min)")


# ------------------------------------------------------------------------------------------------
# rendering: bench/results/lr.json as markdown (python -m bench.report; see bench/_provenance.py)
# ------------------------------------------------------------------------------------------------
BETTER = ("higher", "lower")


def _lr_of(rows: list[dict], setting: str, label: str):
    return next(
        (r["lr"] for r in rows if r.get("setting") == setting and r["label"] == label), None
    )


@renderer()
def render(d: dict) -> str:
    """bench/lr.py: the default learning rate against a sweep (synthetic dictionaries, SmolLM2)."""
    summ = d.get("summary") or {}
    synth = d.get("synthetic") or []
    if not summ:
        return para(f"Learning-rate sweep: {NM}.")
    rows = []
    for name, sm in summ.items():
        if name == "smollm2_L15":
            continue
        r0 = next((r for r in synth if r.get("setting") == name), {})
        rows.append(
            [
                f"synthetic {name}",
                f"{num(r0.get('steps'))} x {num(r0.get('batch'))}",
                sci(_lr_of(synth, name, "legacy")),
                pct(sm.get("legacy_recovery"), 1),
                sci(sm.get("default_lr")),
                "**" + pct(sm.get("default_recovery"), 1) + "**",
                pct(
                    next(
                        (
                            r.get("dead_fraction")
                            for r in synth
                            if r.get("setting") == name and r["label"] == "default"
                        ),
                        None,
                    ),
                    1,
                ),
                f"{pct(sm.get('best_sweep_recovery'), 1)} at {sci(sm.get('best_sweep_lr'))}",
                verdict_one_run(
                    sm.get("default_recovery"), sm.get("legacy_recovery"), BETTER, points=True
                ),
                verdict_one_run(
                    sm.get("default_recovery"), sm.get("best_sweep_recovery"), BETTER, points=True
                ),
            ]
        )
    table1 = table(
        [
            "setting",
            "steps x batch",
            "old default lr",
            "recovered",
            "new default lr",
            "recovered",
            "dead (new default)",
            "best of the sweep",
            "new default vs old, recovered",
            "new default vs the best of the sweep",
        ],
        rows,
    )
    table1 = join_nonempty(
        para(
            "Synthetic dictionaries: the share of the true directions recovered (cosine > 0.9) at "
            "the old and the new default learning rate, and the best of the sweep. The last two "
            f"columns, criterion: {criterion_one_run(True)}."
        ),
        table1,
    )
    sm = summ.get("smollm2_L15")
    smol = ""
    if sm:
        setup = d.get("smollm2_setup") or {}
        s0 = (d.get("smollm2") or [{}])[0]
        srows = [
            [
                r["label"],
                sci(r["lr"]),
                fix(r["fvu"], 4),
                fix(r.get("fvu_typical_tokens"), 4),
                pct(r.get("dead_fraction"), 1),
                "-"
                if r["label"] == "default"
                else verdict_one_run(
                    r["fvu"], sm.get("default_fvu"), ("lower", "higher"), lower_better=True
                ),
            ]
            for r in d.get("smollm2") or []
        ]
        smol = join_nonempty(
            para(
                f"SmolLM2 layer 15, {num(setup.get('train_tokens'))} training tokens "
                f"({num(s0.get('steps'))} steps of "
                f"{num(s0.get('batch'))}; the "
                f"{num(setup.get('train_tokens_left_out_over_max_norm_ratio'))} of "
                f"{num(setup.get('train_tokens_captured'))} captured whose norm is over "
                f"{setup.get('max_norm_ratio', 10):g}x the median left out, as training does by "
                f"default), d_sae 4,608, k 32; held-out FVU "
                f"on {num(setup.get('eval_tokens'))} validation tokens, and without the "
                f"{num(setup.get('eval_tokens_over_10x_median_norm'))} whose norm is over 10x the "
                "median; dead: latents that fire on none of the held-out tokens. The last column: "
                f"held-out FVU against the default's; criterion: {criterion_one_run()}:"
            ),
            table(
                ["lr", "value", "held-out FVU", "FVU, typical tokens", "dead", "vs the default"],
                srows,
            ),
            para(
                f"The default ({sci(sm.get('default_lr'))}) is {pct(sm.get('default_vs_best'), 1)} "
                f"from the best of the sweep ({sci(sm.get('best_sweep_lr'))}, FVU "
                f"{fix(sm.get('best_sweep_fvu'), 4)}); target within 3% (one run each): "
                f"{verdict_target(sm.get('default_vs_best'), 0.03, at_least=False)}. The old "
                f"default gave {fix(sm.get('legacy_fvu'), 4)}."
            ),
        )
    return join_nonempty(table1, smol)


if __name__ == "__main__":
    main()
