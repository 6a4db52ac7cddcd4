"""Benchmark: activation-capture throughput on SmolLM2 (fp32, CPU), all measured in one run.

Measured on the same token batches (``--windows`` windows of ``--context`` tokens from the stdlib
source, ``--batch`` windows per forward; 16 x 128 is the trainer's default):

* ``hf_full_forward``: a plain transformers forward (``AutoModelForCausalLM``, logits included);
* for L in (5, 15):
  ``capture_L{L}_stop_at_layer``: ``ActivationCapture`` of ``blocks.L.hook_resid_post`` (runs blocks
  0..L only, fast forward installed: the default ``load_model``);
  ``capture_L{L}_full_forward``: the same hook with ``stop_at_layer`` disabled (all 30 blocks; the
  capture skips the unembedding since nothing reads the logits);
  ``hf_truncated_L{L}``: a plain transformers forward truncated after layer L, the floor;
  ``capture_L{L}_stop_at_layer_tl_original``: as the first, on a model loaded with ``fast=False``
  (TransformerLens's own forwards), for comparison;
* ``capture_4_hooks``: ``blocks.{3,7,11,15}.hook_resid_post`` at once, against
  ``capture_L15_stop_at_layer`` (the deepest of them alone);
* ``capture_L{L}_stop_at_layer_bf16``: the first row with the model in bf16
  (``load_model(dtype="bfloat16")``, ``data.model_dtype``), in the same rounds; the ratio to fp32
  is ``capture_L{L}_bf16_speedup_vs_fp32`` (target >= 2 on a CPU with bf16 matrix units).

What bf16 costs (``bf16_vs_fp32``): on ``--quality-windows`` held-out (validation split) windows,
the mean KL(fp32 || bf16) of the next-token distributions, the CE of each model and their
difference, and the relative error of the captured layer-L residuals.

Timing: every implementation is warmed up, then ``--repeats`` rounds run; in each round every
implementation does one sweep over all batches, the implementations taking turns batch by batch
in an order rotated from round to round, so slow phases of a shared machine hit all of them alike
(at least 3 rounds; no new round starts that would overrun ``--max-seconds``). A rate is
tokens / seconds of one sweep;
reported rates are medians over rounds, and ratios are medians of the per-round (paired) ratios.
The target comparisons are then repeated as ``--pairs`` back-to-back pairs on single batches
(``back_to_back_pairs`` in the JSON), a finer view of small differences on a noisy machine.
Threads: torch's default. Targets: ``capture_L{L}_vs_hf_truncated >= 0.95`` and
``capture_4_hooks_overhead_vs_deepest <= 0.05``. A numerical check (capture vs transformers'
residual stream, fast vs original forward) is included. Prints a table and saves ``--out``
(JSON). Not a test.

    python -m bench.activations [--windows 32] [--batch 16] [--context 128] [--repeats 5]
                                [--pairs 8] [--max-seconds 300]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import statistics
import time
from collections.abc import Callable
from pathlib import Path

import torch

from bench._markdown import (
    NM,
    criterion_repeats,
    criterion_target,
    fix,
    join_nonempty,
    num,
    para,
    parse_target,
    pct,
    table,
    times,
    verdict_repeats,
    verdict_target,
)
from bench._provenance import renderer
from interp.activations import ActivationCapture
from interp.data import token_windows
from interp.models import cpu_bf16_flags, load_model, smollm2_gguf_path

TITLE = "Activation capture"  # its name in the docs (python -m bench.report)

LAYERS = (5, 15)
FOUR_HOOK_LAYERS = (3, 7, 11, 15)


def interleaved(
    impls: dict[str, Callable[[torch.Tensor], object]],
    batches: list[torch.Tensor],
    repeats: int,
    deadline: float = float("inf"),
    min_repeats: int = 3,
) -> dict[str, list[float]]:
    """Tokens/s of each implementation, one sweep over ``batches`` per round. Within a round the
    implementations take turns batch by batch, in an order rotated from round to round. After
    ``min_repeats`` rounds, no round starts that would end after ``deadline`` (a
    ``time.perf_counter()`` value) by the duration of the previous one."""
    names = list(impls)
    for name in names:  # warm-up: one batch each (allocator, kernels, lazy init)
        impls[name](batches[0])
    n_tokens = sum(b.numel() for b in batches)
    rates: dict[str, list[float]] = {n: [] for n in names}
    last_round = 0.0
    for r in range(repeats):
        if r >= min_repeats and time.perf_counter() + last_round > deadline:
            print(f"  stopping after {r} rounds (time budget)")
            break
        t_round = time.perf_counter()
        order = names[r % len(names) :] + names[: r % len(names)]
        seconds = dict.fromkeys(names, 0.0)
        for b in batches:  # interleaved per batch: bursts of load hit every implementation alike
            for name in order:
                t0 = time.perf_counter()
                impls[name](b)
                seconds[name] += time.perf_counter() - t0
        for name in names:
            rates[name].append(n_tokens / seconds[name])
        last_round = time.perf_counter() - t_round
        done = ", ".join(f"{n}={rates[n][-1]:.0f}" for n in names)
        print(f"  round {r + 1}/{repeats}: {done}", flush=True)
    return rates


def paired_ratio(a: list[float], b: list[float]) -> float:
    return statistics.median(x / y for x, y in zip(a, b))


def back_to_back(
    a: Callable[[torch.Tensor], object],
    b: Callable[[torch.Tensor], object],
    batches: list[torch.Tensor],
    pairs: int,
) -> float:
    """Median over ``pairs`` back-to-back runs (ab, ba, ab, ...; batches cycled) of
    time(a) / time(b), i.e. rate(b) / rate(a): a finer check of a small difference."""
    ratios = []
    for i in range(pairs):
        batch = batches[i % len(batches)]
        seconds = {}
        for name, fn in (("a", a), ("b", b)) if i % 2 == 0 else (("b", b), ("a", a)):
            t0 = time.perf_counter()
            fn(batch)
            seconds[name] = time.perf_counter() - t0
        ratios.append(seconds["a"] / seconds["b"])
    return statistics.median(ratios)


@torch.inference_mode()
def bf16_quality(model, model16, n_windows: int, context: int, batch: int) -> dict[str, float]:
    """KL(fp32 || bf16) of next-token distributions, both CEs, and residual error at each layer."""
    wins = token_windows(
        model.tokenizer, source="stdlib", context_size=context, split="validation", seed=0
    )
    windows = torch.stack([w for _, w in zip(range(n_windows), wins)])
    kl_sum = ce32 = ce16 = 0.0
    n = 0
    rel = {L: [] for L in LAYERS}
    hooks = [f"blocks.{L}.hook_resid_post" for L in LAYERS]
    for b in windows.split(batch):
        out32, c32 = model.run_with_cache(b, names_filter=hooks)
        out16, c16 = model16.run_with_cache(b, names_filter=hooks)
        lp32 = out32[:, :-1].float().log_softmax(-1)
        lp16 = out16[:, :-1].float().log_softmax(-1)
        target = b[:, 1:]
        kl_sum += (lp32.exp() * (lp32 - lp16)).sum(-1).sum().item()
        ce32 -= lp32.gather(-1, target[..., None]).sum().item()
        ce16 -= lp16.gather(-1, target[..., None]).sum().item()
        n += target.numel()
        for L, h in zip(LAYERS, hooks):
            a, a16 = c32[h][:, 1:].float(), c16[h][:, 1:].float()  # BOS excluded (its norm is huge)
            rel[L].append(((a16 - a).norm(dim=-1) / a.norm(dim=-1)).mean().item())
    out = {
        "windows": n_windows,
        "predicted_tokens": n,
        "mean_kl_fp32_to_bf16": kl_sum / n,
        "ce_fp32": ce32 / n,
        "ce_bf16": ce16 / n,
        "ce_bf16_minus_fp32": (ce16 - ce32) / n,
    }
    for L in LAYERS:
        out[f"L{L}_resid_mean_rel_err"] = statistics.mean(rel[L])
    return out


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--windows", type=int, default=32)
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--context", type=int, default=128)
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--pairs", type=int, default=8, help="back-to-back pairs per key comparison")
    ap.add_argument("--max-seconds", type=float, default=300.0, help="soft wall-time budget")
    ap.add_argument(
        "--quality-windows", type=int, default=64, help="held-out windows for bf16 vs fp32"
    )
    ap.add_argument("--out", default="bench/results/activations.json")
    args = ap.parse_args()
    t_start = time.perf_counter()
    load_start = os.getloadavg()

    from transformers import AutoModelForCausalLM

    model = load_model("smollm2-135m")  # fast forward installed (the default)
    slow = load_model("smollm2-135m", fast=False)  # TransformerLens's own forwards
    model16 = load_model("smollm2-135m", dtype=torch.bfloat16)
    gguf = smollm2_gguf_path()
    hf = AutoModelForCausalLM.from_pretrained(
        gguf.parent, gguf_file=gguf.name, dtype=torch.float32
    ).eval()
    wins = token_windows(
        model.tokenizer, source="stdlib", context_size=args.context, split="train", seed=0
    )
    windows = torch.stack([w for _, w in zip(range(args.windows), wins)])
    batches = list(windows.split(args.batch))
    layers = hf.model.layers

    @torch.inference_mode()
    def hf_full(b: torch.Tensor) -> None:
        hf(b)

    def hf_truncated(L: int) -> Callable[[torch.Tensor], None]:
        @torch.inference_mode()
        def run(b: torch.Tensor) -> None:
            hf.model.layers = layers[: L + 1]
            hf.config.num_hidden_layers = L + 1
            try:
                hf.model(b)
            finally:
                hf.model.layers = layers
                hf.config.num_hidden_layers = len(layers)

        return run

    def hf_layer_output(L: int, b: torch.Tensor) -> torch.Tensor:
        """transformers' residual stream after layer L (the output of ``layers[L]``)."""
        got: list[torch.Tensor] = []
        handle = layers[L].register_forward_hook(
            lambda mod, inp, out: got.append(out[0] if isinstance(out, tuple) else out)
        )
        try:
            hf_truncated(L)(b)
        finally:
            handle.remove()
        return got[0]

    impls: dict[str, Callable[[torch.Tensor], object]] = {"hf_full_forward": hf_full}
    caps: dict[str, ActivationCapture] = {}
    for L in LAYERS:
        hook = f"blocks.{L}.hook_resid_post"
        caps[f"capture_L{L}_stop_at_layer"] = ActivationCapture(model, [hook])
        full = ActivationCapture(model, [hook])
        full.stop_at_layer = None
        caps[f"capture_L{L}_full_forward"] = full
        caps[f"capture_L{L}_stop_at_layer_tl_original"] = ActivationCapture(slow, [hook])
        caps[f"capture_L{L}_stop_at_layer_bf16"] = ActivationCapture(model16, [hook])
        impls[f"hf_truncated_L{L}"] = hf_truncated(L)
    caps["capture_4_hooks"] = ActivationCapture(
        model, [f"blocks.{L}.hook_resid_post" for L in FOUR_HOOK_LAYERS]
    )
    impls.update(caps)

    # numerical sanity: captured residuals vs transformers' residual stream, fast vs original
    checks: dict[str, float] = {}
    b0 = batches[0]
    for L in LAYERS:
        cap = caps[f"capture_L{L}_stop_at_layer"]
        keep = cap.keep_mask(b0, None).reshape(-1)
        ref = hf_layer_output(L, b0).reshape(b0.numel(), -1)[keep]
        fast_acts = cap(b0).acts[cap.hooks[0]]
        orig_acts = caps[f"capture_L{L}_stop_at_layer_tl_original"](b0).acts[cap.hooks[0]]
        scale = ref.abs().max().item()
        checks[f"L{L}_capture_vs_hf_max_rel_err"] = (fast_acts - ref).abs().max().item() / scale
        checks[f"L{L}_fast_vs_tl_original_max_rel_err"] = (
            fast_acts - orig_acts
        ).abs().max().item() / scale
    quality = bf16_quality(model, model16, args.quality_windows, args.context, args.batch)
    print("bf16 vs fp32:", json.dumps(quality))

    print(
        f"timing {len(impls)} implementations x {args.repeats} rounds on {len(batches)} "
        f"batches of {args.batch}x{args.context} tokens, {torch.get_num_threads()} threads"
    )
    rates = interleaved(impls, batches, args.repeats, deadline=t_start + args.max_seconds)
    results: dict[str, float] = {name: statistics.median(r) for name, r in rates.items()}
    for L in LAYERS:
        cap_r, floor = rates[f"capture_L{L}_stop_at_layer"], rates[f"hf_truncated_L{L}"]
        orig_r = rates[f"capture_L{L}_stop_at_layer_tl_original"]
        results[f"capture_L{L}_vs_hf_truncated"] = paired_ratio(cap_r, floor)
        results[f"capture_L{L}_tl_original_vs_hf_truncated"] = paired_ratio(orig_r, floor)
        results[f"capture_L{L}_fast_speedup_vs_tl_original"] = paired_ratio(cap_r, orig_r)
        results[f"capture_L{L}_stop_at_layer_speedup_vs_full_forward"] = paired_ratio(
            cap_r, rates[f"capture_L{L}_full_forward"]
        )
    for L in LAYERS:
        results[f"capture_L{L}_bf16_speedup_vs_fp32"] = paired_ratio(
            rates[f"capture_L{L}_stop_at_layer_bf16"], rates[f"capture_L{L}_stop_at_layer"]
        )
    results["capture_4_hooks_overhead_vs_deepest"] = (
        paired_ratio(rates["capture_L15_stop_at_layer"], rates["capture_4_hooks"]) - 1
    )

    # the key comparisons again, as back-to-back pairs (less exposed to slow phases between runs)
    pairs: dict[str, float] = {}
    if args.pairs > 0:
        print(f"back-to-back pairs ({args.pairs} each)")
        for L in LAYERS:
            pairs[f"capture_L{L}_vs_hf_truncated"] = back_to_back(
                impls[f"hf_truncated_L{L}"],
                impls[f"capture_L{L}_stop_at_layer"],
                batches,
                args.pairs,
            )
        pairs["capture_4_hooks_overhead_vs_deepest"] = (
            back_to_back(
                impls["capture_4_hooks"], impls["capture_L15_stop_at_layer"], batches, args.pairs
            )
            - 1
        )

    out = {
        "results_tokens_per_s": results,
        "back_to_back_pairs": pairs,
        "per_round_tokens_per_s": rates,
        "numerical_checks": checks,
        "bf16_vs_fp32": quality,
        "cpu_bf16_flags": list(cpu_bf16_flags()),
        "targets": {
            "capture_vs_hf_truncated": ">= 0.95",
            "4_hooks_overhead": "<= 0.05",
            "bf16_speedup_vs_fp32": ">= 2",
        },
        "met": {
            **{
                f"capture_L{L}_bf16_speedup_vs_fp32": results[f"capture_L{L}_bf16_speedup_vs_fp32"]
                >= 2.0
                for L in LAYERS
            },
            **{
                f"capture_L{L}_vs_hf_truncated": results[f"capture_L{L}_vs_hf_truncated"] >= 0.95
                for L in LAYERS
            },
            "capture_4_hooks_overhead": results["capture_4_hooks_overhead_vs_deepest"] <= 0.05,
        },
        "windows": args.windows,
        "batch": args.batch,
        "context": args.context,
        "repeats": len(rates["hf_full_forward"]),
        "timing": "each implementation: one sweep over all batches per round, implementations "
        "interleaved batch by batch (order rotated per round); rates are medians over rounds, "
        "ratios medians of per-round ratios",
        "torch": torch.__version__,
        "threads": torch.get_num_threads(),
        "machine": platform.processor() or platform.machine(),
        "cpu_count": os.cpu_count(),
        "loadavg_start": load_start,
        "loadavg_end": os.getloadavg(),
        "wall_s": round(time.perf_counter() - t_start, 1),
    }
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(out, indent=2))
    for k, v in results.items():
        print(f"{k:52s} {v:12.3f}")
    for k, v in pairs.items():
        print(f"{'pairs: ' + k:52s} {v:12.3f}")
    for k, v in checks.items():
        print(f"{k:52s} {v:12.2e}")
    print(f"saved {args.out} ({out['wall_s']} s)")


