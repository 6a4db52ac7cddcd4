"""One task, every method, judged against the ground truth: the discrete-code method (node and
edge scores, one SAE per seed), attribution patching, random scores and the activation-patching
effects themselves (not a result: the circuit is a prefix of their order, so on the ground
truth's own prompts their AUC is 1 by construction). With ``shares``, every method is also
judged against the circuit at each of those shares of the metric (read off the ground truth's
prefix curve), from the same scores. Spreads over seeds are sample standard deviations (ddof=1).

The prompts are fixed (``build_task(task, model, n_prompts, seed=0)``); a seed draws the SAE's
initialisation and its training prompts, as the paper's trials do. Times: the method's includes
the forward that reads the head vectors (shared by the seeds, counted in each) and its SAE
training; attribution's is its forward + backward + corrupt forward; the ground truth's comes from
its fixture.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch

from circuits.discrete_codes import (
    CodeSAEConfig,
    best_balanced_f1,
    head_labels,
    head_vectors,
    heads_to_mask,
    roc_auc,
    run_method,
)
from circuits.ground_truth import circuit_at_share, load_ground_truth
from circuits.patching import attribution_scores, random_scores
from circuits.tasks import TaskName, build_task

__all__ = [
    "DOCSTRING_L1",
    "auc_vs_n_train",
    "auc_vs_sae_config",
    "evaluate",
    "prepare",
    "run_experiment",
    "sae_config_for",
]

DOCSTRING_L1 = 0.05  # the paper's lambda for docstring (0.02 for the others)


def sae_config_for(task: str, flavour: str = "ours") -> CodeSAEConfig:
    """The paper's SAE hyperparameters for ``task`` (lambda 0.05 on docstring, else 0.02)."""
    return CodeSAEConfig(l1=DOCSTRING_L1 if task == "docstring" else 0.02, flavour=flavour)


def evaluate(scores: np.ndarray, truth: np.ndarray) -> dict[str, float]:
    f1, _ = best_balanced_f1(scores, truth)
    return {"auc": roc_auc(scores, truth), "f1": f1}


def sample_std(values) -> float | None:
    """The sample standard deviation (ddof=1); None for fewer than two values."""
    v = np.asarray(values, dtype=float)
    return float(v.std(ddof=1)) if v.size >= 2 else None


def _summary(rows: list[dict[str, float]]) -> dict[str, float | None]:
    out: dict[str, float | None] = {"n": len(rows)}
    for key in ("auc", "f1", "seconds"):
        v = np.array([r[key] for r in rows], dtype=float)
        out[f"{key}_mean"] = float(v.mean())
        out[f"{key}_std"] = sample_std(v)
    return out


def prepare(
    model, task: TaskName, *, model_name: str, n_prompts: int, gt: dict[str, Any]
) -> dict[str, Any]:
    """The fixed prompts, their head vectors (timed) and the ground-truth mask."""
    nl, nh = model.cfg.n_layers, model.cfg.n_heads
    if (gt["n_layers"], gt["n_heads"]) != (nl, nh):
        raise ValueError(
            f"the ground truth is for {gt['n_layers']} x {gt['n_heads']} heads, the model has "
            f"{nl} x {nh}"
        )
    data = build_task(task, model, n_prompts, seed=0)
    t0 = time.perf_counter()
    xp = head_vectors(model, data.pos.to(model.cfg.device))
    xn = head_vectors(model, data.neg.to(model.cfg.device))
    return {
        "task": task,
        "model_name": model_name,
        "gt": gt,
        "data": data,
        "xp": xp,
        "xn": xn,
        "t_vec": time.perf_counter() - t0,
        "truth": heads_to_mask(gt["circuit"], nl, nh),
        "cfg": sae_config_for(task),
    }


def _point_rows(point: dict[str, Any] | None) -> list[dict[str, float]]:
    """The per-seed rows of a stored sweep point (seeds 0, 1, ... in order). A point saved before
    rows were kept holds only means: with one seed its means are that seed's row; with more, the
    seeds cannot be recovered, nor can a seed whose point lacks a score, and are recomputed."""
    if not point:
        return []
    if "per_seed" in point:
        return list(point["per_seed"])
    if point.get("seeds") == 1 and all(f"{k}_mean" in point for k in ("node", "edge", "silent")):
        return [{k: point[f"{k}_mean"] for k in ("node", "edge", "silent")} | {"seed": 0}]
    return []


