"""Benchmark: the dark matter of SmolLM2 SAEs (Engels, Riggs, Tegmark 2024) at one layer.

1. Trains TopK SAEs of three widths (2,304 / 4,608 / 9,216, k 32) on ``blocks.15.hook_resid_post``
   from one forward per batch (a multi-SAE job), and one 4,608-wide SAE on layer 14 (for the
   previous-layer maps), with the demo's settings (400k stdlib tokens, model dtype auto).
2. Captures fit tokens (train split) and held-out tokens (validation split) at layers 14 and 15.
3. Per width (``saes.analysis.dark_matter.pipeline.analyse_sae``): the linear / nonlinear split of
   the error, the error-norm probe, CE with x_hat / x_hat + e_lin / x_hat + e_nl spliced from
   position 32 of 128-token windows, gradient pursuit at each token's L0.
4. Width scaling (cross-width norm R^2, FVU power laws), previous-layer maps (from layer 14's
   residual and from its SAE's reconstruction), and SAEs trained on e_lin and e_nl at equal k.

Saves bench/results/dark_matter.json (with provenance) and plotly figures under
bench/results/dark_matter/.

5. Held-out R² against the fit tokens (nested prefixes of the train split, 10k..400k, least
   squares and ridge) with the least-squares diagnostics, for the middle width and any
   ``--curve-run`` (e.g. the demo's SAE); pursuit against the previous-layer maps on the same
   pursued tokens with a block-bootstrap interval.

Trained SAEs in ``--runs`` are reused (a rerun skips training).

    flock /tmp/interp-heavy.lock python -m bench.dark_matter --curve-run runs/demo-topk
    python -m bench.dark_matter --quick      # smoke run (small numbers, minutes)
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path
from typing import Any

import torch

from bench._provenance import provenance
from bench.dark_matter_render import BATCH_TOKENS, render  # noqa: F401  (its renderer)
from interp.atomic_files import atomic_write_json
from interp.models import load_model
from saes.analysis.dark_matter.cli import format_table
from saes.analysis.dark_matter.convergence import (
    KEYS,
    fit_diagnostics,
    fit_size_curve,
    flattens_at,
)
from saes.analysis.dark_matter.error_saes import error_parts, train_error_saes
from saes.analysis.dark_matter.figures import all_figures
from saes.analysis.dark_matter.linear import ESTIMATORS, block_rows_for
from saes.analysis.dark_matter.pipeline import (
    DarkMatterConfig,
    analyse_sae,
    capture_rows,
    chunks,
    reconstruct,
    scaling_report,
    validation_windows,
)
from saes.analysis.dark_matter.previous_layer import (
    compare_with_pursuit,
    nonlinear_error_removed,
)
from saes.analysis.dark_matter.pursuit import pursuit_vs_sae
from saes.artifacts import load_sae
from saes.rundir import RunDir
from saes.training.config import RunConfig
from saes.training.loop import train

TITLE = "Dark matter"  # its name in the docs (python -m bench.report)

ROOT = Path(__file__).resolve().parents[1]

LAYER = 15
HOOK = f"blocks.{LAYER}.hook_resid_post"
PREV_HOOK = f"blocks.{LAYER - 1}.hook_resid_post"
MODEL = "smollm2-135m"
STEP = 0.01  # the fit-size curve "flattens" where every later step changes each R² by less
PAPER = {
    "setting": "Gemma Scope SAEs on Gemma 2 9B, layer 20 residual stream (Engels et al. 2024)",
    "error_vector_linearly_predictable": "about half (R^2 of a* from x to e)",
    "error_norm_r2": "> 0.9 (linear probe from x to the error norm)",
    "pursuit": "a very slight decrease of nonlinear error",
    "previous_layer": "a larger reduction than pursuit",
    "error_saes": "SAEs trained on e_nl are quantitatively worse (higher FVU) than on e_lin",
}


def _base(args, out_dir: str, hook: str) -> dict[str, Any]:
    return {
        "data": {
            "model": MODEL,
            "model_dtype": "auto",
            "hook": hook,
            "source": "stdlib",
            "context_size": 128,
            "batch_windows": 16,
            "train_tokens": args.train_tokens,
            "batch_tokens": BATCH_TOKENS,
            "buffer_tokens": 65536,
        },
        "sae": {"variant": "topk", "d_sae": 4608, "k": args.k},
        "optim": {"warmup_steps": 10},
        "log": {"out_dir": out_dir, "checkpoint_every_tokens": max(args.train_tokens, 100_000)},
        "eval": {"tokens": 16384, "ce_windows": 16},
    }


def _rel(path: Path) -> str:
    return str(path.relative_to(ROOT)) if path.is_relative_to(ROOT) else str(path)


def _trained(folder: Path) -> bool:
    return RunDir(folder).has_artifact and RunDir(folder).metrics() is not None


def train_saes(args, model) -> dict[str, Any]:
    """The layer-15 width family (one job) and the layer-14 SAE; reuses finished runs."""
    runs = Path(args.runs)
    job = _base(args, str(runs / "widths"), HOOK)
    job["saes"] = [{"name": f"w{w}", "sae": {"d_sae": w}} for w in args.widths]
    folders = {w: runs / "widths" / HOOK / f"w{w}" for w in args.widths}
    timings = {}
    if not all(_trained(f) for f in folders.values()):
        t = time.perf_counter()
        train(RunConfig(**job), model=model)
        timings["train_widths_s"] = time.perf_counter() - t
    prev = runs / "prev"
    if not _trained(prev):
        t = time.perf_counter()
        train(RunConfig(**_base(args, str(prev), PREV_HOOK)), model=model)
        timings["train_prev_s"] = time.perf_counter() - t
    return {"widths": folders, "prev": prev, "timings": timings}


def _fit_size_block(sae, label, fit_all, x_test, xh_test, sizes) -> dict[str, Any]:
    """Both estimators' held-out R² on nested prefixes of the fit rows, where each flattens, and
    the least-squares diagnostics (``convergence.fit_diagnostics``) at each size."""
    xh_all = reconstruct(sae, fit_all)
    curves = {e: fit_size_curve(fit_all, xh_all, x_test, xh_test, sizes, e) for e in ESTIMATORS}
    return {
        "of": label,
        "test_tokens": x_test.shape[0],
        "step_tolerance": STEP,
        "curves": curves,
        "flattens_at": {e: {k: flattens_at(c, k, STEP) for k in KEYS} for e, c in curves.items()},
        "diagnostics": fit_diagnostics(fit_all, xh_all, x_test, xh_test, sizes),
    }


def fit_size_only(args) -> dict:
    """``--fit-size-only RUN``: the new measurements on one already trained SAE."""
    record: dict[str, Any] = {"provenance": provenance()}
    t0 = time.perf_counter()
    args.curve_sizes = sorted(int(n) for n in str(args.curve_sizes).split(","))
    model = load_model(MODEL, dtype="auto")
    sae = load_sae(args.fit_size_only)
    if sae.cfg.hook_name != HOOK:
        raise ValueError(f"{args.fit_size_only} reads {sae.cfg.hook_name}, not {HOOK}")
    cfg = DarkMatterConfig(
        fit_tokens=args.curve_sizes[-1],
        test_tokens=args.test_tokens,
        pursuit_tokens=args.pursuit_tokens,
        pursuit_fit_tokens=args.pursuit_fit_tokens,
        seed=1,
        estimator=args.estimator,
    )
    fit = capture_rows(model, [PREV_HOOK, HOOK], "train", cfg.fit_tokens, cfg, progress=True)
    test = capture_rows(model, [PREV_HOOK, HOOK], "validation", cfg.test_tokens, cfg, progress=True)
    label = _rel(Path(args.fit_size_only))
    block = _fit_size_block(
        sae, label, fit[HOOK], test[HOOK], reconstruct(sae, test[HOOK]), args.curve_sizes
    )
    nf, nt = min(cfg.pursuit_fit_tokens, cfg.fit_tokens), min(cfg.pursuit_tokens, cfg.test_tokens)
    _, rec_fit = pursuit_vs_sae(sae, [fit[HOOK][:nf]], progress=True)
    _, rec_test = pursuit_vs_sae(sae, [test[HOOK][:nt]], progress=True)
    parts = [
        {"x": x[:n], "z": z[:n], "x_hat": torch.cat(r["sae"]), "x_gp": torch.cat(r["pursuit"])}
        for x, z, r, n in (
            (fit[HOOK], fit[PREV_HOOK], rec_fit, nf),
            (test[HOOK], test[PREV_HOOK], rec_test, nt),
        )
    ]
    same = {"layer 14 residual": compare_with_pursuit(*parts, estimator=cfg.estimator)}
    record.update(
        {
            "setting": {"model": MODEL, "hook": HOOK, "run": label, "analysis": cfg.model_dump()},
            "fit_size": block,
            "pursuit_vs_previous_layer": {label: same},
            "timings": {"total_s": time.perf_counter() - t0},
        }
    )
    out = Path(args.fit_size_out)
    out.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_json(out, record)
    print(json.dumps({"flattens_at": block["flattens_at"], "same_tokens": same}, indent=1))
    return record


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--train-tokens", type=int, default=400_000)
    ap.add_argument("--fit-tokens", type=int, default=150_000)
    ap.add_argument("--test-tokens", type=int, default=50_000)
    ap.add_argument("--widths", type=str, default="2304,4608,9216")
    ap.add_argument("--k", type=int, default=32)
    ap.add_argument("--ce-windows", type=int, default=64)
    ap.add_argument("--pursuit-tokens", type=int, default=8192)
    ap.add_argument(
        "--error-sae-tokens",
        type=int,
        default=400_000,
        help="rows of e_lin / e_nl the two error SAEs train on (as many as the SAEs themselves)",
    )
    ap.add_argument("--pursuit-fit-tokens", type=int, default=32768)
    ap.add_argument(
        "--estimator",
        choices=["ols", "ridge"],
        default=DarkMatterConfig.model_fields["estimator"].default,
        help="how every map is fitted (the fit-size curve reports both)",
    )
    ap.add_argument(
        "--curve-sizes",
        default="10000,20000,50000,100000,150000,200000,400000",
        help="fit sizes of the R²-against-fit-tokens curve (train split, nested prefixes)",
    )
    ap.add_argument("--curve-width", type=int, default=None, help="default: the middle width")
    ap.add_argument(
        "--curve-run",
        dest="curve_runs",
        action="append",
        default=[],
        help="another run folder at the same hook (e.g. runs/demo-topk) whose fit-size curve to add",
    )
    ap.add_argument("--runs", default=str(ROOT / "runs" / "dark_matter"))
    ap.add_argument("--out", default=str(ROOT / "bench" / "results" / "dark_matter.json"))
    ap.add_argument("--quick", action="store_true", help="smoke run: small numbers")
    ap.add_argument(
        "--fit-size-only",
        metavar="RUN",
        default=None,
        help="only the fit-size curves, diagnostics and the same-token pursuit / layer-14-residual "
        "comparison of one trained SAE at the hook (e.g. runs/demo-topk), into "
        "bench/results/dark_matter/fit_size.json (minutes; no training)",
    )
    ap.add_argument(
        "--fit-size-out", default=str(ROOT / "bench" / "results" / "dark_matter" / "fit_size.json")
    )
    args = ap.parse_args(argv)
    if args.fit_size_only:
        return fit_size_only(args)
    args.widths = [int(w) for w in args.widths.split(",")]
    args.curve_sizes = sorted(int(n) for n in args.curve_sizes.split(","))
    args.curve_width = args.curve_width or args.widths[len(args.widths) // 2]
    if args.quick:
        args.train_tokens, args.fit_tokens, args.test_tokens = 65536, 20000, 8192
        args.widths, args.ce_windows = [576, 1152, 2304], 8
        args.pursuit_tokens, args.pursuit_fit_tokens = 512, 2048
        args.error_sae_tokens = 40000
        args.curve_sizes = "5000,10000,20000,40000"
        args.runs = str(ROOT / "runs" / "dark_matter_quick")
        args.out = "/tmp/dark_matter_quick/dark_matter_quick.json"
    record: dict[str, Any] = {"provenance": provenance()}
    t0 = time.perf_counter()
    timings: dict[str, float] = {}
    torch.manual_seed(0)
    t = time.perf_counter()
    model = load_model(MODEL, dtype="auto")
    timings["load_model_s"] = time.perf_counter() - t
    trained = train_saes(args, model)
    timings.update(trained["timings"])
    cfg = DarkMatterConfig(
        fit_tokens=args.fit_tokens,
        test_tokens=args.test_tokens,
        ce_windows=args.ce_windows,
        ce_start=32,
        pursuit_tokens=args.pursuit_tokens,
        pursuit_fit_tokens=args.pursuit_fit_tokens,
        seed=1,  # another document order than training's (seed 0)
        estimator=args.estimator,
    )
    t = time.perf_counter()
    n_cap = max(cfg.fit_tokens, args.curve_sizes[-1])
    fit = capture_rows(model, [PREV_HOOK, HOOK], "train", n_cap, cfg, progress=True)
    fit_all = fit[HOOK]
    fit = {h: v[: cfg.fit_tokens] for h, v in fit.items()}
    test = capture_rows(model, [PREV_HOOK, HOOK], "validation", cfg.test_tokens, cfg, progress=True)
    windows = validation_windows(model, cfg)
    timings["capture_s"] = time.perf_counter() - t

    result: dict[str, Any] = {"saes": {}, "runs": {}}
    reports, inters, saes = {}, {}, {}
    for w, folder in trained["widths"].items():
        t = time.perf_counter()
        sae = load_sae(folder)
        rep, inter = analyse_sae(
            sae, fit[HOOK], test[HOOK], cfg, model=model, windows=windows, progress=True
        )
        rep["metrics"] = {
            k: RunDir(folder).metrics().get(k)
            for k in ("fvu", "ce_loss_recovered", "dead_fraction")
        }
        label = f"topk d_sae={w}"
        result["saes"][label] = rep
        result["runs"][label] = _rel(folder)
        reports[w], inters[w], saes[w] = rep, inter, sae
        timings[f"analyse_{w}_s"] = time.perf_counter() - t
        print(format_table({"saes": {label: rep}}), flush=True)
    t = time.perf_counter()
    result["scaling"] = scaling_report(reports, inters)
    timings["scaling_s"] = time.perf_counter() - t

    # R² against the fit tokens (nested prefixes of the train split), both estimators
    t = time.perf_counter()
    w = args.curve_width
    result["fit_size"] = _fit_size_block(
        saes[w], f"topk d_sae={w}", fit_all, test[HOOK], inters[w]["x_hat_test"], args.curve_sizes
    )
    result["saes"][f"topk d_sae={w}"]["fit_size"] = {"curves": result["fit_size"]["curves"]}
    result["fit_size_other_runs"] = {}
    for run in args.curve_runs:
        sae = load_sae(run)
        if sae.cfg.hook_name != HOOK:
            raise ValueError(f"{run} reads {sae.cfg.hook_name}, not {HOOK}")
        result["fit_size_other_runs"][_rel(Path(run))] = _fit_size_block(
            sae,
            _rel(Path(run)),
            fit_all,
            test[HOOK],
            reconstruct(sae, test[HOOK]),
            args.curve_sizes,
        )
    timings["fit_size_s"] = time.perf_counter() - t

    # previous layer: layer 14's residual, and layer 14's SAE reconstruction
    t = time.perf_counter()
    prev_sae = load_sae(trained["prev"])
    xh14 = {
        "fit": reconstruct(prev_sae, fit[PREV_HOOK]),
        "test": reconstruct(prev_sae, test[PREV_HOOK]),
    }
    result["previous_layer_sae"] = {
        "hook": PREV_HOOK,
        "d_sae": prev_sae.cfg.d_sae,
        "fvu": RunDir(trained["prev"]).metrics().get("fvu"),
    }
    result["previous_layer"] = {}
    for w in args.widths:
        e_fit = fit[HOOK] - inters[w]["x_hat_fit"]
        e_test = test[HOOK] - inters[w]["x_hat_test"]
        block = {}
        for source, (z_fit, z_test) in {
            "layer 14 residual": (fit[PREV_HOOK], test[PREV_HOOK]),
            "layer 14 SAE reconstruction": (xh14["fit"], xh14["test"]),
        }.items():
            block[source] = nonlinear_error_removed(
                chunks(fit[HOOK], z_fit, e_fit),
                chunks(test[HOOK], z_test, e_test),
                estimator=cfg.estimator,
                block_rows=block_rows_for(cfg.fit_tokens),
            )
        result["previous_layer"][f"topk d_sae={w}"] = block
    # pursuit against the previous-layer maps on the same (pursued) tokens, same estimator
    result["pursuit_vs_previous_layer"] = {}
    for w in args.widths:
        pursued = inters[w]["pursuit"]
        if not pursued:
            continue
        nf, nt = pursued["fit"]["sae"].shape[0], pursued["test"]["sae"].shape[0]
        block = {}
        for source, (z_fit, z_test) in {
            "layer 14 residual": (fit[PREV_HOOK], test[PREV_HOOK]),
            "layer 14 SAE reconstruction": (xh14["fit"], xh14["test"]),
        }.items():
            parts = [
                {"x": x[:n], "z": z[:n], "x_hat": p["sae"], "x_gp": p["pursuit"]}
                for x, z, p, n in (
                    (fit[HOOK], z_fit, pursued["fit"], nf),
                    (test[HOOK], z_test, pursued["test"], nt),
                )
            ]
            block[source] = compare_with_pursuit(*parts, estimator=cfg.estimator)
        result["pursuit_vs_previous_layer"][f"topk d_sae={w}"] = block
    timings["previous_layer_s"] = time.perf_counter() - t

    # SAEs on e_lin and e_nl of the middle width, at equal k
    t = time.perf_counter()
    mid = args.widths[len(args.widths) // 2]
    if args.error_sae_tokens > cfg.fit_tokens:  # more rows than the fit set: capture them
        more = cfg.model_copy(update={"seed": 2})
        x_err = capture_rows(model, [HOOK], "train", args.error_sae_tokens, more, progress=True)[
            HOOK
        ]
        pairs = chunks(x_err, reconstruct(saes[mid], x_err))
    else:
        pairs = chunks(fit[HOOK], inters[mid]["x_hat_fit"])
    parts = error_parts(pairs, inters[mid]["lmap"])  # a* from the fit tokens
    del pairs
    rows = parts["e_lin"].shape[0]
    holdout = min(16384, rows // 8)
    trained_err = train_error_saes(
        parts, HOOK, Path(args.runs) / "error_saes", d_sae=mid, k=args.k, holdout_tokens=holdout
    )
    for v in trained_err.values():
        v["run"] = _rel(Path(v["run"]))
    result["error_saes"] = {
        "of": f"topk d_sae={mid}",
        "d_sae": mid,
        "k": args.k,
        "rows": rows,
        "parts_sq_mean": {k: float((v.double() ** 2).sum(1).mean()) for k, v in parts.items()},
        **trained_err,
    }
    del parts
    timings["error_saes_s"] = time.perf_counter() - t

    timings["total_s"] = time.perf_counter() - t0
    record.update(
        {
            "setting": {
                "model": MODEL,
                "model_dtype": "auto",
                "hook": HOOK,
                "previous_hook": PREV_HOOK,
                "train_tokens": args.train_tokens,
                "widths": args.widths,
                "k": args.k,
                "analysis": cfg.model_dump(),
            },
            "paper": PAPER,
            **result,
            "timings": timings,
        }
    )
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_json(out, record)
    fig_dir = out.with_suffix("")
    fig_dir.mkdir(parents=True, exist_ok=True)
    for name, fig in all_figures(record).items():
        fig.write_json(fig_dir / f"{name}.json")
    print(format_table(record))
    print(
        json.dumps(
            {
                "scaling": record["scaling"]["power_laws"],
                "previous_layer": record["previous_layer"],
                "error_saes": record["error_saes"],
                "timings": timings,
            },
            indent=1,
            default=str,
        )
    )
    return record


if __name__ == "__main__":
    main()
