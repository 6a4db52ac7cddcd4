"""How ``bench.dark_matter`` renders ``bench/results/dark_matter.json`` as markdown (its ``render``,
which ``bench/dark_matter.py`` exports): apart from the module so that each file stays under 700
lines."""

from __future__ import annotations

import json
import math
from pathlib import Path

from bench._markdown import NM, fix, get, isnum, num, pct, table
from bench._provenance import renderer

# ------------------------------------------------------------------------------------------------
# the tables (python -m bench.report renders them from bench/results/dark_matter.json)
# ------------------------------------------------------------------------------------------------
NOT_WORSE = 0.005  # ridge is the default estimator if never this much below OLS on the curve
BATCH_TOKENS = 4096  # the batch size bench/dark_matter.py trains its SAEs with
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


def _span(xs, nd: int = 2, pct: bool = False) -> str:
    """min-max of the measured values (one value: itself)."""
    xs = [x for x in xs if isnum(x)]
    if not xs:
        return NM
    lo, hi = ((f"{100 * v:.0f}" if pct else f"{v:.{nd}f}") for v in (min(xs), max(xs)))
    return (lo if lo == hi else f"{lo}-{hi}") + ("%" if pct else "")


def _up(xs, nd: int = 3) -> str:
    """The largest |x|, rounded up at ``nd`` decimals."""
    return f"{math.ceil(max(abs(x) for x in xs) * 10**nd) / 10**nd:.{nd}f}"


def _batch_tokens() -> int:
    """The batch size this benchmark's SAEs train with (``dark_matter._base``)."""
    return BATCH_TOKENS


def _width(rep: dict, label: str) -> str:
    w = get(rep, "sae", "d_sae")
    return num(w) if isnum(w) else label


def _ce_shares(rep: dict) -> tuple[float | None, float | None]:
    """(e_nl's share of sum ||e||^2, e_nl's share of the two partial dCEs): the dCE e_nl causes is
    the one with e_nl missing (x_hat + e_lin)."""
    ce = get(rep, "downstream", "ce_increase") or {}
    lin, nl = ce.get("x_hat_plus_e_lin"), ce.get("x_hat_plus_e_nl")
    share = lin / (lin + nl) if isnum(lin) and isnum(nl) and lin + nl > 0 else None
    return get(rep, "decomposition", "nonlinear_norm_share"), share


def _sources(d: dict) -> list[str]:
    return list(
        dict.fromkeys(s for block in (d.get("previous_layer") or {}).values() for s in block)
    )


ESTIMATOR_NAMES = {
    "ols": "least squares (OLS, the paper's)",
    "ridge": "ridge with the penalty chosen on 5 held-out folds of the fit tokens",
}


def _est(name) -> str:
    return ESTIMATOR_NAMES.get(name, str(name))


def _conv(rep: dict) -> str:
    """'yes' / 'no (largest move)' for the n/2 -> n check of one SAE's report."""
    c = rep.get("convergence") or {}
    if "converged" not in c:
        return NM
    if c["converged"]:
        return f"yes (≤ {c['tolerance']:g})"
    big = max(c["unconverged"], key=lambda k: abs(c["changes"][k]))
    return f"**no** ({big} {c['changes'][big]:+.3f})"


CURVE_COLS = (
    ("r2_per_dim", "R² per dim"),
    ("r2_vector", "R² vector"),
    ("linear_norm_share", "linear share"),
    ("norm_probe_r2", "‖e‖² probe R²"),
)


def _fit_size_all(d: dict) -> list[str]:
    out = _fit_size_tables(d.get("fit_size") or {})
    for run, fs in (d.get("fit_size_other_runs") or {}).items():
        out += _fit_size_tables(
            fs, f"`{run}`, the demo's SAE (`make demo`; same hook, same tokens)"
        )
    return out


