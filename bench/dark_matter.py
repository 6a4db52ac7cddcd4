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

    flock /tmp/interp-heavy.lock python bench/dark_matter.py
    python bench/dark_matter.py --quick      # smoke run (small numbers, minutes)
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
from pathlib import Path
from typing import Any

import torch

ROOT = Path(__file__).resolve().parents[1]
for p in (ROOT, ROOT / "bench"):
    if str(p) not in sys.path:
        sys.path.insert(0, str(p))

from _provenance import provenance  # noqa: E402

from interp.io import atomic_write_json  # noqa: E402
from interp.models import load_model  # noqa: E402
from saes.analysis.dark_matter.cli import format_table  # noqa: E402
from saes.analysis.dark_matter.error_saes import error_parts, train_error_saes  # noqa: E402
from saes.analysis.dark_matter.figures import all_figures  # noqa: E402
from saes.analysis.dark_matter.pipeline import (  # noqa: E402
    DarkMatterConfig,
    analyse_sae,
    capture_rows,
    chunks,
    reconstruct,
    scaling_report,
    validation_windows,
)
from saes.analysis.dark_matter.previous_layer import nonlinear_error_removed  # noqa: E402
from saes.artifacts import load_sae  # noqa: E402
from saes.rundir import RunDir  # noqa: E402
from saes.train import train  # noqa: E402
from saes.train_config import RunConfig  # noqa: E402

LAYER = 15
HOOK = f"blocks.{LAYER}.hook_resid_post"
PREV_HOOK = f"blocks.{LAYER - 1}.hook_resid_post"
MODEL = "smollm2-135m"
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
            "batch_tokens": 4096,
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
    ap.add_argument("--pursuit-tokens", type=int, default=4096)
    ap.add_argument(
        "--error-sae-tokens",
        type=int,
        default=400_000,
        help="rows of e_lin / e_nl the two error SAEs train on (as many as the SAEs themselves)",
    )
    ap.add_argument("--pursuit-fit-tokens", type=int, default=16384)
    ap.add_argument("--runs", default=str(ROOT / "runs" / "dark_matter"))
    ap.add_argument("--out", default=str(ROOT / "bench" / "results" / "dark_matter.json"))
    ap.add_argument("--quick", action="store_true", help="smoke run: small numbers")
    args = ap.parse_args(argv)
    args.widths = [int(w) for w in args.widths.split(",")]
    if args.quick:
        args.train_tokens, args.fit_tokens, args.test_tokens = 65536, 20000, 8192
        args.widths, args.ce_windows = [576, 1152, 2304], 8
        args.pursuit_tokens, args.pursuit_fit_tokens = 512, 2048
        args.error_sae_tokens = 40000
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
    )
    t = time.perf_counter()
    fit = capture_rows(model, [PREV_HOOK, HOOK], "train", cfg.fit_tokens, cfg, progress=True)
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
                chunks(fit[HOOK], z_fit, e_fit), chunks(test[HOOK], z_test, e_test)
            )
        result["previous_layer"][f"topk d_sae={w}"] = block
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