# ------------------------------------------------------------------------------------------------
# rendering: bench/results/activations.json as markdown (python -m bench.report; see bench/_provenance.py)
# ------------------------------------------------------------------------------------------------
def _comparisons(d: dict, layers: list[int]) -> list[list[str]]:
    """The rows of the verdict table: each ratio of two implementations' per-round rates, against
    its target where it has one (verdict_target over the rounds), else against 1
    (verdict_repeats, paired by round)."""
    r = d.get("results_tokens_per_s") or {}
    rounds = d.get("per_round_tokens_per_s") or {}
    pairs = d.get("back_to_back_pairs") or {}
    targets = d.get("targets") or {}
    rows = []

    def add(label, a, b, key, fmt, target=None, minus_one=False, pair_key=None):
        ra, rb = rounds.get(a) or [], rounds.get(b) or []
        each = [x / y - minus_one for x, y in zip(ra, rb) if y] if len(ra) == len(rb) else []
        rng = f"{fmt(min(each))} to {fmt(max(each))}" if each else NM
        pair = pairs.get(pair_key) if pair_key else None
        goal = parse_target(targets.get(target)) if target else None
        if target:
            verdict = verdict_target(each, goal[1], at_least=goal[0], fmt=fmt) if goal else NM
            verdict = verdict.split(" (")[0]  # the range has its own column
        else:
            verdict = verdict_repeats(ra, rb, paired=True).split(":")[0]
        rows.append(
            [
                label,
                fmt(r.get(key)) if key in r else NM,
                rng,
                fmt(pair) if pair_key and pair is not None else "-",
                targets.get(target, NM) if target else "-",
                verdict,
            ]
        )

    for L in layers:
        add(
            f"capture / transformers truncated, L = {L}",
            f"capture_L{L}_stop_at_layer",
            f"hf_truncated_L{L}",
            f"capture_L{L}_vs_hf_truncated",
            lambda v: fix(v, 2),
            "capture_vs_hf_truncated",
            pair_key=f"capture_L{L}_vs_hf_truncated",
        )
    add(
        "4 hooks: overhead over the deepest alone",
        "capture_L15_stop_at_layer",
        "capture_4_hooks",
        "capture_4_hooks_overhead_vs_deepest",
        lambda v: pct(v, 1),
        "4_hooks_overhead",
        minus_one=True,
        pair_key="capture_4_hooks_overhead_vs_deepest",
    )
    for L in layers:
        if f"capture_L{L}_stop_at_layer_bf16" in rounds:
            add(
                f"bf16 model / fp32, L = {L}",
                f"capture_L{L}_stop_at_layer_bf16",
                f"capture_L{L}_stop_at_layer",
                f"capture_L{L}_bf16_speedup_vs_fp32",
                lambda v: times(v, 2),
                "bf16_speedup_vs_fp32",
            )
    for L in layers:
        add(
            f"fast forward / TransformerLens's own, L = {L}",
            f"capture_L{L}_stop_at_layer",
            f"capture_L{L}_stop_at_layer_tl_original",
            f"capture_L{L}_fast_speedup_vs_tl_original",
            lambda v: times(v, 2),
        )
    for L in layers:
        add(
            f"`stop_at_layer` / the full forward, L = {L}",
            f"capture_L{L}_stop_at_layer",
            f"capture_L{L}_full_forward",
            f"capture_L{L}_stop_at_layer_speedup_vs_full_forward",
            lambda v: times(v, 2),
        )
    return rows


