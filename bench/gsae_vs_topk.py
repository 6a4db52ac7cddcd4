"""Benchmark: gradient TopK (g-SAE) vs TopK on SmolLM2, same tokens, k, width and steps.

1. Capture cost: tokens/s of capture at the hook without gradients (stop_at_layer) and with
   dL/dx (full forward + next-token CE + backward to the hook).
2. Training activations *with* gradients are captured once into an on-disk activation cache
   (``runs/bench-gsae-cache``, reused by reruns), held-out ones likewise.
3. TopK and g-SAE at a few beta values train on the same batches in the same order. Beta is given
   as ``c / median|d_i . g_s|`` (c in --beta-c), so that c = 1 makes the gradient term as large as
   the activation term for a typical latent; the absolute beta is reported too.
4. Each SAE is evaluated on held-out tokens: FVU, L0, dead fraction, and CE loss recovered / KL
   with the SAE spliced in; g-SAEs in both inference modes (with dL/dx, and without: plain TopK
   on the same weights).
5. Steering (saes.analysis.steering): the same number of randomly chosen live latents per SAE,
   the same prompts and alphas; KL from clean and the target tokens' log-prob change per unit alpha.

Prints a table, saves bench/results/gsae_vs_topk.json and a plotly figure gsae_vs_topk.html.

    python -m bench.gsae_vs_topk [--tokens 49152] [--quick]
"""

from __future__ import annotations

import argparse
import json
import math
import platform
import time
from pathlib import Path

import torch

from bench._markdown import (
    FASTER,
    NM,
    criterion_one_run,
    fix,
    isnum,
    join_nonempty,
    num,
    para,
    pct,
    ratio,
    sci,
    span,
    table,
    times,
    verdict_one_run,
)
from bench._provenance import renderer
from interp.activation_files import ActivationFiles, ActivationFilesWriter
from interp.activations import ActivationCapture
from interp.data import token_windows
from interp.models import load_model
from saes.analysis.steering import mean_activation_norm, steer_latents, summarize
from saes.config import SAEConfig
from saes.evaluation.evaluate import reconstruction_metrics, spliced_metrics
from saes.sae import SAE
from saes.training.geometric_median import geometric_median
from saes.training.loop import TrainStep, default_lr

TITLE = "g-SAE vs TopK"  # its name in the docs (python -m bench.report)


def capture_speed(
    model, hook: str, windows: torch.Tensor, with_grads: bool, reps: int = 2
) -> float:
    cap = ActivationCapture(model, [hook], with_grads=with_grads)
    cap(windows[:2])  # warm-up
    t0 = time.perf_counter()
    n = sum(len(cap(windows)) for _ in range(reps))
    return n / (time.perf_counter() - t0)


