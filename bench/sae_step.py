"""Tokens/s of ONE full TopK SAE training step on CPU: ours vs SAELens vs EleutherAI sparsify.

A step = forward, MSE/FVU loss, backward, decoder-gradient projection (where the library does it),
Adam step, decoder renormalisation (where the library does it), dead-latent bookkeeping.

    python bench/sae_step.py                      # d_sae 4608, 16384, 65536; batch 4096
    python bench/sae_step.py --sizes 4608 --quick # batch 1024
    python bench/sae_step.py --profile            # also a per-phase breakdown of ours_kernels*

Results go to bench/results/sae_step.json. Timings on a shared CPU are noisy: every number is the
median of several steps after warm-up (min and all samples are saved too); up to d_sae 16384 the
implementations run round-robin (one step each per round) so that load from other processes
hits them alike, and the GEMM FLOP/s behind the bound is sampled between the rounds.

Implementations (all start from the same random activations, fp32 parameters, lr 2e-4):
  ours_kernels              saes.kernels, pure torch: topk_encode (b_dec inside, tree top-k) +
                            sparse_decode + fused Adam + kernels.remove_parallel_grad_ /
                            normalize_rows_; encoder stored latent-major (W_enc_t [d_sae, d_in])
  ours_kernels_native       same with the C++ kernels (top-k, latent order; `make setup` builds them)
  ours_kernels[_native]_bf16  encoder GEMM + selection in bf16 (kept values recomputed in fp32)
  ours_trainstep[_native]   saes.train.TrainStep(saes.sae.SAE(...)): the project's trainer, pure
                            torch / with the C++ kernels (the default once built)
  saelens                   sae_lens TopKTrainingSAE.training_forward_pass + what SAETrainer does
                            per step (firing stats, backward, clip_grad_norm_, torch Adam)
  saelens_sparse            same with use_sparse_activations=True (not a default row: its backward
                            fails with sae-lens 6.54 + torch 2.13)
  sparsify                  sparsify SparseCoder.forward (fvu) + backward + its
                            remove_gradient_parallel_to_decoder_directions + torch Adam + its
                            set_decoder_norm_to_unit_norm + did_fire bookkeeping
"""
from __future__ import annotations

import argparse
import contextlib
import io
import json
import platform
import statistics
import sys
import time
import warnings
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from saes import kernels
from saes.kernels import sparse_decode, topk_encode

D_IN = 576
K = 32
LR = 2e-4


# ------------------------------------------------------------------------------------------------
# ours: a minimal step built only from the kernels
# ------------------------------------------------------------------------------------------------
class KernelStep:
    """TopK SAE step from saes.kernels + torch Adam (fused by default)."""

    def __init__(self, d_in: int, d_sae: int, k: int, lr: float = LR, adam: str = "fused",
                 dtype: torch.dtype | None = None, select: str = "auto", seed: int = 0) -> None:
        g = torch.Generator().manual_seed(seed)
        W_dec = torch.randn(d_sae, d_in, generator=g)
        W_dec /= W_dec.norm(dim=1, keepdim=True)
        self.W_dec = W_dec.requires_grad_()
        # The encoder weight is stored latent-major, W_enc_t [d_sae, d_in] (like nn.Linear), and
        # the kernels get the [d_in, d_sae] view W_enc_t.t(): the encoder gradient and the
        # augmented GEMM copy then need no transposition, and Adam sees contiguous tensors.
        self.W_enc_t = W_dec.detach().clone().requires_grad_()
        self.b_enc = torch.zeros(d_sae, requires_grad=True)
        self.b_dec = torch.zeros(d_in, requires_grad=True)
        self.k, self.dtype, self.select = k, dtype, select
        params = [self.W_enc_t, self.b_enc, self.W_dec, self.b_dec]
        self.opt = torch.optim.Adam(params, lr=lr, **{adam: True} if adam in ("fused", "foreach") else {})
        self.tokens_since_fired = torch.zeros(d_sae, dtype=torch.long)
        self.timer: dict[str, list[float]] | None = None

    def _mark(self, name: str, t0: float) -> float:
        t1 = time.perf_counter()
        if self.timer is not None:
            self.timer.setdefault(name, []).append(t1 - t0)
        return t1

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        t = time.perf_counter()
        values, indices = topk_encode(x, self.W_enc_t.t(), self.b_enc, self.k, b_dec=self.b_dec,
                                      dtype=self.dtype, select=self.select)
        t = self._mark("encode fwd (GEMM+select)", t)
        x_hat = sparse_decode(values, indices, self.W_dec, self.b_dec)
        loss = torch.nn.functional.mse_loss(x_hat, x, reduction="sum") / x.shape[0]
        t = self._mark("decode fwd + loss", t)
        self.opt.zero_grad(set_to_none=True)
        loss.backward()
        t = self._mark("backward", t)
        with torch.no_grad():
            kernels.remove_parallel_grad_(self.W_dec)
            t = self._mark("grad projection", t)
            self.opt.step()
            t = self._mark("adam", t)
            kernels.normalize_rows_(self.W_dec)
            t = self._mark("renorm", t)
            self.tokens_since_fired += x.shape[0]
            fired = torch.bincount(indices.view(-1), weights=values.detach().view(-1), minlength=len(self.tokens_since_fired))
            self.tokens_since_fired.masked_fill_(fired > 0, 0)
            self._mark("bookkeeping", t)
        return loss.detach()


