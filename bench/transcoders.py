"""Benchmark: a transcoder for every MLP of SmolLM2 (30 layers), per-layer (PLT), skip (skip-PLT) and
cross-layer (CLT), each set trained from one model forward per batch.

Steps (each kind in its own process, so its peak memory is its own; each resumes):

1. train the set with the real trainer (``interp train``'s ``saes.train``) on live SmolLM2
   activations: inputs ``blocks.L.ln2.hook_normalized``, targets ``blocks.L.hook_mlp_out``, every
   layer; the model in bf16 where the CPU has bf16 units (``model_dtype: auto``), the encoder GEMM in
   bf16 (``encoder_dtype``; kept values recomputed in fp32). The run folders are
   ``runs/transcoders/<kind>`` (not in git: rebuilt by this command, which fetches nothing);
   ``--tokens`` more than a folder holds continues it (``--resume`` semantics);
2. its evaluation (``saes.transcoders.evaluate``): per-layer FVU of the MLP output, L0 and dead
   fraction on validation text, spliced CE / KL with each layer's MLP replaced alone, and with
   every MLP replaced at once (the replacement model, no error terms);
3. speed: training tokens/s (the trainer's log: capture, shuffling and steps) against the summed
   GEMM bound, tokens/s if a step cost only its dense GEMMs: one encoder GEMM [batch, d_in] x
   [d_in, d_sae] per layer in the encoder's dtype (the selection needs every pre-activation; the
   backward and the decoder are sparse, k of d_sae latents, and are not counted), its FLOP/s
   measured before and after the run; and the process's peak resident memory.

The claims checked: the CLT's all-layers-replaced CE beats the PLT set's at equal total L0 (30 k);
skip-PLT's FVU at or below PLT's at equal L0; training at >= 50% of the bound. Prints and saves
bench/results/transcoders.json. Not a test.

    python -m bench.transcoders [--tokens 245760] [--d-sae 2304] [--k 32] [--kinds transcoder,...]
"""

from __future__ import annotations

import argparse
import itertools
import json
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path

import torch

from bench._markdown import (
    NM,
    criterion_one_run,
    fix,
    join_nonempty,
    ms,
    num,
    para,
    pct,
    table,
    verdict_one_run,
    verdict_target,
)
from bench._provenance import RESULTS, provenance, renderer

TITLE = "Transcoders on every layer of SmolLM2"  # its name in the docs (python -m bench.report)
OUT = RESULTS / "transcoders.json"
KINDS = ("transcoder", "skip_transcoder", "clt")
RUNS = Path("runs/transcoders")
D_IN = 576
LAYERS = 30


def run_config(kind: str, args) -> dict:
    """The job's config (the same stream for every kind: windows, seed, batches)."""
    return {
        "data": {
            "model": "smollm2-135m",
            "hooks": ["blocks.*.ln2.hook_normalized"],
            "model_dtype": args.model_dtype,
            "train_tokens": args.tokens,
            "batch_tokens": args.batch,
            "buffer_tokens": 4 * args.batch,
            "batch_windows": 16,
            "skip_positions": 1,  # the attention sink after BOS: left out of training
        },
        "sae": {
            "kind": kind,
            "d_sae": args.d_sae,
            "k": args.k,
            "encoder_dtype": "bfloat16" if args.bf16_encoder else None,
        },
        "log": {
            "out_dir": str(RUNS / kind),
            "checkpoint_every_tokens": 8 * args.batch,
            "log_every": 1,
        },
        "eval": {"tokens": args.eval_tokens, "ce_windows": args.ce_windows},
    }


def gemm_flops(batch: int, d_sae: int, dtype: torch.dtype, samples: int = 5) -> float:
    """Median FLOP/s of the encoder-shaped GEMM [batch, d_in] x [d_in, d_sae] in ``dtype``."""
    a = torch.randn(batch, D_IN).to(dtype)
    b = torch.randn(d_sae, D_IN).to(dtype).t()
    a @ b  # warm-up
    times = []
    for _ in range(samples):
        t0 = time.perf_counter()
        a @ b
        times.append(time.perf_counter() - t0)
    return 2.0 * batch * D_IN * d_sae / statistics.median(times)


