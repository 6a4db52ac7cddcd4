"""How ``bench.sae_quality`` renders ``bench/results/sae_quality.json`` as markdown (its ``render``, which
``bench/sae_quality.py`` exports): apart from the module so that each file stays under 700 lines."""

from __future__ import annotations

from bench._markdown import (
    NM,
    bullets,
    criterion_one_run,
    fix,
    get,
    isnum,
    join_nonempty,
    num,
    para,
    pct,
    sci,
    table,
    verdict_one_run,
)
from bench._provenance import renderer

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


def _versus(ours, r: dict) -> str:
    """Ours against a peer's row: held-out FVU and dead latents, one run each."""
    ours = ours if isinstance(ours, dict) else {}
    fvu = verdict_one_run(ours.get("fvu"), r.get("fvu"), ("lower", "higher"), lower_better=True)
    dead = verdict_one_run(
        ours.get("dead_fraction"),
        r.get("dead_fraction"),
        ("fewer", "more"),
        lower_better=True,
        points=True,
    )
    return f"FVU {fvu}; dead {dead}"


@renderer()
def render(d: dict) -> str:
    res = d.get("results") or {}
    same = "; ".join(map(str, d.get("same_for_every_row") or []))
    setup = para(
        f"SmolLM2 `{d.get('hook', NM)}`, {num(d.get('train_tokens'))} stdlib training tokens "
        f"({num(d.get('steps'))} steps of {num(d.get('batch'))}), k = {num(d.get('k'))}, d_sae = "
        f"{num(d.get('d_sae'))}; FVU on {num(d.get('eval_tokens'))} held-out tokens (validation files). "
        + (f"The same for every row: {same}." if same else "")
        + " Each peer runs twice: with its own defaults, and with its own options set to ours where "
        "it has them (what had to be applied outside the library, and what still differs, is "
        "listed under the table). The last column: ours against the row, on held-out FVU and "
        f"dead latents (one init seed per row). Criterion: {criterion_one_run(None)}."
    )
    keys = list(QUALITY_ROWS) + [k for k in res if k not in QUALITY_ROWS]
    rows, notes = [], []
    for key in keys:
        r = res.get(key)
        label = QUALITY_ROWS.get(key) or (r or {}).get("label") or f"`{key}`"
        if not isinstance(r, dict):
            rows.append([label, NM, "-", "-", "-", "-", "-", "-"])
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
                "-" if key == "ours" else _versus(res.get("ours"), r),
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
        "ours vs this row (criterion above)",
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