# ------------------------------------------------------------------------------------------------
# the project's trainer
# ------------------------------------------------------------------------------------------------
def make_trainstep(d_sae: int, k: int):
    from saes.config import SAEConfig
    from saes.sae import SAE
    from saes.train import TrainStep

    sae = SAE(SAEConfig(d_in=D_IN, d_sae=d_sae, k=k, variant="topk"))
    step = TrainStep(sae, lr=LR)
    return lambda x: step(x)


# ------------------------------------------------------------------------------------------------
# SAELens
# ------------------------------------------------------------------------------------------------
def make_saelens(d_sae: int, k: int, sparse: bool = False):
    from sae_lens.saes.sae import TrainStepInput
    from sae_lens.saes.topk_sae import TopKTrainingSAE, TopKTrainingSAEConfig

    cfg = TopKTrainingSAEConfig(d_in=D_IN, d_sae=d_sae, k=k, dtype="float32", device="cpu",
                                use_sparse_activations=sparse)
    sae = TopKTrainingSAE(cfg)
    opt = torch.optim.Adam(sae.parameters(), lr=LR, betas=(0.9, 0.999))  # as SAETrainer builds it
    state = {
        "since_fired": torch.zeros(d_sae),
        "act_freq": torch.zeros(d_sae),
        "n": 0,
    }

    def step(x: torch.Tensor) -> torch.Tensor:
        # mirrors sae_lens.training.sae_trainer.SAETrainer._train_step (no lr scheduler)
        sae.train()
        dead = state["since_fired"] > 1000  # dead_feature_window; none dead at the start
        out = sae.training_forward_pass(
            TrainStepInput(sae_in=x, coefficients={}, dead_neuron_mask=dead,
                           n_training_steps=state["n"], is_logging_step=False)
        )
        with torch.no_grad():
            firing = out.feature_acts.bool().float()
            did_fire = firing.sum(-2).bool()
            if did_fire.is_sparse:
                did_fire = did_fire.to_dense()
            state["since_fired"] += 1
            state["since_fired"][did_fire] = 0
            state["act_freq"] += firing.sum(0)
        out.loss.backward()
        torch.nn.utils.clip_grad_norm_(sae.parameters(), 1.0)
        opt.step()
        opt.zero_grad()
        state["n"] += 1
        return out.loss.detach()

    step.sae = sae  # bench/sae_quality.py trains and then evaluates this SAE
    return step