def _fit_size_tables(fs: dict, name: str | None = None) -> list[str]:
    curves = (fs or {}).get("curves") or {}
    if not curves:
        return []
    ests = [e for e in ("ols", "ridge") if curves.get(e)]
    sizes = [p["n_fit"] for p in curves[ests[0]]]
    header = ["fit tokens"] + [
        f"{e.upper() if e == 'ols' else e}: {c}" for e in ests for _, c in CURVE_COLS
    ]
    if "ridge" in ests:
        header.append("ridge α (a*)")
    rows = []
    for i, n in enumerate(sizes):
        row = [num(n)] + [fix(curves[e][i][k]) for e in ests for k, _ in CURVE_COLS]
        if "ridge" in ests:
            row.append(f"{curves['ridge'][i]['alpha']:.2g}")
        rows.append(row)
    tol = fs.get("step_tolerance")
    flat = []
    for e in ests:
        at = (fs.get("flattens_at") or {}).get(e) or {}
        where = ", ".join(
            f"{c} {'at ' + num(at.get(k)) if isnum(at.get(k)) else 'not yet'}"
            for k, c in CURVE_COLS
        )
        flat.append(f"{e.upper() if e == 'ols' else e}: {where}")
    out = [
        f"Held-out R² against the fit tokens ({name or fs.get('of')}; nested prefixes of the train split, "
        f"each fit scored on the same {num(fs.get('test_tokens'))} validation tokens; ridge's α is "
        f"relative: λ = α·trace(XᵀX)/d):",
        table(header, rows),
        f"Where each curve flattens (criterion: every later step to the next size changes it by "
        f"less than {tol}): " + "; ".join(flat) + ".",
    ]
    if set(ests) == {"ols", "ridge"}:
        gains = [
            (curves["ridge"][i][k] - curves["ols"][i][k], sizes[i], c)
            for i in range(len(sizes))
            for k, c in CURVE_COLS
        ]
        worst, best = min(gains), max(gains)
        ok = worst[0] >= -NOT_WORSE
        line = (
            f"Ridge against OLS over these sizes and quantities: at worst {worst[0]:+.3f} "
            f"({worst[2]} at {num(worst[1])}), at best {best[0]:+.3f} ({best[2]} at "
            f"{num(best[1])})."
        )
        if name is None:
            line += (
                f" Criterion for the default estimator: ridge when it is never more than "
                f"{NOT_WORSE} below OLS here: "
                + ("met, so ridge is the default." if ok else "not met, so OLS should be.")
            )
        out.append(line)
    diag = fs.get("diagnostics") or []
    if diag:
        ratio = diag[0].get("ratio")
        h = [
            "fit tokens",
            "cond(XᵀX)",
            "R² vector, fit rows (in-sample)",
            "R² vector, held out",
            f"held out, rows over {ratio:g}x median ‖x‖ left out",
            "held out, n rows drawn at random from all fit rows",
            "max leverage",
            f"share of Σ leverage on rows over {ratio:g}x (share of rows)",
        ]
        rows = [
            [
                num(x["n_fit"]),
                f"{x['cond']:.2g}",
                fix(x["r2_in_sample"]),
                fix(x["r2_held_out"]),
                fix(x["r2_held_out_without_large"]),
                fix(x["r2_held_out_random_rows"]),
                fix(x["leverage_max"]),
                f"{pct(x['leverage_share_large'], 1)} ({pct(x['rows_share_large'], 2)})",
            ]
            for x in diag
        ]
        out += [
            "Why small least-squares fits fail (OLS, no intercept, the same SAE):",
            table(h, rows),
        ]
    return out