# ------------------------------------------------------------------------------------------------
# README tables (bench/report.py renders them from bench/results/dark_matter.json)
# ------------------------------------------------------------------------------------------------
NM = "not measured"
# Thresholds of the "reproduces?" column, applied to the numbers in the JSON:
HALF = (0.35, 0.65)  # "about half": every per-dimension R^2 of the error vector within 0.5 +- 0.15
NORM_R2 = 0.9  # the paper's norm-probe R^2 (> 0.9): the best probe R^2 must reach it
PROPORTIONAL = (0.9, 1.1)  # e_nl's share of the two partial dCEs / its share of sum ||e||^2
ROUGHLY = (0.7, 1.3)  # ... "roughly proportional" within this band
SAME_TOKENS = 0.8  # "larger SAEs struggle on the same tokens": every cross-width R^2 at least this
HELPS = 0.01  # "the nonlinear norm helps": it adds at least this much R^2 on every pair
FLAT = 0.05  # a part "stays flat" when its FVU changes by at most 5% from the smallest width
WORSE = 0.05  # "e_nl SAEs are worse": their FVU over 5% above the e_lin SAE's
SLIGHT = 0.10  # "a very slight decrease": pursuit removes at most 10% of the nonlinear error
PRETTY = {"smollm2-135m": "SmolLM2-135M"}
H_MAIN = (
    "d_sae|FVU of x_hat|FVU of x_hat + x a*|R² of e, per dimension (paper's)|R² of e, whole vector"
    "|nonlinear share of Σ‖e‖²|‖e‖² probe R²|‖e‖² from ‖x‖²|‖e‖ probe R²|‖e‖ from ‖x‖|constant"
)
H_CE = (
    "d_sae|ΔCE x_hat|ΔCE x_hat + e_lin (e_nl missing)|ΔCE x_hat + e_nl (e_lin missing)"
    "|e_nl share of Σ‖e‖²|e_nl share of the two ΔCEs"
)
H_PURSUIT = (
    "d_sae|FVU, SAE code|FVU, gradient pursuit (same per-token L0)|tokens where pursuit wins"
    "|nonlinear error removed by pursuit"
)
H_CROSS = "small -> large|R² of ‖e_large‖ from ‖e_small‖|+ ‖e_nl,small‖|+ ‖e_lin,small‖ (control)"
PARTS = {"fvu_sae": "whole error", "fvu_linear": "linear part", "fvu_nonlinear": "nonlinear part"}


def _get(d, *path):
    for key in path:
        if not isinstance(d, dict) or key not in d:
            return None
        d = d[key]
    return d


def _isnum(x) -> bool:
    return isinstance(x, (int, float)) and not isinstance(x, bool)


def _f(x, nd: int = 3) -> str:
    return f"{x:.{nd}f}" if _isnum(x) else NM


def _n(x) -> str:
    return f"{x:,.0f}" if _isnum(x) else NM


def _p(x, nd: int = 1) -> str:
    return f"{100 * x:.{nd}f}%" if _isnum(x) else NM


def _span(xs, nd: int = 2, pct: bool = False) -> str:
    """min-max of the measured values (one value: itself)."""
    xs = [x for x in xs if _isnum(x)]
    if not xs:
        return NM
    lo, hi = ((f"{100 * v:.0f}" if pct else f"{v:.{nd}f}") for v in (min(xs), max(xs)))
    return (lo if lo == hi else f"{lo}-{hi}") + ("%" if pct else "")


def _up(xs, nd: int = 3) -> str:
    """The largest |x|, rounded up at ``nd`` decimals."""
    return f"{math.ceil(max(abs(x) for x in xs) * 10**nd) / 10**nd:.{nd}f}"


def _table(header: str | list[str], rows: list[list[str]]) -> str:
    header = header.split("|") if isinstance(header, str) else header
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    return "\n".join(lines + ["| " + " | ".join(r) + " |" for r in rows])


def _batch_tokens() -> int:
    """The batch size this benchmark's SAEs train with (from ``_base``)."""
    return _base(argparse.Namespace(train_tokens=0, k=32), "", HOOK)["data"]["batch_tokens"]


def _width(rep: dict, label: str) -> str:
    w = _get(rep, "sae", "d_sae")
    return _n(w) if _isnum(w) else label


def _ce_shares(rep: dict) -> tuple[float | None, float | None]:
    """(e_nl's share of sum ||e||^2, e_nl's share of the two partial dCEs): the dCE e_nl causes is
    the one with e_nl missing (x_hat + e_lin)."""
    ce = _get(rep, "downstream", "ce_increase") or {}
    lin, nl = ce.get("x_hat_plus_e_lin"), ce.get("x_hat_plus_e_nl")
    share = lin / (lin + nl) if _isnum(lin) and _isnum(nl) and lin + nl > 0 else None
    return _get(rep, "decomposition", "nonlinear_norm_share"), share


