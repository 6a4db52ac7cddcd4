"""Benchmark: many SAEs from one forward pass, and 1 vs 2 gloo processes (SmolLM2, live capture).

Hooks: N in {1, 4, 8} of ``blocks.L.hook_resid_post`` for the deepest layers L <= 15. "One forward"
trains the N SAEs (TopK, k = 32, d_sae = 2304) from one capture per batch (stop_at_layer at the
deepest hook); "separate passes" trains each SAE in its own run (its own forward, stopping at its
own layer). Tokens/s counts the token stream: T tokens train all N SAEs, so separate passes take
the sum of the N runs' times. The ideal speed-up when the forward dominates is the sum of the
forward depths over the deepest one (reported as ``ideal_speedup``).

gloo: the 4-hook job in one process with 2 threads versus two processes (torchrun, gloo, 1 thread
each): data parallel (each rank captures half of every block's windows and takes half of every
batch) and hook sharding (each rank trains 2 of the 4 SAEs and receives their activations).

Times come from the trainer's own log (the training loop, after initialisation). Prints a table
and saves bench/results/scale.json (+ scale.html). On a GPU (if present) the hook comparison is
repeated there. Not a test.

    python -m bench.scale [--quick] [--tokens 16384]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

from bench._markdown import (
    FASTER,
    NM,
    criterion_one_run,
    fix,
    isnum,
    join_nonempty,
    num,
    para,
    span,
    table,
    times,
    verdict_one_run,
)
from bench._provenance import renderer
from saes.rundir import RunDir, job_run_dir

TITLE = "Many SAEs per forward, and gloo processes"  # its name in the docs (python -m bench.report)

REPO = Path(__file__).resolve().parent.parent


def run_config(
    out_dir: str, hooks: list[str], tokens: int, device: str = "cpu", shard_hooks: bool = False
):
    from saes.training.config import RunConfig

    job = len(hooks) > 1 or shard_hooks
    return RunConfig(
        data={
            "model": "smollm2-135m",
            "hook": hooks[0],
            "hooks": hooks if job else None,
            "shard_hooks": shard_hooks,
            "train_tokens": tokens,
            "batch_tokens": 4096,
            "buffer_tokens": min(16384, tokens),
            "batch_windows": 16,
            "context_size": 128,
            "init_sample_tokens": 2048,
        },
        sae={"d_sae": 2304, "k": 32},
        optim={"warmup_steps": 1},
        log={"out_dir": out_dir, "log_every": 1, "checkpoint_every_tokens": 10**12},
        device=device,
    )


def logged_tps(out_dir: Path, hooks: list[str]) -> tuple[float, int]:
    """(tokens/s, tokens) from the training log of the job's first run folder."""
    job_folder = Path(job_run_dir(str(out_dir), hooks[0]))
    folder = RunDir(job_folder if job_folder.is_dir() else out_dir)
    last = folder.last_log_record()
    if last is None:
        raise RuntimeError(f"{folder.log_path} holds no training-log record")
    return last["tokens_per_s"], last["tokens"]


def in_process(model, hooks: list[str], tokens: int, device: str) -> float:
    from saes.training.loop import train

    out = Path(tempfile.mkdtemp(prefix="scale-"))
    train(run_config(str(out), hooks, tokens, device), progress=False, evaluate=False, model=model)
    tps, done = logged_tps(out, hooks)
    assert done == tokens, (done, tokens)
    return tps


def hooks_section(model, layers: list[int], counts: list[int], tokens: int, device: str) -> dict:
    hooks_all = [f"blocks.{layer}.hook_resid_post" for layer in layers]
    deepest_first = hooks_all[::-1]
    separate: dict[str, float] = {}
    needed = deepest_first[: max(counts)]
    print(f"[{device}] separate passes: {len(needed)} single-hook runs of {tokens:,} tokens")
    for h in needed:
        separate[h] = in_process(model, [h], tokens, device)
        print(f"  {h}: {separate[h]:,.0f} tok/s")
    rows = []
    for n in counts:
        hooks = sorted(deepest_first[:n], key=lambda h: int(h.split(".")[1]))
        one = separate[hooks[-1]] if n == 1 else in_process(model, hooks, tokens, device)
        sep_time = sum(tokens / separate[h] for h in hooks)
        sep_tps = tokens / sep_time
        depths = [int(h.split(".")[1]) + 1 for h in hooks]
        rows.append(
            {
                "device": device,
                "n_hooks": n,
                "hooks": hooks,
                "one_forward_tokens_per_s": one,
                "separate_passes_tokens_per_s": sep_tps,
                "speedup": one / sep_tps,
                "ideal_speedup": sum(depths) / max(depths),
            }
        )
        print(
            f"  {n} hooks: one forward {one:,.0f} tok/s, separate {sep_tps:,.0f} tok/s, "
            f"speed-up {one / sep_tps:.2f}x (ideal {rows[-1]['ideal_speedup']:.2f}x)"
        )
    return {"separate_single_hook_tokens_per_s": separate, "rows": rows}


