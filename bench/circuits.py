"""Benchmark: circuit discovery from discrete SAE codes on SmolLM2 (30 layers x 9 heads = 270),
judged against the head-patching ground truth (``circuits/fixtures/<task>.json``).

For each task (IOI, greater-than, docstring): the discrete-code method (node and edge scores; one
SAE per seed trained on ``--n-train`` prompts, the paper's hyperparameters otherwise) with each of
the two code SAEs (``flavour`` "ours" and "paper", the latter as close to the authors' code as it
can be read), attribution patching, random scores and the patching effects themselves, each as ROC
AUC and best balanced F1 against the ground-truth circuit, with wall times (mean and sample
standard deviation, ddof=1, over ``--seeds``); every method's AUC against the circuits at shares
0.7, 0.8 and 0.9 of the metric (read off the fixture's prefix curve, from the same scores); then
(``--l1-sweep``) AUC and the share of silent head vectors against the SAE's lambda, on raw and
on normalised head vectors; then (``--sweep``) AUC against the number of SAE training prompts
(5, 10, 25, 50: ``--sweep-seeds`` seeds; 250: ``--big-sweep-seeds``, since SAE training cost grows
linearly with the prompts: 250 prompts are 67,500 rows x 500 full-batch epochs, ~4 min a seed on
2 cores). ``--only-sweeps`` keeps the methods' results already in ``--out`` and adds the sweeps'
missing points and seeds (each point is saved after every seed with its per-seed rows, so a
stopped run resumes where it stopped). The prompt set is fixed (``--n-prompts`` positives + as
many negatives, the same for every seed and the sweep). A run that measures the methods keeps the
sweep points already stored in ``--out`` (with the ground truth and provenance they were measured
with) unless ``--drop-sweeps``; stored standard deviations are made sample ones (ddof=1): from the
per-seed rows where kept, else exactly from the population one, std * sqrt(n / (n - 1)).

Also the same codes from an SAE trained for 5 epochs instead of 500 (``node_5ep`` /
``edge_5ep``: still near its tied random initialisation, i.e. argmax codes of a random ReLU
projection): on SmolLM2 the fully trained SAE at lambda 0.02 leaves most head vectors with no
active latent (their argmax code is latent 0 for all of them), which the short one does not.

Prints a table; saves ``bench/results/circuits.json`` (after each task) and the figures under
``bench/results/circuits/``. Not a test.

    flock /tmp/interp-heavy.lock python -m bench.circuits [--tasks ioi,greater-than,docstring]
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch

from bench._provenance import provenance, renderer
from circuits.experiment import (
    auc_vs_n_train,
    auc_vs_sae_config,
    prepare,
    run_experiment,
)
from circuits.figures import auc_vs_prompts_figure, heatmap_figure
from circuits.ground_truth import SHARES, fixture_path, load_ground_truth
from interp.atomic_files import atomic_write_bytes
from interp.models import load_model

TITLE = "Circuits from discrete codes"  # its name in the docs (python -m bench.report)

ROOT = Path(__file__).resolve().parents[1]

# the paper's numbers (O'Neill & Bui 2024, GPT-2 small / attn-only-4l, 10 trials)
PAPER = {
    "ioi": {"node": 0.868, "edge": 0.840},
    "greater-than": {"node": 0.855, "edge": 0.873},
    "docstring": {"node": 0.869, "edge": 0.896},
}
METHODS = (
    "node",
    "edge",
    "node_paper",
    "edge_paper",
    "node_5ep",
    "edge_5ep",
    "attribution",
    "random",
)
LABELS = {
    "node": "discrete codes, node, our code SAE",
    "edge": "discrete codes, edge, our code SAE",
    "node_paper": "discrete codes, node, the paper's code SAE",
    "edge_paper": "discrete codes, edge, the paper's code SAE",
    "node_5ep": "codes from a 5-epoch SAE (ours), node",
    "edge_5ep": "codes from a 5-epoch SAE (ours), edge",
    "attribution": "attribution patching",
    "random": "random",
    "patching": "activation patching (1 by construction)",
}
NOT_MEASURED = (
    "Circuit discovery: not measured yet (run "
    "`flock /tmp/interp-heavy.lock python -m bench.circuits --sweep-seeds 1`)."
)
Z = 2.0  # the verdicts' criterion: a difference counts when it exceeds 2 standard errors


def _pm(s: dict, key: str) -> str:
    """mean ± sample std; a single run (no spread) as its value alone."""
    std = s.get(key + "_std")
    if std is None:
        return f"{s[key + '_mean']:.3f} (1 run)"
    return f"{s[key + '_mean']:.3f} ± {std:.3f}"


def _sem(s: dict, key: str, n: int) -> float:
    """Standard error of the mean from a sample std over n seeds (0 for a single run)."""
    std = s.get(key + "_std")
    return 0.0 if std is None or n < 2 else std / n**0.5


def _top_heads(res: dict, n: int = 5) -> str:
    eff = res["scores"]["patching"]
    order = sorted(range(len(eff)), key=lambda i: (-eff[i], i))[:n]
    return ", ".join(f"{res['labels'][i]} {eff[i]:.2f}" for i in order)


def _differs(diff: float, se: float) -> bool:
    return abs(diff) > Z * se


def _prompt_table(tasks: dict, cfg: dict) -> list[str]:
    out = [
        f"Prompt counts (the benchmark's fixed prompt set; {cfg.get('n_prompts', '?')} positives "
        'kept per task, each with its negative; "negatives right" = the negative\'s metric > 0 '
        "with the positive's answer; head-vector norms over all heads of the kept positives and "
        "negatives, the SAE's raw input):",
        "",
        "| task | tokens | generated | same length | right | kept | positives right "
        '| negatives "right" | mean metric pos / neg (kept) | head-vector norm mean / median |',
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for task, res in tasks.items():
        c = res["counts"]
        hv = res.get("head_vector_norms")
        norms = f"{hv['mean']:.2f} / {hv['median']:.2f}" if hv else ""
        out.append(
            f"| {task} | {c['length']} | {c['generated']} | {c['aligned']} | {c['correct']} | "
            f"{c['kept']} | {c['pos_accuracy']:.2f} | {c['neg_accuracy']:.2f} | "
            f"{c['kept_pos_metric_mean']:.2f} / {c['kept_neg_metric_mean']:.2f} | {norms} |"
        )
    return out


def _ground_truth_table(tasks: dict) -> list[str]:
    out = [
        "",
        "Ground truth (head-level activation patching, `circuits/fixtures/<task>.json`; circuit: "
        "the smallest prefix of the heads sorted by single-head effect whose joint patch reaches "
        "the share, found by scanning the joint effect of every prefix; k (joint effect) at each "
        "share; – : no prefix short of all heads reaches it):",
        "",
        "| task | prompts | clean / corrupt metric | k at 70% | k at 80% | k at 90% "
        "| top heads (single-head effect) | wall s | command |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for task, res in tasks.items():
        gt = res["ground_truth"]
        cells = []
        for share in SHARES:
            p = res.get("by_share", {}).get(f"{share:g}") or res.get("ground_truth_shares", {}).get(
                f"{share:g}"
            )
            if p is None:
                cells.append(f"{gt['k']} ({gt['joint_effect']:.3f})" if share == 0.8 else "")
            elif not p["reached"] or p["k"] == len(res["labels"]):
                cells.append(f"– (all {len(res['labels'])}: {p['joint_effect']:.3f})")
            else:
                cells.append(f"{p['k']} ({p['joint_effect']:.3f})")
        m = res.get("ground_truth_metrics")
        metrics = f"{m['clean']:.2f} / {m['corrupt']:.2f}" if m else ""
        out.append(
            f"| {task} | {gt['n_prompts']} | {metrics} | {' | '.join(cells)} | {_top_heads(res)} | "
            f"{res.get('ground_truth_seconds', float('nan')):.0f} | "
            f"`{res.get('ground_truth_command', '')}` |"
        )
    return out


def _results_table(d: dict, tasks: dict, cfg: dict) -> list[str]:
    prov = d.get("methods_provenance", d.get("provenance", {}))
    mach = prov.get("machine", {})
    first = next(iter(tasks.values()))
    seeds = cfg.get("seeds", first.get("seeds"))
    out = [
        "",
        f"Results on {first['model']} (`{prov.get('command', '')}`, {mach.get('cores', '?')} "
        f"CPU cores, torch {d.get('torch_threads', '?')} threads, {prov.get('date', '')}; mean "
        f"± sample std (ddof=1) over {seeds} seeds of the SAE's initialisation and its "
        f"{cfg.get('n_train', '?')} training prompts; the circuit at 80%; activation patching "
        "itself is left out: the circuit is a prefix of its order, so its AUC is 1 by "
        "construction):",
        "",
        "| task | method | ROC AUC | balanced F1 | wall s | paper AUC |",
        "|---|---|---|---|---|---|",
    ]
    paper = d.get("paper", PAPER)
    for task, res in tasks.items():
        for m in METHODS:
            if m not in res["summary"]:
                continue
            s = res["summary"][m]
            p = paper.get(task, {}).get(m.removesuffix("_paper"))
            p = None if m.endswith("_5ep") else p
            out.append(
                f"| {task} | {LABELS[m]} | {_pm(s, 'auc')} | {_pm(s, 'f1')} | "
                f"{s['seconds_mean']:.1f} | {'' if p is None else f'{p:.3f}'} |"
            )
    return out


def _paper_table(d: dict, tasks: dict) -> list[str]:
    """Each code SAE against the paper's published AUC, and the two SAEs against each other."""
    paper = d.get("paper", PAPER)
    out = [
        "",
        "Against the paper's published AUCs (O'Neill & Bui 2024: GPT-2 small / attn-only-4l, "
        "their hand-made circuits; ours: SmolLM2 against our patching ground truth at 80%). "
        f"Criterion: a gap counts when it exceeds {Z:g} standard errors of our mean (sample std "
        "/ √seeds; the paper's own spread is not used); the two SAEs differ when their "
        f'difference exceeds {Z:g} standard errors of the difference. "Gap closes": the '
        "paper's code SAE is within the criterion of the published AUC where ours is not.",
        "",
        "| task | score | published | ours | gap | the paper's SAE | gap | "
        "paper's SAE − ours | gap closes |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for task, res in tasks.items():
        s = res["summary"]
        n = res["seeds"]
        for kind in ("node", "edge"):
            pub = paper.get(task, {}).get(kind)
            if pub is None:
                continue
            a = s[kind]
            ours_gap = a["auc_mean"] - pub
            ours_off = _differs(ours_gap, _sem(a, "auc", n))
            cell_a = f"{ours_gap:+.3f} ({'beyond' if ours_off else 'within'} {Z:g} SE)"
            if f"{kind}_paper" not in s:
                out.append(
                    f"| {task} | {kind} | {pub:.3f} | {_pm(a, 'auc')} | {cell_a} | not measured "
                    "| | | |"
                )
                continue
            b = s[f"{kind}_paper"]
            paper_gap = b["auc_mean"] - pub
            paper_off = _differs(paper_gap, _sem(b, "auc", n))
            cell_b = f"{paper_gap:+.3f} ({'beyond' if paper_off else 'within'} {Z:g} SE)"
            diff = b["auc_mean"] - a["auc_mean"]
            se = (_sem(a, "auc", n) ** 2 + _sem(b, "auc", n) ** 2) ** 0.5
            closes = "no gap to close" if not ours_off else ("yes" if not paper_off else "no")
            out.append(
                f"| {task} | {kind} | {pub:.3f} | {_pm(a, 'auc')} | {cell_a} | "
                f"{_pm(b, 'auc')} | {cell_b} | {diff:+.3f} "
                f"({'differ' if _differs(diff, se) else 'not resolved'}) | {closes} |"
            )
    return out


def _share_table(tasks: dict) -> list[str]:
    out = [
        "",
        "ROC AUC against the circuit at each share of the metric (the same scores as above, "
        "mean ± sample std over seeds; k heads in the circuit; a share no prefix short of all "
        "heads reaches has no AUC):",
        "",
        "| task | share | k | "
        + " | ".join(LABELS[m] for m in METHODS if not m.endswith("_5ep"))
        + " |",
        "|---|---|---|" + "---|" * sum(not m.endswith("_5ep") for m in METHODS),
    ]
    if not any(res.get("by_share") for res in tasks.values()):
        return out[:2] + ["Not measured in this run (its per-seed scores were not stored)."]
    for task, res in tasks.items():
        for share, p in res.get("by_share", {}).items():
            cells = []
            for m in METHODS:
                if m.endswith("_5ep"):
                    continue
                r = p["methods"].get(m)
                cells.append(_pm(r, "auc") if r else "–")
            out.append(f"| {task} | {float(share):.0%} | {p['k']} | " + " | ".join(cells) + " |")
    return out


def _sweep_note(tasks: dict) -> str:
    """Which run measured the stored sweeps, and which ground truth they were scored against when
    it is not the current one."""
    provs = {
        (p.get("commit") or "?")[:7] + f" ({(p.get('date') or '?')[:10]})"
        for r in tasks.values()
        if (p := r.get("sweeps_provenance"))
    }
    note = f" Measured at commit {', '.join(sorted(provs))}." if provs else ""
    stds = any(
        pt.get("std_from_ddof0")
        for r in tasks.values()
        for key in ("auc_vs_l1", "auc_vs_n_train")
        for pt in r.get(key, {}).values()
    )
    if stds:
        note += (
            " Points stored without per-seed rows had population stds (ddof=0); they are shown "
            "as sample stds, converted exactly: std · √(n / (n − 1))."
        )
    stale = []
    for task, res in tasks.items():
        old = res.get("sweeps_ground_truth")
        if old and old.get("circuit") != res["ground_truth"]["circuit"]:
            stale.append(f"{task} {old['k']} heads (now {res['ground_truth']['k']})")
    if stale:
        note += (
            " They were scored before the prefix scan, against the circuits the bisection found "
            "then: " + ", ".join(stale) + "; kept as measured, not rescored."
        )
    return note


def _n_train_table(tasks: dict) -> list[str]:
    sizes = sorted({int(n) for r in tasks.values() for n in r.get("auc_vs_n_train", {})})
    if not sizes:
        return []
    out = [
        "",
        "ROC AUC against the number of SAE training prompts (our code SAE), mean ± sample std "
        "over seeds (seeds per point in brackets; the last row of each task: the share of head "
        "vectors with no active latent; a blank cell was not run)." + _sweep_note(tasks),
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
    out += [
        "",
        f"Node AUC at the most against the fewest training prompts. Criterion: a change counts "
        f"when it exceeds {Z:g} standard errors of the difference; else not resolved:",
        "",
        "| task | prompts | change | verdict |",
        "|---|---|---|---|",
    ]
    for task, res in tasks.items():
        sw = res.get("auc_vs_n_train", {})
        have = sorted(int(n) for n, p in sw.items() if "node_mean" in p)
        if len(have) < 2:
            continue
        a, b = sw[str(have[0])], sw[str(have[-1])]
        diff = b["node_mean"] - a["node_mean"]
        se = (_sem(a, "node", a["seeds"]) ** 2 + _sem(b, "node", b["seeds"]) ** 2) ** 0.5
        verdict = "not resolved" if not _differs(diff, se) else ("rises" if diff > 0 else "falls")
        out.append(
            f"| {task} | {have[0]} → {have[-1]} | {diff:+.3f} (2 SE {Z * se:.3f}) | {verdict} |"
        )
    return out


def _best_l1(tasks: dict) -> list[str]:
    """Per task, the raw-vector λ with the highest node AUC against the runner-up."""
    out = [
        "",
        f"The best λ on raw head vectors (highest mean node AUC) against the runner-up. "
        f"Criterion: resolved when the difference exceeds {Z:g} standard errors of the "
        "difference:",
        "",
        "| task | best λ | node AUC | runner-up λ | difference | verdict |",
        "|---|---|---|---|---|---|",
    ]
    for task, res in tasks.items():
        raw = sorted(
            (r for r in res.get("auc_vs_l1", {}).values() if not r["normalize"]),
            key=lambda r: -r["node_mean"],
        )
        if len(raw) < 2:
            continue
        a, b = raw[0], raw[1]
        diff = a["node_mean"] - b["node_mean"]
        se = (_sem(a, "node", a["seeds"]) ** 2 + _sem(b, "node", b["seeds"]) ** 2) ** 0.5
        out.append(
            f"| {task} | {a['l1']:g} | {_pm(a, 'node')} | {b['l1']:g} | {diff:+.3f} "
            f"(2 SE {Z * se:.3f}) | {'resolved' if _differs(diff, se) else 'not resolved'} |"
        )
    return out


def _l1_table(tasks: dict, cfg: dict) -> list[str]:
    if not any(r.get("auc_vs_l1") for r in tasks.values()):
        return []
    out = [
        "",
        f"ROC AUC against the SAE's λ at {cfg.get('n_train', '?')} training prompts (our code "
        "SAE), on the paper's raw head vectors and on vectors scaled to mean norm √d (the "
        "toolkit's SAE input convention; `CodeSAEConfig.normalize`), mean ± sample std over "
        "seeds; silent: the share of head vectors with no active latent (their argmax code is "
        "latent 0)." + _sweep_note(tasks),
        "",
        "| task | λ | inputs | node AUC | edge AUC | silent | seeds |",
        "|---|---|---|---|---|---|---|",
    ]
    for task, res in tasks.items():
        rows = sorted(res.get("auc_vs_l1", {}).values(), key=lambda r: (r["normalize"], r["l1"]))
        for r in rows:
            out.append(
                f"| {task} | {r['l1']:g} | {'normalised' if r['normalize'] else 'raw'} | "
                f"{_pm(r, 'node')} | {_pm(r, 'edge')} | {_pm(r, 'silent')} | {r['seeds']} |"
            )
    out += _best_l1(tasks)
    # the verdict on normalising, per (task, λ), by one criterion
    out += [
        "",
        f"Normalised against raw head vectors, node AUC, per task and λ. Criterion: one wins "
        f"when the difference exceeds {Z:g} standard errors of the difference (sample stds, "
        "seeds per point as above); else not resolved:",
        "",
        "| task | λ | normalised − raw | verdict |",
        "|---|---|---|---|",
    ]
    wins = {"normalised": 0, "raw": 0, "not resolved": 0}
    for task, res in tasks.items():
        pts = res.get("auc_vs_l1", {}).values()
        raw = {r["l1"]: r for r in pts if not r["normalize"]}
        for norm in sorted((r for r in pts if r["normalize"]), key=lambda r: r["l1"]):
            base = raw.get(norm["l1"])
            if base is None:
                continue
            diff = norm["node_mean"] - base["node_mean"]
            se = (
                _sem(norm, "node", norm["seeds"]) ** 2 + _sem(base, "node", base["seeds"]) ** 2
            ) ** 0.5
            verdict = (
                "not resolved" if not _differs(diff, se) else ("normalised" if diff > 0 else "raw")
            )
            wins[verdict] += 1
            out.append(f"| {task} | {norm['l1']:g} | {diff:+.3f} (2 SE {Z * se:.3f}) | {verdict} |")
    out += [
        "",
        f"Normalising wins at {wins['normalised']}, raw wins at {wins['raw']}, not resolved at "
        f"{wins['not resolved']} of {sum(wins.values())} (task, λ) points.",
    ]
    return out


@renderer()
def render(d: dict | None) -> str:
    """The circuit tables (markdown) from ``bench/results/circuits.json``."""
    if not d or not d.get("tasks"):
        return NOT_MEASURED
    tasks = d["tasks"]
    cfg = d.get("config", {})
    out = _prompt_table(tasks, cfg)
    out += _ground_truth_table(tasks)
    out += _results_table(d, tasks, cfg)
    out += _paper_table(d, tasks)
    out += _share_table(tasks)
    out += _n_train_table(tasks)
    out += _l1_table(tasks, cfg)
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


def sample_stds(point: dict) -> dict:
    """A stored sweep point with sample standard deviations (ddof=1): recomputed from its
    per-seed rows when it has them, else converted exactly from the population std (ddof=0) over
    ``seeds`` values, std * sqrt(n / (n - 1)); one seed has none (None)."""
    if point.get("std_ddof") == 1:
        return point
    p = dict(point)
    n = p.get("seeds", 1)
    rows = p.get("per_seed")
    for key in ("node", "edge", "silent"):
        if f"{key}_std" not in p:
            continue
        if rows and len(rows) == n and all(key in r for r in rows):
            v = np.array([r[key] for r in rows], dtype=float)
            p[f"{key}_std"] = float(v.std(ddof=1)) if n >= 2 else None
        else:
            p[f"{key}_std"] = p[f"{key}_std"] * (n / (n - 1)) ** 0.5 if n >= 2 else None
            p["std_from_ddof0"] = True
    p["std_ddof"] = 1
    return p


def _keep_sweeps(old: dict, task: str, res: dict) -> None:
    """Carry the sweep points stored for ``task`` in ``old`` into the new result ``res``, with
    sample stds, the ground truth they were scored against and the run that measured them."""
    prev = old.get("tasks", {}).get(task)
    if not prev:
        return
    for key in ("auc_vs_l1", "auc_vs_n_train"):
        if prev.get(key):
            res[key] = {k: sample_stds(p) for k, p in prev[key].items()}
    if res.get("auc_vs_l1") or res.get("auc_vs_n_train"):
        res["sweeps_ground_truth"] = prev.get("sweeps_ground_truth", prev["ground_truth"])
        res["sweeps_provenance"] = prev.get("sweeps_provenance", old.get("provenance"))


def restat(d: dict) -> dict:
    """A stored result with sample stds (ddof=1) everywhere, no measurement rerun: the methods'
    summaries recomputed from their per-seed rows, the sweep points as :func:`sample_stds`."""
    from circuits.experiment import _summary
    from circuits.ground_truth import circuit_at_share

    d = json.loads(json.dumps(d))
    for task, res in d["tasks"].items():
        gt = load_ground_truth(fixture_path(task), model=res["model"])
        res["ground_truth_shares"] = {f"{s:g}": circuit_at_share(gt, s) for s in SHARES}
        res["ground_truth_metrics"] = {"clean": gt["clean_metric"], "corrupt": gt["corrupt_metric"]}
        res["ground_truth_seconds"] = gt["seconds"]["total"]
        res["ground_truth_command"] = gt["command"]
        res["summary"] = {name: _summary(rows) for name, rows in res["per_seed"].items()}
        for key in ("auc_vs_l1", "auc_vs_n_train"):
            if res.get(key):
                res[key] = {k: sample_stds(p) for k, p in res[key].items()}
        res["std_ddof"] = 1
    d["std_ddof"] = 1
    d["restat"] = "summaries and sweep stds made sample stds (ddof=1) from the stored rows"
    return d


def _head_vector_norms(ctx: dict) -> dict:
    norms = torch.cat([ctx["xp"], ctx["xn"]]).norm(dim=-1).flatten()
    return {
        "mean": float(norms.mean()),
        "median": float(norms.median()),
        "d": int(ctx["xp"].shape[-1]),
    }


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
    ap.add_argument(
        "--drop-sweeps",
        action="store_true",
        help="when measuring the methods, do not keep the sweep points stored in --out",
    )
    ap.add_argument(
        "--restat",
        action="store_true",
        help="only rewrite --out with sample stds (ddof=1) from its stored rows; measures nothing",
    )
    ap.add_argument("--out", default=str(ROOT / "bench/results/circuits.json"))
    args = ap.parse_args()
    if args.restat:
        out = Path(args.out)
        _write(out, restat(json.loads(out.read_text())))
        print(render(json.loads(out.read_text())))
        return

    out = Path(args.out)
    fig_dir = out.parent / "circuits"
    fig_dir.mkdir(parents=True, exist_ok=True)
    result = {
        "provenance": provenance(sys.argv),
        "config": vars(args),
        "paper": PAPER,
        "torch_threads": torch.get_num_threads(),
        "std_ddof": 1,
        "tasks": {},
    }
    old = json.loads(out.read_text()) if out.is_file() else {}
    model = load_model(args.model)
    sweep_all = tuple(int(s) for s in args.sweep.split(",") if s.strip())
    big = set(args.big_sweep_tasks.split(","))
    tasks = args.tasks.split(",")
    contexts = {}
    if args.only_sweeps:
        result["tasks"] = old["tasks"]
        result["methods_provenance"] = old.get("methods_provenance", old["provenance"])
        result["config"] = {**old["config"], "sweeps": vars(args)}
    # 1. every method on every task, both code SAEs (saved after each task)
    for task in tasks:
        t0 = time.perf_counter()
        gt = load_ground_truth(fixture_path(task), model=args.model)
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
            variants={
                "paper": ctx["cfg"].with_(flavour="paper"),
                "5ep": ctx["cfg"].with_(epochs=5),
            },
            progress=False,
            shares=SHARES,
        )
        res["ground_truth_command"] = gt["command"]
        res["ground_truth_metrics"] = {"clean": gt["clean_metric"], "corrupt": gt["corrupt_metric"]}
        res["head_vector_norms"] = _head_vector_norms(ctx)
        res["bench_seconds"] = time.perf_counter() - t0
        if not args.drop_sweeps:
            _keep_sweeps(old, task, res)
        result["tasks"][task] = res
        heatmap_figure(res).write_json(fig_dir / f"{task}_heatmap.json")
        _write(out, result)
        print(f"{task}: methods done in {res['bench_seconds']:.0f} s", flush=True)
    print(render(result), flush=True)
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
                configs = {name: base.with_(l1=l1, normalize=norm)}
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
    print(render(result))
    _write(out, result)


if __name__ == "__main__":
    main()