def cached(
    model, hook: str, folder: Path, split: str, tokens: int, context: int
) -> ActivationFiles:
    """Activations + dL/dx for ``tokens`` tokens of ``split``, cached on disk (resumable)."""
    cap = ActivationCapture(model, [hook], with_grads=True)
    writer = ActivationFilesWriter(
        folder,
        cap,
        {
            "model": "smollm2-135m",
            "source": "stdlib",
            "split": split,
            "seed": 0,
            "context_size": context,
        },
        windows_per_shard=32,
    )
    windows = token_windows(
        model.tokenizer, source="stdlib", context_size=context, split=split, seed=0
    )
    writer.write(windows, batch_windows=8, max_windows=-(-tokens // (context - 1)), progress=True)
    return ActivationFiles(folder)


def load_all(cache: ActivationFiles, hook: str) -> tuple[torch.Tensor, torch.Tensor]:
    parts = list(cache.batches([hook], with_grads=True))
    return torch.cat([p.acts[hook] for p in parts]).clone(), torch.cat(
        [p.grads[hook] for p in parts]
    ).clone()


def train_sae(
    cfg: SAEConfig,
    x: torch.Tensor,
    g: torch.Tensor,
    batch: int,
    epochs: int,
    lr: float,
    scale: float,
    median: torch.Tensor,
) -> tuple[SAE, float]:
    sae = SAE(cfg, seed=0)
    sae.cfg.input_scale = scale
    with torch.no_grad():
        sae.b_dec.copy_(median)
    n_steps = epochs * (x.shape[0] // batch)
    step = TrainStep(
        sae,
        lr=lr,
        total_steps=n_steps,
        warmup_steps=max(1, n_steps // 20),
        decay_fraction=0.2,
        dead_tokens=max(batch, x.shape[0] // 2),
    )
    gen = torch.Generator().manual_seed(0)
    t0 = time.perf_counter()
    for _ in range(epochs):
        order = torch.randperm(x.shape[0], generator=gen)
        for i in range(x.shape[0] // batch):
            idx = order[i * batch : (i + 1) * batch]
            step(x[idx], g[idx] if sae.variant.needs_grads else None)
    return sae, n_steps * batch / (time.perf_counter() - t0)


def pick_latents(sae: SAE, x: torch.Tensor, n: int, seed: int = 0) -> list[int]:
    """``n`` random latents among those firing on between 0.1% and 10% of held-out tokens."""
    with torch.no_grad():
        density = (sae.encode(x) > 0).float().mean(0)
    pool = ((density >= 1e-3) & (density <= 0.1)).nonzero().squeeze(-1)
    if len(pool) < n:
        pool = (density > 0).nonzero().squeeze(-1)
    perm = torch.randperm(len(pool), generator=torch.Generator().manual_seed(seed))
    return sorted(pool[perm[:n]].tolist())


def figure(rows: list[dict], path: Path) -> None:
    from plotly.subplots import make_subplots

    names = [r["name"] for r in rows]
    fig = make_subplots(
        rows=1,
        cols=4,
        subplot_titles=(
            "FVU (held-out)",
            "CE loss recovered",
            "KL to clean",
            "steering: target d logp / KL",
        ),
    )
    for mode, key in (("with dL/dx", ""), ("without", "nograd_")):
        for col, metric in enumerate(("fvu", "ce_loss_recovered", "kl_div"), start=1):
            fig.add_bar(
                x=names,
                y=[r.get(key + metric, r[metric]) for r in rows],
                name=f"{metric} ({mode})",
                row=1,
                col=col,
                showlegend=False,
                marker_opacity=1.0 if key == "" else 0.5,
            )
    fig.add_bar(x=names, y=[r["steer_effect_per_kl"] for r in rows], row=1, col=4, showlegend=False)
    fig.update_layout(
        title="g-SAE vs TopK on SmolLM2 (solid: with gradients; faded: gradient-free mode)",
        barmode="group",
        height=420,
        width=1400,
    )
    fig.write_html(path, include_plotlyjs="cdn")


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--tokens", type=int, default=49_152)
    ap.add_argument("--eval-tokens", type=int, default=4_096)
    ap.add_argument("--ce-windows", type=int, default=16)
    ap.add_argument("--layer", type=int, default=15)
    ap.add_argument("--d-sae", type=int, default=2304)
    ap.add_argument("--k", type=int, default=32)
    ap.add_argument("--batch", type=int, default=1024)
    ap.add_argument("--epochs", type=int, default=4)
    ap.add_argument("--beta-c", type=float, nargs="+", default=[0.3, 1.0, 3.0])
    ap.add_argument("--steer-latents", type=int, default=12)
    ap.add_argument("--steer-prompts", type=int, default=6)
    ap.add_argument("--cache-dir", default="runs/bench-gsae-cache")
    ap.add_argument("--out", default="bench/results/gsae_vs_topk.json")
    ap.add_argument("--quick", action="store_true", help="a smoke run of well under a minute")
    args = ap.parse_args()
    if args.quick:
        args.tokens, args.eval_tokens, args.ce_windows, args.epochs = 2048, 512, 2, 1
        args.batch, args.d_sae, args.beta_c, args.steer_latents, args.steer_prompts = (
            256,
            256,
            [1.0],
            2,
            2,
        )
        args.cache_dir, args.out = args.cache_dir + "-quick", "/tmp/gsae_vs_topk_quick.json"
    torch.manual_seed(0)
    context = 128
    hook = f"blocks.{args.layer}.hook_resid_post"
    model = load_model("smollm2-135m")
    t_start = time.perf_counter()

    probe = torch.stack(
        [
            w
            for _, w in zip(
                range(8),
                token_windows(model.tokenizer, context_size=context, split="train", seed=1),
            )
        ]
    )
    cost = {
        "without_grads_tok_s": capture_speed(model, hook, probe, False),
        "with_grads_tok_s": capture_speed(model, hook, probe, True),
    }
    cost["slowdown"] = cost["without_grads_tok_s"] / cost["with_grads_tok_s"]
    print(
        f"capture at {hook}: {cost['without_grads_tok_s']:,.0f} tok/s without grads, "
        f"{cost['with_grads_tok_s']:,.0f} with dL/dx ({cost['slowdown']:.1f}x slower)"
    )

    t0 = time.perf_counter()
    x, g = load_all(
        cached(model, hook, Path(args.cache_dir) / "train", "train", args.tokens, context), hook
    )
    ex, eg = load_all(
        cached(model, hook, Path(args.cache_dir) / "val", "validation", args.eval_tokens, context),
        hook,
    )
    capture_s = time.perf_counter() - t0
    ce_windows = torch.stack(
        [
            w
            for _, w in zip(
                range(args.ce_windows),
                token_windows(model.tokenizer, context_size=context, split="validation", seed=0),
            )
        ]
    )

    sample = x[: min(len(x), 4096)].float()
    scale = (x.shape[-1] ** 0.5) / sample.norm(dim=-1).mean().item()
    median = geometric_median(sample * scale)
    lr = default_lr(args.d_sae)
    base = dict(
        d_in=x.shape[1], d_sae=args.d_sae, k=args.k, hook_name=hook, model_name="smollm2-135m"
    )
    # the typical gradient effect |d_i . g_s| of the latents a freshly initialised SAE selects
    probe_sae = SAE(SAEConfig(**base), seed=0)
    probe_sae.cfg.input_scale = scale
    with torch.no_grad():
        code = probe_sae.encode_sparse(sample[:1024])
        eff = ((g[:1024].float() / scale) @ probe_sae.W_dec.T).abs().gather(1, code.indices)
    median_effect = eff.median().item()
    print(f"median |d_i . g_s| over selected latents at init: {median_effect:.4g}")

    steer_tokens = torch.stack(
        [
            w
            for _, w in zip(
                range(args.steer_prompts),
                token_windows(model.tokenizer, context_size=64, split="validation", seed=3),
            )
        ]
    )
    unit = mean_activation_norm(model, hook, steer_tokens)
    alphas = [0.25 * unit, 0.5 * unit]

    runs = [("topk", SAEConfig(**base), None)]
    runs += [
        (f"gsae c={c:g}", SAEConfig(**base, variant="gtopk", beta=c / median_effect), c)
        for c in args.beta_c
    ]
    rows = []
    for name, cfg, c in runs:
        print(f"training {name} ...")
        sae, tok_s = train_sae(cfg, x, g, args.batch, args.epochs, lr, scale, median)
        sae.eval()
        grad_aware = sae.variant.needs_grads
        row = {
            "name": name,
            "variant": cfg.variant,
            "beta": cfg.beta if grad_aware else None,
            "beta_c": c,
            "train_tokens_per_s": tok_s,
        }
        for prefix, use in (("", grad_aware), ("nograd_", False)):
            if prefix and not grad_aware:
                continue
            m = reconstruction_metrics(sae, ex.split(1024), eg.split(1024) if use else None)
            m.update(spliced_metrics(sae, model, hook, ce_windows, use_grads=use))
            for key in (
                "fvu",
                "l0_mean",
                "dead_fraction",
                "ce_clean",
                "ce_spliced",
                "ce_loss_recovered",
                "kl_div",
            ):
                row[prefix + key] = m[key]
        latents = pick_latents(sae, ex, args.steer_latents)
        steer = steer_latents(model, sae, latents, alphas, steer_tokens, hook=hook)
        s = summarize(steer)
        row.update(
            {
                "steer_effect_per_alpha_unit": s["effect_per_alpha"] * unit,
                "steer_kl_per_alpha_unit": s["kl_per_alpha"] * unit,
                "steer_effect_per_kl": s["effect_per_kl"],
                "steer_latents": latents,
            }
        )
        rows.append(row)
        print(json.dumps({k: v for k, v in row.items() if k != "steer_latents"}, default=str))

    result = {
        "bench": "gsae_vs_topk",
        "model": "smollm2-135m",
        "hook": hook,
        "train_tokens": int(x.shape[0]),
        "epochs": args.epochs,
        "batch_tokens": args.batch,
        "d_sae": args.d_sae,
        "k": args.k,
        "lr": lr,
        "eval_tokens": int(ex.shape[0]),
        "ce_windows": args.ce_windows,
        "context_size": context,
        "median_grad_effect_at_init": median_effect,
        "capture_cost": cost,
        "capture_and_cache_s": capture_s,
        "steering": {
            "alphas_in_units_of_mean_norm": [0.25, 0.5],
            "mean_norm": unit,
            "prompts": args.steer_prompts,
            "prompt_tokens": 64,
            "latents_per_sae": args.steer_latents,
        },
        "rows": rows,
        "wall_s": time.perf_counter() - t_start,
        "machine": {
            "cpu_count": torch.get_num_threads(),
            "platform": platform.platform(),
            "torch": torch.__version__,
        },
    }
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2))
    figure(rows, out.with_suffix(".html"))
    hdr = (
        f"{'sae':<12}{'FVU':>7}{'FVU-ng':>8}{'L0':>6}{'dead':>6}{'CErec':>7}{'CErec-ng':>9}{'KL':>7}{'KL-ng':>7}"
        f"{'steer dlogp/KL':>15}{'tok/s':>8}"
    )
    print(hdr)
    for r in rows:
        print(
            f"{r['name']:<12}{r['fvu']:>7.3f}{r.get('nograd_fvu', r['fvu']):>8.3f}{r['l0_mean']:>6.1f}"
            f"{r['dead_fraction']:>6.2f}{r['ce_loss_recovered']:>7.3f}"
            f"{r.get('nograd_ce_loss_recovered', r['ce_loss_recovered']):>9.3f}{r['kl_div']:>7.3f}"
            f"{r.get('nograd_kl_div', r['kl_div']):>7.3f}{r['steer_effect_per_kl']:>15.3f}"
            f"{r['train_tokens_per_s']:>8,.0f}"
        )
    print(f"saved {out} and {out.with_suffix('.html')} ({result['wall_s']:.0f} s)")


# ------------------------------------------------------------------------------------------------
# rendering: bench/results/gsae_vs_topk.json as markdown (python -m bench.report; see bench/_provenance.py)
# ------------------------------------------------------------------------------------------------
def _gsae_label(r: dict) -> str:
    if r.get("variant") == "topk" or r.get("beta_c") is None:
        return "TopK" if r.get("variant") == "topk" else f"`{r.get('name', NM)}`"
    return f"g-SAE c = {r['beta_c']:g} (beta {fix(r.get('beta'), 1)})"


# bench/results/gsae_vs_topk.json predates recorded provenance: the command that measured it
@renderer("python bench/gsae_vs_topk.py")
def render(d: dict) -> str:
    rows = [r for r in d.get("rows") or [] if isinstance(r, dict)]
    st, cc = d.get("steering") or {}, d.get("capture_cost") or {}
    alphas = " and ".join(f"{a:g}" for a in st.get("alphas_in_units_of_mean_norm") or []) or NM
    setup = para(
        f"SmolLM2 `{d.get('hook', NM)}`, {num(d.get('train_tokens'))} training tokens captured once with dL/dx, "
        f"{num(d.get('epochs'))} epochs of {num(d.get('batch_tokens'))}-token batches, d_sae {num(d.get('d_sae'))}, "
        f"k {num(d.get('k'))}, lr {sci(d.get('lr'))}, the same batches in the same order for every SAE; held out: "
        f"{num(d.get('eval_tokens'))} tokens for reconstruction, {num(d.get('ce_windows'))} windows of "
        f"{num(d.get('context_size'))} for CE/KL. beta = c / median|d_i . g_s| (the median at initialisation is "
        f'{fix(d.get("median_grad_effect_at_init"), 3)}). "ng": the g-SAE\'s gradient-free mode (plain TopK on its '
        f"weights). Steering: {num(st.get('latents_per_sae'))} random live latents per SAE, {num(st.get('prompts'))} "
        f"prompts of {num(st.get('prompt_tokens'))} tokens, alpha = {alphas} mean norms."
    )
    header = [
        "SAE",
        "FVU",
        "FVU ng",
        "L0",
        "dead",
        "CE rec.",
        "CE rec. ng",
        "KL",
        "KL ng",
        "steer d logp / KL",
        "train tok/s",
    ]

    def ng(r, key, fmt):
        return fmt(r.get("nograd_" + key)) if r.get("variant") != "topk" else "-"

    body = [
        [
            _gsae_label(r),
            fix(r.get("fvu")),
            ng(r, "fvu", fix),
            num(r.get("l0_mean")),
            pct(r.get("dead_fraction"), 1),
            fix(r.get("ce_loss_recovered")),
            ng(r, "ce_loss_recovered", fix),
            fix(r.get("kl_div")),
            ng(r, "kl_div", fix),
            fix(r.get("steer_effect_per_kl"), 2),
            num(r.get("train_tokens_per_s")),
        ]
        for r in rows
    ]
    topk = next((r for r in rows if r.get("variant") == "topk"), None)
    gs = [r for r in rows if r.get("variant") == "gtopk"]
    found = []
    if topk and gs:
        fvu_worse = all(isnum(r.get("fvu")) and r["fvu"] > topk.get("fvu", math.inf) for r in gs)
        found.append(
            f"FVU at equal L0: TopK {fix(topk.get('fvu'))}, g-SAEs {span([r.get('fvu') for r in gs], fix)} "
            f"with gradients at inference and {span([r.get('nograd_fvu') for r in gs], fix)} without "
            f"({'every g-SAE is higher' if fvu_worse else 'not every g-SAE is higher'}; beyond the "
            "criterion only where the table above says so)."
        )
        better = [
            r
            for r in gs
            if isnum(r.get("nograd_ce_loss_recovered"))
            and r["nograd_ce_loss_recovered"] > topk.get("ce_loss_recovered", math.inf)
        ]
        found.append(
            "In the gradient-free mode, CE loss recovered above TopK's "
            f"{fix(topk.get('ce_loss_recovered'))}: "
            + (
                ", ".join(
                    f"{_gsae_label(r)} {fix(r['nograd_ce_loss_recovered'])} (KL "
                    f"{fix(r.get('nograd_kl_div'))} vs {fix(topk.get('kl_div'))})"
                    for r in better
                )
                if better
                else "none"
            )
            + "; one run, no spread across seeds measured."
        )
        slow = span(
            [ratio(topk.get("train_tokens_per_s"), r.get("train_tokens_per_s")) for r in gs], times
        )
        found.append(f"A g-SAE trains {slow} slower than TopK here (tokens/s).")
    found.append(
        f"Steering d logp / KL comes from {num(st.get('latents_per_sae'))} latents per SAE in one run "
        "(no per-latent spread recorded)."
    )
    found.append(
        f"Capture cost of the gradients: {num(cc.get('without_grads_tok_s'))} tok/s without dL/dx "
        f"(`stop_at_layer`) vs {num(cc.get('with_grads_tok_s'))} tok/s with it "
        f"({times(cc.get('slowdown'))} slower: the full forward, the unembedding and cross-entropy, and "
        "the backward down to the hook)."
    )
    found.append(
        f"The benchmark took {num(d.get('wall_s'))} s, of which {num(d.get('capture_and_cache_s'), 1)} s "
        "capture and cache (reused from an activation cache when it exists)."
    )
    return join_nonempty(setup, table(header, body), _verdicts(topk, gs), para(*found))


def _verdicts(topk: dict | None, gs: list[dict]) -> str:
    """Each g-SAE against TopK (one run each: verdict_one_run)."""
    if not topk or not gs:
        return ""
    lower, higher = ("lower", "higher"), ("higher", "lower")
    rows = [
        [
            _gsae_label(r),
            verdict_one_run(r.get("fvu"), topk.get("fvu"), lower, lower_better=True),
            verdict_one_run(r.get("nograd_fvu"), topk.get("fvu"), lower, lower_better=True),
            verdict_one_run(
                r.get("ce_loss_recovered"), topk.get("ce_loss_recovered"), higher, points=True
            ),
            verdict_one_run(
                r.get("nograd_ce_loss_recovered"),
                topk.get("ce_loss_recovered"),
                higher,
                points=True,
            ),
            verdict_one_run(r.get("train_tokens_per_s"), topk.get("train_tokens_per_s"), FASTER),
        ]
        for r in gs
    ]
    return join_nonempty(
        para(
            "Each g-SAE against TopK (ng: in its gradient-free mode, against the same TopK). "
            f"Criterion: {criterion_one_run(None)}:"
        ),
        table(["g-SAE vs TopK", "FVU", "FVU ng", "CE rec.", "CE rec. ng", "train tok/s"], rows),
    )


if __name__ == "__main__":
    main()