def train_kind(kind: str, args) -> dict:
    """Step 1-3 for one kind, in this process (the orchestrator runs it as a subprocess)."""
    from saes.rundir import RunDir
    from saes.training.config import RunConfig
    from saes.training.loop import train

    cfg = RunConfig(**run_config(kind, args))
    dtype = torch.bfloat16 if args.bf16_encoder else torch.float32
    before = gemm_flops(args.batch, args.d_sae, dtype)
    folder = RUNS / kind
    resume = any(folder.rglob("checkpoints"))
    first = next(iter(sorted(folder.rglob("train_log.jsonl"))), None) if resume else None
    done = first is not None and RunDir(first.parent).log_records()[-1]["step"] >= (
        cfg.data.train_tokens // cfg.data.batch_tokens
    )
    t0 = time.perf_counter()
    train(cfg, resume=resume, progress=True, evaluate=True)
    wall = time.perf_counter() - t0
    after = gemm_flops(args.batch, args.d_sae, dtype)
    runs = (
        [folder]
        if kind == "clt"
        else sorted(
            (p for p in folder.iterdir() if (p / "metrics.json").exists()),
            key=lambda p: int(p.name.split(".")[1]),
        )
    )
    logs = [RunDir(r).log_records() for r in runs]
    tps = statistics.median(rec[-1]["tokens_per_s"] for rec in logs if rec)
    flops = (before + after) / 2
    bound = flops / (LAYERS * 2.0 * D_IN * args.d_sae)
    metrics = [json.loads((r / "metrics.json").read_text()) for r in runs]
    if kind == "clt":
        rec = metrics[0]["reconstruction"]
        per_layer = [
            {
                "layer": layer,
                "fvu": rec["fvu"][i],
                "fvu_no_sink": rec["fvu_no_sink"][i],
                "l0": rec["l0"][i],
                "dead_fraction": rec["dead_fraction"][i],
                "spliced": metrics[0]["one_layer_replaced"][i],
            }
            for i, layer in enumerate(rec["layers"])
        ]
        replaced = metrics[0]["all_layers_replaced"]
    else:
        per_layer = [
            {
                "layer": m["reconstruction"]["layers"][0],
                "fvu": m["reconstruction"]["fvu"][0],
                "fvu_no_sink": m["reconstruction"]["fvu_no_sink"][0],
                "l0": m["reconstruction"]["l0"][0],
                "dead_fraction": m["reconstruction"]["dead_fraction"][0],
                "spliced": m["one_layer_replaced"][0],
            }
            for m in metrics
        ]
        replaced = json.loads((folder / "replacement_metrics.json").read_text())[
            "all_layers_replaced"
        ]
    return {
        "kind": kind,
        "config": run_config(kind, args),
        "train_tokens": logs[0][-1]["tokens"] if logs[0] else None,
        "resumed": resume,
        "eval_only": done,  # trained before: speed and memory are the training run's
        "wall_s_incl_eval": wall,
        "train_tokens_per_s": tps,
        "gemm_flops_before_after": [before, after],
        "bound_tokens_per_s": bound,
        "fraction_of_bound": tps / bound,
        "peak_rss_bytes": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024,
        "per_layer": per_layer,
        "all_layers_replaced": replaced,
        "total_l0": sum(p["l0"] for p in per_layer),
        "mean_fvu": sum(p["fvu"] for p in per_layer) / len(per_layer),
        "mean_fvu_no_sink": sum(p["fvu_no_sink"] for p in per_layer) / len(per_layer),
        "model_dtype": metrics[0].get("model_dtype"),
        "stage_provenance": provenance(),  # this process's commit (stages can run apart)
    }