def _seed_stats(
    ctx: dict[str, Any],
    n: int,
    cfg: CodeSAEConfig,
    n_seeds: int,
    done: dict[str, Any] | None = None,
    on_seed: Callable[[dict[str, Any]], None] | None = None,
) -> dict[str, Any]:
    """Node and edge AUC (mean, std over seeds) and the share of silent head vectors of the
    method with ``n`` training prompts and SAE config ``cfg``, with each seed's row.

    ``done``: the point as stored by an earlier (perhaps interrupted) run; its seeds are kept and
    only the missing ones run, so a seed costs its minutes once. ``on_seed`` receives the point
    after each seed (to save it)."""
    rows = _point_rows(done)[:n_seeds]
    old = done or {}
    for seed in range(len(rows), n_seeds):
        r = run_method(ctx["xp"], ctx["xn"], n_train=n, sae_cfg=cfg, seed=seed)
        rows.append(
            {
                "seed": seed,
                "node": roc_auc(r.node, ctx["truth"]),
                "edge": roc_auc(r.edge, ctx["truth"]),
                "silent": r.silent,
                "sae_seconds": r.seconds["sae"],
            }
        )
        if on_seed is not None:
            on_seed(_summarise_seeds(ctx, n, rows, old))
    return _summarise_seeds(ctx, n, rows, old)


def _summarise_seeds(
    ctx: dict[str, Any], n: int, rows: list[dict[str, Any]], old: dict[str, Any]
) -> dict[str, Any]:
    out = {**old, "n_train_used": min(n, 2 * len(ctx["data"])), "seeds": len(rows)}
    out["per_seed"] = rows
    for key in ("node", "edge", "silent"):
        v = np.array([row[key] for row in rows])
        out[f"{key}_mean"], out[f"{key}_std"] = float(v.mean()), sample_std(v)
    out["std_ddof"] = 1
    timed = [row["sae_seconds"] for row in rows if "sae_seconds" in row]
    if timed:
        out["sae_seconds_last"] = timed[-1]
    return out


def auc_vs_n_train(
    ctx: dict[str, Any],
    sizes: tuple[int, ...],
    seeds: int | dict[int, int],
    have: dict[str, Any] | None = None,
    on_seed: Callable[[str, dict[str, Any]], None] | None = None,
) -> dict[str, Any]:
    """Node and edge AUC (mean, std over seeds) for each number of SAE training prompts.

    ``have``: points stored by an earlier run, keyed by ``str(n)``; their seeds are reused.
    ``on_seed(key, point)`` is called after every new seed."""
    have = have or {}
    out = {}
    for n in sizes:
        k = seeds.get(n, 1) if isinstance(seeds, dict) else seeds
        save = None if on_seed is None else (lambda p, key=str(n): on_seed(key, p))
        out[str(n)] = _seed_stats(ctx, n, ctx["cfg"], k, done=have.get(str(n)), on_seed=save)
    return out


def auc_vs_sae_config(
    ctx: dict[str, Any],
    configs: dict[str, CodeSAEConfig],
    n_train: int,
    seeds: int,
    have: dict[str, Any] | None = None,
    on_seed: Callable[[str, dict[str, Any]], None] | None = None,
) -> dict[str, Any]:
    """Node and edge AUC (mean, std over seeds) and the silent share for each SAE config (e.g.
    a sweep of lambda, with and without normalised inputs), at ``n_train`` prompts. ``have`` and
    ``on_seed`` as in :func:`auc_vs_n_train`, keyed by config name."""
    have = have or {}
    out = {}
    for name, cfg in configs.items():
        tag = {"l1": cfg.l1, "normalize": cfg.normalize}
        save = None if on_seed is None else (lambda p, key=name, t=tag: on_seed(key, {**t, **p}))
        point = _seed_stats(ctx, n_train, cfg, seeds, done=have.get(name), on_seed=save)
        out[name] = {**tag, **point}
    return out


def _share_table(
    gt: dict[str, Any], shares, scores: dict[str, list[np.ndarray]], nl: int, nh: int
) -> dict[str, Any]:
    """Every method's ROC AUC against the circuit at each share (read off ``gt``'s curve), from
    per-seed score vectors ``scores[method]``: per share the circuit size and per method the mean,
    sample std and per-seed AUCs; a share whose circuit is every head (or none reached it) has no
    AUC (``auc`` None, with the reason)."""
    out: dict[str, Any] = {}
    for share in shares:
        c = circuit_at_share(gt, share)
        truth = heads_to_mask(c["circuit"], nl, nh)
        point: dict[str, Any] = {
            "k": c["k"],
            "joint_effect": c["joint_effect"],
            "reached": c["reached"],
            "methods": {},
        }
        if truth.all() or not c["reached"]:
            point["no_auc"] = (
                "no prefix reaches the share"
                if not c["reached"]
                else "the circuit is every head: no head is left out to rank against"
            )
        else:
            for name, per_seed in scores.items():
                aucs = [roc_auc(v, truth) for v in per_seed]
                point["methods"][name] = {
                    "auc_mean": float(np.mean(aucs)),
                    "auc_std": sample_std(aucs),
                    "per_seed": aucs,
                }
        out[f"{share:g}"] = point
    return out