def _same_token_table(d: dict) -> list[str]:
    same = d.get("pursuit_vs_previous_layer") or {}
    rows = []
    for lab, block in same.items():
        for src, r in block.items():
            lo, hi = r["interval"]
            rows.append(
                [
                    _width(get(d, "saes", lab) or {}, lab),
                    src,
                    pct(r["removed_by_pursuit"], 1),
                    pct(r["removed_by_previous_layer"], 1),
                    f"{100 * r['difference']:+.1f} pp [{100 * lo:+.1f}, {100 * hi:+.1f}]",
                    f"{100 * r['difference_half_fit']:+.1f} pp"
                    if "difference_half_fit" in r
                    else NM,
                    r["verdict"],
                ]
            )
    if not rows:
        return []
    r0 = next(iter(next(iter(same.values())).values()))
    return [
        f"Pursuit against the previous-layer maps on the same tokens ({num(r0['n_fit'])} pursued fit "
        f"tokens, {num(r0['n_test'])} test tokens, every map by {_est(r0['estimator'])}): the share "
        f"of the SAE's nonlinear error each removes, and their difference with a "
        f"{r0['level']:.0%} block-bootstrap interval over the test tokens ({r0['n_boot']} resamples "
        f"of {r0['block_rows']}-token blocks). Criterion: resolved only when the interval excludes "
        '0 and the maps fitted on half the fit tokens give the same sign; else "not resolved":',
        table(
            [
                "d_sae",
                "map from",
                "removed by pursuit",
                "removed by the map",
                "map - pursuit [interval]",
                "map - pursuit, maps on half the fit tokens",
                "larger",
            ],
            rows,
        ),
    ]


def _setting(d: dict) -> str:
    s, a, t = d.get("setting") or {}, get(d, "setting", "analysis") or {}, d.get("timings") or {}
    tt, prev = s.get("train_tokens"), d.get("previous_layer_sae") or {}
    steps = f", {tt // _batch_tokens()} steps of {num(_batch_tokens())}" if isnum(tt) else ""
    train_s = sum(v for k, v in t.items() if k.startswith("train_") and isnum(v))
    return (
        f"{PRETTY.get(s.get('model'), s.get('model'))} `{s.get('hook')}` (model dtype "
        f"{s.get('model_dtype')}), {a.get('source', 'stdlib')} corpus. TopK SAEs of widths "
        f"{' / '.join(num(w) for w in s.get('widths') or [])} at k {s.get('k')} trained from one "
        f"forward per batch (a multi-SAE job; {num(tt)} tokens{steps}) and a "
        f"{num(prev.get('d_sae'))}-wide SAE on `{prev.get('hook', s.get('previous_hook'))}` for the "
        f"previous-layer maps. a* and every other map fitted by {_est(a.get('estimator', 'ols'))} "
        f"on {num(a.get('fit_tokens'))} train-split tokens, "
        f"everything scored on {num(a.get('test_tokens'))} validation tokens; BOS and rows over "
        f"{a.get('max_norm_ratio', 0):g}x the batch's median norm left out (as training does: "
        f"SmolLM2's attention-sink tokens would otherwise dominate every sum of squares). Pursuit "
        f"on {num(a.get('pursuit_tokens'))} test tokens (its error split with maps fitted on "
        f"{num(a.get('pursuit_fit_tokens'))} pursued fit tokens; the SAE's own error is re-split on "
        f"the same tokens for the comparison). Whole run: {num(t.get('total_s'))} s on "
        f"{num(get(d, 'provenance', 'machine', 'cores'))} cores (training {num(train_s)} s)."
    )