def peer_stage(args) -> dict:
    """sparsify's own transcoder training (its Trainer's step, ``transcode=True``) against ours on
    the same batches of a few layers: its defaults, and matched to ours (Adam, our lr and
    schedule, AuxK 1/32, our dead window, inputs and targets scaled as ours); our TrainStep on the
    same batches, started both ways (``transcoder_init`` sparsify and tied); the FVU of each on
    the same validation rows, and the median step time."""
    from bench._steps import SparsifyStep
    from interp.activations import ActivationCapture
    from interp.models import load_model
    from saes.evaluation.evaluate import validation_windows
    from saes.sae import SAE
    from saes.training.activation_sources import LiveSource
    from saes.training.config import RunConfig
    from saes.training.shared_stream import job_batches
    from saes.training.step import TrainStep, initialise_transcoder, lr_factor

    layers = [int(x) for x in args.peer_layers.split(",")]
    hooks = [
        h for i in layers for h in (f"blocks.{i}.ln2.hook_normalized", f"blocks.{i}.hook_mlp_out")
    ]
    base = run_config("transcoder", args)
    cfg = RunConfig(**{**base, "data": {**base["data"], "hooks": None, "hook": hooks[0]}})
    model = load_model("smollm2-135m", dtype=args.model_dtype)
    source = LiveSource(cfg, model=model, hooks=hooks)
    n_steps = cfg.data.train_tokens // cfg.data.batch_tokens
    sample = source.sample_batch(cfg.data.init_sample_tokens)
    trainers: dict[int, dict] = {}

    def our_step(sae) -> TrainStep:
        return TrainStep(
            sae,
            total_steps=n_steps,
            warmup_steps=cfg.optim.warmup_steps,
            decay_fraction=cfg.optim.decay_fraction,
            dead_tokens=cfg.resolved_dead_tokens,
        )

    for i in layers:
        x0, y0 = (
            sample.acts[hooks[2 * layers.index(i)]],
            sample.acts[hooks[2 * layers.index(i) + 1]],
        )
        ours = SAE(
            cfg.sae_config(D_IN, D_IN).model_copy(
                update={
                    "hook_name": f"blocks.{i}.ln2.hook_normalized",
                    "output_hook_name": f"blocks.{i}.hook_mlp_out",
                }
            ),
            seed=0,
        )
        initialise_transcoder(ours, x0, y0, True)
        step = our_step(ours)
        matched = SparsifyStep(
            D_IN,
            args.d_sae,
            args.k,
            n_steps,
            transcode=True,
            input_scale=ours.cfg.input_scale,
            output_scale=ours.cfg.output_scale,
            lr_lambda=lambda s: lr_factor(
                s, n_steps, cfg.optim.warmup_steps, cfg.optim.decay_fraction
            ),
            optimizer="adam",
            lr=step.lr,
            auxk_alpha=1 / 32,
            dead_feature_threshold=cfg.resolved_dead_tokens,
        )
        defaults = SparsifyStep(D_IN, args.d_sae, args.k, n_steps, transcode=True)
        tied = SAE(ours.cfg.model_copy(update={"transcoder_init": "tied"}), seed=0)
        initialise_transcoder(tied, x0, y0, True)
        tied_step = our_step(tied)
        trainers[i] = {
            "ours": step,
            "ours_tied_init": tied_step,
            "sparsify_matched": matched,
            "sparsify_defaults": defaults,
        }
    times: dict[int, dict[str, list[float]]] = {i: {n: [] for n in trainers[i]} for i in layers}
    for _, _, batch in itertools.islice(job_batches(source, cfg), n_steps):
        for j, i in enumerate(layers):
            x, y = batch.acts[hooks[2 * j]], batch.acts[hooks[2 * j + 1]]
            for name, tr in trainers[i].items():
                t0 = time.perf_counter()
                tr(x, target=y) if name.startswith("ours") else tr(x, y)
                times[i][name].append(time.perf_counter() - t0)
    windows = validation_windows(
        model,
        cfg.data.source,
        cfg.data.context_size,
        cfg.data.seed,
        -(-args.eval_tokens // (cfg.data.context_size - 1)),
    )
    cap = ActivationCapture(model, hooks)
    batches = [cap(w) for w in windows.split(16)]
    out = {"layers": layers, "steps": n_steps, "rows": {}}
    for j, i in enumerate(layers):
        x = torch.cat([b.acts[hooks[2 * j]] for b in batches]).float()
        y = torch.cat([b.acts[hooks[2 * j + 1]] for b in batches]).float()
        var = (y - y.mean(0)).pow(2).sum()
        row = {}
        for name, tr in trainers[i].items():
            with torch.no_grad():
                if name.startswith("ours"):
                    y_hat = tr.sae(x)[0]
                else:
                    tr.eval_mode()
                    xs = x * tr.input_scale if tr.input_scale else x
                    y_hat = tr.sae(xs).sae_out.float()
                    y_hat = y_hat / tr.output_scale if tr.output_scale else y_hat
            row[name] = {
                "fvu": float((y - y_hat).pow(2).sum() / var),
                "median_step_s": statistics.median(times[i][name][2:] or times[i][name]),
            }
        out["rows"][str(i)] = row
    out["eval_rows"] = int(x.shape[0])
    out["stage_provenance"] = provenance()
    return out


def reconstruction_stage(kind: str, args) -> dict:
    """The reconstruction metrics of a trained set, recomputed in one pass over the validation
    windows of its runs' evaluation (for sets evaluated before ``fvu_no_sink`` existed)."""
    from interp.models import load_model
    from saes.evaluation.evaluate import validation_windows
    from saes.transcoders.evaluate import Replacement, reconstruction
    from saes.transcoders.files import load_dictionary

    folder = RUNS / kind
    if kind == "clt":
        dictionary = load_dictionary(folder)
    else:
        dirs = sorted(
            (p for p in folder.iterdir() if (p / "metrics.json").exists()),
            key=lambda p: int(p.name.split(".")[1]),
        )
        dictionary = [load_dictionary(d) for d in dirs]
    model = load_model("smollm2-135m", dtype=args.model_dtype)
    windows = validation_windows(model, "stdlib", 128, 0, -(-args.eval_tokens // 127))
    return reconstruction(Replacement(dictionary), model, windows)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--tokens", type=int, default=245_760)
    ap.add_argument("--batch", type=int, default=4096)
    ap.add_argument("--d-sae", type=int, default=2304)
    ap.add_argument("--k", type=int, default=32)
    ap.add_argument("--model-dtype", default="auto")
    ap.add_argument("--no-bf16-encoder", dest="bf16_encoder", action="store_false")
    ap.add_argument("--eval-tokens", type=int, default=8192)
    ap.add_argument("--ce-windows", type=int, default=8)
    ap.add_argument("--kinds", default=",".join((*KINDS, "sparsify")))
    ap.add_argument("--peer-layers", default="3,15,27")
    ap.add_argument("--one", help=argparse.SUPPRESS)  # internal: train one kind, print its JSON
    args = ap.parse_args()
    if args.one:
        if args.one == "sparsify":
            result = peer_stage(args)
        elif args.one.startswith("reconstruction:"):
            result = reconstruction_stage(args.one.split(":", 1)[1], args)
        else:
            result = train_kind(args.one, args)
        print("RESULT " + json.dumps(result))
        return
    report = json.loads(OUT.read_text()) if OUT.exists() else {}
    stages = args.kinds.split(",")
    if "provenance" not in report or any(k in KINDS for k in stages):
        report["provenance"] = provenance()
    else:  # a refresh of what a training run left: its own provenance, beside the run's
        report.setdefault("refreshes", []).append({"stages": stages, **provenance()})
    report["kinds"] = report.get("kinds", {})
    for kind in stages:
        cmd = [sys.executable, "-m", "bench.transcoders", *sys.argv[1:], "--one", kind]
        print(f"== {kind}: {' '.join(cmd[1:])}", flush=True)
        proc = subprocess.run(cmd, stdout=subprocess.PIPE, text=True, check=False)
        lines = [ln for ln in proc.stdout.splitlines() if ln.startswith("RESULT ")]
        if proc.returncode != 0 or not lines:
            print(proc.stdout[-3000:])
            raise SystemExit(f"{kind} failed ({proc.returncode})")
        result = json.loads(lines[-1][len("RESULT ") :])
        if kind.startswith("reconstruction:"):  # refresh a trained set's per-layer metrics
            entry = report["kinds"][kind.split(":", 1)[1]]
            for i, p in enumerate(entry["per_layer"]):
                for key in ("fvu", "fvu_no_sink", "l0", "dead_fraction"):
                    p[key] = result[key][i]
            for key in ("fvu", "fvu_no_sink"):
                entry[f"mean_{key}"] = sum(result[key]) / len(result[key])
            entry["total_l0"] = sum(result["l0"])
            entry["reconstruction_refreshed"] = result["positions"]
            print(
                f"{kind}: mean FVU {entry['mean_fvu']:.3f}, without the sink "
                f"{entry['mean_fvu_no_sink']:.3f}"
            )
        elif kind == "sparsify":
            report["sparsify"] = result
            for layer, row in result["rows"].items():
                print(
                    f"layer {layer}: "
                    + ", ".join(
                        f"{n} FVU {r['fvu']:.3f} ({r['median_step_s'] * 1e3:.0f} ms/step)"
                        for n, r in row.items()
                    )
                )
        else:
            before = report["kinds"].get(kind)
            if result.get("eval_only") and before:  # keep what the training process measured
                for key in TRAINING_KEYS:
                    result[key] = before.get(key)
            report["kinds"][kind] = result
            r = result["all_layers_replaced"]
            print(
                f"{kind}: mean FVU {result['mean_fvu']:.3f}, total L0 {result['total_l0']:.0f}, "
                f"all replaced CE {r['ce_spliced']:.3f} (clean {r['ce_clean']:.3f}, KL "
                f"{r['kl_div']:.3f}), {result['train_tokens_per_s']:,.0f} tok/s = "
                f"{result['fraction_of_bound']:.0%} of bound"
            )
        OUT.write_text(json.dumps(report, indent=2))  # after each stage: a stop loses none
    print(f"saved {OUT}")


# ------------------------------------------------------------------------------------------------
# rendering (python -m bench.report)
# ------------------------------------------------------------------------------------------------
NAMES = {"transcoder": "PLT", "skip_transcoder": "skip-PLT", "clt": "CLT"}
# what only the training process measures (an evaluation-only rerun keeps them)
TRAINING_KEYS = (
    "wall_s_incl_eval",
    "train_tokens_per_s",
    "gemm_flops_before_after",
    "bound_tokens_per_s",
    "fraction_of_bound",
    "peak_rss_bytes",
    "resumed",
)


def _row(kind: str, r: dict) -> list[str]:
    rep = r.get("all_layers_replaced") or {}
    return [
        NAMES.get(kind, kind),
        num(r.get("train_tokens")),
        fix(r.get("mean_fvu")),
        fix(r.get("mean_fvu_no_sink")),
        num(r.get("total_l0")),
        fix(rep.get("ce_clean")),
        f"**{fix(rep.get('ce_spliced'))}**",
        fix(rep.get("ce_delta")),
        fix(rep.get("kl_div")),
        pct(rep.get("ce_loss_recovered"), 1),
        num(r.get("train_tokens_per_s")),
        num(r.get("bound_tokens_per_s")),
        pct(r.get("fraction_of_bound"), 1),
        f"{(r.get('peak_rss_bytes') or 0) / 2**30:.1f} GiB" if r.get("peak_rss_bytes") else NM,
    ]


def _layers(kinds: dict) -> str:
    names = [k for k in KINDS if k in kinds]
    if not names:
        return ""
    rows = []
    n = len(kinds[names[0]]["per_layer"])
    for i in range(n):
        row = [num(kinds[names[0]]["per_layer"][i]["layer"])]
        for k in names:
            p = kinds[k]["per_layer"][i]
            sp = p.get("spliced") or {}
            row += [
                fix(p["fvu"]),
                fix(p.get("fvu_no_sink")),
                num(p["l0"], 1),
                pct(p["dead_fraction"], 1),
                fix(sp.get("ce_delta")),
            ]
        rows.append(row)
    head = ["layer"] + [
        f"{NAMES[k]} {c}"
        for k in names
        for c in ("FVU", "FVU w/o sink", "L0", "dead", "CE delta (this MLP replaced)")
    ]
    return table(head, rows)


@renderer()
def render(d: dict) -> str:
    kinds = d.get("kinds") or {}
    rows = [_row(k, kinds[k]) for k in KINDS if k in kinds] or [[NM] * 14]
    head = [
        "set",
        "train tokens",
        "mean FVU (MLP out)",
        "mean FVU without the sink",
        "total L0 (all layers)",
        "CE clean",
        "CE, every MLP replaced",
        "CE delta",
        "KL",
        "CE recovered (vs every MLP zeroed)",
        "train tok/s",
        "bound tok/s",
        "of bound",
        "peak RSS",
    ]
    claims = []
    plt, skip, clt = (kinds.get(k) for k in KINDS)

    def ce(r):
        return (r or {}).get("all_layers_replaced", {}).get("ce_spliced")

    if plt and clt:
        claims.append(
            "CLT against PLT, the all-layers-replaced CE at equal total L0 (lower is better): "
            + verdict_one_run(ce(clt), ce(plt), ("lower", "higher"), lower_better=True)
        )
    if plt and skip:
        claims.append(
            "skip-PLT against PLT, mean FVU at equal L0: "
            + verdict_one_run(
                skip.get("mean_fvu"), plt.get("mean_fvu"), ("lower", "higher"), lower_better=True
            )
            + "; without the sink position: "
            + verdict_one_run(
                skip.get("mean_fvu_no_sink"),
                plt.get("mean_fvu_no_sink"),
                ("lower", "higher"),
                lower_better=True,
            )
        )
    for k in KINDS:
        if k in kinds:
            claims.append(
                f"{NAMES[k]} training at >= 50% of the GEMM bound: "
                + verdict_target([kinds[k].get("fraction_of_bound")], 0.5, fmt=pct)
            )
    peer = d.get("sparsify") or {}
    peer_rows = []
    for layer, row in (peer.get("rows") or {}).items():
        ours = row.get("ours", {})
        for name in ("ours", "ours_tied_init", "sparsify_defaults", "sparsify_matched"):
            r = row.get(name) or {}
            peer_rows.append(
                [
                    layer,
                    name,
                    fix(r.get("fvu")),
                    ms(r.get("median_step_s")),
                    "the reference"
                    if name == "ours"
                    else verdict_one_run(
                        r.get("fvu"), ours.get("fvu"), ("lower", "higher"), lower_better=True
                    ),
                    "the reference"
                    if name == "ours"
                    else verdict_one_run(
                        ours.get("median_step_s"), r.get("median_step_s"), lower_better=True
                    ),
                ]
            )
    peer_block = ""
    if peer_rows:
        peer_block = join_nonempty(
            para(
                f"sparsify's own transcoder training (its Trainer's step, transcode=True) and ours "
                f"on the same {num(peer.get('steps'))} batches of layers {peer.get('layers')}, "
                f"FVU of the MLP output on the same {num(peer.get('eval_rows'))} validation rows, "
                "k and d_sae as above. matched: Adam, our lr and schedule, AuxK 1/32, our dead "
                "window, inputs and targets scaled as ours; defaults: its own (signum, "
                "schedule-free). ours_tied_init: ours started the SAE way (W_enc = W_dec^T, "
                "unit-norm decoder rows kept at unit norm) instead of sparsify's (W_dec = 0, free). "
                "The verdict columns compare each row with ours (FVU: lower is better; step: ours "
                "faster or slower)."
            ),
            table(
                ["layer", "trainer", "FVU", "median step", "FVU vs ours", "ours vs this, speed"],
                peer_rows,
            ),
        )
    main = str((d.get("provenance") or {}).get("commit"))[:7]
    stages = {
        NAMES.get(k, k): (r.get("stage_provenance") or {})
        for k, r in [*kinds.items(), ("sparsify comparison", d.get("sparsify") or {})]
    }
    apart = [
        f"{name} at {str(p.get('commit'))[:7]}{' (uncommitted changes)' if p.get('dirty') else ''}"
        for name, p in stages.items()
        if p and str(p.get("commit"))[:7] != main
    ]
    refresh = (
        para(f"Stages measured at another commit than the run's: {', '.join(apart)}.")
        if apart
        else ""
    )
    for r in d.get("refreshes") or []:
        refresh += "\n\n" + para(
            f"Recomputed later, at commit {str(r.get('commit'))[:7]}"
            f"{' with uncommitted changes' if r.get('dirty') else ''} ({r.get('date', NM)}): "
            f"the per-layer reconstruction (FVU, FVU without the sink, L0, dead) of "
            f"{', '.join(s.split(':', 1)[1] for s in r.get('stages', []))}, with `"
            f"{r.get('command', NM)}` (one pass over the same validation windows; the sets' "
            "training, speed and CE figures are the training run's)."
        )
    return join_nonempty(
        para(f"Criterion for the verdicts: {criterion_one_run()}."),
        refresh,
        table(head, rows),
        para(*[c + "." for c in claims]) if claims else "",
        para(
            "The bound: tokens/s if a step cost only one dense encoder GEMM per layer, [batch, "
            "576] x [576, d_sae] in the encoder's dtype, at the FLOP/s measured before and after "
            "the run (the selection needs every pre-activation; backward and decoder are sparse "
            "and not counted). Train tok/s comes from the trainer's log: the model forward that "
            "feeds all 30 layers, the shuffling buffer and the steps."
        ),
        peer_block,
        _layers(kinds),
    )


if __name__ == "__main__":
    main()
