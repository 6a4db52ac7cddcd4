"""Test helper: the notebooks under ``notebooks/``, checked for committed outputs and executed.

Execution runs in a temporary copy (the committed file is never written), in the venv's
``python3`` kernel (jupyter_client starts the kernel spec's ``python`` as ``sys.executable``, so
the kernel is this interpreter and sees the editable install), with ``INTERP_NB_SIZE`` set and
``INTERP_NB_OUT`` pointing into the temporary folder (where the notebooks write their runs).

A guard cell is put in front of the notebook: any warning raised from a module of the project's
own packages (the frame that calls ``warnings.warn``, whatever its ``stacklevel`` says) becomes a
``PackageWarningError`` in the cell that caused it, and so do warnings that third-party code
attributes to our modules (``filterwarnings("error", module=...)``). Warnings of other libraries
pass as they do for a researcher.
"""

from __future__ import annotations

import math
import os
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import nbformat

REPO = Path(__file__).resolve().parent.parent
NOTEBOOKS = REPO / "notebooks"
PACKAGES = ("interp", "saes", "circuits", "dashboards")
SIZE_LINE = 'SIZE = os.environ.get("INTERP_NB_SIZE", "small")'

GUARD = f"""\
import sys as _sys
import warnings as _warnings

_PACKAGES = {PACKAGES!r}
_original_warn = _warnings.warn


class PackageWarningError(AssertionError):
    "A warning raised by the project's own code while a notebook ran."


def _guarded_warn(message, category=None, stacklevel=1, source=None, **kwargs):
    caller = _sys._getframe(1).f_globals.get("__name__", "")
    if caller.split(".")[0] in _PACKAGES:
        kind = getattr(category, "__name__", "UserWarning")
        raise PackageWarningError(f"{{caller}} warned ({{kind}}): {{message}}")
    return _original_warn(message, category, stacklevel + 1, source, **kwargs)


_warnings.warn = _guarded_warn
_warnings.filterwarnings("error", module=r"({"|".join(PACKAGES)})(\\.|$)")
"""


def notebook_paths() -> list[Path]:
    return sorted(NOTEBOOKS.glob("*.ipynb"))


def deep_imports(source: str) -> list[str]:
    """The imports in ``source`` (Python; IPython ``%`` / ``!`` lines skipped) that reach below a
    project package's root (``from saes.training.loop import train``, ``import interp.models``): the
    public API is what the roots export. Third-party imports are not looked at."""
    import ast

    code = "\n".join("" if s.lstrip().startswith(("%", "!")) else s for s in source.splitlines())
    deep = []
    for node in ast.walk(ast.parse(code)):
        if isinstance(node, ast.ImportFrom) and node.module:
            modules = [node.module]
        elif isinstance(node, ast.Import):
            modules = [a.name for a in node.names]
        else:
            continue
        deep += [
            f"line {node.lineno}: {m}" for m in modules if m.split(".")[0] in PACKAGES and "." in m
        ]
    return deep


def committed_output_problems(nb: Any) -> list[str]:
    """What a committed notebook holds that should have been stripped (empty: clean)."""
    problems = []
    for i, cell in enumerate(nb.cells):
        if cell.cell_type != "code":
            continue
        if cell.get("outputs"):
            problems.append(f"cell {i} has {len(cell['outputs'])} output(s)")
        if cell.get("execution_count") is not None:
            problems.append(f"cell {i} has execution_count {cell['execution_count']}")
    for key in ("widgets", "varInspector"):
        if key in nb.metadata:
            problems.append(f"notebook metadata holds {key!r} (saved widget state)")
    return problems


@contextmanager
def _env(**values: str) -> Iterator[None]:
    old = {k: os.environ.get(k) for k in values}
    os.environ.update(values)
    try:
        yield
    finally:
        for k, v in old.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