def subprocess_run(
    label: str, hooks: list[str], tokens: int, nproc: int, threads: int, **kw
) -> dict:
    """Train in a fresh process (or ``nproc`` torchrun processes); tokens/s from rank 0's log."""
    out = Path(tempfile.mkdtemp(prefix="scale-dist-"))
    cfg_path = out / "cfg.json"
    cfg_path.write_text(run_config(str(out / "run"), hooks, tokens, **kw).model_dump_json())
    script = ["-m", "bench.scale", "--worker", str(cfg_path), "--threads", str(threads)]
    if nproc == 1:
        cmd = [sys.executable, *script]
    else:
        cmd = [
            sys.executable,
            "-m",
            "torch.distributed.run",
            "--standalone",
            "--nproc_per_node",
            str(nproc),
            *script,
        ]
    env = {**os.environ, "OMP_NUM_THREADS": str(threads)}
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True)
    wall = time.perf_counter() - t0
    if proc.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)} failed:\n{proc.stdout[-2000:]}\n{proc.stderr[-2000:]}")
    tps, done = logged_tps(out / "run", hooks)
    return {
        "mode": label,
        "processes": nproc,
        "threads_per_process": threads,
        "tokens": done,
        "tokens_per_s": tps,
        "wall_s_incl_startup": wall,
        **kw,
    }


def gloo_section(hooks: list[str], tokens: int) -> list[dict]:
    print(f"[cpu] 1 vs 2 gloo processes, {len(hooks)} hooks, {tokens:,} tokens")
    rows = [subprocess_run("1 process, 2 threads", hooks, tokens, 1, 2)]
    rows.append(subprocess_run("2 processes, data parallel", hooks, tokens, 2, 1))
    rows.append(subprocess_run("2 processes, hook sharding", hooks, tokens, 2, 1, shard_hooks=True))
    base = rows[0]["tokens_per_s"]
    for r in rows:
        r["speedup_vs_1_process"] = r["tokens_per_s"] / base
        print(f"  {r['mode']}: {r['tokens_per_s']:,.0f} tok/s ({r['speedup_vs_1_process']:.2f}x)")
    return rows


def worker(cfg_path: str, threads: int) -> None:
    from saes.training.config import RunConfig
    from saes.training.loop import train

    torch.set_num_threads(threads)
    train(RunConfig.model_validate_json(Path(cfg_path).read_text()), progress=False, evaluate=False)


