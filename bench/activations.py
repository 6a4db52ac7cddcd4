"""Benchmark: activation-capture throughput on SmolLM2 (fp32, CPU), all measured in one run.

For L in (5, 15): capture of blocks.L.hook_resid_post with stop_at_layer; the same hook with a full
forward; a plain transformers forward; a plain transformers forward truncated after layer L (the
floor for capture at L). Then 4 hooks at once against the deepest of them alone.
Prints a table and saves bench/results/activations.json. Not a test.

    python bench/activations.py [--windows 32] [--context 128] [--repeats 3]
"""
from __future__ import annotations

import argparse
import json
import platform
import statistics
import time
from pathlib import Path

import torch

from interp.activations import ActivationCapture
from interp.data import token_windows
from interp.models import load_model, smollm2_gguf_path


def timed(fn, batches, repeats: int) -> float:
    """Median tokens/s of fn over all batches, repeated."""
    fn(batches[0])  # warm-up
    rates = []
    for _ in range(repeats):
        n = 0
        t0 = time.perf_counter()
        for b in batches:
            fn(b)
            n += b.numel()
        rates.append(n / (time.perf_counter() - t0))
    return statistics.median(rates)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--windows", type=int, default=32)
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--context", type=int, default=128)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--out", default="bench/results/activations.json")
    args = ap.parse_args()

    from transformers import AutoModelForCausalLM

    model = load_model("smollm2-135m")
    gguf = smollm2_gguf_path()
    hf = AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name, torch_dtype=torch.float32).eval()
    wins = token_windows(model.tokenizer, source="stdlib", context_size=args.context, split="train", seed=0)
    windows = torch.stack([w for _, w in zip(range(args.windows), wins)])
    batches = list(windows.split(args.batch))
    results: dict[str, float] = {}

    @torch.inference_mode()
    def hf_full(b):
        hf(b)

    def hf_truncated(L):
        layers = hf.model.layers

        @torch.inference_mode()
        def run(b):
            hf.model.layers = layers[: L + 1]
            hf.config.num_hidden_layers = L + 1
            try:
                hf.model(b)
            finally:
                hf.model.layers = layers
                hf.config.num_hidden_layers = len(layers)

        return run

    results["hf_full_forward"] = timed(hf_full, batches, args.repeats)
    for L in (5, 15):
        hook = f"blocks.{L}.hook_resid_post"
        cap = ActivationCapture(model, [hook])
        results[f"capture_L{L}_stop_at_layer"] = timed(cap, batches, args.repeats)
        full = ActivationCapture(model, [hook])
        full.stop_at_layer = None
        results[f"capture_L{L}_full_forward"] = timed(full, batches, args.repeats)
        results[f"hf_truncated_L{L}"] = timed(hf_truncated(L), batches, args.repeats)
        results[f"capture_L{L}_vs_hf_truncated"] = results[f"capture_L{L}_stop_at_layer"] / results[f"hf_truncated_L{L}"]
    four = [f"blocks.{L}.hook_resid_post" for L in (3, 7, 11, 15)]
    results["capture_4_hooks"] = timed(ActivationCapture(model, four), batches, args.repeats)
    results["capture_4_hooks_overhead_vs_deepest"] = results["capture_L15_stop_at_layer"] / results["capture_4_hooks"] - 1

    out = {"results_tokens_per_s": results, "windows": args.windows, "batch": args.batch, "context": args.context,
           "torch": torch.__version__, "threads": torch.get_num_threads(), "machine": platform.processor() or platform.machine(),
           "targets": {"capture_vs_hf_truncated": ">= 0.95", "4_hooks_overhead": "<= 0.05"}}
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(out, indent=2))
    for k, v in results.items():
        print(f"{k:42s} {v:12.3f}")
    print(f"saved {args.out}")


if __name__ == "__main__":
    main()