def _sources(d: dict) -> list[str]:
    return list(
        dict.fromkeys(s for block in (d.get("previous_layer") or {}).values() for s in block)
    )


def _setting(d: dict) -> str:
    s, a, t = d.get("setting") or {}, _get(d, "setting", "analysis") or {}, d.get("timings") or {}
    tt, prev = s.get("train_tokens"), d.get("previous_layer_sae") or {}
    steps = f", {tt // _batch_tokens()} steps of {_n(_batch_tokens())}" if _isnum(tt) else ""
    train_s = sum(v for k, v in t.items() if k.startswith("train_") and _isnum(v))
    return (
        f"{PRETTY.get(s.get('model'), s.get('model'))} `{s.get('hook')}` (model dtype "
        f"{s.get('model_dtype')}), {a.get('source', 'stdlib')} corpus. TopK SAEs of widths "
        f"{' / '.join(_n(w) for w in s.get('widths') or [])} at k {s.get('k')} trained from one "
        f"forward per batch (a multi-SAE job; {_n(tt)} tokens{steps}) and a "
        f"{_n(prev.get('d_sae'))}-wide SAE on `{prev.get('hook', s.get('previous_hook'))}` for the "
        f"previous-layer maps. a* fitted on {_n(a.get('fit_tokens'))} train-split tokens, "
        f"everything scored on {_n(a.get('test_tokens'))} validation tokens; BOS and rows over "
        f"{a.get('max_norm_ratio', 0):g}x the batch's median norm left out (as training does: "
        f"SmolLM2's attention-sink tokens would otherwise dominate every sum of squares). Pursuit "
        f"on {_n(a.get('pursuit_tokens'))} test tokens (its error split with maps fitted on "
        f"{_n(a.get('pursuit_fit_tokens'))} pursued fit tokens; the SAE's own error is re-split on "
        f"the same tokens for the comparison). Whole run: {_n(t.get('total_s'))} s on "
        f"{_n(_get(d, 'provenance', 'machine', 'cores'))} cores (training {_n(train_s)} s)."
    )


def _main_tables(d: dict, saes: dict) -> list[str]:
    dec_keys = ("fvu_sae", "fvu_sae_plus_linear", "r2_per_dim", "r2_vector", "nonlinear_norm_share")
    norm_keys = (("sq_norm", "probe"), ("sq_norm", "x_norm"), ("norm", "probe"), ("norm", "x_norm"))
    rows = [
        [_width(r, lab), *(_f(_get(r, "decomposition", k)) for k in dec_keys)]
        + [_f(_get(r, "norms", *k)) for k in (*norm_keys, ("sq_norm", "constant"))]
        for lab, r in saes.items()
    ]
    out = [_table(H_MAIN, rows)]
    d0 = next((r["downstream"] for r in saes.values() if "downstream" in r), None)
    if d0:
        start, ctx = d0.get("start"), d0.get("context_size")
        last = ctx - 1 if _isnum(ctx) else "?"
        out.append(
            f"Spliced CE ({d0.get('n_windows')} validation windows of {ctx} tokens, positions "
            f"{start}..{last} spliced, {_n(d0.get('n_predictions'))} predictions; clean CE "
            f"{_f(d0.get('ce_clean'))}):"
        )
        ce_keys = ("x_hat", "x_hat_plus_e_lin", "x_hat_plus_e_nl")
        rows = [
            [_width(r, lab), *(_f(_get(r, "downstream", "ce_increase", k)) for k in ce_keys)]
            + [_f(v) for v in _ce_shares(r)]
            for lab, r in saes.items()
        ]
        out.append(_table(H_CE, rows))
    sources, prev = _sources(d), d.get("previous_layer") or {}
    rows = []
    for lab, r in saes.items():
        pt = _get(r, "pursuit", "test") or {}
        rows.append(
            [_width(r, lab), _f(pt.get("fvu_sae")), _f(pt.get("fvu_pursuit"))]
            + [_p(pt.get("pursuit_better_fraction"))]
            + [_p(_get(r, "pursuit", "nonlinear_reduction", "pursuit"))]
            + [_p(_get(prev, lab, s, "nonlinear_removed")) for s in sources]
        )
    out.append(_table(H_PURSUIT.split("|") + [f"by a map from {s}" for s in sources], rows))
    return out


