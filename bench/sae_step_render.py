"""How ``bench.sae_step`` renders ``bench/results/sae_step.json`` as markdown (its ``render``, which
``bench/sae_step.py`` exports): apart from the module so that each file stays under 700 lines."""

from __future__ import annotations

from bench._markdown import (
    FASTER,
    NM,
    bullets,
    criterion_repeats,
    criterion_target,
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
    verdict_repeats,
    verdict_target,
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
    size, target = STEP_TARGET
    res = get(sizes, size, "results") or {}

    def against_target(key: str) -> str:
        f, each = get(res, key, "fraction_of_bound"), _fractions(get(res, key) or {})
        if not isnum(f):
            return NM
        return f"{pct(f)}, {verdict_target(each or f, target, fmt=pct)}"

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
        *(f"Skipped: {x}." for x in skipped[:1]),
        *(f"bf16 row: {x}." for x in sorted(notes)),
        f"Target {pct(target)} of the bound at d_sae {num(int(size))} (each timed step's fraction "
        "of the bound: the encoder-shaped GEMM timed just before it over the step; criterion: "
        f"{criterion_target('timed step')}): the default install "
        f"{against_target('ours_trainstep_native')}, the pure-torch fallback "
        f"{against_target('ours_trainstep')}.",
    )
    verdicts = join_nonempty(
        para(
            "Verdicts from the timed steps, the default `TrainStep` against each peer's step and "
            "against its own variants (tokens/s as a ratio of the step times). Criterion: "
            f"{criterion_repeats('timed step')}:"
        ),
        _verdict_table(sizes, order, peers),
    )
    return join_nonempty(
        setup, table(header, rows), verdicts, findings, _step_profile(sizes, order)
    )


@renderer()
def render_headline(d: dict) -> str:
    """The README's headline: the default TopK training step against each peer's own step, per
    d_sae (tokens/s and the ratio), from the same JSON as the full table."""
    sizes = d.get("sizes") or {}
    order = sorted(sizes, key=lambda s: int(s) if str(s).isdigit() else 0)

    def fastest(res: dict, *keys: str) -> str | None:
        have = [k for k in keys if isnum(get(res, k, "tokens_per_s"))]
        return max(have, key=lambda k: res[k]["tokens_per_s"]) if have else None

    rows = []
    for size in order:
        res = sizes[size].get("results") or {}
        tps = {k: get(res, k, "tokens_per_s") for k in res}
        sp = fastest(res, "sparsify", "sparsify_adam")
        ours, sl = tps.get("ours_trainstep_native"), tps.get("saelens")
        said = {
            name: verdict_repeats(
                _times(res.get("ours_trainstep_native")), _times(res.get(key)), lower_better=True
            ).split(":")[0]
            for name, key in (("SAELens", "saelens"), ("sparsify", sp))
        }
        words = set(said.values())
        rows.append(
            [
                num(int(size)) if str(size).isdigit() else str(size),
                f"**{num(ours)}**",
                num(sl),
                num(tps.get(sp)),
                times(ratio(ours, sl)),
                times(ratio(ours, tps.get(sp))),
                f"{words.pop()} than both"
                if len(words) == 1 and words <= {"faster", "slower"}
                else "; ".join(
                    f"{w} vs {n}" if w not in FASTER else f"{w} than {n}" for n, w in said.items()
                ),
            ]
        )
    header = [
        "d_sae",
        "**interp** tokens/s",
        "SAELens",
        "sparsify (the faster of its defaults and adam)",
        "interp / SAELens",
        "interp / sparsify",
        "verdict",
    ]
    return join_nonempty(
        para(
            f"One TopK training step (forward, backward, optimiser) on the same activations, d_in "
            f"{num(d.get('d_in'))}, k {num(d.get('k'))}, batch {num(d.get('batch_tokens'))} tokens, "
            "float32, each library's own step, in one run on a 2-core CPU (the full table, with "
            "the bound and the per-phase profile: the Benchmarks page). The verdict's criterion: "
            "faster (or slower) only where every timed step of one beats every timed step of the "
            "other; else within noise."
        ),
        table(header, rows),
    )


def _times(r) -> list:
    """A row's timed steps (seconds), [] for a missing, skipped or failed row."""
    return (r.get("times_s") or []) if isinstance(r, dict) else []


def _fractions(r: dict) -> list[float]:
    """Each timed step's fraction of the bound: the GEMM timed just before it over the step (the
    JSON's ``fraction_of_bound`` is their median)."""
    pairs = zip(r.get("gemm_before_s") or [], _times(r))
    return [g / t for g, t in pairs if isnum(g) and isnum(t) and t > 0]


VARIANTS = [  # (column, row, against): the default against its own variants
    ("C++ top-k vs pure torch", "ours_trainstep_native", "ours_trainstep"),
    ("bf16 encoder vs fp32", "ours_trainstep_native_bf16", "ours_trainstep_native"),
]


def _verdict_table(sizes: dict, order: list[str], peers: list[str]) -> str:
    """Per d_sae, the default step against each peer's and against its variants (verdict_repeats
    over the timed steps of the two rows)."""
    default = STEP_COLUMNS[0][1][0]
    header = ["d_sae"] + [f"vs {PEER_SHORT.get(p, p)}" for p in peers] + [v[0] for v in VARIANTS]
    rows = []
    for s in order:
        res = sizes[s].get("results") or {}
        cells = [
            verdict_repeats(_times(res.get(default)), _times(res.get(p)), lower_better=True)
            for p in peers
        ]
        for _, a, b in VARIANTS:
            skipped = isinstance(res.get(a), dict) and "skipped" in res[a]
            cells.append(
                "skipped"
                if skipped
                else verdict_repeats(_times(res.get(a)), _times(res.get(b)), lower_better=True)
            )
        rows.append([num(int(s)) if str(s).isdigit() else s] + cells)
    return table(header, rows) if rows else ""


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
