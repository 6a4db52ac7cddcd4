"""Benchmark: circuit discovery from discrete SAE codes on SmolLM2 (30 layers x 9 heads = 270),
judged against the head-patching ground truth (``circuits/fixtures/<task>.json``).

For each task (IOI, greater-than, docstring): the discrete-code method (node and edge scores; one
SAE per seed trained on ``--n-train`` prompts, the paper's defaults otherwise), attribution
patching, random scores and the patching effects themselves, each as ROC AUC and best balanced
F1 against the ground-truth circuit, with wall times (mean and spread over ``--seeds``); then
(``--l1-sweep``) AUC and the share of silent head vectors against the SAE's lambda, on raw and
on normalised head vectors; then (``--sweep``) AUC against the number of SAE training prompts
(5, 10, 25, 50: ``--sweep-seeds`` seeds; 250: ``--big-sweep-seeds``, since SAE training cost grows
linearly with the prompts: 250 prompts are 67,500 rows x 500 full-batch epochs, ~4 min a seed on
2 cores). ``--only-sweeps`` keeps the methods' results already in ``--out`` and adds the sweeps'
missing points and seeds (each point is saved after every seed with its per-seed rows, so a
stopped run resumes where it stopped). The prompt set is fixed (``--n-prompts`` positives + as
many negatives, the same for every seed and the sweep).

Also the same codes from an SAE trained for 5 epochs instead of 500 (``node_5ep`` /
``edge_5ep``: still near its tied random initialisation, i.e. argmax codes of a random ReLU
projection): on SmolLM2 the fully trained SAE at lambda 0.02 leaves most head vectors with no
active latent (their argmax code is latent 0 for all of them), which the short one does not.

Prints a table; saves ``bench/results/circuits.json`` (after each task) and the figures under
``bench/results/circuits/``. Not a test.

    flock /tmp/interp-heavy.lock python bench/circuits.py [--tasks ioi,greater-than,docstring]
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
# this file is bench/circuits.py: the package ``circuits`` at ROOT must come before bench/ on the
# path (python puts the script's folder first), bench/ only serves ``_provenance``
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != ROOT / "bench"]
sys.path.insert(0, str(ROOT))
sys.path.append(str(ROOT / "bench"))

from _provenance import provenance  # noqa: E402

from circuits.experiment import (  # noqa: E402
    auc_vs_n_train,
    auc_vs_sae_config,
    prepare,
    run_experiment,
)
from circuits.figures import auc_vs_prompts_figure, heatmap_figure  # noqa: E402
from circuits.ground_truth import fixture_path, load_ground_truth  # noqa: E402
from interp.io import atomic_write_bytes  # noqa: E402
from interp.models import load_model  # noqa: E402

# the paper's numbers (O'Neill & Bui 2024, GPT-2 small / attn-only-4l, 10 trials)
PAPER = {
    "ioi": {"node": 0.868, "edge": 0.840},
    "greater-than": {"node": 0.855, "edge": 0.873},
    "docstring": {"node": 0.869, "edge": 0.896},
}
METHODS = ("node", "edge", "node_5ep", "edge_5ep", "attribution", "random", "patching")


LABELS = {
    "node": "discrete codes, node",
    "edge": "discrete codes, edge",
    "node_5ep": "codes from a 5-epoch SAE, node",
    "edge_5ep": "codes from a 5-epoch SAE, edge",
    "attribution": "attribution patching",
    "random": "random",
    "patching": "activation patching (reference)",
}
NOT_MEASURED = (
    "Circuit discovery: not measured yet (run "
    "`flock /tmp/interp-heavy.lock python bench/circuits.py --sweep-seeds 1`)."
)


def _pm(s: dict, key: str) -> str:
    return f"{s[key + '_mean']:.3f} ± {s[key + '_std']:.3f}"


def _top_heads(res: dict, n: int = 5) -> str:
    eff = res["scores"]["patching"]
    order = sorted(range(len(eff)), key=lambda i: (-eff[i], i))[:n]
    return ", ".join(f"{res['labels'][i]} {eff[i]:.2f}" for i in order)


def readme(d: dict | None) -> str:
    """The README's circuit tables (markdown) from ``bench/results/circuits.json``."""
    if not d or not d.get("tasks"):
        return NOT_MEASURED
    tasks = d["tasks"]
    cfg = d.get("config", {})
    # the methods' table comes from the run that measured them (--only-sweeps keeps it)
    prov = d.get("methods_provenance", d.get("provenance", {}))
    mach = prov.get("machine", {})
    paper = d.get("paper", PAPER)
    out = []
    # 1. prompt counts
    out += [
        f"Prompt counts (the benchmark's fixed prompt set; {cfg.get('n_prompts', '?')} positives "
        'kept per task, each with its negative; "negatives right" = the negative\'s metric > 0 '
        "with the positive's answer):",
        "",
        "| task | tokens | generated | same length | right | kept | positives right "
        '| negatives "right" | mean metric pos / neg (kept) |',
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for task, res in tasks.items():
        c = res["counts"]
        out.append(
            f"| {task} | {c['length']} | {c['generated']} | {c['aligned']} | {c['correct']} | "
            f"{c['kept']} | {c['pos_accuracy']:.2f} | {c['neg_accuracy']:.2f} | "
            f"{c['kept_pos_metric_mean']:.2f} / {c['kept_neg_metric_mean']:.2f} |"
        )
    # 2. ground truth
    out += [
        "",
        "Ground truth (head-level activation patching, `circuits/fixtures/<task>.json`):",
        "",
        "| task | prompts | circuit | share | joint effect | top heads (single-head effect) "
        "| wall s | command |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for task, res in tasks.items():
        gt = res["ground_truth"]
        out.append(
            f"| {task} | {gt['n_prompts']} | {gt['k']} heads | {gt['share']:.0%} | "
            f"{gt['joint_effect']:.3f} | {_top_heads(res)} | "
            f"{res.get('ground_truth_seconds', float('nan')):.0f} | "
            f"`{res.get('ground_truth_command', '')}` |"
        )
    # 3. the benchmark table
    seeds = cfg.get("seeds", next(iter(tasks.values())).get("seeds"))
    out += [
        "",
        f"Results on {next(iter(tasks.values()))['model']} (`{prov.get('command', '')}`, "
        f"{mach.get('cores', '?')} CPU cores, torch {d.get('torch_threads', '?')} threads, "
        f"{prov.get('date', '')}; mean ± std over {seeds} seeds of the SAE's initialisation and "
        f"its {cfg.get('n_train', '?')} training prompts; the patching row's time is the "
        "ground truth's):",
        "",
        "| task | method | ROC AUC | balanced F1 | wall s | paper AUC |",
        "|---|---|---|---|---|---|",
    ]
    for task, res in tasks.items():
        for m in METHODS:
            if m not in res["summary"]:
                continue
            s = res["summary"][m]
            p = paper.get(task, {}).get(m)
            out.append(
                f"| {task} | {LABELS[m]} | {_pm(s, 'auc')} | {_pm(s, 'f1')} | "
                f"{s['seconds_mean']:.1f} | {'' if p is None else f'{p:.3f}'} |"
            )
    # 4. against the paper
    out += [
        "",
        "Against the paper (O'Neill & Bui 2024, GPT-2 small / attn-only-4l, their hand-made "
        "circuits; ours: SmolLM2 against our patching ground truth, so two footings, not two "
        "models alone):",
        "",
        "| task | node AUC (ours) | node AUC (paper) | edge AUC (ours) | edge AUC (paper) "
        "| attribution AUC (ours) | method wall s (node / edge) |",
        "|---|---|---|---|---|---|---|",
    ]
    for task, res in tasks.items():
        s, p = res["summary"], paper.get(task, {})
        out.append(
            f"| {task} | {_pm(s['node'], 'auc')} | {p.get('node', float('nan')):.3f} | "
            f"{_pm(s['edge'], 'auc')} | {p.get('edge', float('nan')):.3f} | "
            f"{_pm(s['attribution'], 'auc')} | "
            f"{s['node']['seconds_mean']:.1f} / {s['edge']['seconds_mean']:.1f} |"
        )
    # 5. AUC against the number of prompts
    sizes = sorted({int(n) for r in tasks.values() for n in r.get("auc_vs_n_train", {})})
    if sizes:
        out += [
            "",
            "ROC AUC against the number of SAE training prompts, mean ± std over seeds (seeds "
            "per point in brackets; the last row of each task: the share of head vectors with "
            "no active latent; a blank cell was not run):",
            "",
            "| task | score | " + " | ".join(str(n) for n in sizes) + " |",
            "|---|---|" + "---|" * len(sizes),
        ]
        for task, res in tasks.items():
            sw = res.get("auc_vs_n_train", {})
            for kind in ("node", "edge", "silent"):
                cells = [
                    f"{_pm(sw[str(n)], kind)} ({sw[str(n)]['seeds']})"
                    if f"{kind}_mean" in sw.get(str(n), {})
                    else ""
                    for n in sizes
                ]
                out.append(f"| {task} | {kind} | " + " | ".join(cells) + " |")
    # 6. AUC against lambda, raw and normalised head vectors
    if any(r.get("auc_vs_l1") for r in tasks.values()):
        out += [
            "",
            f"ROC AUC against the SAE's λ at {cfg.get('n_train', '?')} training prompts, on the "
            "paper's raw head vectors and on vectors scaled to mean norm √d (the toolkit's SAE "
            "input convention; `CodeSAEConfig.normalize`), mean ± std over seeds; silent: the "
            "share of head vectors with no active latent (their argmax code is latent 0):",
            "",
            "| task | λ | inputs | node AUC | edge AUC | silent | seeds |",
            "|---|---|---|---|---|---|---|",
        ]
        for task, res in tasks.items():
            rows = sorted(
                res.get("auc_vs_l1", {}).values(), key=lambda r: (r["normalize"], r["l1"])
            )
            for r in rows:
                out.append(
                    f"| {task} | {r['l1']:g} | {'normalised' if r['normalize'] else 'raw'} | "
                    f"{_pm(r, 'node')} | {_pm(r, 'edge')} | {_pm(r, 'silent')} | {r['seeds']} |"
                )
    return "\n".join(out)


def _write(out: Path, result: dict) -> None:
    """Save the results so far; atomic, so a run stopped mid-write keeps the last save."""
    atomic_write_bytes(out, (json.dumps(result, indent=1) + "\n").encode())


def _saver(out: Path, result: dict, have: dict) -> Callable[[str, dict], None]:
    """The sweeps' ``on_seed``: store the point in ``have`` (a part of ``result``) and save."""

    def save(key: str, point: dict) -> None:
        have[key] = point
        _write(out, result)

    return save


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--tasks", default="ioi,docstring,greater-than")
    ap.add_argument("--model", default="smollm2-135m")
    ap.add_argument("--seeds", type=int, default=5)
    ap.add_argument("--n-prompts", type=int, default=125)
    ap.add_argument("--n-train", type=int, default=10)
    ap.add_argument("--sweep", default="5,10,25,50,250", help="training-prompt counts ('' = none)")
    ap.add_argument("--sweep-seeds", type=int, default=5, help="seeds per sweep point up to 50")
    ap.add_argument(
        "--big-sweep-tasks",
        default="ioi,docstring,greater-than",
        help="tasks that also get the 250-prompt point (~4 min of SAE training per seed)",
    )
    ap.add_argument("--big-sweep-seeds", type=int, default=5, help="seeds of the 250-prompt point")
    ap.add_argument(
        "--l1-sweep",
        default="0.002,0.01,0.02,0.05",
        help="lambdas tried at --n-train prompts, on raw and on normalised head vectors ('' = none)",
    )
    ap.add_argument("--l1-seeds", type=int, default=3, help="seeds per point of the lambda sweep")
    ap.add_argument(
        "--only-sweeps",
        action="store_true",
        help="keep the methods' results already in --out; run (and add) only the sweeps, "
        "skipping points measured there with as many seeds",
    )
    ap.add_argument("--out", default=str(ROOT / "bench/results/circuits.json"))
    args = ap.parse_args()

    out = Path(args.out)
    fig_dir = out.parent / "circuits"
    fig_dir.mkdir(parents=True, exist_ok=True)
    result = {
        "provenance": provenance(sys.argv),
        "config": vars(args),
        "paper": PAPER,
        "torch_threads": torch.get_num_threads(),
        "tasks": {},
    }
    model = load_model(args.model)
    sweep_all = tuple(int(s) for s in args.sweep.split(",") if s.strip())
    big = set(args.big_sweep_tasks.split(","))
    tasks = args.tasks.split(",")
    contexts = {}
    if args.only_sweeps:
        old = json.loads(out.read_text())
        result["tasks"] = old["tasks"]
        result["methods_provenance"] = old.get("methods_provenance", old["provenance"])
        result["config"] = {**old["config"], "sweeps": vars(args)}
    # 1. every method on every task (saved after each task)
    for task in tasks:
        t0 = time.perf_counter()
        gt = load_ground_truth(fixture_path(task))
        ctx = prepare(model, task, model_name=args.model, n_prompts=args.n_prompts, gt=gt)
        contexts[task] = ctx
        if args.only_sweeps:
            continue
        res = run_experiment(
            model,
            task,
            model_name=args.model,
            seeds=args.seeds,
            n_train=args.n_train,
            ctx=ctx,
            variants={"5ep": replace(ctx["cfg"], epochs=5)},
            progress=False,
        )
        res["ground_truth_command"] = gt["command"]
        res["bench_seconds"] = time.perf_counter() - t0
        result["tasks"][task] = res
        heatmap_figure(res).write_json(fig_dir / f"{task}_heatmap.json")
        _write(out, result)
        print(f"{task}: methods done in {res['bench_seconds']:.0f} s", flush=True)
    print(readme(result), flush=True)
    # 2. AUC against lambda, on raw and normalised head vectors (at --n-train prompts)
    l1s = [float(x) for x in args.l1_sweep.split(",") if x.strip()]
    for task in tasks if l1s else ():
        t0 = time.perf_counter()
        base = contexts[task]["cfg"]
        have = result["tasks"][task].setdefault("auc_vs_l1", {})
        for norm in (False, True):
            for l1 in l1s:
                name = f"l1={l1:g}{', normalised' if norm else ''}"
                if have.get(name, {}).get("seeds", 0) >= args.l1_seeds:
                    continue
                configs = {name: replace(base, l1=l1, normalize=norm)}
                save = _saver(out, result, have)  # stores the point and saves after every seed
                auc_vs_sae_config(contexts[task], configs, args.n_train, args.l1_seeds, have, save)
        print(f"{task}: lambda sweep done in {time.perf_counter() - t0:.0f} s", flush=True)
    # 3. AUC against the number of SAE training prompts (the 250 point last: minutes a seed)
    for small in (True, False):
        for task in tasks:
            t0 = time.perf_counter()
            sweep = [n for n in sweep_all if (n <= 50) == small and (small or task in big)]
            seeds = {n: (args.sweep_seeds if n <= 50 else args.big_sweep_seeds) for n in sweep}
            have = result["tasks"][task].setdefault("auc_vs_n_train", {})
            for n in sweep:
                if have.get(str(n), {}).get("seeds", 0) >= seeds[n]:
                    continue
                save = _saver(out, result, have)  # stores the point and saves after every seed
                auc_vs_n_train(contexts[task], (n,), seeds, have, on_seed=save)
            print(f"{task}: sweep {sweep} done in {time.perf_counter() - t0:.0f} s", flush=True)
    auc_vs_prompts_figure(result).write_json(fig_dir / "auc_vs_prompts.json")
    print(readme(result))
    _write(out, result)


if __name__ == "__main__":
    main()