def _scaling_tables(d: dict) -> list[str]:
    sc = d.get("scaling")
    if not sc:
        return []
    rows = [
        [f"{_n(c.get('small_width'))} -> {_n(c.get('large_width'))}"]
        + [_f(c.get(k)) for k in ("small", "small_plus_nl", "small_plus_lin")]
        for c in sc.get("cross_width") or []
    ]
    out = [_table(H_CROSS, rows)]
    rows = []
    for key, name in PARTS.items():
        p = _get(sc, "power_laws", key) or {}
        fit = NM
        if _isnum(p.get("a")):
            fit = f"c = {_f(p.get('c'))}, a = {p['a']:.3g}, m = {_f(p.get('m'), 2)}"
        if p.get("m_at_grid_edge"):
            fit += " (m at the grid's end: no decaying power law)"
        rows.append([name, " / ".join(_f(v) for v in sc.get(key) or []), fit])
    widths = " / ".join(_n(w) for w in sc.get("widths") or [])
    return [*out, _table(["part", f"FVU at {widths}", "fit c + a·W^m"], rows)]


def _error_saes(d: dict) -> list[str]:
    es = d.get("error_saes")
    if not es:
        return []
    lin, nl = es.get("e_lin") or {}, es.get("e_nl") or {}
    of = _n(_get(d, "saes", es.get("of"), "sae", "d_sae"))
    return [
        f"SAEs on the two parts of the {of}-wide SAE's error (d_sae {_n(es.get('d_sae'))}, k "
        f"{es.get('k')}, {_n(lin.get('train_tokens'))} training rows each, FVU on "
        f"{_n(lin.get('holdout_tokens'))} held-out rows): e_lin FVU {_f(lin.get('fvu'))}, e_nl FVU "
        f"{_f(nl.get('fvu'))}."
    ]


def _norm_rows(reps: list[dict]) -> list[list[str]]:
    dec = [r.get("decomposition") or {} for r in reps]
    per_dim = [x.get("r2_per_dim") for x in dec if _isnum(x.get("r2_per_dim"))]
    half = "yes" if all(HALF[0] <= v <= HALF[1] for v in per_dim) else "no"
    sq = [v for r in reps if _isnum(v := _get(r, "norms", "sq_norm", "probe"))]
    nn = [v for r in reps if _isnum(v := _get(r, "norms", "norm", "probe"))]
    xs = [
        v for r in reps for t in ("sq_norm", "norm") if _isnum(v := _get(r, "norms", t, "x_norm"))
    ]
    verdict = f"no: below {NORM_R2}"
    if sq + nn and max(sq + nn) >= NORM_R2:
        verdict = "yes"
    elif sq + nn and xs and min(sq + nn) > max(xs):
        verdict = f"no: well above ‖x‖ alone, but below {NORM_R2}"
    return [
        [
            "a linear map of x predicts about half of the error vector",
            "~0.5",
            f"R² {_span(per_dim)} per dimension, {_span([x.get('r2_vector') for x in dec])} of "
            "the vector",
            half if per_dim else NM,
        ],
        [
            "... and > 90% of its norm (probe R²)",
            f"> {NORM_R2}",
            f"{_span(sq)} for ‖e‖², {_span(nn)} for ‖e‖ (‖x‖ alone: {_span(xs)})",
            verdict if sq + nn else NM,
        ],
    ]