# ------------------------------------------------------------------------------------------------
# EleutherAI sparsify
# ------------------------------------------------------------------------------------------------
def make_sparsify(d_sae: int, k: int):
    with contextlib.redirect_stdout(io.StringIO()):  # "Triton not installed" notice
        from sparsify import SparseCoder, SparseCoderConfig

    sae = SparseCoder(D_IN, SparseCoderConfig(num_latents=d_sae, k=k), device="cpu")
    opt = torch.optim.Adam(sae.parameters(), lr=LR)  # sparsify's trainer with optimizer="adam"
    since_fired = torch.zeros(d_sae, dtype=torch.long)

    def step(x: torch.Tensor) -> torch.Tensor:
        # mirrors sparsify.trainer.Trainer.fit for one fvu step (no DDP, no lr scheduler)
        sae.set_decoder_norm_to_unit_norm()
        dead = since_fired > 10_000_000
        out = sae(x, dead_mask=dead)
        did_fire = torch.zeros(d_sae, dtype=torch.bool)
        did_fire[out.latent_indices.flatten()] = True
        loss = out.fvu + out.auxk_loss
        loss.backward()
        sae.remove_gradient_parallel_to_decoder_directions()
        opt.step()
        opt.zero_grad()
        since_fired.add_(x.shape[0])
        since_fired[did_fire] = 0
        return loss.detach()

    return step


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
        self.results[name] = {"error": f"{type(e).__name__}: {e}"}
        print(f"  {name:24s} {what}: {type(e).__name__}: {e}")
        self.steps.pop(name, None)

    def build(self, name: str) -> bool:
        try:
            _set_native("native" in name)  # the native top-k only where the row asks for it
            self.steps[name] = _make(name, self.d_sae)
            self.times[name], self.gemm_before[name] = [], []
            for _ in range(self.warmup):
                self.steps[name](self.x)
            return True
        except Exception as e:  # noqa: BLE001
            self._fail(name, "unavailable", e)
            return False

    def run(self, name: str, gemm: "_GemmProbe") -> None:
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


def bf16_gemm_flops(batch: int, d_sae: int, repeats: int) -> float:
    g = torch.Generator().manual_seed(1)
    x = torch.randn(batch, D_IN, generator=g).bfloat16()
    W = torch.randn(D_IN, d_sae, generator=g).bfloat16()
    torch.mm(x, W)
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        torch.mm(x, W)
        times.append(time.perf_counter() - t0)
    return 2.0 * batch * D_IN * d_sae / statistics.median(times)