def run_experiment(
    model,
    task: TaskName,
    *,
    model_name: str,
    seeds: int = 5,
    n_prompts: int = 50,
    n_train: int = 10,
    ground_truth_file: Path | None = None,
    gt: dict[str, Any] | None = None,
    ctx: dict[str, Any] | None = None,
    variants: dict[str, CodeSAEConfig] | None = None,
    progress: bool = True,
    sae_cfg: CodeSAEConfig | None = None,
    shares: tuple[float, ...] = (),
) -> dict[str, Any]:
    """Every method on ``task`` against the ground truth (see the module docstring).
    ``variants``: further SAE configs, scored as rows ``node_<name>`` / ``edge_<name>``;
    ``sae_cfg``: the method's SAE (default: the paper's hyperparameters, :func:`sae_config_for`);
    ``ground_truth_file``: a record made on ``model_name`` (else a ValueError naming both
    models); ``shares``: also score every method against the circuit at each share."""
    if ctx is None:
        if gt is None:
            if ground_truth_file is None:
                raise ValueError("run_experiment needs gt, ground_truth_file or ctx")
            gt = load_ground_truth(ground_truth_file, model=model_name)
        if gt["model"] != model_name or gt["task"] != task:
            raise ValueError(
                f"the ground truth is for {gt['task']!r} on {gt['model']!r}, not {task!r} on "
                f"{model_name!r}"
            )
        ctx = prepare(model, task, model_name=model_name, n_prompts=n_prompts, gt=gt)
    gt, data, xp, xn, t_vec, truth, cfg = (
        ctx[k] for k in ("gt", "data", "xp", "xn", "t_vec", "truth", "cfg")
    )
    cfg = sae_cfg or cfg
    nl, nh = model.cfg.n_layers, model.cfg.n_heads
    configs = {"": cfg, **{f"_{name}": v for name, v in (variants or {}).items()}}
    rows: dict[str, list[dict[str, float]]] = {}
    per_seed_scores: dict[str, list[np.ndarray]] = {}
    for suffix, c in configs.items():
        for kind in ("node", "edge"):
            rows[kind + suffix], per_seed_scores[kind + suffix] = [], []
        for seed in range(seeds):
            r = run_method(
                xp, xn, n_train=n_train, sae_cfg=c, seed=seed, progress=progress and not suffix
            )
            t_method = t_vec + sum(r.seconds.values())
            for kind, other in (("node", "edge"), ("edge", "node")):
                score = getattr(r, kind)
                rows[kind + suffix].append(
                    {**evaluate(score, truth), "seconds": t_method - r.seconds[other]}
                )
                per_seed_scores[kind + suffix].append(score)
    per_seed_scores["random"] = [random_scores(nl * nh, seed) for seed in range(seeds)]
    rows["random"] = [{**evaluate(v, truth), "seconds": 0.0} for v in per_seed_scores["random"]]
    attr = attribution_scores(model, data)
    rows["attribution"] = [{**evaluate(attr["scores"], truth), "seconds": attr["seconds"]}]
    per_seed_scores["attribution"] = [attr["scores"]]
    effects = np.array(gt["effects"])
    rows["patching"] = [{**evaluate(effects, truth), "seconds": gt["seconds"]["total"]}]
    per_seed_scores["patching"] = [effects]
    return {
        "task": task,
        "model": model_name,
        "n_layers": nl,
        "n_heads": nh,
        "n_prompts": len(data),
        "n_train": n_train,
        "seeds": seeds,
        "sae": cfg.model_dump(),
        "variants": {k: v.model_dump() for k, v in (variants or {}).items()},
        "counts": data.counts,
        "head_vector_seconds": t_vec,
        "ground_truth": {
            k: gt[k] for k in ("circuit", "k", "joint_effect", "share", "mode", "n_prompts")
        },
        "ground_truth_seconds": gt["seconds"]["total"],
        "labels": head_labels(nl, nh),
        "scores": {
            "node": np.mean(per_seed_scores["node"], 0).tolist(),
            "edge": np.mean(per_seed_scores["edge"], 0).tolist(),
            "attribution": attr["scores"].tolist(),
            "patching": effects.tolist(),
        },
        "truth": truth.tolist(),
        "per_seed": rows,
        "summary": {name: _summary(v) for name, v in rows.items()},
        "by_share": _share_table(gt, shares, per_seed_scores, nl, nh) if shares else {},
        "std_ddof": 1,
        "auc_vs_n_train": {},
        "torch_threads": torch.get_num_threads(),
    }