def execute(
    nb: Any, workdir: Path, size: str = "small", timeout: int = 600, guard: bool = True
) -> tuple[Any, float]:
    """Run a copy of ``nb`` (a NotebookNode) in ``workdir``; returns (executed copy, seconds).
    Raises nbclient's CellExecutionError on the first cell that fails."""
    from nbclient import NotebookClient

    nb = nbformat.from_dict(nb)  # a copy: the caller's notebook keeps no outputs
    if guard:
        nb.cells.insert(0, nbformat.v4.new_code_cell(GUARD))
    workdir.mkdir(parents=True, exist_ok=True)
    client = NotebookClient(
        nb,
        kernel_name="python3",
        timeout=timeout,
        resources={"metadata": {"path": str(workdir)}},
    )
    t0 = time.perf_counter()
    with _env(INTERP_NB_SIZE=size, INTERP_NB_OUT=str(workdir / "runs"), PYTHONWARNINGS=""):
        client.execute()
    return nb, time.perf_counter() - t0


def output_mimetypes(nb: Any) -> set[str]:
    """Every mimetype among the executed notebook's display outputs."""
    kinds: set[str] = set()
    for cell in nb.cells:
        for out in cell.get("outputs", []):
            kinds.update(out.get("data", {}).keys())
    return kinds


def html_outputs(nb: Any) -> list[str]:
    return [
        out["data"]["text/html"]
        for cell in nb.cells
        for out in cell.get("outputs", [])
        if "text/html" in out.get("data", {})
    ]


# ---- the check cell ---------------------------------------------------------------------------
# After a notebook's last cell the test runs one more (test-owned, never committed to the notebook):
# COLLECT[stem] reads what the notebook computed, from its namespace, into the dict ``V`` and
# recomputes a few things independently of the library (from the SAE's weights, the raw data);
# the cell prints V as JSON after CHECK_MARKER. test_notebooks.py's EXPECT table asserts on it.

CHECK_MARKER = "@@notebook-check@@"

_CHECK_HEAD = """\
import json as _json
import math as _math
import torch as _torch
V = {}
"""

_CHECK_TAIL = f"""
print({CHECK_MARKER!r} + _json.dumps(V, default=float))
"""

COLLECT: dict[str, str] = {}

COLLECT["01_quickstart"] = """\
V["k"], V["d_sae"], V["store_tokens"] = P["k"], P["d_sae"], P["store_tokens"]
V["m"] = {k: v for k, v in m.items() if isinstance(v, (int, float))}
V["log_fvu"] = [r["fvu"] for r in RunDir(run).log_records() if "fvu" in r]
V["store"] = dict(
    n_tokens=store.n_tokens, d_sae=store.d_sae, alive=len(store.alive),
    density_sum=float(densities.sum()), density_min=float(densities.min()),
    density_max=float(densities.max()),
)
V["chosen"] = []
for _i in chosen:
    _f = store.feature(_i)
    V["chosen"].append(dict(
        latent=_i, density=_f.density, count=_f.count, n_tokens=_f.n_tokens, max=_f.max,
        top=[e.value for e in _f.top], top_at_center=[e.acts[e.center] for e in _f.top],
    ))
V["prompt"] = dict(
    n_texts=len(view.texts), latents=list(latents),
    first_max=max(view.activation_of(latents[0])) if latents else None,
)
"""

COLLECT["02_features"] = """\
from saes import RunDir
V["k"], V["d_sae"] = P["k"], P["d_sae"]
V["m"] = {k: v for k, v in RunDir(run).metrics(required=True).items() if isinstance(v, (int, float))}
V["dead"], V["dense"] = int((densities == 0).sum()), int((densities > 0.1).sum())
V["density_sum"], V["d_sae_store"] = float(densities.sum()), store.d_sae
V["latent"] = LATENT
V["f"] = dict(
    count=f.count, n_tokens=f.n_tokens, density=f.density, mean=f.mean, max=f.max,
    top=[e.value for e in f.top], top_at_center=[e.acts[e.center] for e in f.top],
    bands=[dict(q_lo=b.q_lo, q_hi=b.q_hi, lo=b.lo, hi=b.hi, values=[e.value for e in b.examples])
           for b in f.bands],
    neighbours=[list(n) for n in f.neighbours], coactivation=[list(c) for c in f.coactivation],
    logit_top=[e[2] for e in f.logit_top], logit_bottom=[e[2] for e in f.logit_bottom],
)
_W = sae.W_dec.detach().double()
_W = _W / _W.norm(dim=-1, keepdim=True)
_cos = _W @ _W[LATENT]
_cos[LATENT] = -2.0
V["cos_of_neighbours"] = [float(_cos[j]) for j, _ in f.neighbours]
V["cos_best"] = float(_cos.max())
V["counts_of_coactive"] = [store.feature(j).count for j, _ in f.coactivation]
V["steer"] = dict(alphas=alphas, kl=result.kl, target=result.target_logprob_change)
V["probs"] = dict(clean_sum=float(clean.sum()), steered_sum=float(steered.sum()))
"""

