"""Tokens/s of ONE full TopK SAE training step on CPU: ours vs SAELens vs EleutherAI sparsify.

A step = forward, loss, backward, decoder-gradient projection (where the library does it), the
optimiser step, decoder renormalisation (where the library does it), dead-latent bookkeeping:
each library's own trainer step, with its own default settings.

    python -m bench.sae_step                      # d_sae 4608, 16384, 65536; batch 4096
    python -m bench.sae_step --sizes 4608 --quick # batch 1024
    python -m bench.sae_step --no-profile         # skip the per-phase breakdown

Results go to bench/results/sae_step.json, with the run's provenance (commit, dirty files, date,
machine, command). Timings on a shared CPU are noisy: every number is the median of several
steps after warm-up (min and all samples are saved too); up to d_sae 16384 the rows run
round-robin (one step each per round) so that load from other processes hits them alike, and
each step is paired with an encoder-shaped fp32 GEMM timed just before it ("% of bound").

Rows (all start from the same random activations and fp32 parameters; lr 2e-4 except where a
library's default optimiser has its own default lr, which does not change a step's cost):
  ours_trainstep_native       saes.training.step.TrainStep(saes.sae.SAE(...)): the project's trainer as
                              `interp train` runs it, with the C++ kernels (the default once
                              `make setup` built them)
  ours_trainstep              the same trainer with the pure-torch selection (no compiler)
  ours_trainstep_native_bf16  TrainStep with SAEConfig(encoder_dtype="bfloat16") (RunConfig
  ours_trainstep_bf16           `encoder_dtype: bfloat16`): bf16 encoder GEMM + selection, kept
                              values recomputed in fp32; C++ / pure-torch selection
  kernel_only[_native][_bf16] NOT the trainer: a minimal step built only from saes.kernels
                              (topk_encode + sparse_decode, plain MSE loss, no FVU normalisation,
                              no AuxK, no input scaling) + torch fused Adam; kept because its
                              phases are timed one by one (the `profile` in the JSON)
  saelens                     sae_lens SAETrainer.step (its trainer's own step: activation scaler,
                              TopKTrainingSAE.training_forward_pass, firing statistics, backward,
                              clip_grad_norm_, Adam, lr scheduler), its config built by
                              LanguageModelSAERunnerConfig from SAELens's defaults
  saelens_sparse              the same with use_sparse_activations=True (SAELens's option for
                              small k); not a default row: its backward fails with sae-lens 6.54 +
                              torch 2.13 ("aten::view" on SparseCPU)
  sparsify                    sparsify's Trainer step for loss_fn="fvu" with its defaults:
                              optimizer "signum" (SignSGD in schedulefree's ScheduleFreeWrapper),
                              auxk_alpha 0 (no AuxK), its decoder renorm + gradient projection
  sparsify_adam               the same with its optimizer="adam" option (torch Adam, as its
                              trainer falls back to without bitsandbytes; linear warm-up schedule)

bf16 rows need a CPU with fast bf16 GEMMs (AVX512-BF16 / AMX). Where the bf16 GEMM is slower than
the fp32 one (``--bf16 auto``, the default), only ours_trainstep_native_bf16 is measured, at the
first size, with a few sequential steps, and the other bf16 rows are recorded as skipped.
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import sys
import time
import warnings
from pathlib import Path

import torch

from bench._steps import KernelStep, SparsifyStep, saelens_step, saelens_trainer
from bench.sae_step_render import render, render_headline  # noqa: F401  (its renderers)
from saes import kernels

TITLE = "One TopK training step"  # its name in the docs (python -m bench.report)

ROOT = Path(__file__).resolve().parents[1]

D_IN = 576
K = 32
LR = 2e-4

PEERS = ("saelens", "saelens_sparse", "sparsify", "sparsify_adam")


# ------------------------------------------------------------------------------------------------
# the project's trainer
# ------------------------------------------------------------------------------------------------
def make_trainstep(d_sae: int, k: int, encoder_dtype: str | None = None):
    from saes.config import SAEConfig
    from saes.sae import SAE
    from saes.training.loop import TrainStep

    sae = SAE(SAEConfig(d_in=D_IN, d_sae=d_sae, k=k, variant="topk", encoder_dtype=encoder_dtype))
    # a training run always normalises its input (RunConfig.normalize_input): keep that multiply
    sae.cfg.input_scale = 1.0
    step = TrainStep(sae, lr=LR)
    return lambda x: step(x)


# ------------------------------------------------------------------------------------------------
# the peers' own steps (bench/_steps.py, shared with bench/sae_quality.py)
# ------------------------------------------------------------------------------------------------
def make_saelens(
    d_sae: int, k: int, sparse: bool = False, batch: int = 4096, total_steps: int = 1000
):
    trainer = saelens_trainer(
        D_IN, d_sae, k, batch, total_steps, lr=LR, sae_kwargs={"use_sparse_activations": sparse}
    )
    return saelens_step(trainer)


def make_sparsify(d_sae: int, k: int, optimizer: str = "signum", num_batches: int = 1000):
    # lr: its own default for signum; LR for Adam (as the other rows; the step's cost is the same)
    kwargs = {"optimizer": optimizer}
    if optimizer == "adam":
        kwargs["lr"] = LR
    return SparsifyStep(D_IN, d_sae, k, num_batches, **kwargs)


# ------------------------------------------------------------------------------------------------
# measurement
# ------------------------------------------------------------------------------------------------
class _Runs:
    """Builds, warms up and times the implementations of one size; failures become errors."""

    def __init__(self, d_sae: int, x: torch.Tensor, warmup: int, results: dict) -> None:
        self.d_sae, self.x, self.warmup, self.results = d_sae, x, warmup, results
        self.steps: dict[str, object] = {}
        self.times: dict[str, list[float]] = {}
        self.gemm_before: dict[str, list[float]] = {}  # the GEMM probe's time just before each step

    def _fail(self, name: str, what: str, e: Exception) -> None:
        msg = (str(e).strip().splitlines() or [""])[0][:300]  # torch dispatcher errors run to pages
        self.results[name] = {"error": f"{type(e).__name__}: {msg}"}
        print(f"  {name:28s} {what}: {type(e).__name__}: {msg}")
        self.steps.pop(name, None)

    def build(self, name: str, warmup: int | None = None) -> bool:
        try:
            _set_native("native" in name)  # the native top-k only where the row asks for it
            self.steps[name] = _make(name, self.d_sae)
            self.times[name], self.gemm_before[name] = [], []
            for _ in range(self.warmup if warmup is None else warmup):
                self.steps[name](self.x)
            return True
        except Exception as e:  # noqa: BLE001
            self._fail(name, "unavailable", e)
            return False

    def run(self, name: str, gemm: _GemmProbe) -> None:
        if name not in self.steps:
            return
        _set_native("native" in name)
        self.gemm_before[name] += gemm.sample(1)
        t0 = time.perf_counter()
        try:
            self.steps[name](self.x)
        except Exception as e:  # noqa: BLE001
            self._fail(name, "failed", e)
            return
        self.times[name].append(time.perf_counter() - t0)


class _GemmProbe:
    """fp32 x [batch, d_in] @ W [d_in, d_sae] into a preallocated output (no page faults)."""

    def __init__(self, batch: int, d_sae: int) -> None:
        g = torch.Generator().manual_seed(1)
        self.x = torch.randn(batch, D_IN, generator=g)
        self.W = torch.randn(D_IN, d_sae, generator=g)
        self.out = torch.empty(batch, d_sae)
        torch.mm(self.x, self.W, out=self.out)

    def sample(self, n: int) -> list[float]:
        ts = []
        for _ in range(n):
            t0 = time.perf_counter()
            torch.mm(self.x, self.W, out=self.out)
            ts.append(time.perf_counter() - t0)
        return ts


def bf16_gemm_flops(
    batch: int, d_sae: int, repeats: int, budget_s: float = 5.0
) -> tuple[float, str]:
    """bf16 GEMM FLOP/s of the encoder shape in the trainer's layout (W_enc stored latent-major,
    [d_sae, d_in], multiplied as its transpose); measured on a 128-row probe first, and at full
    size only when that predicts under ``budget_s`` per GEMM (CPUs without bf16 units are slow)."""
    g = torch.Generator().manual_seed(1)
    W = torch.randn(d_sae, D_IN, generator=g).bfloat16().t()
    xs = torch.randn(128, D_IN, generator=g).bfloat16()
    torch.mm(xs, W)
    t0 = time.perf_counter()
    torch.mm(xs, W)
    small = 2.0 * 128 * D_IN * d_sae / (time.perf_counter() - t0)
    if 2.0 * batch * D_IN * d_sae / small > budget_s:
        return (
            small,
            "probe of 128 rows (full size too slow to time); W latent-major as in the trainer",
        )
    x = torch.randn(batch, D_IN, generator=g).bfloat16()
    torch.mm(x, W)
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        torch.mm(x, W)
        times.append(time.perf_counter() - t0)
    return (
        2.0 * batch * D_IN * d_sae / statistics.median(times),
        f"full size, median of {repeats}; W latent-major as in the trainer",
    )


def main(argv: list[str] | None = None) -> dict:
    from bench._provenance import provenance

    p = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--sizes", default="4608,16384,65536", help="comma-separated d_sae values")
    p.add_argument("--batch", type=int, default=4096)
    p.add_argument("--quick", action="store_true", help="batch 1024")
    p.add_argument(
        "--steps",
        type=int,
        default=None,
        help="timed steps at every size (overrides --steps-by-size)",
    )
    p.add_argument(
        "--steps-by-size",
        default="4608:15,16384:5",
        help="timed steps per d_sae, 'd_sae:steps,...'; other sizes 3",
    )
    p.add_argument("--warmup", type=int, default=2)
    p.add_argument(
        "--impls",
        default="ours_trainstep_native,ours_trainstep,ours_trainstep_native_bf16,"
        "ours_trainstep_bf16,kernel_only,kernel_only_native,kernel_only_bf16,kernel_only_native_bf16,"
        "saelens,sparsify,sparsify_adam",
    )
    p.add_argument(
        "--no-profile",
        dest="profile",
        action="store_false",
        help="skip the per-phase breakdown of the kernel_only rows (saved under 'profile')",
    )
    p.add_argument(
        "--profile-steps", type=int, default=5, help="steps of each kernel_only row in its profile"
    )
    p.add_argument(
        "--bf16",
        choices=("auto", "always", "never"),
        default="auto",
        help="bf16 rows: auto = in full only where the bf16 GEMM is at least as fast as fp32",
    )
    p.add_argument(
        "--bf16-slow-steps",
        type=int,
        default=2,
        help="timed steps of ours_trainstep_native_bf16 on a CPU without fast bf16 (first size only)",
    )
    p.add_argument(
        "--sequential",
        action="store_true",
        help="time implementations one after another (default: round-robin up to d_sae 16384)",
    )
    p.add_argument("--out", default=str(ROOT / "bench" / "results" / "sae_step.json"))
    args = p.parse_args(argv)

    warnings.filterwarnings("ignore")
    batch = 1024 if args.quick else args.batch
    sizes = [int(s) for s in args.sizes.split(",") if s]
    impls = [s for s in args.impls.split(",") if s]
    by_size = {
        int(a): int(b)
        for a, b in (item.split(":") for item in args.steps_by_size.split(",") if item)
    }
    g = torch.Generator().manual_seed(0)
    x = torch.randn(batch, D_IN, generator=g)  # the same activations for every implementation
    t_start = time.perf_counter()

    report: dict = {
        "provenance": provenance(sys.argv if argv is None else [sys.argv[0], *argv]),
        "torch": torch.__version__,
        "threads": torch.get_num_threads(),
        "cpu": _cpu_name(),
        "cpu_capability": torch.backends.cpu.get_cpu_capability(),
        "python": platform.python_version(),
        "versions": _versions(),
        "native_kernel": kernels.native_status(),
        "batch_tokens": batch,
        "d_in": D_IN,
        "k": K,
        "lr": LR,
        "dtype": "float32",
        "step": "each library's own training step: forward, loss, backward, decoder-gradient projection, "
        "optimiser, decoder renorm, dead-latent bookkeeping; median of timed steps after warm-up. "
        "No latent is dead during the timed steps (every library's dead window is longer), so no row "
        "pays for an AuxK pass",
        "rows": ROW_LABELS,
        "bound": "tokens/s if the step cost only its encoder GEMM: fp32 GEMM FLOP/s (median of "
        "samples interleaved with the steps) / (2 d_in d_sae)",
        "fraction_of_bound": "median over timed steps of (encoder-shaped fp32 GEMM time measured just "
        "before the step) / (step time); fraction_of_bound_unpaired divides the "
        "median step by the median GEMM instead",
        "profile": "sizes[d_sae].profile[row][phase] = {median_ms, median_s}: the median of each timed "
        "phase of a kernel_only row (KernelStep._mark) over profile_info[row].steps steps; "
        "profile_info[row] also has their sum (sum_ms) and the median encoder-shaped fp32 GEMM "
        "timed between those steps (gemm_ms); select_and_bias_ms_est = 'encode fwd "
        "(GEMM+select)' - gemm_ms estimates the selection and bias work",
        "sizes": {},
    }
    print(
        f"torch {torch.__version__}, {torch.get_num_threads()} threads, {report['cpu']} "
        f"({report['cpu_capability']}), batch {batch}, d_in {D_IN}, k {K}"
    )
    for size_i, d_sae in enumerate(sizes):
        n_steps = args.steps or by_size.get(d_sae, 3)
        warmup = args.warmup if d_sae <= 16384 else 1
        # round-robin (one step of every implementation per round) spreads the load of a shared
        # machine evenly over the implementations; at large d_sae they run one after another
        # to bound memory
        interleave = not args.sequential and d_sae * batch <= 16384 * 4096
        gemm = _GemmProbe(batch, d_sae)
        gemm_times: list[float] = gemm.sample(3)
        bf16_flops, bf16_how = bf16_gemm_flops(batch, d_sae, repeats=5 if d_sae <= 16384 else 2)
        fp32_quick = 2.0 * batch * D_IN * d_sae / min(gemm_times)
        bf16_fast = bf16_flops >= fp32_quick
        entry: dict = {
            "gemm_bf16_flops": bf16_flops,
            "gemm_bf16_measured": bf16_how,
            "bf16_fast": bf16_fast,
            "steps": n_steps,
            "warmup": warmup,
            "schedule": "round-robin" if interleave else "sequential",
            "results": {},
        }
        entry["cpu_pressure_before"] = _cpu_pressure()
        runs = _Runs(d_sae, x, warmup, entry["results"])
        here = list(impls)
        slow_bf16: list[str] = []
        if args.bf16 == "never" or (args.bf16 == "auto" and not bf16_fast):
            for name in [n for n in impls if "bf16" in n]:
                here.remove(name)
                if args.bf16 == "auto" and size_i == 0 and name == "ours_trainstep_native_bf16":
                    slow_bf16.append(name)
                else:
                    why = (
                        "--bf16 never"
                        if args.bf16 == "never"
                        else f"this CPU's bf16 GEMM ({bf16_flops / 1e9:.1f} GFLOP/s) is slower than its fp32 GEMM "
                        f"({fp32_quick / 1e9:.0f} GFLOP/s; {report['cpu_capability']}, no bf16 units): "
                        "ours_trainstep_native_bf16 is measured at the first size only"
                    )
                    entry["results"][name] = {"skipped": why}
        if interleave:
            for name in here:
                runs.build(name)
            for _ in range(n_steps):
                gemm_times += gemm.sample(2)
                for name in here:
                    runs.run(name, gemm)
        else:
            for name in here:
                gemm_times += gemm.sample(3)
                if runs.build(name):
                    for _ in range(n_steps):
                        runs.run(name, gemm)
                    gemm_times += gemm.sample(2)
                    if args.profile and name.startswith("kernel_only") and name in runs.steps:
                        print(f"  {name}:")
                        _store_profile(
                            entry, name, _profile(runs.steps[name], x, gemm, args.profile_steps)
                        )
                    runs.steps.pop(name, None)
        for name in slow_bf16:  # a CPU without bf16 units: a few sequential steps, flagged
            print(
                f"  {name}: bf16 GEMM is slow on this CPU ({bf16_flops / 1e9:.1f} GFLOP/s); "
                f"{args.bf16_slow_steps} sequential steps"
            )
            gemm_times += gemm.sample(2)
            if runs.build(name, warmup=1):
                for _ in range(args.bf16_slow_steps):
                    runs.run(name, gemm)
                runs.steps.pop(name, None)
        times, steps = runs.times, runs.steps
        flops = 2.0 * batch * D_IN * d_sae
        flops_med = flops / statistics.median(gemm_times)
        bound = flops_med / (2.0 * D_IN * d_sae)
        entry.update(
            {
                "cpu_pressure_after": _cpu_pressure(),
                "gemm_fp32_flops": flops_med,
                "gemm_fp32_flops_best": flops / min(gemm_times),
                "gemm_samples": len(gemm_times),
                "bound_tokens_per_s": bound,
            }
        )
        print(
            f"\nd_sae={d_sae} ({entry['schedule']}; cpu pressure after: {entry['cpu_pressure_after']})"
            f"\n  fp32 GEMM {flops_med / 1e9:.0f} GFLOP/s "
            f"(best {entry['gemm_fp32_flops_best'] / 1e9:.0f}), bf16 GEMM "
            f"{entry['gemm_bf16_flops'] / 1e9:.1f} GFLOP/s ({bf16_how}), bound {bound:,.0f} tok/s"
        )
        for name in impls:
            if name not in times or not times[name] or "error" in entry["results"].get(name, {}):
                continue
            ts = times[name]
            med = statistics.median(ts)
            # paired: each step against the GEMM timed just before it, so that the machine's speed
            # drifting between rounds (shared host) cancels out; the median of those ratios
            paired = statistics.median(g / t for g, t in zip(runs.gemm_before[name], ts))
            res = {
                "label": ROW_LABELS.get(name, name),
                "steps": len(ts),
                "median_s": med,
                "min_s": min(ts),
                "times_s": ts,
                "gemm_before_s": runs.gemm_before[name],
                "tokens_per_s": batch / med,
                "tokens_per_s_best": batch / min(ts),
                "fraction_of_bound": paired,
                "fraction_of_bound_unpaired": batch / med / bound,
            }
            if name in slow_bf16:
                res["note"] = (
                    "CPU without fast bf16 GEMMs: sequential steps after the round-robin, 1 warm-up"
                )
            entry["results"][name] = res
            print(
                f"  {name:28s} {med * 1e3:9.1f} ms/step (min {min(ts) * 1e3:.1f})  "
                f"{batch / med:10,.0f} tok/s  {paired:6.1%} of bound "
                f"(medians unpaired: {res['fraction_of_bound_unpaired']:.1%})"
            )
        if interleave and args.profile:
            for name in here:
                if name.startswith("kernel_only") and name in steps:
                    _set_native("native" in name)
                    print(f"  {name}:")
                    _store_profile(entry, name, _profile(steps[name], x, gemm, args.profile_steps))
        steps.clear()
        ratios = {}
        for mine, r in entry["results"].items():
            if not mine.startswith("ours") or "tokens_per_s" not in r:
                continue
            for other in PEERS:
                o = entry["results"].get(other, {}).get("tokens_per_s")
                if o:
                    ratios[f"{mine}/{other}"] = r["tokens_per_s"] / o
            ratios[f"{mine}/bound"] = r["fraction_of_bound"]
        entry["ratios"] = ratios
        report["sizes"][str(d_sae)] = entry
        for mine in [n for n in entry["results"] if n.startswith("ours")]:
            mr = {k.split("/")[1]: v for k, v in ratios.items() if k.startswith(mine + "/")}
            if mr:
                print(
                    f"  {mine}: "
                    + ", ".join(
                        f"x{v:.2f} vs {k}" if k != "bound" else f"{v:.1%} of bound"
                        for k, v in mr.items()
                    )
                )
        report["wall_s"] = time.perf_counter() - t_start
        _save(report, args.out)

    _print_table(report)
    report["wall_s"] = time.perf_counter() - t_start
    _save(report, args.out)
    print(f"\nsaved {args.out} ({report['wall_s'] / 60:.1f} min)")
    return report


ROW_LABELS = {
    "ours_trainstep_native": "interp TrainStep (default: C++ top-k)",
    "ours_trainstep": "interp TrainStep, pure-torch top-k",
    "ours_trainstep_native_bf16": "interp TrainStep, encoder_dtype bfloat16 (C++ top-k)",
    "ours_trainstep_bf16": "interp TrainStep, encoder_dtype bfloat16, pure-torch top-k",
    "kernel_only": "kernel-only step (saes.kernels + MSE + fused Adam; not TrainStep), pure-torch top-k",
    "kernel_only_native": "kernel-only step (not TrainStep), C++ top-k",
    "kernel_only_bf16": "kernel-only step (not TrainStep), bf16 encoder, pure-torch top-k",
    "kernel_only_native_bf16": "kernel-only step (not TrainStep), bf16 encoder, C++ top-k",
    "saelens": "SAELens SAETrainer.step, TopKTrainingSAE, its default config",
    "saelens_sparse": "SAELens SAETrainer.step, use_sparse_activations=True",
    "sparsify": "sparsify Trainer step, its defaults (signum optimiser, no AuxK)",
    "sparsify_adam": "sparsify Trainer step, optimizer=adam",
}


def _make(name: str, d_sae: int):
    if name.startswith("kernel_only"):
        # kernel_only[_native][_bf16][_foreach|_plainadam]
        parts = set(name.split("_")[2:])
        adam = "foreach" if "foreach" in parts else "plain" if "plainadam" in parts else "fused"
        return KernelStep(
            D_IN,
            d_sae,
            K,
            lr=LR,
            adam=adam,
            select="native" if "native" in parts else "torch",
            dtype=torch.bfloat16 if "bf16" in parts else None,
        )
    if name in ("ours_trainstep", "ours_trainstep_native"):
        return make_trainstep(d_sae, K)
    if name in ("ours_trainstep_bf16", "ours_trainstep_native_bf16"):
        return make_trainstep(d_sae, K, encoder_dtype="bfloat16")
    if name == "saelens":
        return make_saelens(d_sae, K)
    if name == "saelens_sparse":
        # its use_sparse_activations=True option (COO codes + torch.sparse.mm). With sae-lens
        # 6.54 / torch 2.13 its backward fails ("aten::view" on SparseCPU), hence not a default row
        return make_saelens(d_sae, K, sparse=True)
    if name == "sparsify":
        return make_sparsify(d_sae, K)
    if name == "sparsify_adam":
        return make_sparsify(d_sae, K, optimizer="adam")
    raise ValueError(f"unknown implementation {name!r}")


def _set_native(on: bool) -> None:
    if not on:
        kernels.enable_native(False)
        return
    t0 = time.perf_counter()
    if not kernels.enable_native(True):
        raise RuntimeError(f"native kernel unavailable: {kernels._native_state['error']}")
    if time.perf_counter() - t0 > 2:
        print(f"  (built the native top-k kernel in {time.perf_counter() - t0:.0f} s)")


def _profile(step: KernelStep, x: torch.Tensor, gemm: _GemmProbe, n: int = 5) -> dict:
    step.timer = {}
    gemm_ts = []
    for _ in range(n):
        gemm_ts += gemm.sample(1)
        step(x)
    phases = {k: statistics.median(v) * 1e3 for k, v in step.timer.items()}
    step.timer = None
    total = sum(phases.values())
    gemm_ms = statistics.median(gemm_ts) * 1e3
    print(
        "    phases (median ms): "
        + ", ".join(f"{k} {v:.1f}" for k, v in phases.items())
        + f"; sum {total:.1f}; fp32 GEMM alone {gemm_ms:.1f}"
    )
    return (
        {k: {"median_ms": v, "median_s": v / 1e3} for k, v in phases.items()},
        {
            "steps": n,
            "sum_ms": total,
            "gemm_ms": gemm_ms,
            "select_and_bias_ms_est": phases.get("encode fwd (GEMM+select)", float("nan"))
            - gemm_ms,
        },
    )


def _store_profile(entry: dict, name: str, prof: tuple[dict, dict]) -> None:
    entry.setdefault("profile", {})[name], entry.setdefault("profile_info", {})[name] = prof


def _print_table(report: dict) -> None:
    order = list(ROW_LABELS)
    names = sorted(
        {
            n
            for e in report["sizes"].values()
            for n, r in e["results"].items()
            if "tokens_per_s" in r
        },
        key=lambda n: order.index(n) if n in order else len(order),
    )
    print("\ntokens/s (median step) and paired % of bound, batch", report["batch_tokens"])
    head = f"{'d_sae':>7} {'GFLOP/s':>8} {'bound':>8} " + " ".join(f"{n:>28}" for n in names)
    print(head)
    for d_sae, e in report["sizes"].items():
        cells = []
        for n in names:
            r = e["results"].get(n, {})
            cells.append(
                f"{r['tokens_per_s']:>20,.0f} ({r['fraction_of_bound']:>5.1%})"
                if "tokens_per_s" in r
                else f"{'-':>28}"
            )
        print(
            f"{d_sae:>7} {e['gemm_fp32_flops'] / 1e9:>8.0f} {e['bound_tokens_per_s']:>8,.0f} "
            + " ".join(cells)
        )


def _versions() -> dict:
    out = {}
    for name in ("sae_lens", "eai-sparsify", "schedulefree", "transformers"):
        try:
            from importlib.metadata import version

            out[name] = version(name)
        except Exception:  # noqa: BLE001
            out[name] = None
    return out


def _cpu_pressure() -> str | None:
    """Linux PSI: share of time runnable tasks waited for a CPU (other load on a shared machine)."""
    try:
        with open("/proc/pressure/cpu") as f:
            return f.readline().strip()
    except OSError:
        return None


def _cpu_name() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def _save(report: dict, path: str) -> None:
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(path).with_suffix(".json.tmp")
    tmp.write_text(json.dumps(report, indent=2))
    tmp.replace(path)


if __name__ == "__main__":
    main()
