"""Render the benchmark tables and figures in the README and the documentation pages (docs/) from
the JSON files in bench/results/.

A page marks each generated region with HTML comments::

    <!-- report:sae_step -->
    ...generated from bench/results/sae_step.json...
    <!-- /report:sae_step -->

    python -m bench.report           # rewrite those regions in place, wherever they are
    python -m bench.report --check   # exit 1 and print a diff when a page and the JSON disagree

One renderer per region (``RENDERERS``): region ``NAME`` renders bench/results/NAME.json, and a
second view of the same file is region ``NAME.VIEW`` (e.g. the README's headline table). Each region
lives on exactly one page. Renderers look every key up by name and print "not measured" for what a
file lacks, so a JSON that gains rows or keys only needs this script rerun. Each region ends with a
provenance line: the commit the JSON records (its ``"provenance"`` key, see bench/_provenance.py)
or, for an older file without one, the commit that last changed the file."""

from __future__ import annotations

import argparse
import difflib
import json
import math
import re
import subprocess
import sys
import textwrap
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"
RESULTS = ROOT / "bench" / "results"

NM = "not measured"
KEEP = (
    "\x00keep the README's provenance line\x00"  # git history unavailable here (see _committed_at)
)


# ------------------------------------------------------------------------------------------------
# shared helpers: lookup and formatting
# ------------------------------------------------------------------------------------------------
def get(d, *path, default=None):
    """d[path[0]][path[1]]..., or default where any step is missing."""
    for key in path:
        if (
            isinstance(d, dict)
            and key in d
            or isinstance(d, (list, tuple))
            and isinstance(key, int)
            and -len(d) <= key < len(d)
        ):
            d = d[key]
        else:
            return default
    return d


def isnum(x) -> bool:
    return isinstance(x, (int, float)) and not isinstance(x, bool) and math.isfinite(x)


def num(x, nd: int = 0) -> str:
    """1,234 (thousands separators)."""
    return f"{x:,.{nd}f}" if isnum(x) else NM


def pct(x, nd: int = 0) -> str:
    """A fraction as a percentage: 0.541 -> 54%."""
    return f"{100 * x:.{nd}f}%" if isnum(x) else NM


def fix(x, nd: int = 3) -> str:
    return f"{x:.{nd}f}" if isnum(x) else NM


def times(x, nd: int = 1) -> str:
    """A ratio: 6.0x."""
    return f"{x:.{nd}f}x" if isnum(x) else NM


def ms(seconds, nd: int = 1) -> str:
    return f"{1e3 * seconds:,.{nd}f} ms" if isnum(seconds) else NM


def sci(x) -> str:
    """A learning rate: 3.77e-04."""
    return f"{x:.2e}" if isnum(x) else NM


def ratio(a, b):
    return a / b if isnum(a) and isnum(b) and b else None


def span(values, fmt) -> str:
    """min-max of the numeric values ('a' when they agree), formatted; NM when none."""
    vals = [v for v in values if isnum(v)]
    if not vals:
        return NM
    lo, hi = fmt(min(vals)), fmt(max(vals))
    return lo if lo == hi else f"{lo}-{hi}"