def main(argv: list[str] | None = None) -> dict:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--sizes", default="4608,16384,65536", help="comma-separated d_sae values")
    p.add_argument("--batch", type=int, default=4096)
    p.add_argument("--quick", action="store_true", help="batch 1024")
    p.add_argument("--steps", type=int, default=None, help="timed steps per size (default: by size)")
    p.add_argument("--warmup", type=int, default=2)
    p.add_argument("--impls", default="ours_kernels,ours_kernels_bf16,ours_kernels_native,"
                   "ours_kernels_native_bf16,ours_trainstep,ours_trainstep_native,saelens,sparsify")
    p.add_argument("--profile", action="store_true", help="per-phase breakdown of ours_kernels*")
    p.add_argument("--sequential", action="store_true",
                   help="time implementations one after another (default: round-robin up to d_sae 16384)")
    p.add_argument("--out", default=str(ROOT / "bench" / "results" / "sae_step.json"))
    args = p.parse_args(argv)

    warnings.filterwarnings("ignore")
    batch = 1024 if args.quick else args.batch
    sizes = [int(s) for s in args.sizes.split(",") if s]
    impls = [s for s in args.impls.split(",") if s]
    g = torch.Generator().manual_seed(0)
    x = torch.randn(batch, D_IN, generator=g)  # the same activations for every implementation

    report: dict = {
        "torch": torch.__version__,
        "threads": torch.get_num_threads(),
        "cpu": _cpu_name(),
        "python": platform.python_version(),
        "batch_tokens": batch,
        "d_in": D_IN,
        "k": K,
        "dtype": "float32",
        "step": "forward, MSE/FVU loss, backward, decoder-gradient projection, Adam, decoder renorm, "
                "dead-latent bookkeeping; median of timed steps after warm-up",
        "bound": "tokens/s if the step cost only its encoder GEMM: fp32 GEMM FLOP/s (median of "
                 "samples interleaved with the steps) / (2 d_in d_sae)",
        "fraction_of_bound": "median over timed steps of (encoder-shaped fp32 GEMM time measured just "
                             "before the step) / (step time); fraction_of_bound_unpaired divides the "
                             "median step by the median GEMM instead",
        "sizes": {},
    }
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, {report['cpu']}, "
          f"batch {batch}, d_in {D_IN}, k {K}")
    for d_sae in sizes:
        n_steps = args.steps or {4608: 15, 16384: 5}.get(d_sae, 3)
        warmup = args.warmup if d_sae <= 16384 else 1
        # round-robin (one step of every implementation per round) spreads the load of a shared
        # machine evenly over the implementations; at large d_sae they run one after another
        # to bound memory
        interleave = not args.sequential and d_sae * batch <= 16384 * 4096
        entry: dict = {
            "gemm_bf16_flops": bf16_gemm_flops(batch, d_sae, repeats=5 if d_sae <= 16384 else 2),
            "steps": n_steps,
            "warmup": warmup,
            "schedule": "round-robin" if interleave else "sequential",
            "results": {},
        }
        entry["cpu_pressure_before"] = _cpu_pressure()
        gemm_times: list[float] = []
        gemm = _GemmProbe(batch, d_sae)
        runs = _Runs(d_sae, x, warmup, entry["results"])
        if interleave:
            for name in impls:
                runs.build(name)
            for _ in range(n_steps):
                gemm_times += gemm.sample(2)
                for name in impls:
                    runs.run(name, gemm)
        else:
            for name in impls:
                gemm_times += gemm.sample(3)
                if runs.build(name):
                    for _ in range(n_steps):
                        runs.run(name, gemm)
                    gemm_times += gemm.sample(2)
                    if args.profile and name.startswith("ours_kernels") and name in runs.steps:
                        entry.setdefault("profile", {})[name] = _profile(runs.steps[name], x)
                    runs.steps.pop(name, None)
        times, steps = runs.times, runs.steps
        flops = 2.0 * batch * D_IN * d_sae
        flops_med = flops / statistics.median(gemm_times)
        bound = flops_med / (2.0 * D_IN * d_sae)
        entry.update({
            "cpu_pressure_after": _cpu_pressure(),
            "gemm_fp32_flops": flops_med,
            "gemm_fp32_flops_best": flops / min(gemm_times),
            "gemm_samples": len(gemm_times),
            "bound_tokens_per_s": bound,
        })
        print(f"\nd_sae={d_sae} ({entry['schedule']}; cpu pressure after: {entry['cpu_pressure_after']})"
              f"\n  fp32 GEMM {flops_med / 1e9:.0f} GFLOP/s "
              f"(best {entry['gemm_fp32_flops_best'] / 1e9:.0f}), bf16 GEMM "
              f"{entry['gemm_bf16_flops'] / 1e9:.0f} GFLOP/s, bound {bound:,.0f} tok/s")
        for name in impls:
            if name not in times or not times[name] or "error" in entry["results"].get(name, {}):
                continue
            ts = times[name]
            med = statistics.median(ts)
            # paired: each step against the GEMM timed just before it, so that the machine's speed
            # drifting between rounds (shared host) cancels out; the median of those ratios
            paired = statistics.median(g / t for g, t in zip(runs.gemm_before[name], ts))
            res = {"median_s": med, "min_s": min(ts), "times_s": ts, "gemm_before_s": runs.gemm_before[name],
                   "tokens_per_s": batch / med, "tokens_per_s_best": batch / min(ts),
                   "fraction_of_bound": paired, "fraction_of_bound_unpaired": batch / med / bound}
            entry["results"][name] = res
            print(f"  {name:24s} {med * 1e3:9.1f} ms/step (min {min(ts) * 1e3:.1f})  "
                  f"{batch / med:10,.0f} tok/s  {paired:6.1%} of bound "
                  f"(medians unpaired: {res['fraction_of_bound_unpaired']:.1%})")
        if interleave and args.profile:
            for name in impls:
                if name.startswith("ours_kernels") and name in steps:
                    _set_native("native" in name)
                    print(f"  {name}:")
                    entry.setdefault("profile", {})[name] = _profile(steps[name], x)
        steps.clear()
        ratios = {}
        for mine, r in entry["results"].items():
            if not mine.startswith("ours") or "tokens_per_s" not in r:
                continue
            for other in ("saelens", "sparsify"):
                o = entry["results"].get(other, {}).get("tokens_per_s")
                if o:
                    ratios[f"{mine}/{other}"] = r["tokens_per_s"] / o
            ratios[f"{mine}/bound"] = r["fraction_of_bound"]
        entry["ratios"] = ratios
        report["sizes"][str(d_sae)] = entry
        for mine in [n for n in entry["results"] if n.startswith("ours")]:
            mr = {k.split("/")[1]: v for k, v in ratios.items() if k.startswith(mine + "/")}
            if mr:
                print(f"  {mine}: " + ", ".join(f"x{v:.2f} vs {k}" if k != "bound" else f"{v:.1%} of bound"
                                               for k, v in mr.items()))
        _save(report, args.out)

    _print_table(report)
    _save(report, args.out)
    print(f"\nsaved {args.out}")
    return report


