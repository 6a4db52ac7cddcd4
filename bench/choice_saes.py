"""Benchmark: TopK vs mutual choice vs feature choice SAEs (Ayonrinde 2024) at equal mean L0.

Three parts, all saved to bench/results/choice_saes.json with plotly figures next to it:

1. **Step cost** (bench/sae_step.py's setting: d_in 576, d_sae 4608, k 32, batch 4096, fp32, the
   project's ``TrainStep``) on random activations *and* on SmolLM2 layer-15 activations (after 20
   training steps on real batches, so that the selection and the usage statistics have settled):
   median step time of each variant, run round-robin, each choice variant's selection alone and
   aux_zipf's under-used set; and mutual choice's flat top-(k*B) by ``torch.topk`` vs ``kthvalue`` +
   mask vs our max-tree ``flat_top_n``. Target: a choice step <= 1.5x the TopK step.
2. **Synthetic dictionary** (interp.synthetic, known ground truth): the variants trained on the same
   batches, held-out FVU (inference = learned JumpReLU thresholds, and the batch-level selection),
   L0, dead / under-used fractions, direction recovery, per-token L0 distribution; plus mutual
   choice without aux_zipf_loss (the ablation).
3. **SmolLM2** ``blocks.15.hook_resid_post`` (stdlib corpus; train split for training, validation
   files for evaluation): the same, plus spliced CE loss recovered, and how per-token L0 tracks
   token difficulty (correlation with the TopK SAE's per-token reconstruction error).

    python -m bench.choice_saes --lm-tokens 131072
    python -m bench.choice_saes --quick    # smoke run, well under a minute of compute
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path
from typing import Any

import torch

from bench._provenance import provenance
from bench.choice_saes_render import render  # noqa: F401  (its renderer)
from interp.synthetic import SyntheticDictionary, direction_recovery
from saes.config import SAEConfig
from saes.evaluation.evaluate import reconstruction_metrics
from saes.sae import SAE
from saes.training.geometric_median import geometric_median
from saes.training.loop import TrainStep, default_lr
from saes.variants.choice import flat_top_n

TITLE = "Mutual and feature choice vs TopK"  # its name in the docs (python -m bench.report)

ROOT = Path(__file__).resolve().parents[1]

VARIANTS = {  # name -> SAEConfig overrides
    "topk": {"variant": "topk"},
    "mutual_choice": {"variant": "mutual_choice"},
    "feature_choice_zipf": {"variant": "feature_choice", "allocation": "zipf"},
    "feature_choice_uniform": {"variant": "feature_choice", "allocation": "uniform"},
}
ABLATION = {"mutual_choice_no_aux": {"variant": "mutual_choice", "aux_zipf_coef": 0.0}}
# step cost: the selection rules alone (aux_zipf off, as TopK runs with no dead latents), then with
# the default aux_zipf_loss (its cost depends on how many latents are under-used at the time)
STEP_SOURCES = ("noise", "smollm2")  # the step cost on random and on real activations
STEP_VARIANTS = {
    "topk": {"variant": "topk"},
    "mutual_choice": {"variant": "mutual_choice", "aux_zipf_coef": 0.0},
    "feature_choice_zipf": {
        "variant": "feature_choice",
        "allocation": "zipf",
        "aux_zipf_coef": 0.0,
    },
    "feature_choice_uniform": {
        "variant": "feature_choice",
        "allocation": "uniform",
        "aux_zipf_coef": 0.0,
    },
    "mutual_choice+aux_zipf": {"variant": "mutual_choice"},
    "feature_choice_zipf+aux_zipf": {"variant": "feature_choice", "allocation": "zipf"},
}


# ------------------------------------------------------------------------------------------------
# 1. step cost
# ------------------------------------------------------------------------------------------------
def _time(fn, n: int) -> list[float]:
    out = []
    for _ in range(n):
        t0 = time.perf_counter()
        fn()
        out.append(time.perf_counter() - t0)
    return out


def _init_like_training(sae: SAE, sample: torch.Tensor) -> None:
    """Input scale (E||x|| = sqrt(d_in)) and geometric-median b_dec, as the trainer sets them."""
    sae.cfg.input_scale = sample.shape[1] ** 0.5 / sample.norm(dim=-1).mean().item()
    with torch.no_grad():
        sae.b_dec.copy_(geometric_median(sample * sae.cfg.input_scale))


def step_cost(
    batches: list[torch.Tensor],
    d_sae: int,
    k: int,
    rounds: int,
    warmup: int = 2,
    source: str = "noise",
) -> dict[str, Any]:
    """Median TrainStep time per variant, round-robin over variants, on ``batches`` (each [B, d_in]).

    Every variant sees the same batches in the same order: ``warmup`` untimed training steps (on real
    activations this lets the selection settle: mutual choice's row candidates, the usage EMA that
    decides aux_zipf's under-used set), then ``rounds`` timed steps, batch ``warmup + r`` in round r
    (cycling). Also timed on the last batch: the selection alone (``variant.select``), and per
    aux_zipf variant the size of its under-used set U (its cost is ~B * min(k_aux, |U|) entries).
    """
    from saes.training.losses import underused_weights

    B, d_in = batches[0].shape
    steps = {}
    for name, over in STEP_VARIANTS.items():
        sae = SAE(SAEConfig(d_in=d_in, d_sae=d_sae, k=k, **over), seed=0)
        if source != "noise":
            _init_like_training(sae, batches[0])
        steps[name] = TrainStep(
            sae,
            lr=default_lr(d_sae),
            total_steps=10 * (warmup + rounds),
            dead_tokens=max(B, B * (warmup + rounds) // 2),
        )
        for i in range(warmup):
            steps[name](batches[i % len(batches)])
    times: dict[str, list[float]] = {n: [] for n in steps}
    for r in range(rounds):
        xb = batches[(warmup + r) % len(batches)]
        for name, step in steps.items():
            times[name] += _time(lambda step=step, xb=xb: step(xb), 1)
    res: dict[str, Any] = {}
    last = batches[(warmup + rounds - 1) % len(batches)]
    for name, ts in times.items():
        med = statistics.median(ts)
        res[name] = {"median_s": med, "min_s": min(ts), "samples_s": ts, "tokens_per_s": B / med}
        sae = steps[name].sae
        if name != "topk":
            with torch.no_grad():
                x_c = sae.scale_input(last) - sae.b_dec
                res[name]["selection_s"] = statistics.median(
                    _time(lambda sae=sae, x_c=x_c: sae.variant.select(sae, x_c), 3)
                )
            if sae.cfg.aux_zipf_coef > 0:
                w = underused_weights(sae.usage, sae.variant.target_exponent)
                res[name]["underused_latents"] = int((w > 0).sum())
                res[name]["aux_entries_per_token"] = min(sae.cfg.k_aux, int((w > 0).sum()))
    for name in res:
        res[name]["ratio_to_topk"] = res[name]["median_s"] / res["topk"]["median_s"]
    gemm_x, gemm_w = batches[0].clone(), torch.randn(d_in, d_sae)
    gemm = statistics.median(_time(lambda: gemm_x @ gemm_w, 3))
    return {
        "source": source,
        "batch": B,
        "d_in": d_in,
        "d_sae": d_sae,
        "k": k,
        "rounds": rounds,
        "warmup": warmup,
        "variants": res,
        "encoder_gemm_s": gemm,
        "target": "choice step <= 1.5x TopK step",
    }


def mutual_selection_cost(batch: int, d_sae: int, k: int, rounds: int) -> dict[str, float]:
    """Mutual choice's flat top-(k*B) alone on one random pre-activation matrix, three ways."""
    pre = torch.randn(batch, d_sae, generator=torch.Generator().manual_seed(1))
    n = k * batch
    flat = pre.view(-1)
    sel = {
        "torch.topk(flat)": lambda: torch.topk(flat, n, sorted=False),
        "kthvalue + mask + nonzero": lambda: (
            flat >= torch.kthvalue(flat, flat.numel() - n + 1).values
        ).nonzero(),
        "flat_top_n (max-tree)": lambda: flat_top_n(flat, n),
    }
    out = {}
    for name, fn in sel.items():
        fn()
        out[name] = statistics.median(_time(fn, max(3, rounds // 2)))
    return out


# ------------------------------------------------------------------------------------------------
# training and evaluation on fixed activations
# ------------------------------------------------------------------------------------------------
def train_sae(
    over: dict,
    train_x: torch.Tensor,
    order: torch.Tensor,
    batch: int,
    d_sae: int,
    k: int,
    lr: float,
    seed: int = 0,
) -> tuple[SAE, float]:
    """Train one SAE on ``train_x`` in the given row order (input scale + geometric-median b_dec,
    as the trainer does); returns the SAE and the training tokens/s."""
    sae = SAE(SAEConfig(d_in=train_x.shape[1], d_sae=d_sae, k=k, **over), seed=seed)
    _init_like_training(sae, train_x[order[:4096]])
    n_steps = train_x.shape[0] // batch
    step = TrainStep(
        sae,
        lr=lr,
        total_steps=n_steps,
        warmup_steps=min(50, n_steps // 10),
        decay_fraction=0.2,
        dead_tokens=max(batch, train_x.shape[0] // 10),
    )
    t0 = time.perf_counter()
    for i in range(n_steps):
        step(train_x[order[i * batch : (i + 1) * batch]])
    return sae, n_steps * batch / (time.perf_counter() - t0)


@torch.no_grad()
def evaluate(sae: SAE, eval_x: torch.Tensor, chunk: int = 4096) -> dict[str, Any]:
    """Held-out metrics at inference (thresholds), the batch-level selection's FVU, per-token L0."""
    m = reconstruction_metrics(sae, eval_x.split(chunk))
    l0, err = [], []
    batch_err, batch_l0 = 0.0, []
    for x in eval_x.split(chunk):
        x_hat, z = sae(x)
        l0.append((z != 0).sum(-1))
        err.append((x - x_hat).pow(2).sum(-1))
        if sae.cfg.variant in ("mutual_choice", "feature_choice") and x.shape[0] == chunk:
            code = sae.variant.encode_batch(sae, x)
            batch_l0.append(code.l0)
            batch_err += (x - sae.decode(code)).double().pow(2).sum().item()
    l0_t = torch.cat(l0).float()
    out = {
        k: m[k]
        for k in (
            "fvu",
            "l0_mean",
            "l0_std",
            "l0_quantiles",
            "dead_fraction",
            "underused_fraction",
            "dense_fraction",
            "cosine_mean",
        )
    }
    out["l0_max"] = int(l0_t.max())
    out["l0_hist"] = torch.bincount(l0_t.long()).tolist()
    out["_per_token_l0"] = l0_t
    out["_per_token_err"] = torch.cat(err)
    if batch_l0:
        n = sum(b.numel() for b in batch_l0)
        xs = eval_x[:n].double()
        out["batch_selection_fvu"] = batch_err / (xs - xs.mean(0)).pow(2).sum().item()
        out["batch_selection_l0_mean"] = torch.cat(batch_l0).float().mean().item()
    return out


def _corr(a: torch.Tensor, b: torch.Tensor) -> float:
    a, b = a.double() - a.double().mean(), b.double() - b.double().mean()
    return float((a * b).sum() / (a.norm() * b.norm()).clamp_min(1e-30))


def _spearman(a: torch.Tensor, b: torch.Tensor) -> float:
    ra = torch.empty_like(a, dtype=torch.float64)
    ra[a.argsort()] = torch.arange(a.numel(), dtype=torch.float64)
    rb = torch.empty_like(b, dtype=torch.float64)
    rb[b.argsort()] = torch.arange(b.numel(), dtype=torch.float64)
    return _corr(ra, rb)


def compare(
    train_x: torch.Tensor,
    eval_x: torch.Tensor,
    d_sae: int,
    k: int,
    batch: int,
    lr: float,
    names: dict[str, dict],
    label: str,
    extra=None,
) -> dict[str, Any]:
    """Train every variant on the same batches in the same order; evaluate on the same held-out rows."""
    from tqdm.auto import tqdm

    order = torch.randperm(train_x.shape[0], generator=torch.Generator().manual_seed(0))
    rows: dict[str, Any] = {}
    for name, over in tqdm(names.items(), desc=label, unit="sae"):
        sae, tps = train_sae(over, train_x, order, batch, d_sae, k, lr)
        r = evaluate(sae, eval_x)
        r["train_tokens_per_s"] = tps
        if extra is not None:
            r.update(extra(sae))
        rows[name] = r
    # adaptive computation: does a token's L0 follow how hard it is for a fixed-k SAE?
    hard = rows["topk"]["_per_token_err"] / eval_x.pow(2).sum(-1).clamp_min(1e-12)
    for name, r in rows.items():
        if name != "topk":
            r["l0_vs_topk_token_error_spearman"] = _spearman(r["_per_token_l0"], hard)
            r["l0_vs_token_norm_spearman"] = _spearman(r["_per_token_l0"], eval_x.norm(dim=-1))
    return rows


def _strip(rows: dict[str, Any]) -> dict[str, Any]:
    return {n: {k: v for k, v in r.items() if not k.startswith("_")} for n, r in rows.items()}


# ------------------------------------------------------------------------------------------------
# 2. synthetic, 3. SmolLM2
# ------------------------------------------------------------------------------------------------
def synthetic(quick: bool, tokens: int) -> dict[str, Any]:
    syn = SyntheticDictionary(
        d_in=64, n_features=512, mean_active=8, alpha=1.0, noise_std=0.01, seed=0
    )
    n_train = 32 * 1024 if quick else tokens
    train_x = torch.cat([syn.sample(16384)[0] for _ in range(n_train // 16384)])
    eval_x = syn.sample(16384)[0]
    d_sae, k = 1024, 8
    rows = compare(
        train_x,
        eval_x,
        d_sae,
        k,
        batch=1024,
        lr=1e-3,
        names={**VARIANTS, **ABLATION},
        label="synthetic",
        extra=lambda sae: {
            "direction_recovery_0.9": direction_recovery(
                syn.directions, (sae.W_dec / sae.W_dec.norm(dim=-1, keepdim=True)).detach()
            )
        },
    )
    return {
        "data": "SyntheticDictionary(d_in=64, n_features=512, mean_active=8, alpha=1.0)",
        "train_tokens": n_train,
        "eval_tokens": eval_x.shape[0],
        "d_sae": d_sae,
        "k": k,
        "batch": 1024,
        "lr": 1e-3,
        "rows": rows,
    }


def capture_smollm2(quick: bool, tokens: int, layer: int = 15) -> dict[str, Any]:
    """SmolLM2 activations at blocks.L.hook_resid_post: train split for training (and the step cost),
    validation files for evaluation."""
    from bench.sae_quality import capture
    from interp.models import load_model

    hook = f"blocks.{layer}.hook_resid_post"
    model = load_model("smollm2-135m")
    t0 = time.perf_counter()
    train_x = capture(
        model, hook, "train", 8 * 1024 if quick else tokens, context=128, source="stdlib"
    )
    eval_x = capture(
        model, hook, "validation", 2048 if quick else 8192, context=128, source="stdlib"
    )
    return {
        "model": model,
        "hook": hook,
        "train_x": train_x,
        "eval_x": eval_x,
        "capture_s": time.perf_counter() - t0,
    }


def smollm2(lm: dict[str, Any], quick: bool, batch: int) -> dict[str, Any]:
    from interp.data import token_windows
    from saes.evaluation.evaluate import spliced_metrics

    model, hook, train_x, eval_x = lm["model"], lm["hook"], lm["train_x"], lm["eval_x"]
    ce_windows = 2 if quick else 16
    wins = token_windows(
        model.tokenizer, source="stdlib", context_size=128, split="validation", seed=1
    )
    windows = torch.stack([w for _, w in zip(range(ce_windows), wins)])
    d_sae, k = 4608, 32
    lr = default_lr(d_sae)
    rows = compare(
        train_x,
        eval_x,
        d_sae,
        k,
        batch,
        lr,
        names=VARIANTS,
        label="smollm2",
        extra=lambda sae: {k2: v for k2, v in spliced_metrics(sae, model, hook, windows).items()},
    )
    return {
        "model": "smollm2-135m",
        "hook": hook,
        "train_tokens": train_x.shape[0],
        "eval_tokens": eval_x.shape[0],
        "ce_windows": ce_windows,
        "d_sae": d_sae,
        "k": k,
        "batch": batch,
        "lr": lr,
        "capture_s": lm["capture_s"],
        "rows": rows,
    }


# ------------------------------------------------------------------------------------------------
# report
# ------------------------------------------------------------------------------------------------
def figures(report: dict[str, Any], out: Path) -> list[str]:
    import plotly.graph_objects as go
    from plotly.subplots import make_subplots

    paths = []
    parts = [p for p in ("synthetic", "smollm2") if p in report]
    if parts:
        fig = make_subplots(
            rows=1,
            cols=len(parts),
            subplot_titles=[f"per-token L0 at inference: {p}" for p in parts],
        )
        for c, part in enumerate(parts, 1):
            for name, r in report[part]["rows"].items():
                h = r["l0_hist"]
                fig.add_trace(
                    go.Scatter(
                        x=list(range(len(h))),
                        y=[v / max(1, sum(h)) for v in h],
                        name=f"{part}: {name}",
                        mode="lines",
                    ),
                    row=1,
                    col=c,
                )
            fig.update_xaxes(title_text="latents per token (L0)", row=1, col=c)
        fig.update_yaxes(title_text="fraction of tokens")
        p = out.with_name(out.stem + "_l0.html")
        fig.write_html(p, include_plotlyjs="cdn")
        paths.append(str(p))

        metrics = ["fvu", "dead_fraction", "underused_fraction"] + (
            ["ce_loss_recovered"] if "smollm2" in report else []
        )
        fig = make_subplots(rows=1, cols=len(metrics), subplot_titles=metrics)
        for c, metric in enumerate(metrics, 1):
            for part in parts:
                rows = report[part]["rows"]
                names = [n for n in rows if metric in rows[n]]
                fig.add_trace(
                    go.Bar(
                        x=names,
                        y=[rows[n][metric] for n in names],
                        name=f"{part}",
                        showlegend=c == 1,
                    ),
                    row=1,
                    col=c,
                )
        p = out.with_name(out.stem + "_quality.html")
        fig.write_html(p, include_plotlyjs="cdn")
        paths.append(str(p))

    if "step" in report:
        fig = go.Figure()
        for source in STEP_SOURCES:
            v = report["step"][source]["variants"]
            fig.add_trace(
                go.Bar(
                    x=list(v),
                    y=[r["ratio_to_topk"] for r in v.values()],
                    name=f"{source} activations",
                )
            )
        fig.add_hline(y=1.5, line_dash="dash", annotation_text="1.5x TopK")
        fig.update_layout(
            title="one training step / the TopK step, d_sae 4608, k 32", yaxis_title="x TopK"
        )
        p = out.with_name(out.stem + "_step.html")
        fig.write_html(p, include_plotlyjs="cdn")
        paths.append(str(p))
    return paths


def print_tables(report: dict[str, Any]) -> None:
    if "step" in report:
        for source in STEP_SOURCES:
            s = report["step"][source]
            print(
                f"\nstep cost on {source} activations (batch {s['batch']}, d_sae {s['d_sae']}, k {s['k']}; "
                f"GEMM alone {s['encoder_gemm_s'] * 1e3:.0f} ms)"
            )
            for name, r in s["variants"].items():
                extra = (
                    f"  selection {r['selection_s'] * 1e3:6.1f} ms" if "selection_s" in r else ""
                )
                if "underused_latents" in r:
                    extra += f"  |U| {r['underused_latents']}"
                print(
                    f"  {name:28s} {r['median_s'] * 1e3:7.1f} ms  {r['tokens_per_s']:9,.0f} tok/s  "
                    f"x{r['ratio_to_topk']:.2f} TopK{extra}"
                )
        for name, t in report["step"]["mutual_selection_s"].items():
            print(f"  mutual choice's flat top-(k*B) by {name:28s} {t * 1e3:7.1f} ms")
    for part in ("synthetic", "smollm2"):
        if part not in report:
            continue
        print(
            f"\n{part}: train {report[part]['train_tokens']:,} tokens, eval {report[part]['eval_tokens']:,}"
        )
        head = f"  {'':24s} {'FVU':>7s} {'FVU batch':>9s} {'L0':>6s} {'L0 p10/p50/p90':>16s} {'dead':>6s} {'under':>6s}"
        print(head + ("  CE rec" if part == "smollm2" else "  recov") + "  rho(L0,hard)")
        for name, r in report[part]["rows"].items():
            q = r["l0_quantiles"]
            extra = r.get("ce_loss_recovered", r.get("direction_recovery_0.9", float("nan")))
            print(
                f"  {name:24s} {r['fvu']:7.4f} {r.get('batch_selection_fvu', float('nan')):9.4f} {r['l0_mean']:6.1f} "
                f"{q['0.1']:5.0f}/{q['0.5']:4.0f}/{q['0.9']:4.0f}  {r['dead_fraction']:6.3f} {r['underused_fraction']:6.3f}"
                f"  {extra:6.3f}  {r.get('l0_vs_topk_token_error_spearman', float('nan')):6.3f}"
            )


def main(argv: list[str] | None = None) -> dict[str, Any]:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--quick", action="store_true", help="small sizes: a smoke run")
    ap.add_argument("--parts", default="step,synthetic,smollm2")
    ap.add_argument("--synthetic-tokens", type=int, default=65536)
    ap.add_argument("--lm-tokens", type=int, default=65536, help="SmolLM2 training tokens")
    ap.add_argument("--lm-batch", type=int, default=2048)
    ap.add_argument("--out", default=str(ROOT / "bench" / "results" / "choice_saes.json"))
    args = ap.parse_args(argv)
    parts = set(args.parts.split(","))
    out = Path(args.out if not args.quick else args.out.replace(".json", "_quick.json"))
    t_start = time.perf_counter()
    report: dict[str, Any] = {
        "provenance": provenance(),
        "torch": torch.__version__,
        "threads": torch.get_num_threads(),
        "quick": args.quick,
        "args": vars(args),
    }
    out.parent.mkdir(parents=True, exist_ok=True)

    def save() -> None:  # after every part: a long run interrupted later keeps what it measured
        out.write_text(json.dumps(report, indent=2))

    lm = capture_smollm2(args.quick, args.lm_tokens) if parts & {"step", "smollm2"} else None
    if "step" in parts:
        B, rounds = (1024, 2) if args.quick else (4096, 7)
        noise = [torch.randn(B, 576, generator=torch.Generator().manual_seed(0))]
        real = lm["train_x"][
            torch.randperm(lm["train_x"].shape[0], generator=torch.Generator().manual_seed(0))
        ]
        real = list(real[: real.shape[0] // B * B].split(B))
        report["step"] = {
            "noise": step_cost(noise, 4608, 32, rounds, warmup=2, source="noise"),
            "smollm2": step_cost(
                real, 4608, 32, rounds, warmup=2 if args.quick else 20, source="smollm2"
            ),
            "mutual_selection_s": mutual_selection_cost(B, 4608, 32, rounds),
            "target": "choice step <= 1.5x TopK step",
        }
        save()
    if "synthetic" in parts:
        syn = synthetic(args.quick, args.synthetic_tokens)
        syn["rows"] = _strip(syn["rows"])
        report["synthetic"] = syn
        save()
    if "smollm2" in parts:
        sm = smollm2(lm, args.quick, args.lm_batch)
        sm["rows"] = _strip(sm["rows"])
        report["smollm2"] = sm
    report["total_s"] = time.perf_counter() - t_start
    out.parent.mkdir(parents=True, exist_ok=True)
    report["figures"] = figures(report, out)
    out.write_text(json.dumps(report, indent=2))
    print_tables(report)
    print(
        f"\nsaved {out} (+ {', '.join(Path(p).name for p in report['figures'])}) in {report['total_s']:.0f} s"
    )
    return report


if __name__ == "__main__":
    main()
