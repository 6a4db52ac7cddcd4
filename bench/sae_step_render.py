"""How ``bench.sae_step`` renders ``bench/results/sae_step.json`` as markdown (its ``render``, which
``bench/sae_step.py`` exports): apart from the module so that each file stays under 700 lines."""

from __future__ import annotations

from bench._markdown import (
    NM,
    bullets,
    get,
    isnum,
    join_nonempty,
    ms,
    num,
    para,
    pct,
    ratio,
    table,
    times,
)
from bench._provenance import renderer

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


@renderer()
def render(d: dict) -> str:
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


@renderer()
def render_headline(d: dict) -> str:
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
            "Per-phase breakdown: not measured (no `profile` in the JSON; `python -m bench.sae_step` "
            "records one unless given `--no-profile`)."
        )
    return "Per-phase medians:\n\n" + bullets(lines)