def _ce_row(reps: list[dict]) -> list[list[str]]:
    shares = [(a, b) for a, b in map(_ce_shares, reps) if _isnum(a) and _isnum(b) and a > 0]
    if not shares:
        return []
    ratios = [b / a for a, b in shares]
    if all(PROPORTIONAL[0] <= r <= PROPORTIONAL[1] for r in ratios):
        verdict = "yes"
    elif all(ROUGHLY[0] <= r <= ROUGHLY[1] for r in ratios):
        side = "less" if max(ratios) < 1 else "more" if min(ratios) > 1 else "about"
        verdict = f"roughly ({side} than proportional: ratio {_span(ratios)})"
    else:
        verdict = f"no (ratio {_span(ratios)})"
    here = (
        f"e_nl is {_span([a for a, _ in shares], pct=True)} of Σ‖e‖² and "
        f"{_span([b for _, b in shares], pct=True)} of the two partial ΔCEs"
    )
    return [["e_nl costs CE in proportion to its size", "proportional", here, verdict]]


def _scaling_rows(sc: dict) -> list[list[str]]:
    rows, cw = [], sc.get("cross_width") or []
    if cw:
        r2 = [c.get("small") for c in cw]
        same = "yes" if all(_isnum(v) and v >= SAME_TOKENS for v in r2) else "no"
        here = f"R² {_span(r2)} of the larger SAE's per-token ‖e‖ from the smaller's"
        rows.append(["larger SAEs struggle on the same tokens", "yes", here, same])
        gain = [c["small_plus_nl"] - c["small"] for c in cw]
        ctrl = [c["small_plus_lin"] - c["small"] for c in cw]
        helps = all(g >= HELPS and g > c for g, c in zip(gain, ctrl))
        here = f"changes R² by at most ±{_up(gain)} (the linear-norm control: ±{_up(ctrl)})"
        if helps:
            here = f"adds {_span(gain, 3)} R² (the linear-norm control: {_span(ctrl, 3)})"
        rows.append(
            ["the nonlinear error norm helps predict that", "helps", here, "yes" * helps or "no"]
        )
    if sc.get("widths"):

        def trend(key: str) -> str:
            v = sc.get(key) or []
            change = (v[-1] - v[0]) / v[0]
            word = "stays flat" if abs(change) <= FLAT else "falls" if change < 0 else "rises"
            edge = _get(sc, "power_laws", key, "m_at_grid_edge")
            return f"{word} ({_f(v[0])} -> {_f(v[-1])}{'; no decaying power law fits it' * bool(edge)})"

        here = f"the linear part {trend('fvu_linear')}, the nonlinear part {trend('fvu_nonlinear')}"
        rows.append(
            ["width scaling of the parts", "-", here, f"(descriptive: {len(sc['widths'])} points)"]
        )
    return rows


def _error_sae_row(es: dict) -> list[list[str]]:
    fl, fn = _get(es, "e_lin", "fvu"), _get(es, "e_nl", "fvu")
    if not (_isnum(fl) and _isnum(fn)):
        return []
    verdict = "yes" if fn > fl * (1 + WORSE) else "no" if fn >= fl * (1 - WORSE) else "no: better"
    here = (
        f"FVU {_f(fn)} vs {_f(fl)} ({_n(_get(es, 'e_nl', 'train_tokens'))} rows each, d_sae "
        f"{_n(es.get('d_sae'))}, k {es.get('k')})"
    )
    claim = "SAEs trained on e_nl are worse than on e_lin (equal k)"
    return [[claim, '"quantitatively worse"', here, verdict]]