def table(header: list[str], rows: list[list[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return "\n".join(lines)


def para(*sentences: str) -> str:
    """One paragraph from the non-empty sentences, wrapped like the rest of the README."""
    text = " ".join(s.strip() for s in sentences if s and s.strip())
    return textwrap.fill(text, width=100, break_long_words=False, break_on_hyphens=False)


def bullets(items: list[str]) -> str:
    return "\n".join(
        textwrap.fill(
            i,
            width=100,
            initial_indent="- ",
            subsequent_indent="  ",
            break_long_words=False,
            break_on_hyphens=False,
        )
        for i in items
        if i
    )


def join_nonempty(*blocks: str) -> str:
    return "\n\n".join(b for b in blocks if b)


# ------------------------------------------------------------------------------------------------
# provenance
# ------------------------------------------------------------------------------------------------
def _git(*args: str) -> str | None:
    try:
        out = subprocess.run(
            ["git", "-C", str(ROOT), *args], capture_output=True, text=True, timeout=30, check=False
        )
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.strip() if out.returncode == 0 else None


def _committed_at(path: Path) -> tuple[str, str] | str | None:
    """(short hash, date) of the last commit that changed path; "uncommitted" when the file has
    uncommitted changes; None when git history cannot tell (no git, not a repo, shallow clone)."""
    if _git("rev-parse", "--is-shallow-repository") != "false":
        return None
    try:
        rel = str(path.resolve().relative_to(ROOT))
    except ValueError:
        return None  # a copy outside the repository (tests): no history
    if _git("status", "--porcelain", "--", rel):
        return "uncommitted"
    out = _git("log", "-1", "--format=%H %cs", "--", rel)
    if not out:
        return "uncommitted"
    commit, date = out.split()
    return commit[:7], date


def _machine(d: dict) -> str:
    """'torch 2.13.0+cpu, 2 threads, 2 cores, <cpu>' from the provenance or the older keys."""
    m = get(d, "provenance", "machine") or {}
    torch_v = m.get("torch") or d.get("torch") or get(d, "machine", "torch")
    threads = m.get("torch_threads") or d.get("threads") or d.get("torch_threads")
    cores = m.get("cores") or d.get("cpu_count") or get(d, "machine", "cpu_count")
    cpu = m.get("cpu") or (d.get("cpu") if isinstance(d.get("cpu"), str) else None)
    parts = [
        f"torch {torch_v}" if torch_v else "",
        f"{threads} threads" if threads else "",
        f"{cores} cores" if cores else "",
        cpu or "",
        f"GPU {m['cuda']}" if m.get("cuda") else "",
    ]
    return ", ".join(p for p in parts if p)


def provenance_line(d: dict, path: Path, command: str) -> str:
    """The last line of every region: which commit the figures were measured at, and how."""
    machine = _machine(d)
    machine = f" ({machine})" if machine else ""
    p = d.get("provenance")
    if isinstance(p, dict):
        commit = (p.get("commit") or "")[:7] or "an unrecorded commit"
        date = (p.get("date") or "")[:10]
        when = f" ({date})" if date else ""
        dirty = ""
        if p.get("dirty"):
            files = ", ".join(f"`{f}`" for f in p.get("dirty_files") or [])
            dirty = f", with uncommitted changes{' to ' + files if files else ''}"
        cmd = p.get("command") or command
        return para(
            f"Measured at commit {commit}{when}{dirty}: `{cmd}`{machine}; `bench/results/{path.name}`."
        )
    at = _committed_at(path)
    if at is None:
        return KEEP
    if at == "uncommitted":
        return para(
            f"Not committed yet and no provenance recorded: `{command}`{machine}; "
            f"`bench/results/{path.name}`."
        )
    commit, date = at
    return para(
        f"`bench/results/{path.name}` committed at {commit} ({date}); it records no commit of its "
        f"own, so it was measured at or before that commit: `{command}`{machine}."
    )


# ------------------------------------------------------------------------------------------------
# renderers, one per JSON file
# ------------------------------------------------------------------------------------------------
def render_activations(d: dict) -> str:
    r = d.get("results_tokens_per_s") or {}
    pairs = d.get("back_to_back_pairs") or {}
    layers = sorted(
        {int(m.group(1)) for k in r if (m := re.fullmatch(r"capture_L(\d+)_stop_at_layer", k))}
    )

    def both(fmt_key: str) -> str:
        return " / ".join(num(r.get(fmt_key.format(L=L))) for L in layers) if layers else NM

    ls = " / ".join(str(L) for L in layers)
    setup = para(
        f"SmolLM2, {num(d.get('batch'))} windows x {num(d.get('context'))} tokens per forward, "
        f"{num(d.get('windows'))} windows per implementation and round, {num(d.get('repeats'))} rounds. "
        f"Timing: {d.get('timing', NM)}."
    )
    rows = [
        ["transformers, full forward", num(r.get("hf_full_forward"))],
        [f"transformers truncated after layer {ls} (the floor)", both("hf_truncated_L{L}")],
        [
            f"**interp capture at layer {ls}** (`stop_at_layer`, fast forward)",
            "**" + both("capture_L{L}_stop_at_layer") + "**",
        ],
        [
            f"capture at layer {ls} with TransformerLens's own forward (`load_model(fast=False)`)",
            both("capture_L{L}_stop_at_layer_tl_original"),
        ],
        [f"capture at layer {ls} without `stop_at_layer`", both("capture_L{L}_full_forward")],
        ["4 hooks (layers 3, 7, 11, 15) in one pass", num(r.get("capture_4_hooks"))],
    ]
    if any(f"capture_L{L}_stop_at_layer_bf16" in r for L in layers):
        rows.insert(
            3,
            [
                f"**capture at layer {ls}, model in bf16** (`data.model_dtype`)",
                "**" + both("capture_L{L}_stop_at_layer_bf16") + "**",
            ],
        )
    met = d.get("met") or {}
    targets = d.get("targets") or {}

    def verdict(key: str) -> str:
        return "met" if met.get(key) is True else "not met" if met.get(key) is False else NM

    vs = ", ".join(
        f"{fix(r.get(f'capture_L{L}_vs_hf_truncated'), 2)} at L = {L} "
        f"(back-to-back pairs {fix(pairs.get(f'capture_L{L}_vs_hf_truncated'), 2)}, "
        f"{verdict(f'capture_L{L}_vs_hf_truncated')})"
        for L in layers
    )
    findings = para(
        f"Capture vs the truncated transformers forward: {vs}; target {targets.get('capture_vs_hf_truncated', NM)}.",
        f"4 hooks vs the deepest alone: {pct(r.get('capture_4_hooks_overhead_vs_deepest'), 1)} "
        f"(back-to-back pairs {pct(pairs.get('capture_4_hooks_overhead_vs_deepest'), 1)}); "
        f"target {targets.get('4_hooks_overhead', NM)}: {verdict('capture_4_hooks_overhead')}.",
    )
    q = d.get("bf16_vs_fp32")
    if q:
        speed = ", ".join(
            f"{times(r.get(f'capture_L{L}_bf16_speedup_vs_fp32'), 2)} at L = {L} "
            f"({verdict(f'capture_L{L}_bf16_speedup_vs_fp32')})"
            for L in layers
        )
        flags = ", ".join(d.get("cpu_bf16_flags") or []) or "none"
        findings = join_nonempty(
            findings,
            para(
                f"bf16 model vs fp32 (paired, same rounds): {speed}; target "
                f"{targets.get('bf16_speedup_vs_fp32', NM)} (CPU bf16 flags: {flags}).",
                f"What it costs, on {num(q.get('windows'))} held-out windows "
                f"({num(q.get('predicted_tokens'))} predicted tokens): mean KL(fp32 || bf16) "
                f"{fix(q.get('mean_kl_fp32_to_bf16'), 4)} nats; CE {fix(q.get('ce_fp32'), 4)} (fp32) "
                f"vs {fix(q.get('ce_bf16'), 4)} (bf16), a difference of "
                f"{fix(q.get('ce_bf16_minus_fp32'), 4)}; the captured residuals' mean relative error "
                + " / ".join(f"{pct(q.get(f'L{L}_resid_mean_rel_err'), 2)}" for L in layers)
                + f" at L = {ls}.",
            ),
        )
    return join_nonempty(setup, table(["what", "tokens/s"], rows), findings)


STEP_COLUMNS = [  # (label, candidate result keys, show % of bound)
    ("**interp `TrainStep`** (default, C++ top-k)", ["ours_trainstep_native"], True),
    ("`TrainStep`, pure torch", ["ours_trainstep"], True),
    ("`TrainStep`, bf16 encoder", ["ours_trainstep_native_bf16", "ours_trainstep_bf16"], True),
]
PEER_LABELS = {
    "saelens": "SAELens `SAETrainer` step",
    "sparsify": "sparsify `Trainer` step (its defaults: signum)",
    "sparsify_adam": "sparsify, `optimizer=adam`",
}
PEER_SHORT = {"saelens": "SAELens", "sparsify": "sparsify", "sparsify_adam": "sparsify (adam)"}
STEP_TARGET = (
    "4608",
    0.5,
)  # the project's target: 50% of the bound at d_sae 4,608 (default install)


def _peer_keys(sizes: dict) -> list[str]:
    # ours and the kernel-only step (not a trainer: its phases make the profile) are not peers
    keys = {
        k
        for e in sizes.values()
        for k in (e.get("results") or {})
        if not k.startswith(("ours", "kernel_only"))
    }
    keys.discard("saelens_sparse")  # an optional row whose backward fails (see bench/sae_step.py)
    order = list(PEER_LABELS)
    return sorted(keys, key=lambda k: (order.index(k) if k in order else len(order), k))


def _step_cell(res: dict, keys: list[str], show_pct: bool, bold: bool = False) -> str:
    r = next(
        (res[k] for k in keys if isinstance(res.get(k), dict) and "skipped" not in res[k]), None
    )
    if r is None:
        skipped = next(
            (res[k] for k in keys if isinstance(res.get(k), dict) and "skipped" in res[k]), None
        )
        return "skipped (see below)" if skipped else NM
    if "error" in r:
        return f"failed ({r['error'].split(':')[0]})"
    cell = num(r.get("tokens_per_s"))
    cell = f"**{cell}**" if bold and cell != NM else cell
    return f"{cell} ({pct(r.get('fraction_of_bound'))})" if show_pct else cell


def render_sae_step(d: dict) -> str:
    sizes = d.get("sizes") or {}
    order = sorted(sizes, key=lambda s: int(s) if str(s).isdigit() else 0)
    peers = _peer_keys(sizes)
    runs = "; ".join(
        f"{num(int(s)) if str(s).isdigit() else s}: {num(get(sizes, s, 'steps'))} timed steps "
        f"after {num(get(sizes, s, 'warmup'))} warm-up ({get(sizes, s, 'schedule', default=NM)})"
        for s in order
    )
    setup = para(
        f"d_in = {num(d.get('d_in'))}, k = {num(d.get('k'))}, batch {num(d.get('batch_tokens'))} tokens, "
        f"{d.get('dtype', NM)}. Per d_sae: {runs}."
    )
    header = (
        ["d_sae", "fp32 GEMM", "bound tok/s"]
        + [c[0] for c in STEP_COLUMNS]
        + [PEER_LABELS.get(p, f"`{p}`") for p in peers]
    )
    rows = []
    for s in order:
        e, res = sizes[s], sizes[s].get("results") or {}
        gemm = e.get("gemm_fp32_flops")
        rows.append(
            [
                num(int(s)) if str(s).isdigit() else s,
                f"{num(gemm / 1e9)} GFLOP/s" if isnum(gemm) else NM,
                num(e.get("bound_tokens_per_s")),
            ]
            + [_step_cell(res, keys, p, bold=i == 0) for i, (_, keys, p) in enumerate(STEP_COLUMNS)]
            + [_step_cell(res, [p], False) for p in peers]
        )
    default = STEP_COLUMNS[0][1][0]
    vs = []
    for s in order:
        res = sizes[s].get("results") or {}
        mine = get(res, default, "tokens_per_s")
        parts = [
            f"{times(ratio(mine, get(res, p, 'tokens_per_s')))} {PEER_SHORT.get(p, p)}"
            for p in peers
        ]
        if parts:
            vs.append(f"{', '.join(parts)} at {num(int(s)) if str(s).isdigit() else s}")
    size, target = STEP_TARGET
    res = get(sizes, size, "results") or {}

    def against_target(key: str) -> str:
        f = get(res, key, "fraction_of_bound")
        return f"{pct(f)} ({'met' if f >= target else 'not met'})" if isnum(f) else NM

    skipped = sorted(
        {
            r["skipped"]
            for e in sizes.values()
            for r in (e.get("results") or {}).values()
            if isinstance(r, dict) and "skipped" in r
        }
    )
    notes = {
        r["note"]
        for e in sizes.values()
        for k, r in (e.get("results") or {}).items()
        if isinstance(r, dict) and "note" in r and k.startswith("ours")
    }
    findings = para(
        f"Tokens/s of the default `TrainStep` over each peer's: {'; '.join(vs)}." if vs else "",
        *(f"Skipped: {x}." for x in skipped[:1]),
        *(f"bf16 row: {x}." for x in sorted(notes)),
        f"Target {pct(target)} of the bound at d_sae {num(int(size))}: the default install "
        f"{against_target('ours_trainstep_native')}, the pure-torch fallback {against_target('ours_trainstep')}.",
    )
    return join_nonempty(setup, table(header, rows), findings, _step_profile(sizes, order))


def render_sae_step_headline(d: dict) -> str:
    """The README's headline: the default TopK training step against each peer's own step, per
    d_sae (tokens/s and the ratio), from the same JSON as the full table."""
    sizes = d.get("sizes") or {}
    order = sorted(sizes, key=lambda s: int(s) if str(s).isdigit() else 0)

    def tps(res: dict, *keys: str):
        vals = [get(res, k, "tokens_per_s") for k in keys if isnum(get(res, k, "tokens_per_s"))]
        return max(vals) if vals else None

    rows = []
    for size in order:
        res = sizes[size].get("results") or {}
        ours = tps(res, "ours_trainstep_native")
        sl = tps(res, "saelens")
        sp = tps(res, "sparsify", "sparsify_adam")
        rows.append(
            [
                num(int(size)) if str(size).isdigit() else str(size),
                f"**{num(ours)}**",
                num(sl),
                num(sp),
                times(ratio(ours, sl)),
                times(ratio(ours, sp)),
            ]
        )
    header = [
        "d_sae",
        "**interp** tokens/s",
        "SAELens",
        "sparsify (the faster of its defaults and adam)",
        "interp / SAELens",
        "interp / sparsify",
    ]
    return join_nonempty(
        para(
            f"One TopK training step (forward, backward, optimiser) on the same activations, d_in "
            f"{num(d.get('d_in'))}, k {num(d.get('k'))}, batch {num(d.get('batch_tokens'))} tokens, "
            "float32, each library's own step, in one run on a 2-core CPU (the full table, with "
            "the bound and the per-phase profile: the Benchmarks page)."
        ),
        table(header, rows),
    )


def _step_profile(sizes: dict, order: list[str]) -> str:
    """Per-phase medians, when the JSON has a ``profile`` ({impl: {phase: seconds}}) for a size."""
    lines = []
    for s in order:
        for impl, phases in (sizes[s].get("profile") or {}).items():
            if not isinstance(phases, dict):
                continue
            secs = {k: v if isnum(v) else get(v, "median_s") for k, v in phases.items()}
            secs = {k: v for k, v in secs.items() if isnum(v)}
            if not secs:
                continue
            step = get(sizes, s, "results", impl, "median_s")
            tail = f" (the timed step's median: {ms(step)})" if isnum(step) else ""
            lines.append(
                f"`{impl}` at d_sae {num(int(s)) if str(s).isdigit() else s}: "
                + ", ".join(f"{k} {ms(v)}" for k, v in secs.items())
                + f"; sum {ms(sum(secs.values()))}{tail}."
            )
    if not lines:
        return para(
            "Per-phase breakdown: not measured (no `profile` in the JSON; `python bench/sae_step.py "
            "--profile` records one)."
        )
    return "Per-phase medians:\n\n" + bullets(lines)


def render_train_e2e(d: dict) -> str:
    rows = []
    for r in d.get("runs") or []:
        ba = r.get("capture_tokens_per_s_before_after") or []
        rows.append(
            [
                str(r.get("device", NM)),
                num(r.get("layer")),
                num(r.get("d_sae")),
                num(r.get("tokens")),
                f"{num(r.get('capture_tokens_per_s'))} ({' / '.join(num(x) for x in ba) or NM})",
                f"**{num(r.get('train_tokens_per_s'))}**",
                f"**{pct(r.get('train_over_capture'), 1)}** ({r.get('target', NM)})",
                (
                    f"{num(r.get('train_tokens_per_s_incl_init'))} "
                    f"({pct(ratio(r.get('train_tokens_per_s_incl_init'), r.get('capture_tokens_per_s')))})"
                ),
            ]
        )
    if not rows:
        rows = [[NM] * 8]
    header = [
        "device",
        "layer",
        "d_sae",
        "tokens",
        "capture alone, tok/s (mean of before / after)",
        "training, tok/s",
        "training / capture (target)",
        "training incl. initial statistics, tok/s (/ capture)",
    ]
    gpu = d.get("gpu")
    has_gpu_row = any(str(r.get("device", "")).startswith("cuda") for r in d.get("runs") or [])
    note = (
        ""
        if has_gpu_row
        else para(
            f"GPU: {'none on the measuring machine' if gpu is None else gpu}; no GPU run recorded "
            "(the script adds one when CUDA is present)."
        )
    )
    return join_nonempty(table(header, rows), note)


QUALITY_ROWS = {  # the rows bench/sae_quality.py writes, in table order, with their labels
    "ours": "**interp TopK**",
    "saelens_defaults": "SAELens `TopKTrainingSAE`, its defaults",
    "saelens_matched": "SAELens `TopKTrainingSAE`, matched to ours",
    "sparsify_defaults": "sparsify, its defaults",
    "sparsify_matched": "sparsify, matched to ours",
}


def _setting(v) -> str:
    if isinstance(v, bool) or isinstance(v, str):
        return str(v)
    return num(v) if isinstance(v, int) else f"{v:.4g}"


def _lr_path(r: dict) -> str:
    lrs = r.get("lr_first_mid_last") or []
    return " / ".join(sci(v) for v in lrs) if lrs else NM


def render_sae_quality(d: dict) -> str:
    res = d.get("results") or {}
    same = "; ".join(map(str, d.get("same_for_every_row") or []))
    setup = para(
        f"SmolLM2 `{d.get('hook', NM)}`, {num(d.get('train_tokens'))} stdlib training tokens "
        f"({num(d.get('steps'))} steps of {num(d.get('batch'))}), k = {num(d.get('k'))}, d_sae = "
        f"{num(d.get('d_sae'))}; FVU on {num(d.get('eval_tokens'))} held-out tokens (validation files). "
        + (f"The same for every row: {same}." if same else "")
        + " Each peer runs twice: with its own defaults, and with its own options set to ours where "
        "it has them (what had to be applied outside the library, and what still differs, is "
        "listed under the table)."
    )
    keys = list(QUALITY_ROWS) + [k for k in res if k not in QUALITY_ROWS]
    rows, notes = [], []
    for key in keys:
        r = res.get(key)
        label = QUALITY_ROWS.get(key) or (r or {}).get("label") or f"`{key}`"
        if not isinstance(r, dict):
            rows.append([label, NM, "-", "-", "-", "-", "-"])
            continue
        fvu = fix(r.get("fvu"))
        rows.append(
            [
                label,
                f"**{fvu}**" if key == "ours" else fvu,
                num(r.get("l0_mean"), 1),
                pct(r.get("dead_fraction"), 1),
                fix(r.get("cosine_mean")),
                _lr_path(r),
                num(r.get("train_tokens_per_s")),
            ]
        )
        settings = r.get("settings") if isinstance(r.get("settings"), dict) else {}
        if key == "ours":
            shown = {
                k: v
                for k, v in settings.items()
                if isinstance(v, (int, float, str)) and k != "trainer"
            }
            notes.append(
                f"{label}: " + "; ".join(f"{k} {_setting(v)}" for k, v in shown.items()) + "."
            )
            continue
        text = []
        if r.get("applied_outside_library"):
            text.append(
                "applied outside the library: " + "; ".join(map(str, r["applied_outside_library"]))
            )
        diffs = r.get("differences_vs_ours")
        if diffs:
            text.append("differences from ours that remain: " + "; ".join(map(str, diffs)))
        elif diffs is not None:
            text.append("no differences from ours recorded")
        if text:
            notes.append(f"{label}: " + ". ".join(text) + ".")
    header = [
        "",
        "held-out FVU",
        "L0",
        "dead",
        "cosine",
        "lr at the first / middle / last step",
        "training tok/s",
    ]
    best = min(
        ((r.get("fvu"), k) for k, r in res.items() if isinstance(r, dict) and isnum(r.get("fvu"))),
        default=None,
    )
    finding = ""
    if best and best[1] != "ours" and isnum(get(res, "ours", "fvu")):
        finding = para(
            f"Best held-out FVU: {QUALITY_ROWS.get(best[1], best[1])} ({fix(best[0])}), against ours "
            f"{fix(get(res, 'ours', 'fvu'))}."
        )
    return join_nonempty(setup, table(header, rows), finding, bullets(notes))


def render_demo(d: dict | None) -> str:
    """From bench/results/demo.json: wall_s, tokens_per_s, config (variant, k, d_sae, hook,
    train_tokens) and metrics (the run's metrics.json); keys may also sit at the top level."""
    if d is None:
        return para(
            "Wall time, throughput and held-out metrics: not recorded (no `bench/results/demo.json`; the "
            "`python bench/demo.py` records it)."
        )
    m = d.get("metrics") if isinstance(d.get("metrics"), dict) else d
    cfg = d.get("config") if isinstance(d.get("config"), dict) else d
    wall = d.get("wall_s")
    wall_s = f"{int(wall // 60)} min {wall % 60:.0f} s" if isnum(wall) else NM
    what = ", ".join(
        x
        for x in [
            str(cfg["variant"]) if "variant" in cfg else "",
            f"k = {num(cfg['k'])}" if "k" in cfg else "",
            f"d_sae = {num(cfg['d_sae'])}" if "d_sae" in cfg else "",
            f"on `{cfg['hook']}`" if "hook" in cfg else "",
            f"{num(cfg['train_tokens'])} training tokens" if "train_tokens" in cfg else "",
        ]
        if x
    )
    loop = (
        f"; the training loop alone {num(d['train_tokens_per_s'])} tokens/s"
        if isnum(d.get("train_tokens_per_s"))
        else ""
    )
    run = (
        f"{what}: " if what else ""
    ) + f"{wall_s} end to end ({num(d.get('tokens_per_s'))} tokens/s{loop})."
    shown = [
        ("FVU", "fvu", fix),
        ("cosine", "cosine_mean", fix),
        ("dead", "dead_fraction", lambda v: pct(v, 1)),
        ("spliced CE", "ce_spliced", lambda v: fix(v, 2)),
        ("clean CE", "ce_clean", lambda v: fix(v, 2)),
        ("zero-ablated CE", "ce_zero_ablated", lambda v: fix(v, 2)),
        ("CE loss recovered", "ce_loss_recovered", lambda v: pct(v, 1)),
        ("KL", "kl_div", lambda v: fix(v, 2)),
    ]
    held = ", ".join(f"{label} {fmt(m.get(key))}" for label, key, fmt in shown)
    return para(run, f"Held-out: {held}.")


def _gsae_label(r: dict) -> str:
    if r.get("variant") == "topk" or r.get("beta_c") is None:
        return "TopK" if r.get("variant") == "topk" else f"`{r.get('name', NM)}`"
    return f"g-SAE c = {r['beta_c']:g} (beta {fix(r.get('beta'), 1)})"


def render_gsae_vs_topk(d: dict) -> str:
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
            f"({'every g-SAE is higher' if fvu_worse else 'not every g-SAE is higher'})."
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
    return join_nonempty(setup, table(header, body), para(*found))


def _heads(per_head, fmt=lambda h, v: f"H{h} ({v})") -> str:
    out = [fmt(h, v) for h, v in enumerate(per_head or []) if v]
    return ", ".join(out) if out else "-"


def render_attention_sae(d: dict) -> str:
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
        "FVU",
        "L0",
        "dead",
        "CE recovered",
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
                fix(m.get("fvu")),
                num(m.get("l0_mean")),
                pct(m.get("dead_fraction"), 1),
                pct(m.get("ce_loss_recovered"), 1),
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


CHOICE_ORDER = [
    "topk",
    "mutual_choice",
    "feature_choice_zipf",
    "feature_choice_uniform",
    "mutual_choice_no_aux",
]


def _step_sets(step: dict) -> list[tuple[str, dict]]:
    """(activations, block with 'variants') for the step benchmark: the legacy single block on random
    activations, and/or one block per activation source (step['noise'], step['smollm2'], ...)."""
    sets = []
    if isinstance(step.get("variants"), dict):
        sets.append((str(step.get("data", "noise")), step))
    for key, block in step.items():
        if isinstance(block, dict) and isinstance(block.get("variants"), dict):
            sets.append((key, block))
    return sets


def _choice_rows(rows: dict, lm: bool) -> list[list[str]]:
    out = []
    for name in CHOICE_ORDER + [k for k in rows if k not in CHOICE_ORDER]:
        r = rows.get(name)
        if not isinstance(r, dict):
            if name in CHOICE_ORDER[:4]:
                out.append([name] + [NM] * 10)
            continue
        q = r.get("l0_quantiles") or {}
        last = fix(r.get("ce_loss_recovered")) if lm else fix(r.get("direction_recovery_0.9"))
        out.append(
            [
                name,
                fix(r.get("fvu")),
                fix(r.get("batch_selection_fvu")) if "batch_selection_fvu" in r else "-",
                num(r.get("l0_mean"), 1),
                num(r.get("batch_selection_l0_mean"), 1) if "batch_selection_l0_mean" in r else "-",
                " / ".join(num(q.get(p)) for p in ("0.1", "0.5", "0.9")),
                pct(r.get("dead_fraction"), 1),
                pct(r.get("underused_fraction"), 1),
                last,
                fix(r.get("l0_vs_topk_token_error_spearman"), 2)
                if "l0_vs_topk_token_error_spearman" in r
                else "-",
                num(r.get("train_tokens_per_s")),
            ]
        )
    return out


def _choice_compare(rows: dict) -> str:
    topk = rows.get("topk") or {}
    ref = topk.get("fvu")
    lower = [
        n
        for n, r in rows.items()
        if n != "topk"
        and isinstance(r, dict)
        and isnum(r.get("batch_selection_fvu"))
        and isnum(ref)
        and r["batch_selection_fvu"] < ref
    ]
    higher = [
        n
        for n, r in rows.items()
        if n != "topk"
        and isinstance(r, dict)
        and isnum(r.get("batch_selection_fvu"))
        and isnum(ref)
        and r["batch_selection_fvu"] >= ref
    ]
    return (
        f"batch-selection FVU below TopK's {fix(ref)}: {', '.join(lower) or 'none'}; "
        f"not below: {', '.join(higher) or 'none'}"
    )


def render_choice_saes(d: dict) -> str:
    step = d.get("step") or {}
    sets = _step_sets(step)
    blocks = []

    def sv(key):  # a setting of the step benchmark, at its top level or in its first block
        return step.get(key, get(sets, 0, 1, key))

    setup = para(
        f"One training step (`TrainStep`), d_in {num(sv('d_in'))}, d_sae {num(sv('d_sae'))}, "
        f"k {num(sv('k'))}, batch {num(sv('batch'))}, {num(sv('rounds'))} round-robin "
        f"rounds after {num(sv('warmup'))} warm-up, median; activations: "
        + (
            ", ".join(
                f"{name}"
                + (
                    f" (encoder GEMM alone: {ms(b.get('encoder_gemm_s'))})"
                    if isnum(b.get("encoder_gemm_s"))
                    else ""
                )
                for name, b in sets
            )
            or NM
        )
        + "."
    )
    names = []
    for _, b in sets:
        names += [n for n in b["variants"] if n not in names]
    header = ["variant"] + [
        h + (f" ({src})" if len(sets) > 1 else "")
        for src, _ in sets
        for h in ("step (ms)", "tok/s", "x TopK")
    ]
    rows = [
        [n]
        + [
            c
            for _, b in sets
            for c in (
                num(1e3 * get(b, "variants", n, "median_s"), 1)
                if isnum(get(b, "variants", n, "median_s"))
                else NM,
                num(get(b, "variants", n, "tokens_per_s")),
                fix(get(b, "variants", n, "ratio_to_topk"), 2),
            )
        ]
        for n in names
    ]
    # where measured: the selection alone and aux_zipf's under-used set, per activation source
    extra = [
        (src, b)
        for src, b in sets
        if any("selection_s" in (v or {}) for v in b["variants"].values())
    ]
    if extra and rows:
        header += [
            h + (f" ({src})" if len(extra) > 1 else "")
            for src, _ in extra
            for h in (
                "encoder GEMM + selection alone (ms)",
                "aux_zipf: under-used latents, entries per token",
            )
        ]
        for row, n in zip(rows, names):
            for _, b in extra:
                v = get(b, "variants", n) or {}
                row.append(num(1e3 * v["selection_s"], 1) if isnum(v.get("selection_s")) else "-")
                row.append(
                    f"{num(v['underused_latents'])}, {num(v.get('aux_entries_per_token'))}"
                    if isnum(v.get("underused_latents"))
                    else "-"
                )
    blocks += [setup, table(header, rows) if rows else para(f"Step times: {NM}.")]
    findings = []
    sel = sv("mutual_selection_s") or {}
    if sel:
        findings.append(
            "Mutual choice's top-(k*B) over the flat batch x d_sae matrix alone: "
            + ", ".join(f"`{k}` {ms(v, 0)}" for k, v in sel.items())
            + "."
        )
    for src, b in sets:
        ratios = {n: get(b, "variants", n, "ratio_to_topk") for n in b["variants"] if n != "topk"}
        missed = [f"{n} {fix(r, 2)}" for n, r in ratios.items() if isnum(r) and r > 1.5]
        findings.append(
            f"Target ({step.get('target', b.get('target', NM))}) on {src} activations: "
            + (f"missed by {', '.join(missed)}" if missed else "met by every variant")
            + "."
        )
    for src, b in sets:
        aux = {
            n: v
            for n, v in b["variants"].items()
            if isinstance(v, dict) and isnum(v.get("underused_latents"))
        }
        if any(v["underused_latents"] > 0 for v in aux.values()):
            sel = [
                v.get("ratio_to_topk")
                for n, v in b["variants"].items()
                if n != "topk" and n not in aux
            ]
            findings.append(
                f"On {src} activations the selection rules alone cost {span(sel, lambda v: fix(v, 2))}x the TopK step; "
                "aux_zipf_loss adds the reconstruction of the residual by each token's top min(k_aux, |U|) "
                f"under-used latents (k_aux = d_in / 2 = {num(b.get('d_in', 0) // 2)} against k = {num(b.get('k'))} "
                "in the main path), so its cost follows the under-used set U: at the timed steps "
                + ", ".join(
                    f"{n} had |U| = {num(v['underused_latents'])} (x{fix(v.get('ratio_to_topk'), 2)})"
                    for n, v in aux.items()
                )
                + "."
            )
    if not any(src.startswith("smollm2") for src, _ in sets):
        findings.append(
            "Step ratios on SmolLM2 activations: not measured (the training rates below are the "
            "real-activation figures)."
        )
    blocks.append(para(*findings))

    syn, lm = d.get("synthetic") or {}, d.get("smollm2") or {}
    h_syn = [
        "",
        "FVU (thresholds)",
        "FVU (batch selection)",
        "L0 (thresholds)",
        "L0 (batch selection)",
        "L0 p10 / p50 / p90",
        "dead",
        "under-used",
        "directions recovered (cos > 0.9)",
        "Spearman(L0, TopK token error)",
        "training tok/s",
    ]
    h_lm = h_syn[:8] + ["CE loss recovered"] + h_syn[9:]
    blocks.append(
        para(
            f"Synthetic dictionary: {syn.get('data', NM)}, d_sae {num(syn.get('d_sae'))}, k "
            f"{num(syn.get('k'))}, {num(syn.get('train_tokens'))} training tokens in batches of "
            f"{num(syn.get('batch'))}, {num(syn.get('eval_tokens'))} held-out tokens."
        )
    )
    blocks.append(table(h_syn, _choice_rows(syn.get("rows") or {}, lm=False)))
    blocks.append(
        para(
            f"SmolLM2 `{lm.get('hook', NM)}`: {num(lm.get('train_tokens'))} training tokens (stdlib train "
            f"split) in batches of {num(lm.get('batch'))}, d_sae {num(lm.get('d_sae'))}, k "
            f"{num(lm.get('k'))}, lr {sci(lm.get('lr'))}; {num(lm.get('eval_tokens'))} held-out tokens "
            f"(validation files), CE over {num(lm.get('ce_windows'))} windows."
        )
    )
    lm_rows = lm.get("rows") or {}
    blocks.append(table(h_lm, _choice_rows(lm_rows, lm=True)))
    topk_lm = lm_rows.get("topk") or {}
    choice_lm = {n: r for n, r in lm_rows.items() if n != "topk" and isinstance(r, dict)}
    syn_rows = syn.get("rows") or {}
    aux = [syn_rows.get("mutual_choice"), syn_rows.get("mutual_choice_no_aux")]
    found = [
        f"Synthetic: {_choice_compare(syn_rows)}." if syn_rows else "",
        f"SmolLM2: {_choice_compare(lm_rows)}." if lm_rows else "",
        (
            f"On SmolLM2 the learned thresholds give a mean L0 of {span([r.get('l0_mean') for r in choice_lm.values()], lambda v: fix(v, 1))} "
            f"against k = {num(lm.get('k'))}, so the threshold FVUs are at a different L0 from TopK's."
        )
        if choice_lm
        else "",
        (
            f"SmolLM2 training rates against TopK's {num(topk_lm.get('train_tokens_per_s'))} tok/s: "
            + ", ".join(
                f"{n} {num(r.get('train_tokens_per_s'))} "
                f"({times(ratio(topk_lm.get('train_tokens_per_s'), r.get('train_tokens_per_s')))} slower)"
                for n, r in choice_lm.items()
            )
            + "."
        )
        if choice_lm and topk_lm
        else "",
        (
            f"Synthetic mutual choice with aux_zipf: {pct(get(aux, 0, 'dead_fraction'), 1)} dead, "
            f"{pct(get(aux, 0, 'underused_fraction'), 1)} under-used; without: {pct(get(aux, 1, 'dead_fraction'), 1)} / "
            f"{pct(get(aux, 1, 'underused_fraction'), 1)}."
        )
        if all(isinstance(a, dict) for a in aux)
        else "",
        (
            f"Spearman rank correlation of per-token L0 with the token's TopK error: "
            f"{span([r.get('l0_vs_topk_token_error_spearman') for r in choice_lm.values()], lambda v: fix(v, 2))} on "
            f"SmolLM2, {span([r.get('l0_vs_topk_token_error_spearman') for r in syn_rows.values() if isinstance(r, dict)], lambda v: fix(v, 2))} "
            "on the synthetic data."
        )
        if choice_lm
        else "",
        f"The run took {num(d.get('total_s'))} s.",
    ]
    blocks.append(para(*found))
    return join_nonempty(*blocks)


def render_scale(d: dict) -> str:
    sae = d.get("sae") or {}
    setup = para(
        f"SmolLM2, {sae.get('variant', NM)} SAEs (k = {num(sae.get('k'))}, d_sae = {num(sae.get('d_sae'))}, "
        f"batch {num(sae.get('batch_tokens'))}), live capture, {num(d.get('tokens_per_run'))} tokens per "
        f"run, one run per configuration, times from the trainer's log; {num(d.get('wall_s'))} s for the "
        "whole script."
    )
    rows, per_sae, wheres = [], [], {}
    for block in d.get("hooks") or []:
        rs = [r for r in block.get("rows") or [] if isinstance(r, dict)]
        for r in rs:
            layers = sorted(
                int(m.group(1))
                for h in r.get("hooks") or []
                if (m := re.search(r"blocks\.(\d+)\.", h))
            )
            where = (
                (f"L = {layers[0]}" if len(layers) == 1 else f"L = {layers[0]}-{layers[-1]}")
                if layers
                else NM
            )
            wheres.setdefault(r.get("n_hooks"), where)
            rows.append(
                [
                    f"{num(r.get('n_hooks'))} ({where})"
                    + ("" if r.get("device", "cpu") == "cpu" else f", {r['device']}"),
                    num(r.get("one_forward_tokens_per_s")),
                    num(r.get("separate_passes_tokens_per_s")),
                    times(r.get("speedup"), 2),
                    times(r.get("ideal_speedup"), 2),
                ]
            )
        one = next((r for r in rs if r.get("n_hooks") == 1), None)
        if one and isnum(one.get("one_forward_tokens_per_s")):
            base = 1e3 / one["one_forward_tokens_per_s"]
            extra = [
                (1e3 / r["one_forward_tokens_per_s"] - base) / (r["n_hooks"] - 1)
                for r in rs
                if r is not one
                and isnum(r.get("one_forward_tokens_per_s"))
                and isnum(r.get("n_hooks"))
                and r["n_hooks"] > 1
            ]
            dev = one.get("device", "cpu")
            per_sae.append(
                f"On {dev}, one forward to the deepest hook with its SAE takes {fix(base, 2)} ms per "
                f"token, and each extra SAE adds {span(extra, lambda v: fix(v, 2))} ms per token."
            )
    header = [
        "hooks (`blocks.L.hook_resid_post`)",
        "one forward, tok/s",
        "separate passes, tok/s",
        "speed-up",
        "ideal (sum of depths / deepest)",
    ]
    gloo = [g for g in d.get("gloo") or [] if isinstance(g, dict)]
    job = f"4-hook ({wheres[4]})" if 4 in wheres else "multi-hook"
    g_rows = [
        [
            str(g.get("mode", NM))
            + (
                f" ({num(g.get('threads_per_process'))} thread"
                f"{'s' if g.get('threads_per_process') != 1 else ''} each)"
                if isnum(g.get("threads_per_process")) and g.get("processes", 1) > 1
                else ""
            ),
            num(g.get("tokens_per_s")),
            times(g.get("speedup_vs_1_process"), 2),
        ]
        for g in gloo
    ]
    multi = [g for g in gloo if isnum(g.get("processes")) and g["processes"] > 1]
    gloo_text = (
        para(
            f"Two gloo processes against one: {span([g.get('speedup_vs_1_process') for g in multi], lambda v: times(v, 2))} "
            "the single process's tokens/s."
        )
        if multi
        else ""
    )
    has_gpu = any(
        r.get("device", "cpu") != "cpu" for b in d.get("hooks") or [] for r in b.get("rows") or []
    )
    gpu = (
        ""
        if has_gpu
        else para(
            f"GPU: {'none on the measuring machine' if d.get('gpu') is None else d['gpu']}; no "
            "GPU run recorded (the script repeats the hook comparison on CUDA when present)."
        )
    )
    return join_nonempty(
        setup,
        table(header, rows or [[NM] * 5]),
        para(*per_sae),
        table([f"the {job} job", "tok/s", "vs 1 process"], g_rows or [[NM] * 3]),
        gloo_text,
        gpu,
    )


# (renderer, the command that produced the file, for files without provenance)


def _lr_of(rows: list[dict], setting: str, label: str):
    return next(
        (r["lr"] for r in rows if r.get("setting") == setting and r["label"] == label), None
    )


def render_lr(d: dict) -> str:
    """bench/lr.py: the default learning rate against a sweep (synthetic dictionaries, SmolLM2)."""
    summ = d.get("summary") or {}
    synth = d.get("synthetic") or []
    if not summ:
        return para(f"Learning-rate sweep: {NM}.")
    rows = []
    for name, sm in summ.items():
        if name == "smollm2_L15":
            continue
        r0 = next((r for r in synth if r.get("setting") == name), {})
        rows.append(
            [
                f"synthetic {name}",
                f"{num(r0.get('steps'))} x {num(r0.get('batch'))}",
                sci(_lr_of(synth, name, "legacy")),
                pct(sm.get("legacy_recovery"), 1),
                sci(sm.get("default_lr")),
                "**" + pct(sm.get("default_recovery"), 1) + "**",
                pct(
                    next(
                        (
                            r.get("dead_fraction")
                            for r in synth
                            if r.get("setting") == name and r["label"] == "default"
                        ),
                        None,
                    ),
                    1,
                ),
                f"{pct(sm.get('best_sweep_recovery'), 1)} at {sci(sm.get('best_sweep_lr'))}",
            ]
        )
    table1 = table(
        [
            "setting",
            "steps x batch",
            "old default lr",
            "recovered",
            "new default lr",
            "recovered",
            "dead (new default)",
            "best of the sweep",
        ],
        rows,
    )
    sm = summ.get("smollm2_L15")
    smol = ""
    if sm:
        setup = d.get("smollm2_setup") or {}
        s0 = (d.get("smollm2") or [{}])[0]
        srows = [
            [
                r["label"],
                sci(r["lr"]),
                fix(r["fvu"], 4),
                fix(r.get("fvu_typical_tokens"), 4),
                pct(r.get("dead_fraction"), 1),
            ]
            for r in d.get("smollm2") or []
        ]
        smol = join_nonempty(
            para(
                f"SmolLM2 layer 15, {num(setup.get('train_tokens'))} training tokens "
                f"({num(s0.get('steps'))} steps of "
                f"{num(s0.get('batch'))}; the "
                f"{num(setup.get('train_tokens_left_out_over_max_norm_ratio'))} of "
                f"{num(setup.get('train_tokens_captured'))} captured whose norm is over "
                f"{setup.get('max_norm_ratio', 10):g}x the median left out, as training does by "
                f"default), d_sae 4,608, k 32; held-out FVU "
                f"on {num(setup.get('eval_tokens'))} validation tokens, and without the "
                f"{num(setup.get('eval_tokens_over_10x_median_norm'))} whose norm is over 10x the "
                "median; dead: latents that fire on none of the held-out tokens:"
            ),
            table(["lr", "value", "held-out FVU", "FVU, typical tokens", "dead"], srows),
            para(
                f"The default ({sci(sm.get('default_lr'))}) is {pct(sm.get('default_vs_best'), 1)} "
                f"from the best of the sweep ({sci(sm.get('best_sweep_lr'))}, FVU "
                f"{fix(sm.get('best_sweep_fvu'), 4)}); target within 3%: "
                f"{'met' if sm.get('default_within_3pct_of_best') else 'not met'}. The old default "
                f"gave {fix(sm.get('legacy_fvu'), 4)}."
            ),
        )
    return join_nonempty(table1, smol)


def render_bf16_model(d: dict) -> str:
    """bench/bf16_model.py: an SAE trained on bf16-model activations vs on fp32 ones."""
    runs = d.get("runs") or {}
    rows = [
        [
            name,
            fix((runs.get(name) or {}).get("heldout_fvu_on_fp32"), 4),
            sci((runs.get(name) or {}).get("lr")),
        ]
        for name in ("fp32", "bf16")
    ]
    return join_nonempty(
        para(
            f"SmolLM2 {d.get('hook', NM)}, {num(d.get('train_tokens'))} training tokens captured "
            f"twice from the same windows (model in fp32, model in bf16; stored in fp32), d_sae "
            f"{num(d.get('d_sae'))}, k {num(d.get('k'))}, the same seed and batch order; held-out "
            f"FVU on {num(d.get('eval_tokens'))} fp32 validation activations."
        ),
        table(["activations from the model in", "held-out FVU (on fp32)", "lr"], rows),
        para(
            f"bf16 vs fp32: {pct(d.get('bf16_vs_fp32_fvu_relative'), 2)} relative; target within "
            f"2%: {'met' if d.get('met') else 'not met' if d.get('met') is False else NM}. The bf16 "
            f"activations differ from the fp32 ones by {pct(d.get('bf16_activation_mean_rel_err'), 2)} "
            f"(mean relative L2); the bf16 capture ran at {num(d.get('bf16_capture_tokens_per_s'))} "
            "tokens/s."
        ),
    )


POSITION_LABELS = {
    "all_but_bos": "every position but BOS (`skip_positions: 0`, `max_norm_ratio: null`)",
    "skip_first": "also the first after BOS (`skip_positions: 1`)",
    "norm_limit_10x": "also rows over 10x the median norm (`max_norm_ratio: 10`, now the default)",
}


def render_positions(d: dict) -> str:
    """bench/positions.py: which positions the demo's SAE should train on."""
    summ = d.get("summary") or {}
    if not summ:
        return para(f"Positions: {NM}.")
    rows = [
        [
            ("**" + POSITION_LABELS.get(n, n) + "**")
            if n == d.get("best_by_ce_loss_recovered")
            else POSITION_LABELS.get(n, n),
            fix(m.get("ce_loss_recovered"), 4),
            fix(m.get("saelens_ce_loss_score"), 4),
            fix(m.get("kl_div"), 4),
            fix(m.get("fvu"), 4),
            fix(m.get("fvu_without_massive"), 4),
        ]
        for n, m in summ.items()
    ]
    runs = d.get("runs") or []
    massive = sorted({r.get("massive_tokens") for r in runs if r.get("massive_tokens") is not None})
    return join_nonempty(
        para(
            f"The demo's SAE ({d.get('config', NM)}, {num(d.get('train_tokens'))} tokens), trained on "
            f"three choices of positions, means over seeds {d.get('seeds', NM)}; every run is "
            "evaluated the same way, on every position but BOS (the massive-norm tokens included: "
            f"{', '.join(str(m) for m in massive) or NM} of them among the held-out tokens)."
        ),
        table(
            [
                "trained on",
                "CE loss recovered",
                "SAELens ce_loss_score",
                "KL",
                "FVU",
                "FVU without massive-norm tokens",
            ],
            rows,
        ),
    )


def bench_renderer(module: str):
    """The renderer a bench module defines itself: ``readme(d: dict | None) -> str`` in
    ``bench/<module>.py`` (imported when the region is rendered, not before), so an analysis keeps
    its README tables next to the code that measures them."""

    def render_it(d: dict | None) -> str:
        import importlib

        return importlib.import_module(f"bench.{module}").readme(d)

    return render_it


RENDERERS = {
    "activations": (render_activations, "python bench/activations.py"),
    "sae_step": (render_sae_step, "python bench/sae_step.py"),
    "sae_step.headline": (render_sae_step_headline, "python bench/sae_step.py"),
    "train_e2e": (render_train_e2e, "python bench/train_e2e.py --tokens {runs[0][tokens]}"),
    "sae_quality": (render_sae_quality, "python bench/sae_quality.py"),
    "demo": (render_demo, "python bench/demo.py"),
    "gsae_vs_topk": (render_gsae_vs_topk, "python bench/gsae_vs_topk.py"),
    "attention_sae": (render_attention_sae, "python bench/attention_sae.py"),
    "choice_saes": (
        render_choice_saes,
        "python bench/choice_saes.py --lm-tokens {args[lm_tokens]}",
    ),
    "scale": (render_scale, "python bench/scale.py"),
    "lr": (render_lr, "python bench/lr.py"),
    "bf16_model": (render_bf16_model, "python bench/bf16_model.py"),
    "positions": (render_positions, "python bench/positions.py --seeds {seeds}"),
    "dashboard_build": (bench_renderer("dashboard_build"), "python bench/dashboard_build.py"),
    "dashboard_browser": (bench_renderer("dashboard_browser"), "python bench/dashboard_browser.py"),
    "dark_matter": (bench_renderer("dark_matter"), "python bench/dark_matter.py"),
    "sparsity": (bench_renderer("sparsity"), "python bench/sparsity.py"),
    "circuits": (
        bench_renderer("circuits"),
        "python bench/circuits.py --sweep-seeds 1",
    ),
}


# ------------------------------------------------------------------------------------------------
# regions: render, rewrite, check (in the README and every page of the docs site)
# ------------------------------------------------------------------------------------------------
REGION = re.compile(
    r"(<!-- report:(?P<name>[\w.-]+) -->)\n(?P<body>.*?)\n?(<!-- /report:(?P=name) -->)", re.DOTALL
)


def pages(root: Path = ROOT) -> list[Path]:
    """The files that may hold generated regions: the README and every page under docs/."""
    return [root / "README.md", *sorted((root / "docs").rglob("*.md"))]


def _command(template: str, d: dict) -> str:
    try:
        return template.format(**d)
    except (KeyError, IndexError, TypeError, ValueError, AttributeError):
        return template.split(" --")[0]


def json_path(name: str, results: Path = RESULTS) -> Path:
    """Region ``NAME`` or ``NAME.VIEW`` renders bench/results/NAME.json."""
    return results / f"{name.split('.', 1)[0]}.json"


def render(name: str, results: Path = RESULTS) -> str:
    """The body of region ``name`` from its JSON (the last line: provenance)."""
    fn, cmd = RENDERERS[name]
    path = json_path(name, results)
    if not path.exists():
        try:
            return fn(None)
        except (TypeError, AttributeError):
            return para(f"Not measured: no `bench/results/{path.name}`.")
    d = json.loads(path.read_text())
    return fn(d) + "\n\n" + provenance_line(d, path, _command(cmd, d))


def render_all(results: Path = RESULTS) -> dict[str, str]:
    return {name: render(name, results) for name in RENDERERS}


def _merge(rendered: str, current: str | None) -> str:
    """Where git history is unavailable (KEEP), keep the page's own provenance paragraph."""
    if not rendered.endswith(KEEP):
        return rendered
    kept = current.rsplit("\n\n", 1)[-1] if current else "Provenance: git history unavailable."
    return rendered[: -len(KEEP)] + kept


def regions(text: str) -> dict[str, str]:
    return {m["name"]: m["body"] for m in REGION.finditer(text)}


def rewrite(text: str, rendered: dict[str, str]) -> str:
    def sub(m: re.Match) -> str:
        body = rendered.get(m["name"])
        return (
            m.group(0) if body is None else f"{m.group(1)}\n{_merge(body, m['body'])}\n{m.group(4)}"
        )

    return REGION.sub(sub, text)


def _rel(path: Path, root: Path) -> str:
    try:
        return str(path.relative_to(root))
    except ValueError:
        return str(path)


def check(root: Path = ROOT, results: Path = RESULTS) -> list[str]:
    """Diffs between the generated regions (README and docs pages under ``root``) and what the JSON
    renders to; also a renderer without a region, a region without a renderer, and a region held
    twice (empty: consistent)."""
    where: dict[str, list[tuple[Path, str]]] = {}
    for page in pages(root):
        for name, body in regions(page.read_text()).items():
            where.setdefault(name, []).append((page, body))
    problems = [
        f"{_rel(p, root)}: region report:{n} has no renderer (known: {', '.join(RENDERERS)})\n"
        for n, held in where.items()
        if n not in RENDERERS
        for p, _ in held
    ]
    problems += [
        f"region report:{n} is in {len(held)} pages ({', '.join(_rel(p, root) for p, _ in held)})\n"
        for n, held in where.items()
        if len(held) > 1
    ]
    problems += [
        f"no page has a region report:{n} for bench/results/{json_path(n).name}\n"
        for n in RENDERERS
        if n not in where
    ]
    for name, body in render_all(results).items():
        for page, current in where.get(name, []):
            want = _merge(body, current)
            if want != current:
                problems.append(
                    "".join(
                        difflib.unified_diff(
                            current.splitlines(keepends=True),
                            want.splitlines(keepends=True),
                            f"{_rel(page, root)} (report:{name})",
                            f"bench/results/{json_path(name).name} (rendered)",
                        )
                    )
                    + "\n"
                )
    return problems


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument(
        "--check", action="store_true", help="exit 1 with a diff when a page is out of date"
    )
    ap.add_argument("--root", type=Path, default=ROOT, help="holds README.md and docs/")
    ap.add_argument("--results", type=Path, default=RESULTS)
    args = ap.parse_args(argv)
    if args.check:
        problems = check(args.root, args.results)
        sys.stdout.write("".join(problems))
        print(
            f"{len(problems)} region(s) differ from bench/results"
            if problems
            else "README and docs match bench/results"
        )
        return 1 if problems else 0
    rendered = render_all(args.results)
    changed = []
    for page in pages(args.root):
        text = page.read_text()
        new = rewrite(text, rendered)
        if new != text:
            page.write_text(new)
            changed += [
                f"{_rel(page, args.root)}:{n}"
                for n, b in regions(new).items()
                if regions(text).get(n) != b
            ]
    print(f"rewrote {', '.join(changed)}" if changed else "README and docs already up to date")
    return 0


if __name__ == "__main__":
    sys.exit(main())
