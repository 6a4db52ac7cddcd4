"""Benchmark: TopK SAE quality on SmolLM2 activations, ours vs SAELens, same tokens/k/width/lr.

Captures ``--tokens`` training activations at blocks.L.hook_resid_post (train split of the stdlib
corpus) and held-out activations (validation split) once, then trains our TopK SAE (``TrainStep``)
and SAELens's ``TopKTrainingSAE`` (its own loss and trainer step, see bench/sae_step.py) on the
same batches in the same order with the same learning rate, and reports held-out FVU, L0, dead
fraction and training tokens/s for both. Prints and saves bench/results/sae_quality.json.

    python bench/sae_quality.py [--tokens 409600] [--d-sae 4608] [--k 32]
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))

from interp.activations import ActivationCapture, capture_stream  # noqa: E402
from interp.data import token_batches  # noqa: E402
from interp.models import load_model  # noqa: E402
from saes.config import SAEConfig  # noqa: E402
from saes.evals import reconstruction_metrics  # noqa: E402
from saes.geometric_median import geometric_median  # noqa: E402
from saes.sae import SAE  # noqa: E402
from saes.train import TrainStep, default_lr  # noqa: E402


def capture(model, hook: str, split: str, tokens: int, context: int = 128) -> torch.Tensor:
    cap = ActivationCapture(model, [hook])
    batches = token_batches(model.tokenizer, source="stdlib", context_size=context, split=split, seed=0,
                            batch_size=16)
    return torch.cat([b.acts[hook] for b in capture_stream(cap, batches, max_tokens=tokens)])


class LensAsSAE(torch.nn.Module):
    """Wrap SAELens's SAE in our evaluation interface (x_hat, z)."""

    def __init__(self, lens, d_sae: int) -> None:
        super().__init__()
        self.lens = lens
        self.cfg = SAEConfig(d_in=lens.cfg.d_in, d_sae=d_sae, k=1)
        self.W_enc = lens.W_enc

    @property
    def device(self):
        return self.W_enc.device

    def forward(self, x, g=None):  # noqa: ARG002
        z = self.lens.encode(x)
        return self.lens.decode(z), z


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--tokens", type=int, default=409_600)
    ap.add_argument("--eval-tokens", type=int, default=32_768)
    ap.add_argument("--layer", type=int, default=15)
    ap.add_argument("--d-sae", type=int, default=4608)
    ap.add_argument("--k", type=int, default=32)
    ap.add_argument("--batch", type=int, default=4096)
    ap.add_argument("--out", default="bench/results/sae_quality.json")
    args = ap.parse_args()
    import sae_step  # bench/sae_step.py: SAELens's training step as its trainer runs it

    hook = f"blocks.{args.layer}.hook_resid_post"
    model = load_model("smollm2-135m")
    t0 = time.perf_counter()
    train_x = capture(model, hook, "train", args.tokens)
    eval_x = capture(model, hook, "validation", args.eval_tokens)
    capture_s = time.perf_counter() - t0
    g = torch.Generator().manual_seed(0)
    order = torch.randperm(train_x.shape[0], generator=g)
    n_steps = train_x.shape[0] // args.batch
    lr = default_lr(args.d_sae)

    ours = SAE(SAEConfig(d_in=train_x.shape[1], d_sae=args.d_sae, k=args.k), seed=0)
    sample = train_x[order[:4096]]
    ours.cfg.input_scale = (train_x.shape[1] ** 0.5) / sample.norm(dim=-1).mean().item()
    with torch.no_grad():
        ours.b_dec.copy_(geometric_median(sample * ours.cfg.input_scale))
    step = TrainStep(ours, lr=lr, total_steps=n_steps, dead_tokens=min(10_000_000, args.tokens // 10))

    sae_step.D_IN = train_x.shape[1]
    sae_step.LR = lr
    lens_step = sae_step.make_saelens(args.d_sae, args.k)
    lens = lens_step.sae

    timings = {"ours": 0.0, "saelens": 0.0}
    for i in range(n_steps):
        x = train_x[order[i * args.batch : (i + 1) * args.batch]]
        t = time.perf_counter()
        step(x)
        timings["ours"] += time.perf_counter() - t
        t = time.perf_counter()
        lens_step(x)
        timings["saelens"] += time.perf_counter() - t
    lens.eval()
    results = {}
    for name, sae in (("ours", ours), ("saelens", LensAsSAE(lens, args.d_sae))):
        m = reconstruction_metrics(sae, eval_x.split(4096))
        results[name] = {"fvu": m["fvu"], "l0_mean": m["l0_mean"], "dead_fraction": m["dead_fraction"],
                         "cosine_mean": m["cosine_mean"],
                         "train_tokens_per_s": n_steps * args.batch / timings[name]}
    out = {"hook": hook, "train_tokens": n_steps * args.batch, "eval_tokens": eval_x.shape[0], "d_sae": args.d_sae,
           "k": args.k, "lr": lr, "batch": args.batch, "capture_s": capture_s, "results": results,
           "fvu_ours_minus_saelens": results["ours"]["fvu"] - results["saelens"]["fvu"],
           "torch": torch.__version__, "threads": torch.get_num_threads()}
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(out, indent=2))
    for name, r in results.items():
        print(f"{name:8s} FVU {r['fvu']:.4f}  L0 {r['l0_mean']:.1f}  dead {r['dead_fraction']:.3f}  "
              f"train {r['train_tokens_per_s']:,.0f} tok/s")
    print(f"saved {args.out}")


if __name__ == "__main__":
    main()