COLLECT["03_variants"] = """\
from saes import RunDir
V["ks"], V["variants"], V["d_sae"] = P["ks"], VARIANTS, P["d_sae"]
V["table"] = table.to_dict("records")
V["runs"] = []
for _r in runs:
    _m = RunDir(_r.log.out_dir).metrics(required=True)
    with _torch.no_grad():
        _l0 = (load_sae(_r.log.out_dir).encode(x.float()) > 0).sum(-1).double()
    V["runs"].append(dict(
        name=Path(_r.log.out_dir).name, variant=_r.sae.variant, k=_r.sae.k,
        fvu=_m["fvu"], l0_mean=_m["l0_mean"], dead_fraction=_m["dead_fraction"],
        ce_loss_recovered=_m["ce_loss_recovered"], ce_clean=_m["ce_clean"],
        ce_spliced=_m["ce_spliced"], ce_zero_ablated=_m["ce_zero_ablated"],
        l0_tokens=dict(mean=float(_l0.mean()), min=float(_l0.min()), max=float(_l0.max())),
    ))
"""

COLLECT["04_attention"] = """\
V["k"], V["d_sae"] = P["k"], P["d_sae"]
V["m"] = {k: v for k, v in m.items() if isinstance(v, (int, float))}
V["n_heads"] = layout.n_heads
_W = sae.W_dec.detach().double().reshape(sae.cfg.d_sae, layout.n_heads, -1).norm(dim=-1)
_shares = _W / _W.sum(-1, keepdim=True)
V["shares_max_diff"] = float((_shares - attr.shares.double()).abs().max())
V["dominated_recount"] = _torch.bincount(_shares.argmax(-1), minlength=layout.n_heads).tolist()
V["features_dominated"] = list(attr.features_dominated)
V["summary"] = {k: v for k, v in summary.items() if isinstance(v, (int, float))}
_eff = _torch.exp(-(_shares * _shares.clamp_min(1e-30).log()).sum(-1))
V["effective_heads_recount"] = float(_eff.mean())
# DFA is exact: sum over heads and sources + (b_enc - b_dec . W_enc) = the pre-activation
_c = sae.b_enc.detach().double() - sae.b_dec.detach().double() @ sae.W_enc.detach().double()
V["dfa"] = dict(
    feature=feature, act=act, c=float(_c[feature]), head_sum=sum(last.head_dfa[0]),
    source_sum=sum(last.source_dfa[0]), n_positions=len(positions), n_ids=int(ids.numel()),
    activations=list(last.activations),
)
_cfg = search
V["induction"] = dict(
    min_ratio=_cfg.min_ratio, min_source_share=_cfg.min_source_share,
    min_second_density=_cfg.min_second_density, n_candidates=report.n_candidates,
    features=[dict(act_first=g.act_first, act_second=g.act_second,
                   density_second=g.density_second, source_share=g.source_share,
                   top_head=g.top_head) for g in report.features],
    features_per_head=list(report.features_per_head),
    head_induction_score=list(report.head_induction_score),
)
"""