def _main_tables(d: dict, saes: dict) -> list[str]:
    dec_keys = ("fvu_sae", "fvu_sae_plus_linear", "r2_per_dim", "r2_vector", "nonlinear_norm_share")
    norm_keys = (("sq_norm", "probe"), ("sq_norm", "x_norm"), ("norm", "probe"), ("norm", "x_norm"))
    rows = [
        [_width(r, lab), *(fix(get(r, "decomposition", k)) for k in dec_keys)]
        + [fix(get(r, "norms", *k)) for k in (*norm_keys, ("sq_norm", "constant"))]
        + [_conv(r)]
        for lab, r in saes.items()
    ]
    out = [table(H_MAIN + "|converged? (R² moves from n/2 to n fit tokens)", rows)]
    d0 = next((r["downstream"] for r in saes.values() if "downstream" in r), None)
    if d0:
        start, ctx = d0.get("start"), d0.get("context_size")
        last = ctx - 1 if isnum(ctx) else "?"
        out.append(
            f"Spliced CE ({d0.get('n_windows')} validation windows of {ctx} tokens, positions "
            f"{start}..{last} spliced, {num(d0.get('n_predictions'))} predictions; clean CE "
            f"{fix(d0.get('ce_clean'))}):"
        )
        ce_keys = ("x_hat", "x_hat_plus_e_lin", "x_hat_plus_e_nl")
        rows = [
            [_width(r, lab), *(fix(get(r, "downstream", "ce_increase", k)) for k in ce_keys)]
            + [fix(v) for v in _ce_shares(r)]
            for lab, r in saes.items()
        ]
        out.append(table(H_CE, rows))
    sources, prev = _sources(d), d.get("previous_layer") or {}
    rows = []
    for lab, r in saes.items():
        pt = get(r, "pursuit", "test") or {}
        rows.append(
            [_width(r, lab), fix(pt.get("fvu_sae")), fix(pt.get("fvu_pursuit"))]
            + [pct(pt.get("pursuit_better_fraction"), 1)]
            + [pct(get(r, "pursuit", "nonlinear_reduction", "pursuit"), 1)]
            + [pct(get(prev, lab, s, "nonlinear_removed"), 1) for s in sources]
        )
    a = get(d, "setting", "analysis") or {}
    head = H_PURSUIT.split("|")
    head[-1] += f" (maps on {num(a.get('pursuit_fit_tokens'))} pursued fit tokens)"
    head += [f"by a map from {s} (maps on {num(a.get('fit_tokens'))} fit tokens)" for s in sources]
    out.append(table(head, rows))
    return out


def _scaling_tables(d: dict) -> list[str]:
    sc = d.get("scaling")
    if not sc:
        return []
    rows = [
        [f"{num(c.get('small_width'))} -> {num(c.get('large_width'))}"]
        + [fix(c.get(k)) for k in ("small", "small_plus_nl", "small_plus_lin")]
        for c in sc.get("cross_width") or []
    ]
    out = [table(H_CROSS, rows)]
    rows = []
    for key, name in PARTS.items():
        p = get(sc, "power_laws", key) or {}
        fit = NM
        if isnum(p.get("a")):
            fit = f"c = {fix(p.get('c'))}, a = {p['a']:.3g}, m = {fix(p.get('m'), 2)}"
        if p.get("m_at_grid_edge"):
            fit += " (m at the grid's end: no decaying power law)"
        rows.append([name, " / ".join(fix(v) for v in sc.get(key) or []), fit])
    widths = " / ".join(num(w) for w in sc.get("widths") or [])
    return [*out, table(["part", f"FVU at {widths}", "fit c + a·W^m"], rows)]


def _error_saes(d: dict) -> list[str]:
    es = d.get("error_saes")
    if not es:
        return []
    lin, nl = es.get("e_lin") or {}, es.get("e_nl") or {}
    of = num(get(d, "saes", es.get("of"), "sae", "d_sae"))
    return [
        f"SAEs on the two parts of the {of}-wide SAE's error (d_sae {num(es.get('d_sae'))}, k "
        f"{es.get('k')}, {num(lin.get('train_tokens'))} training rows each, FVU on "
        f"{num(lin.get('holdout_tokens'))} held-out rows): e_lin FVU {fix(lin.get('fvu'))}, e_nl FVU "
        f"{fix(nl.get('fvu'))}."
    ]


