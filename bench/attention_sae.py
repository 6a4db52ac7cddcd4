"""Benchmark: attention-output SAEs (hook_z) on SmolLM2 at two layers.

For each layer: train a TopK SAE on ``blocks.L.attn.hook_z`` (d_in = 9 heads x 64 = 576) with the
real trainer (live capture, stdlib train split), evaluate it on held-out tokens (FVU, L0, dead
fraction, spliced CE loss recovered, KL), then analyse it: weight-based head attribution (share of
each feature's decoder norm per head: histogram, features dominated per head), the automated
head-role study (fraction of polysemantic heads, see ``saes.analysis.head_roles``), and the
induction-feature search on repeated random tokens (which heads, how many features, short- vs
long-prefix). Layer 17 holds SmolLM2's strongest induction heads (17.3-17.5, 18.6-18.7 by induction
score); layer 5 has none (a negative control for the search).

Prints a table, saves bench/results/attention_sae.json and attention_sae.html (plotly).

    python -m bench.attention_sae [--layers 5 17] [--tokens 245760] [--d-sae 2304] [--k 32]
    python -m bench.attention_sae --quick      # smoke run, well under a minute on a quiet machine
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import time
from pathlib import Path

import torch

from bench._markdown import NM, bullets, fix, get, join_nonempty, num, para, pct, span, table
from bench._provenance import renderer
from interp.atomic_files import atomic_write_json
from interp.data import token_windows
from interp.hooks import head_layout
from interp.models import load_model
from saes.analysis.attention_heads import dfa_head_attribution, head_attribution
from saes.analysis.head_roles import head_roles
from saes.analysis.induction import (
    InductionSearchConfig,
    find_induction_features,
    format_induction_report,
)
from saes.artifacts import load_sae
from saes.headline import HEADLINE
from saes.rundir import RunDir
from saes.training.config import RunConfig
from saes.training.loop import train

TITLE = "Attention-output SAEs"  # its name in the docs (python -m bench.report)

ROOT = Path(__file__).resolve().parent.parent


def run_layer(model, layer: int, args) -> dict:
    hook = f"blocks.{layer}.attn.hook_z"
    out_dir = ROOT / "runs" / f"bench-attn{'-quick' if args.quick else ''}-L{layer}"
    cfg = RunConfig(
        data={
            "model": "smollm2-135m",
            "hook": hook,
            "train_tokens": args.tokens,
            "batch_tokens": args.batch_tokens,
            "buffer_tokens": max(args.batch_tokens, min(2**16, args.tokens)),
        },
        sae={"d_sae": args.d_sae, "k": args.k},
        optim={"warmup_steps": min(50, args.tokens // args.batch_tokens // 4)},
        log={"out_dir": str(out_dir), "checkpoint_every_tokens": 10**9},
        eval={"tokens": args.eval_tokens, "ce_windows": args.ce_windows},
    )
    t0 = time.perf_counter()
    if args.analyse_only:  # reuse the trained run folder (and the training time measured then)
        if not RunDir(out_dir).metrics_path.exists():
            raise FileNotFoundError(f"--analyse-only: {out_dir} has no trained, evaluated SAE")
        t_train = (
            args.previous.get(layer, {}).get("seconds", {}).get("train_and_eval", float("nan"))
        )
    else:
        if out_dir.exists():
            shutil.rmtree(out_dir)
        train(cfg, progress=not args.quiet, model=model)
        t_train = time.perf_counter() - t0
    metrics = RunDir(out_dir).metrics(required=True)
    sae = load_sae(out_dir)
    layout = head_layout(model, hook)

    t1 = time.perf_counter()
    windows = torch.stack(
        [
            w
            for _, w in zip(
                range(args.role_windows),
                token_windows(
                    model.tokenizer, source="stdlib", context_size=128, split="validation", seed=1
                ),
            )
        ]
    )
    roles = head_roles(model, sae, windows, layout=layout, progress=not args.quiet)
    attribution = head_attribution(sae, layout, alive=roles.alive)  # features active on the windows
    dfa_attr = dfa_head_attribution(model, sae, windows, layout=layout)
    dfa_roles = head_roles(model, sae, windows, layout=layout, attribution=dfa_attr)
    t_roles = time.perf_counter() - t1

    t2 = time.perf_counter()
    icfg = InductionSearchConfig(n_sequences=args.n_sequences, seq_len=args.seq_len, seed=0)
    report = find_induction_features(model, sae, icfg, layout=layout, progress=not args.quiet)
    t_ind = time.perf_counter() - t2
    print(format_induction_report(report, max_rows=10))
    rep = report.to_dict()
    return {
        "layer": layer,
        "hook": hook,
        "layout": layout.to_metadata(),
        "metrics": {
            k: metrics.get(k)
            for k in (
                "fvu",
                "explained_variance",
                "l0_mean",
                "dead_fraction",
                "dense_fraction",
                "cosine_mean",
                "ce_clean",
                "ce_spliced",
                "ce_zero_ablated",
                "ce_loss_recovered",
                "kl_div",
                "train_tokens_per_s",
                "n_tokens",
            )
        },
        "density_hist": metrics.get("feature_density_log10_hist", {}),
        "head_attribution": attribution.summary(),
        "head_attribution_dfa": dfa_attr.summary(),
        "polysemantic": {
            "fraction": roles.fraction_polysemantic,
            "per_head": roles.polysemantic,
            "roles_per_head": roles.head_roles,
            "rule": roles.rule,
            "top_features": roles.head_top_features,
        },
        "polysemantic_dfa": {
            "fraction": dfa_roles.fraction_polysemantic,
            "per_head": dfa_roles.polysemantic,
            "roles_per_head": dfa_roles.head_roles,
            "rule": dfa_roles.rule,
            "top_features": dfa_roles.head_top_features,
        },
        "induction": {
            k: rep[k]
            for k in (
                "n_induction_features",
                "n_short_prefix",
                "n_long_prefix",
                "n_prefix_undetermined",
                "n_candidates",
                "features_per_head",
                "kinds_per_head",
                "head_induction_score",
                "head_kind",
                "head_attention_by_prefix",
                "config",
            )
        },
        "induction_features": rep["features"][:50],
        "seconds": {"train_and_eval": t_train, "roles": t_roles, "induction": t_ind},
    }


def figure(results: list[dict], path: Path) -> None:
    from plotly.subplots import make_subplots

    n = len(results)
    titles = []
    for r in results:
        titles += [
            f"L{r['layer']}: max head share per feature",
            f"L{r['layer']}: features dominated per head",
            f"L{r['layer']}: head induction score",
            f"L{r['layer']}: induction features per head",
            f"L{r['layer']}: attention to source vs prefix length",
        ]
    fig = make_subplots(rows=n, cols=5, subplot_titles=titles)
    for i, r in enumerate(results, start=1):
        ha, ind = r["head_attribution"], r["induction"]
        edges = [j / 20 for j in range(21)]
        centres = [(a + b) / 2 for a, b in zip(edges, edges[1:])]
        hd = r["head_attribution_dfa"]
        fig.add_bar(
            x=centres,
            y=ha["max_share_hist"],
            name="by decoder norm",
            row=i,
            col=1,
            showlegend=i == 1,
            marker_color="#636efa",
        )
        fig.add_bar(
            x=centres,
            y=hd["max_share_hist"],
            name="by DFA on text",
            row=i,
            col=1,
            showlegend=i == 1,
            marker_color="#ef553b",
        )
        heads = [str(h) for h in range(len(ha["features_dominated"]))]
        fig.add_bar(
            x=heads,
            y=ha["features_dominated"],
            row=i,
            col=2,
            showlegend=False,
            marker_color="#636efa",
        )
        fig.add_bar(
            x=heads,
            y=hd["features_dominated"],
            row=i,
            col=2,
            showlegend=False,
            marker_color="#ef553b",
        )
        fig.add_bar(x=heads, y=ind["head_induction_score"], row=i, col=3, showlegend=False)
        fig.add_bar(x=heads, y=ind["features_per_head"], row=i, col=4, showlegend=False)
        qs = sorted(ind["head_attention_by_prefix"], key=int)
        for h, score in enumerate(ind["head_induction_score"]):
            if score >= 0.1:
                fig.add_scatter(
                    x=[int(q) for q in qs],
                    y=[ind["head_attention_by_prefix"][q][h] for q in qs],
                    name=f"L{r['layer']}H{h} ({ind['head_kind'][h]})",
                    mode="lines+markers",
                    row=i,
                    col=5,
                )
    fig.update_layout(
        title="Attention-output SAEs on SmolLM2 (hook_z, 9 query heads / 3 KV heads)",
        height=380 * n,
        width=1600,
    )
    fig.write_html(path, include_plotlyjs="cdn")


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--layers", type=int, nargs="+", default=[5, 17])
    ap.add_argument("--tokens", type=int, default=245_760)
    ap.add_argument("--d-sae", type=int, default=2304)
    ap.add_argument("--k", type=int, default=32)
    ap.add_argument("--batch-tokens", type=int, default=4096)
    ap.add_argument("--eval-tokens", type=int, default=16_384)
    ap.add_argument("--ce-windows", type=int, default=16)
    ap.add_argument("--role-windows", type=int, default=24)
    ap.add_argument("--n-sequences", type=int, default=32)
    ap.add_argument("--seq-len", type=int, default=48)
    ap.add_argument("--quick", action="store_true", help="smoke run: one layer, few tokens")
    ap.add_argument("--quiet", action="store_true")
    ap.add_argument(
        "--analyse-only",
        action="store_true",
        help="reuse the trained run folders runs/bench-attn-L*; redo the analyses only",
    )
    ap.add_argument("--out", type=Path, default=ROOT / "bench" / "results" / "attention_sae.json")
    args = ap.parse_args()
    if args.quick:
        args.layers, args.tokens, args.d_sae, args.k = [3], 16_384, 576, 16
        args.eval_tokens, args.ce_windows, args.role_windows, args.n_sequences, args.seq_len = (
            2048,
            2,
            4,
            4,
            24,
        )
        if args.out == ap.get_default("out"):
            args.out = args.out.with_name("attention_sae_quick.json")
    args.previous, previous_wall = {}, None
    if args.analyse_only and args.out.exists():
        prev = json.loads(args.out.read_text())
        args.previous = {r["layer"]: r for r in prev.get("layers", [])}
        previous_wall = prev.get("training_run_wall_s", prev.get("wall_s"))
    torch.set_num_threads(max(1, min(2, os.cpu_count() or 1)))
    t0 = time.perf_counter()
    model = load_model("smollm2-135m")
    results = [run_layer(model, layer, args) for layer in args.layers]
    wall = time.perf_counter() - t0
    print()
    print(
        f"| layer | {' | '.join(h.label for h in HEADLINE)} | KL | effective heads per feature: weights / DFA "
        "| single-head (>= 0.9) features by DFA | polysemantic heads by DFA "
        "| induction features (short / long) | heads behind them (features) |"
    )
    print("|---|---|---|---|---|---|---|---|---|---|---|")
    for r in results:
        m, ind, pd = r["metrics"], r["induction"], r["polysemantic_dfa"]
        heads = ", ".join(f"H{h} ({c})" for h, c in enumerate(ind["features_per_head"]) if c) or "-"
        print(
            f"| {r['layer']} | {' | '.join(h.format(m.get(h.name)) for h in HEADLINE)} | "
            f"{m['kl_div']:.3f} | "
            f"{r['head_attribution']['mean_effective_heads']:.2f} / {r['head_attribution_dfa']['mean_effective_heads']:.2f} | "
            f"{r['head_attribution_dfa']['fraction_single_head_0.9']:.1%} | "
            f"{pd['fraction']:.0%} ({sum(pd['per_head'])}/{len(pd['per_head'])}) | "
            f"{ind['n_induction_features']} ({ind['n_short_prefix']} / {ind['n_long_prefix']}) | {heads} |"
        )
    result = {
        "bench": "attention_sae",
        "model": "smollm2-135m",
        "quick": args.quick,
        "config": {k: v for k, v in vars(args).items() if k not in ("out", "previous")}
        | {"out": str(args.out)},
        "wall_s": wall,
        "training_run_wall_s": previous_wall if args.analyse_only else wall,
        "torch_threads": torch.get_num_threads(),
        "cpu_count": os.cpu_count(),
        "load_avg_at_end": os.getloadavg(),
        "layers": results,
        "note": "2 CPU cores shared with other jobs; wall times include contention",
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_json(args.out, result)
    figure(results, args.out.with_suffix(".html"))
    print(f"saved {args.out} and {args.out.with_suffix('.html')} ({wall:.0f} s)")


# ------------------------------------------------------------------------------------------------
# rendering: bench/results/attention_sae.json as markdown (python -m bench.report; see bench/_provenance.py)
# ------------------------------------------------------------------------------------------------
def _heads(per_head, fmt=lambda h, v: f"H{h} ({v})") -> str:
    out = [fmt(h, v) for h, v in enumerate(per_head or []) if v]
    return ", ".join(out) if out else "-"


# bench/results/attention_sae.json predates recorded provenance: the command that measured it
@renderer("python bench/attention_sae.py")
def render(d: dict) -> str:
    c = d.get("config") or {}
    layers = [L for L in d.get("layers") or [] if isinstance(L, dict)]
    hooks = ", ".join(f"`{L.get('hook', NM)}`" for L in layers) or NM
    setup = para(
        f"SmolLM2 {hooks}. Per layer: TopK, "
        f"d_sae = {num(c.get('d_sae'))}, k = {num(c.get('k'))}, {num(c.get('tokens'))} live-captured stdlib tokens "
        f"(batches of {num(c.get('batch_tokens'))}); held-out FVU / L0 / dead on {num(c.get('eval_tokens'))} "
        f"validation tokens, spliced CE on {num(c.get('ce_windows'))} windows; head roles on "
        f"{num(c.get('role_windows'))} validation windows; the induction search on {num(c.get('n_sequences'))} "
        f"repeated random sequences ({num(c.get('seq_len'))} tokens, repeated once)."
    )
    header = [
        "layer",
        *(h.label for h in HEADLINE),
        "KL",
        "effective heads per feature: weights / DFA",
        "polysemantic heads (DFA roles)",
        "induction features (short / long prefix)",
        "heads behind them (features)",
    ]
    rows, notes = [], []
    for L in layers:
        m, ind, poly = (
            L.get("metrics") or {},
            L.get("induction") or {},
            L.get("polysemantic_dfa") or {},
        )
        per_head = poly.get("per_head") or []
        n_ind = ind.get("n_induction_features")
        ind_cell = (
            f"{num(n_ind)} ({num(ind.get('n_short_prefix'))} / {num(ind.get('n_long_prefix'))}) of "
            f"{num(ind.get('n_candidates'))} candidates"
            if n_ind
            else f"0 of {num(ind.get('n_candidates'))} candidates"
            if n_ind == 0
            else NM
        )
        rows.append(
            [
                num(L.get("layer")),
                *(h.format(m.get(h.name)) for h in HEADLINE),
                fix(m.get("kl_div")),
                (
                    f"{fix(get(L, 'head_attribution', 'mean_effective_heads'), 2)} / "
                    f"{fix(get(L, 'head_attribution_dfa', 'mean_effective_heads'), 2)}"
                ),
                f"{pct(poly.get('fraction'))} ({sum(map(bool, per_head))}/{len(per_head)})"
                if per_head
                else NM,
                ind_cell,
                _heads(ind.get("features_per_head")),
            ]
        )
        notes.append(_attention_layer_note(L))
    secs = "; ".join(
        f"layer {L.get('layer')}: "
        + ", ".join(
            f"{k.replace('_', ' ')} {num(v)} s" for k, v in (L.get("seconds") or {}).items()
        )
        for L in layers
    )
    notes.append(
        f"Time: {num(d.get('wall_s'))} s for training, evaluation and analyses of all layers ({secs})."
    )
    return join_nonempty(setup, table(header, rows), bullets(notes))


def _attention_layer_note(L: dict) -> str:
    ind, poly = L.get("induction") or {}, L.get("polysemantic_dfa") or {}
    score = ind.get("head_induction_score") or []
    per_head = ind.get("features_per_head") or []
    behind = [h for h, n in enumerate(per_head) if n]
    parts = []
    if score and behind:
        others = [s for h, s in enumerate(score) if h not in behind]
        parts.append(
            "induction score of the heads behind its induction features: "
            + ", ".join(f"H{h} {fix(score[h], 2)}" for h in behind if h < len(score))
            + (f" (every other head <= {fix(max(others), 2)})" if others else "")
        )
    elif score:
        parts.append(
            f"no induction features; the highest head induction score is {fix(max(score), 2)}"
        )
    kind = ind.get("head_kind") or []
    if behind and kind:
        parts.append(
            "by their attention: "
            + ", ".join(f"H{h} {get(kind, h) or 'undetermined'}" for h in behind)
        )
    att = ind.get("head_attention_by_prefix") or {}
    if behind and "1" in att and "8" in att:
        parts.append(
            "their attention to the source with a 1-token / 8-token matching prefix: "
            + ", ".join(
                f"H{h} {fix(get(att, '1', h), 2)} / {fix(get(att, '8', h), 2)}" for h in behind
            )
        )
    kinds = ind.get("kinds_per_head") or []
    if behind and kinds:
        parts.append(
            "long / short-prefix features per head: "
            + ", ".join(
                f"H{h} {num(get(kinds, h, 'long-prefix'))} / {num(get(kinds, h, 'short-prefix'))}"
                for h in behind
            )
        )
    roles = poly.get("roles_per_head") or []
    if roles:
        top = []
        for h, rc in enumerate(roles):
            if rc:
                n = max(rc.values())
                role = " / ".join(sorted(r for r, c in rc.items() if c == n))  # ties: all of them
                top.append(f"H{h} {role} {n}/{sum(rc.values())}")
        parts.append(
            "most common DFA role among each head's top features: " + (", ".join(top) or "none")
        )
    ha = L.get("head_attribution") or {}
    share = ha.get("mean_max_share")
    if isinstance(share, list) and share:
        parts.append(
            f"weight-based attribution: mean max head share per head {span(share, lambda v: fix(v, 2))}, "
            f"effective heads {fix(ha.get('mean_effective_heads'), 2)} of {len(share)}"
        )
    return f"Layer {L.get('layer')}: " + "; ".join(parts) + "."


if __name__ == "__main__":
    main()