COLLECT["05_bring_your_own"] = """\
V["k"], V["d_sae"], V["P"] = P["k"], P["d_sae"], P
V["cache_rows"], V["shard_rows"] = len(cache), [s["tokens"] for s in shards]
V["n_windows"], V["window_len"] = int(windows.shape[0]), int(windows.shape[1])
V["m"] = {k: v for k, v in m.items() if isinstance(v, (int, float))}
V["skipped"] = sorted(m.get("skipped", {}))
V["gap"] = gap
V["sae_cfg"] = dict(variant=sae.cfg.variant, d_sae=sae.cfg.d_sae, k=sae.cfg.k)
V["metrics"] = {k: v for k, v in metrics.items() if isinstance(v, (int, float))}
V["saelens"] = {k: v for k, v in metrics["saelens"].items() if isinstance(v, (int, float))}
V["store"] = dict(n_tokens=store.n_tokens, density_sum=float(densities.sum()), d_sae=store.d_sae)
"""

COLLECT["06_dark_matter"] = """\
V["k"], V["widths"] = P["k"], P["widths"]
V["n_fit"], V["n_test"] = int(x_fit.shape[0]), int(x_test.shape[0])
V["reports"] = {str(w): r for w, r in reports.items()}
V["fvu_recomputed"] = {}
for _w, _s in saes.items():
    with _torch.no_grad():
        _x = x_test.double()
        _xh = _torch.cat([_s(c.float())[0].double() for c in x_test.split(1024)])
    V["fvu_recomputed"][str(_w)] = float(((_x - _xh) ** 2).sum() / ((_x - _x.mean(0)) ** 2).sum())
V["by_hand"] = dict(
    n=len(x), l0_mean=float(l0.float().mean()), err_sae=float(err_sae.mean()),
    err_gp=float(err_gp.mean()), better=float((err_gp < err_sae).float().mean()),
)
V["scaling_widths"] = list(result["scaling"]["widths"])
"""

COLLECT["07_circuits"] = """\
V["acc_pos"] = induction_accuracy(planted, pos)
V["acc_neg"] = induction_accuracy(planted, neg)
V["node"], V["edge"] = [float(s) for s in r.node], [float(s) for s in r.edge]
V["truth"] = [bool(t) for t in truth]
V["ranked"] = [[h, float(s), bool(c)] for h, s, c in ranked_heads(res, "node", 15)]
V["labels"], V["res_truth"] = list(res["labels"]), [bool(t) for t in res["truth"]]
V["res_node"] = list(res["scores"]["node"])
V["gt"] = dict(k=gt["k"], circuit=list(gt["circuit"]), n_heads=gt["n_layers"] * gt["n_heads"])
V["summary"] = {
    name: {k: v for k, v in s.items() if isinstance(v, (int, float))}
    for name, s in res["summary"].items()
}
V["seeds"] = P["seeds"]
"""

COLLECT["08_sparsity_laws"] = """\
V["fits"] = {
    name: dict(law=r["law"], D=r["D"], A=r["A"], fit=r["fit"], paper=r.get("paper"),
               mae_ratio=r.get("mae_ratio"))
    for name, r in fits.items()
}
V["profiled"] = {
    name: dict(interval=list(r["profile"]["interval"]), best_a0=r["profile"]["best_a0"],
               best_mae=r["profile"]["best_mae"], fit_a0=r["fit"]["params"]["A0"],
               fit_mae=r["fit"]["mae"], a0=r["profile"]["a0"], mae=r["profile"]["mae"],
               tol=r["profile"]["tol"])
    for name, r in profiled.items()
}
V["ppl"] = {k: v for k, v in result.items() if isinstance(v, (int, float))}
V["ppl_increase_target"] = cfg.ppl_increase
V["ppl_rtol"] = cfg.ppl_rtol
"""


# ---- helpers of the expectations (test_notebooks.EXPECT) ------------------------------------


def ok(x, lo=-math.inf, hi=math.inf) -> bool:
    """x is a finite number strictly inside (lo, hi)."""
    return isinstance(x, (int, float)) and math.isfinite(x) and lo < x < hi


def close(a, b, rel=1e-6, abs_=1e-9) -> bool:
    return ok(a) and ok(b) and abs(a - b) <= abs_ + rel * max(abs(a), abs(b))


