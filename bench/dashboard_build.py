"""What a feature store costs: the store's build against the model forward over the same tokens.

For each size (held-out tokens), two fresh processes on the same run folder (default: the demo's):

* ``forward``: the model in the run's dtype, run to the SAE's hook (``stop_at_layer``) over the
  same windows in the same batches as the build reads them, and nothing else;
* ``store``: ``interp dashboard build`` (``saes.features.build_store``) into a temporary folder.

Each reports its wall time (model load excluded) and its peak RSS (``ru_maxrss``), so the ratio
store / forward is what the SAE and the bookkeeping add, and the RSS at two sizes shows whether
memory grows with the tokens (it should not: the pass streams). Prints a table and saves
``--out`` (JSON). Not a test.

    python bench/dashboard_build.py [--run runs/demo-topk] [--sizes 200000 2000000]
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "bench"))

from _provenance import provenance  # noqa: E402


def child(kind: str, run: str, tokens: int, out: str) -> dict:
    import torch

    from interp.activations import ActivationCapture
    from interp.data import token_windows
    from interp.models import load_model
    from saes.artifacts import load_sae
    from saes.features import StoreConfig, build_store
    from saes.features.build import batches_of
    from saes.rundir import RunDir
    from saes.train_config import RunConfig

    cfg = RunConfig.from_saved(RunDir(run).config(required=True))
    model = load_model(cfg.data.model, dtype=cfg.data.model_dtype)
    sae = load_sae(run)
    store_cfg = StoreConfig(tokens=tokens)
    rss_loaded = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    t0 = time.perf_counter()
    if kind == "forward":
        T = cfg.data.context_size
        n_windows = -(-tokens // (T - 1))
        capture = ActivationCapture(model, [sae.cfg.hook_name], drop_bos=False)
        windows = token_windows(
            model.tokenizer, cfg.data.source, T, split="validation", seed=cfg.data.seed
        )
        with torch.no_grad():
            for _, batch in batches_of(windows, store_cfg.batch_windows, n_windows):
                capture(batch)
        extra = {}
    else:
        path = build_store(run, out=Path(out) / "features", model=model, config=store_cfg)
        m = json.loads((path / "manifest.json").read_text())
        extra = {
            "build": m["build"],
            "alive_latents": m["alive_latents"],
            "n_tokens": m["n_tokens"],
            "d_sae": m["d_sae"],
        }
        extra["store_bytes"] = sum(f.stat().st_size for f in path.rglob("*") if f.is_file())
    wall = time.perf_counter() - t0
    return {
        "kind": kind,
        "tokens": tokens,
        "wall_s": wall,
        "tokens_per_s": tokens / wall,
        "peak_rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
        "rss_after_load_mib": rss_loaded,
        "model_dtype": str(next(model.parameters()).dtype),
        **extra,
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--run", default="runs/demo-topk")
    ap.add_argument("--sizes", type=int, nargs="+", default=[200_000, 2_000_000])
    ap.add_argument(
        "--forward-sizes",
        type=int,
        nargs="*",
        default=None,
        help="sizes to time the forward-only pass at (default: every size)",
    )
    ap.add_argument("--out", default=str(ROOT / "bench" / "results" / "dashboard_build.json"))
    ap.add_argument("--child", nargs=3, metavar=("KIND", "TOKENS", "OUT"), help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        kind, tokens, out = args.child
        print(json.dumps(child(kind, args.run, int(tokens), out)))
        return
    record = {"provenance": provenance(), "run": args.run, "rows": []}
    fwd = set(args.sizes if args.forward_sizes is None else args.forward_sizes)
    for tokens in args.sizes:
        for kind in ("forward", "store") if tokens in fwd else ("store",):
            with tempfile.TemporaryDirectory() as tmp:
                cmd = [
                    sys.executable,
                    __file__,
                    "--run",
                    args.run,
                    "--child",
                    kind,
                    str(tokens),
                    tmp,
                ]
                res = subprocess.run(cmd, capture_output=True, text=True, check=False)
                if res.returncode != 0:
                    raise SystemExit(f"{kind} at {tokens} failed:\n{res.stderr[-3000:]}")
                row = json.loads(res.stdout.strip().splitlines()[-1])
            record["rows"].append(row)
            print(
                f"{kind:8s} {tokens:>9,} tokens: {row['wall_s']:7.1f} s "
                f"({row['tokens_per_s']:,.0f} tok/s), peak RSS {row['peak_rss_mib']:,.0f} MiB"
            )
    by = {(r["kind"], r["tokens"]): r for r in record["rows"]}
    record["summary"] = [
        {
            "tokens": t,
            "store_over_forward": by[("store", t)]["wall_s"] / by[("forward", t)]["wall_s"]
            if ("forward", t) in by
            else None,
            "store_peak_rss_mib": by[("store", t)]["peak_rss_mib"],
            "forward_peak_rss_mib": by[("forward", t)]["peak_rss_mib"]
            if ("forward", t) in by
            else None,
        }
        for t in args.sizes
    ]
    for s in record["summary"]:
        if s["store_over_forward"] is not None:
            print(f"{s['tokens']:>9,} tokens: store / forward = {s['store_over_forward']:.2f}x")
    Path(args.out).write_text(json.dumps(record, indent=1) + "\n")
    print(f"saved {args.out}")


if __name__ == "__main__":
    main()