def _norm_rows(reps: list[dict]) -> list[list[str]]:
    dec = [r.get("decomposition") or {} for r in reps]
    per_dim = [x.get("r2_per_dim") for x in dec if isnum(x.get("r2_per_dim"))]
    half = "yes" if all(HALF[0] <= v <= HALF[1] for v in per_dim) else "no"
    if any((r.get("convergence") or {}).get("converged") is False for r in reps):
        half += " (but a fit has not converged: see the converged? column)"
    sq = [v for r in reps if isnum(v := get(r, "norms", "sq_norm", "probe"))]
    nn = [v for r in reps if isnum(v := get(r, "norms", "norm", "probe"))]
    xs = [v for r in reps for t in ("sq_norm", "norm") if isnum(v := get(r, "norms", t, "x_norm"))]
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
    shares = [(a, b) for a, b in map(_ce_shares, reps) if isnum(a) and isnum(b) and a > 0]
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
        same = "yes" if all(isnum(v) and v >= SAME_TOKENS for v in r2) else "no"
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
            edge = get(sc, "power_laws", key, "m_at_grid_edge")
            return f"{word} ({fix(v[0])} -> {fix(v[-1])}{'; no decaying power law fits it' * bool(edge)})"

        here = f"the linear part {trend('fvu_linear')}, the nonlinear part {trend('fvu_nonlinear')}"
        rows.append(
            ["width scaling of the parts", "-", here, f"(descriptive: {len(sc['widths'])} points)"]
        )
    return rows


def _error_sae_row(es: dict) -> list[list[str]]:
    fl, fn = get(es, "e_lin", "fvu"), get(es, "e_nl", "fvu")
    if not (isnum(fl) and isnum(fn)):
        return []
    verdict = "yes" if fn > fl * (1 + WORSE) else "no" if fn >= fl * (1 - WORSE) else "no: better"
    here = (
        f"FVU {fix(fn)} vs {fix(fl)} ({num(get(es, 'e_nl', 'train_tokens'))} rows each, d_sae "
        f"{num(es.get('d_sae'))}, k {es.get('k')})"
    )
    claim = "SAEs trained on e_nl are worse than on e_lin (equal k)"
    return [[claim, '"quantitatively worse"', here, verdict]]


def _pursuit_rows(d: dict, saes: dict) -> list[list[str]]:
    reps = list(saes.values())
    nl_red = [get(r, "pursuit", "nonlinear_reduction", "pursuit") for r in reps]
    if not any(isnum(v) for v in nl_red):
        return []
    lin_red = [get(r, "pursuit", "linear_reduction", "pursuit") for r in reps]
    pt = [get(r, "pursuit", "test") or {} for r in reps]
    verdict = "yes"
    if max(v for v in nl_red if isnum(v)) > SLIGHT:
        # the cause (our encoders are short-trained) is not tested here: no cause is claimed
        verdict = f"no: larger than {SLIGHT:.0%} (cause not tested)"
    here = (
        f"{_span(nl_red, pct=True)} of it (and {_span(lin_red, pct=True)} of the linear part; "
        f"pursuit beats the SAE's code on {_span([p.get('pursuit_better_fraction') for p in pt], pct=True)} "
        f"of tokens, FVU {_span([p.get('fvu_sae') for p in pt])} -> "
        f"{_span([p.get('fvu_pursuit') for p in pt])})"
    )
    rows = [["gradient pursuit reduces nonlinear error", '"very slight"', here, verdict]]
    same = d.get("pursuit_vs_previous_layer") or {}
    here, verdicts = [], []
    for src in dict.fromkeys(k for block in same.values() for k in block):
        rs = [block[src] for block in same.values() if src in block]
        diffs = [100 * r["difference"] for r in rs]
        here.append(
            f"from {src}: removes {min(diffs):+.1f} to {max(diffs):+.1f} pp more than pursuit "
            "(same tokens)"
        )
        kinds = {r["verdict"] for r in rs}
        if kinds == {"previous layer"}:
            verdicts.append(f"yes for the {src}")
        elif kinds == {"pursuit"}:
            verdicts.append(f"no for the {src}: pursuit removes more")
        else:
            verdicts.append(
                f"not resolved for the {src} ({len(rs) - sum(r['verdict'] != 'not resolved' for r in rs)} of {len(rs)} widths inside the noise)"
                if "not resolved" in kinds
                else f"mixed for the {src}"
            )
    claim = "linear maps from the previous layer reduce it more (than pursuit)"
    for src in _sources(d):
        if here and not any(src in block for block in same.values()):
            verdicts.append(f"not resolved for the {src} (not measured on the same tokens)")
    if here:
        rows.append([claim, '"larger"', "; ".join(here), "; ".join(verdicts)])
    elif d.get("previous_layer"):
        a = get(d, "setting", "analysis") or {}
        here = (
            f"pursuit's maps fitted on {num(a.get('pursuit_fit_tokens'))} pursued tokens, the "
            f"previous-layer maps on {num(a.get('fit_tokens'))}: not compared on the same tokens"
        )
        rows.append([claim, '"larger"', here, "not resolved (not measured on the same tokens)"])
    return rows