def desc(xs) -> bool:
    return all(a >= b for a, b in zip(xs, xs[1:]))


def shows(v, text: str) -> bool:
    return text in v["stdout"]


def auc(scores, truth) -> float:
    """P(a circuit head outscores another head), ties 1/2: counted pair by pair."""
    pos = [s for s, t in zip(scores, truth) if t]
    neg = [s for s, t in zip(scores, truth) if not t]
    wins = sum((p > n) + 0.5 * (p == n) for p in pos for n in neg)
    return wins / (len(pos) * len(neg))


def null_auc_bound(n_pos: int, n_neg: int, p: float = 1e-3, draws: int = 20_000) -> float:
    """The AUC a random ranking exceeds with probability p: the (1 - p) quantile of the AUCs of
    ``draws`` random rankings (exact ranks, so it holds for a circuit of 2 heads too)."""
    import random

    rng, n = random.Random(0), n_pos + n_neg
    base = n_pos * (n_pos + 1) / 2
    aucs = sorted(
        (sum(rng.sample(range(1, n + 1), n_pos)) - base) / (n_pos * n_neg) for _ in range(draws)
    )
    return aucs[min(draws - 1, int((1 - p) * draws))]


def sparsing_law(law: str, p, d: float) -> float:
    """Sparsing Law's forms, written out here (not the library's)."""
    if law == "relu":
        return math.exp(-p["c"] * d ** p["alpha"] + p["b"]) + p["A0"]
    return -p["c"] * d ** (-p["alpha"]) + p["A0"]


def law_mae(law, p, D, A) -> float:
    return sum(abs(sparsing_law(law, p, d) - a) for d, a in zip(D, A)) / len(D)


def check_cell(stem: str) -> str:
    """The source of notebook ``stem``'s check cell."""
    return _CHECK_HEAD + COLLECT[stem] + _CHECK_TAIL


def stdout_text(nb: Any) -> str:
    """Everything the executed notebook printed (stream outputs), in order."""
    return "".join(
        out.get("text", "")
        for cell in nb.cells
        for out in cell.get("outputs", [])
        if out.get("output_type") == "stream"
    )


def checked_values(nb: Any) -> dict[str, Any]:
    """The JSON the check cell (the executed notebook's last cell) printed."""
    import json

    outs = nb.cells[-1].get("outputs", [])
    text = "".join(o.get("text", "") for o in outs if o.get("output_type") == "stream")
    line = [s for s in text.splitlines() if s.startswith(CHECK_MARKER)]
    if len(line) != 1:
        raise AssertionError(f"the check cell printed no values: {text[-2000:]!r}")
    return json.loads(line[0][len(CHECK_MARKER) :])


def execute_checked(
    nb: Any, stem: str, workdir: Path, size: str = "small", timeout: int = 600
) -> tuple[Any, float, dict[str, Any]]:
    """Execute a copy of ``nb`` with its check cell appended: (executed copy, seconds the
    notebook's own cells took (the check cell's time left out), the check cell's values, with
    "stdout": everything the notebook's own cells printed)."""
    nb = nbformat.from_dict(nb)
    nb.cells.append(nbformat.v4.new_code_cell(check_cell(stem)))
    out, seconds = execute(nb, workdir, size=size, timeout=timeout)
    values = checked_values(out)
    # what the notebook itself printed (the check cell's JSON left out)
    values["stdout"] = stdout_text(nbformat.from_dict({**out, "cells": out.cells[:-1]}))
    return out, seconds - _cell_seconds(out.cells[-1]), values


def _cell_seconds(cell: Any) -> float:
    """How long one executed cell ran (nbclient's timing metadata; 0 when absent)."""
    from datetime import datetime

    timing = cell.get("metadata", {}).get("execution", {})
    start, end = timing.get("iopub.execute_input"), timing.get("shell.execute_reply")
    if not (start and end):
        return 0.0
    parse = lambda s: datetime.fromisoformat(s.replace("Z", "+00:00"))  # noqa: E731
    return (parse(end) - parse(start)).total_seconds()