# bench/results/activations.json predates recorded provenance: the command that measured it
@renderer("python bench/activations.py")
def render(d: dict) -> str:
    r = d.get("results_tokens_per_s") or {}
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
    findings = join_nonempty(
        para(
            f"Each comparison from the per-round rates (both measured in each of the "
            f"{num(d.get('repeats'))} rounds): the JSON's ratio (the median of the per-round "
            "ratios), the per-round range, and the back-to-back pairs where measured. Criterion: "
            f"against a target, {criterion_target('round')}; without one, "
            f"{criterion_repeats('round', paired=True)}:"
        ),
        table(
            ["comparison", "ratio", "rounds", "back-to-back pairs", "target", "verdict"],
            _comparisons(d, layers),
        ),
    )
    q = d.get("bf16_vs_fp32")
    if q:
        flags = ", ".join(d.get("cpu_bf16_flags") or []) or "none"
        findings = join_nonempty(
            findings,
            para(
                f"CPU bf16 flags: {flags}. What the bf16 model costs, on {num(q.get('windows'))} "
                f"held-out windows "
                f"({num(q.get('predicted_tokens'))} predicted tokens): mean KL(fp32 || bf16) "
                f"{fix(q.get('mean_kl_fp32_to_bf16'), 4)} nats; CE {fix(q.get('ce_fp32'), 4)} (fp32) "
                f"vs {fix(q.get('ce_bf16'), 4)} (bf16), a difference of "
                f"{fix(q.get('ce_bf16_minus_fp32'), 4)}; the captured residuals' mean relative error "
                + " / ".join(f"{pct(q.get(f'L{L}_resid_mean_rel_err'), 2)}" for L in layers)
                + f" at L = {ls}.",
            ),
        )
    return join_nonempty(setup, table(["what", "tokens/s"], rows), findings)


if __name__ == "__main__":
    main()