def _pursuit_rows(d: dict, saes: dict) -> list[list[str]]:
    reps = list(saes.values())
    nl_red = [_get(r, "pursuit", "nonlinear_reduction", "pursuit") for r in reps]
    if not any(_isnum(v) for v in nl_red):
        return []
    lin_red = [_get(r, "pursuit", "linear_reduction", "pursuit") for r in reps]
    pt = [_get(r, "pursuit", "test") or {} for r in reps]
    tt = _get(d, "setting", "train_tokens")
    steps = f" ({tt // _batch_tokens()} steps)" if _isnum(tt) else ""
    verdict = "yes"
    if max(v for v in nl_red if _isnum(v)) > SLIGHT:
        verdict = (
            f"larger than the paper's: our encoders are short-trained{steps}, Gemma Scope's are not"
        )
    here = (
        f"{_span(nl_red, pct=True)} of it (and {_span(lin_red, pct=True)} of the linear part; "
        f"pursuit beats the SAE's code on {_span([p.get('pursuit_better_fraction') for p in pt], pct=True)} "
        f"of tokens, FVU {_span([p.get('fvu_sae') for p in pt])} -> "
        f"{_span([p.get('fvu_pursuit') for p in pt])})"
    )
    rows = [["gradient pursuit reduces nonlinear error", '"very slight"', here, verdict]]
    here, verdicts, prev = [], [], d.get("previous_layer") or {}
    for s in _sources(d):
        removed = [_get(prev, lab, s, "nonlinear_removed") for lab in saes]
        here.append(f"from {s}: {_span(removed, pct=True)}")
        pairs = [(a, b) for a, b in zip(removed, nl_red) if _isnum(a) and _isnum(b)]
        verdicts.append(f"{'yes' if pairs and all(a > b for a, b in pairs) else 'no'} for the {s}")
    if here:
        claim = "linear maps from the previous layer reduce it more (than pursuit)"
        rows.append([claim, '"larger"', "; ".join(here), "; ".join(verdicts)])
    return rows


def readme(d: dict | None) -> str:
    """The README's dark-matter tables from bench/results/dark_matter.json (None: not measured)."""
    saes = (d or {}).get("saes") or {}
    if not saes:
        return "Dark matter: not measured (no SAE results in `bench/results/dark_matter.json`; run `python bench/dark_matter.py`)."
    s, reps = d.get("setting") or {}, list(saes.values())
    model, tt = PRETTY.get(s.get("model"), s.get("model")), s.get("train_tokens")
    hook = str(s.get("hook"))
    layer = hook.split(".")[1] if hook.startswith("blocks.") else hook
    verdicts = [
        *_norm_rows(reps),
        *_ce_row(reps),
        *_scaling_rows(d.get("scaling") or {}),
        *_error_sae_row(d.get("error_saes") or {}),
        *_pursuit_rows(d, saes),
    ]
    here = f"here ({model}, layer {layer}, our {_n(tt)}-token SAEs)"
    parts = [_setting(d), *_main_tables(d, saes), *_scaling_tables(d), *_error_saes(d)]
    parts.append(f"Against the paper: {_get(d, 'paper', 'setting') or 'Engels et al. 2024'}.")
    parts.append(_table(["claim", "paper", here, "reproduces?"], verdicts))
    dead = [(_get(r, "sae", "d_sae"), _get(r, "metrics", "dead_fraction")) for r in reps]
    dead = [(w, f) for w, f in dead if _isnum(w) and _isnum(f)]
    if dead:
        w, f = max(dead)
        fvus = " / ".join(_f(_get(r, "decomposition", "fvu_sae")) for r in reps)
        windows = next((_get(r, "downstream", "n_windows") for r in reps), None)
        parts.append(
            f"Caveats: {model} instead of Gemma 2 9B, {_n(tt)} training tokens per SAE instead of "
            f"Gemma Scope's billions (the {_n(w)}-wide SAE has {_p(f, 0)} dead latents on the run's "
            f"own evaluation, so width scaling is weak: FVU {fvus}), one layer, one seed, "
            f"{windows} CE windows."
        )
    return "\n\n".join(parts)


if __name__ == "__main__":
    main()