def figure(result: dict, path: Path) -> None:
    import plotly.graph_objects as go
    from plotly.subplots import make_subplots

    fig = make_subplots(
        rows=1, cols=2, subplot_titles=("SAEs on N hooks (SmolLM2)", "1 vs 2 gloo processes")
    )
    for section in result["hooks"]:
        rows = section["rows"]
        x = [f"{r['n_hooks']} ({r['device']})" for r in rows]
        fig.add_trace(
            go.Bar(x=x, y=[r["one_forward_tokens_per_s"] for r in rows], name="one forward"), 1, 1
        )
        fig.add_trace(
            go.Bar(
                x=x, y=[r["separate_passes_tokens_per_s"] for r in rows], name="separate passes"
            ),
            1,
            1,
        )
    if result.get("gloo"):
        fig.add_trace(
            go.Bar(
                x=[r["mode"] for r in result["gloo"]],
                y=[r["tokens_per_s"] for r in result["gloo"]],
                name="gloo",
            ),
            1,
            2,
        )
    fig.update_yaxes(title_text="tokens/s")
    fig.update_layout(barmode="group", template="plotly_white")
    fig.write_html(str(path), include_plotlyjs="cdn")


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument(
        "--quick", action="store_true", help="smoke run: shallow layers, 1 and 4 hooks, one batch"
    )
    ap.add_argument(
        "--tokens", type=int, default=None, help="tokens per run (default 16384; quick 4096)"
    )
    ap.add_argument("--out", default=None)
    ap.add_argument("--worker", default=None, help=argparse.SUPPRESS)
    ap.add_argument("--threads", type=int, default=2, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.worker:
        worker(args.worker, args.threads)
        return
    from interp.models import load_model

    torch.set_num_threads(2)
    tokens = args.tokens or (4096 if args.quick else 16384)
    layers = list(range(0, 4)) if args.quick else list(range(8, 16))
    counts = [1, 4] if args.quick else [1, 4, 8]
    out = Path(
        args.out or ("bench/results/scale_quick.json" if args.quick else "bench/results/scale.json")
    )
    t0, load_at_start = time.perf_counter(), os.getloadavg()
    model = load_model("smollm2-135m", device="cpu")
    result = {"hooks": [hooks_section(model, layers, counts, tokens, "cpu")]}
    gloo_hooks = [f"blocks.{layer}.hook_resid_post" for layer in layers[-4:]]
    result["gloo"] = gloo_section(gloo_hooks, tokens)
    if torch.cuda.is_available():
        gpu = load_model("smollm2-135m", device="cuda")
        result["hooks"].append(hooks_section(gpu, layers, counts, tokens * 8, "cuda"))
    result.update(
        {
            "model": "smollm2-135m",
            "sae": {"variant": "topk", "k": 32, "d_sae": 2304, "batch_tokens": 4096},
            "tokens_per_run": tokens,
            "quick": args.quick,
            "torch": torch.__version__,
            "threads": 2,
            "cpu_count": os.cpu_count(),
            "machine": platform.machine(),
            "load_average_at_start": load_at_start,
            "load_average_at_end": os.getloadavg(),
            "wall_s": time.perf_counter() - t0,
            "gpu": torch.cuda.get_device_name() if torch.cuda.is_available() else None,
            "note": "2 CPU cores shared with other jobs; one run per configuration",
        }
    )
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2))
    figure(result, out.with_suffix(".html"))
    print("\n| device | hooks | one forward tok/s | separate passes tok/s | speed-up | ideal |")
    print("|---|---|---|---|---|---|")
    for section in result["hooks"]:
        for r in section["rows"]:
            print(
                f"| {r['device']} | {r['n_hooks']} | {r['one_forward_tokens_per_s']:,.0f} | "
                f"{r['separate_passes_tokens_per_s']:,.0f} | {r['speedup']:.2f}x | {r['ideal_speedup']:.2f}x |"
            )
    print("\n| run (4 hooks) | tok/s | vs 1 process |\n|---|---|---|")
    for r in result["gloo"]:
        print(f"| {r['mode']} | {r['tokens_per_s']:,.0f} | {r['speedup_vs_1_process']:.2f}x |")
    print(f"saved {out} and {out.with_suffix('.html')} ({result['wall_s']:.0f} s)")


# ------------------------------------------------------------------------------------------------
# rendering: bench/results/scale.json as markdown (python -m bench.report; see bench/_provenance.py)
# ------------------------------------------------------------------------------------------------
# bench/results/scale.json predates recorded provenance: the command that measured it
@renderer("python bench/scale.py")
def render(d: dict) -> str:
    sae = d.get("sae") or {}
    setup = para(
        f"SmolLM2, {sae.get('variant', NM)} SAEs (k = {num(sae.get('k'))}, d_sae = {num(sae.get('d_sae'))}, "
        f"batch {num(sae.get('batch_tokens'))}), live capture, {num(d.get('tokens_per_run'))} tokens per "
        f"run, one run per configuration, times from the trainer's log; {num(d.get('wall_s'))} s for the "
        "whole script. The verdict columns (one forward against separate passes; each gloo mode "
        f"against one process), criterion: {criterion_one_run()}."
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
                    "- (one run serves both)"
                    if r.get("n_hooks") == 1
                    else verdict_one_run(
                        r.get("one_forward_tokens_per_s"),
                        r.get("separate_passes_tokens_per_s"),
                        FASTER,
                    ),
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
        "one forward vs separate passes",
    ]
    gloo = [g for g in d.get("gloo") or [] if isinstance(g, dict)]
    job = f"4-hook ({wheres[4]})" if 4 in wheres else "multi-hook"
    base = next((g for g in gloo if g.get("processes") == 1), None)
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
            "-"
            if g is base
            else verdict_one_run(g.get("tokens_per_s"), (base or {}).get("tokens_per_s"), FASTER),
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
        table(header, rows or [[NM] * 6]),
        para(*per_sae),
        table([f"the {job} job", "tok/s", "vs 1 process", "verdict"], g_rows or [[NM] * 4]),
        gloo_text,
        gpu,
    )


if __name__ == "__main__":
    main()