LIGHT = Path(__file__).resolve().parent / "results" / "dark_matter" / "fit_size.json"


def _with_light(d: dict) -> dict:
    """Where the main JSON predates the fit-size curves and the same-token comparison, take them
    from ``bench/dark_matter.py --fit-size-only``'s JSON (``LIGHT``), with its own provenance."""
    if d.get("fit_size") or not LIGHT.is_file():
        return d
    light = json.loads(LIGHT.read_text())
    return {
        **d,
        "fit_size": light.get("fit_size"),
        "pursuit_vs_previous_layer": light.get("pursuit_vs_previous_layer"),
        "light": light,
    }


def _light_note(d: dict) -> list[str]:
    light = d.get("light")
    if not light:
        return []
    pv = light.get("provenance") or {}
    dirty = ", with uncommitted changes" if pv.get("dirty") else ""
    a = get(light, "setting", "analysis") or {}
    return [
        f"The fit-size tables and the same-token comparison above come from "
        f"`{pv.get('command') or 'python ' + ' '.join(pv.get('argv') or [])}` on "
        f"`{get(light, 'setting', 'run')}` (the "
        f"same layer, train-split document order and {num(a.get('test_tokens'))} validation "
        f"tokens as the main tables), measured at commit {str(pv.get('commit'))[:7]} "
        f"({str(pv.get('date'))[:10]}{dirty}) in {num(get(light, 'timings', 'total_s'))} s; "
        "`bench/results/dark_matter/fit_size.json`. The main tables above it are from the full "
        "benchmark's JSON, whose maps are fitted by the estimator its setting line names."
    ]


@renderer()
def render(d: dict | None) -> str:
    """The dark-matter tables from bench/results/dark_matter.json (None: not measured)."""
    d = _with_light(d or {})
    saes = (d or {}).get("saes") or {}
    if not saes:
        return "Dark matter: not measured (no SAE results in `bench/results/dark_matter.json`; run `python -m bench.dark_matter`)."
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
    here = f"here ({model}, layer {layer}, our {num(tt)}-token SAEs)"
    parts = [
        _setting(d),
        *_main_tables(d, saes),
        *_fit_size_all(d),
        *_same_token_table(d),
        *_light_note(d),
        *_scaling_tables(d),
        *_error_saes(d),
    ]
    parts.append(f"Against the paper: {get(d, 'paper', 'setting') or 'Engels et al. 2024'}.")
    parts.append(table(["claim", "paper", here, "reproduces?"], verdicts))
    dead = [(get(r, "sae", "d_sae"), get(r, "metrics", "dead_fraction")) for r in reps]
    dead = [(w, f) for w, f in dead if isnum(w) and isnum(f)]
    if dead:
        w, f = max(dead)
        fvus = " / ".join(fix(get(r, "decomposition", "fvu_sae")) for r in reps)
        windows = next((get(r, "downstream", "n_windows") for r in reps), None)
        parts.append(
            f"Caveats: {model} instead of Gemma 2 9B, {num(tt)} training tokens per SAE instead of "
            f"Gemma Scope's billions (the {num(w)}-wide SAE has {pct(f, 0)} dead latents on the run's "
            f"own evaluation, so width scaling is weak: FVU {fvus}), one layer, one seed, "
            f"{windows} CE windows."
        )
    return "\n\n".join(parts)