def _make(name: str, d_sae: int):
    if name.startswith("ours_kernels"):
        # ours_kernels[_native][_bf16][_foreach|_plainadam]
        parts = set(name.split("_")[2:])
        adam = "foreach" if "foreach" in parts else "plain" if "plainadam" in parts else "fused"
        return KernelStep(D_IN, d_sae, K, adam=adam, select="native" if "native" in parts else "torch",
                          dtype=torch.bfloat16 if "bf16" in parts else None)
    if name in ("ours_trainstep", "ours_trainstep_native"):
        return make_trainstep(d_sae, K)
    if name == "saelens":
        return make_saelens(d_sae, K)
    if name == "saelens_sparse":
        # its use_sparse_activations=True option (COO codes + torch.sparse.mm). With sae-lens
        # 6.54 / torch 2.13 its backward fails ("aten::view" on SparseCPU), hence not a default row
        return make_saelens(d_sae, K, sparse=True)
    if name == "sparsify":
        return make_sparsify(d_sae, K)
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


def _profile(step: KernelStep, x: torch.Tensor, n: int = 5) -> dict[str, float]:
    step.timer = {}
    for _ in range(n):
        step(x)
    prof = {k: statistics.median(v) for k, v in step.timer.items()}
    step.timer = None
    total = sum(prof.values())
    print("    phases (median ms): " + ", ".join(f"{k} {v * 1e3:.1f}" for k, v in prof.items())
          + f"; sum {total * 1e3:.1f}")
    return prof


def _print_table(report: dict) -> None:
    order = ["ours_kernels", "ours_kernels_bf16", "ours_kernels_native", "ours_kernels_native_bf16",
             "ours_trainstep", "ours_trainstep_native", "saelens", "saelens_sparse", "sparsify"]
    names = sorted({n for e in report["sizes"].values() for n in e["results"]},
                   key=lambda n: order.index(n) if n in order else len(order))
    print("\ntokens/s (median step), batch", report["batch_tokens"])
    head = f"{'d_sae':>7} {'GFLOP/s':>8} {'bound':>8} " + " ".join(f"{n:>24}" for n in names)
    print(head)
    for d_sae, e in report["sizes"].items():
        cells = []
        for n in names:
            r = e["results"].get(n, {})
            cells.append(f"{r['tokens_per_s']:>24,.0f}" if "tokens_per_s" in r else f"{'-':>24}")
        print(f"{d_sae:>7} {e['gemm_fp32_flops'] / 1e9:>8.0f} {e['bound_tokens_per_s']:>8,.0f} " + " ".join(cells))


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
    Path(path).write_text(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
