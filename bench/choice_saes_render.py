"""How ``bench.choice_saes`` renders ``bench/results/choice_saes.json`` as markdown (its ``render``, which
``bench/choice_saes.py`` exports): apart from the module so that each file stays under 700 lines."""

from __future__ import annotations

from bench._markdown import (
    FASTER,
    NM,
    compare,
    criterion_one_run,
    criterion_repeats,
    fix,
    get,
    isnum,
    join_nonempty,
    ms,
    num,
    para,
    pct,
    ratio,
    sci,
    span,
    table,
    times,
    verdict_one_run,
    verdict_repeats,
    verdict_target,
)
from bench._provenance import renderer

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
    fvus = {
        n: r["batch_selection_fvu"]
        for n, r in rows.items()
        if n != "topk" and isinstance(r, dict) and isnum(r.get("batch_selection_fvu"))
    }
    lower = [n for n, v in fvus.items() if isnum(ref) and v < ref]
    higher = [n for n, v in fvus.items() if isnum(ref) and v >= ref]
    return (
        f"batch-selection FVU below TopK's {fix(ref)}: {', '.join(lower) or 'none'}; "
        f"not below: {', '.join(higher) or 'none'} (beyond the criterion only where the table "
        "above says so)"
    )


def _step_verdicts(sets: list[tuple[str, dict]], names: list[str], step: dict) -> str:
    """Each variant's step against TopK's, and against the target, per activation source, from the
    timed steps (every step of the variant against every step of TopK)."""
    if not sets or not names:
        return ""
    header = ["variant"]
    for src, _ in sets:
        where = f" ({src})" if len(sets) > 1 else ""
        header += [f"vs TopK{where}", f"target{where}"]
    rows = []
    for n in names:
        if n == "topk":
            continue
        row = [n]
        for _, b in sets:
            mine = get(b, "variants", n, "samples_s") or []
            topk = get(b, "variants", "topk", "samples_s") or []
            c = compare(mine, topk)  # the step time's ratio, its range over every pair of steps
            row += [
                verdict_repeats(mine, topk, FASTER, lower_better=True),
                verdict_target([c[1], c[2]], 1.5, at_least=False) if c else NM,
            ]
        rows.append(row)
    target = step.get("target", get(sets, 0, 1, "target", default=NM))
    return join_nonempty(
        para(
            f"Each variant's step against TopK's, and against the target ({target}), from the "
            f"timed steps. Criterion: {criterion_repeats('timed step')}; the target is met where "
            "the step-time ratio of every pair of timed steps meets it, missed where none does, "
            "else not resolved (the range of those ratios follows):"
        ),
        table(header, rows),
    )


def _quality_verdicts(syn: dict, lm: dict) -> str:
    """Each variant against TopK on the quality runs (one run each): batch-selection FVU (at
    TopK's L0), CE loss recovered on SmolLM2, training tokens/s."""
    names = [n for n in CHOICE_ORDER + list(syn) + list(lm) if n != "topk"]
    names = [n for i, n in enumerate(names) if n not in names[:i] and (n in syn or n in lm)]
    if not names:
        return ""
    lower = ("lower", "higher")

    def cell(rows: dict, n: str, key: str, ref: str, **how) -> str:
        r, t = rows.get(n), rows.get("topk")
        if not isinstance(r, dict):
            return "-"
        return verdict_one_run(r.get(key), (t or {}).get(ref), **how)

    rows = [
        [
            n,
            cell(syn, n, "batch_selection_fvu", "fvu", words=lower, lower_better=True),
            cell(syn, n, "train_tokens_per_s", "train_tokens_per_s", words=FASTER),
            cell(lm, n, "batch_selection_fvu", "fvu", words=lower, lower_better=True),
            cell(lm, n, "ce_loss_recovered", "ce_loss_recovered", words=lower[::-1], points=True),
            cell(lm, n, "train_tokens_per_s", "train_tokens_per_s", words=FASTER),
        ]
        for n in names
    ]
    header = [
        "variant vs TopK",
        "synthetic: FVU (batch selection)",
        "synthetic: training tok/s",
        "SmolLM2: FVU (batch selection)",
        "SmolLM2: CE loss recovered",
        "SmolLM2: training tok/s",
    ]
    return join_nonempty(
        para(
            "Each variant against TopK in the two quality runs (FVU by batch selection, at "
            f"TopK's L0). Criterion: {criterion_one_run(None)}:"
        ),
        table(header, rows),
    )


@renderer()
def render(d: dict) -> str:
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
    blocks.append(_step_verdicts(sets, names, step))
    findings = []
    sel = sv("mutual_selection_s") or {}
    if sel:
        findings.append(
            "Mutual choice's top-(k*B) over the flat batch x d_sae matrix alone: "
            + ", ".join(f"`{k}` {ms(v, 0)}" for k, v in sel.items())
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
    blocks.append(_quality_verdicts(syn.get("rows") or {}, lm_rows))
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
