"""The ``interp`` command line: models, cache, train, eval, demo.

The CLI is the one place that wires the rooms together; it imports ``saes`` lazily inside the
commands so that the ``interp`` core never depends on it.
"""
from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import List, Optional

import typer

app = typer.Typer(add_completion=False, no_args_is_help=True, help="interp: capture activations, train and evaluate SAEs.")


def _fail(e: Exception) -> None:
    typer.secho(f"error: {e}", fg=typer.colors.RED, err=True)
    raise typer.Exit(2)


@app.command("models")
def models_cmd() -> None:
    """List the models that can be loaded here and where from."""
    from rich.console import Console

    from interp.models import format_models_table

    Console().print(format_models_table())


@app.command("cache")
def cache_cmd(
    out: Path = typer.Argument(..., help="cache folder (created, or resumed if it exists)"),
    model: str = typer.Option("smollm2-135m", help="model spec"),
    hook: List[str] = typer.Option(["blocks.15.hook_resid_post"], help="hook name (repeatable)"),
    source: str = typer.Option("stdlib", help="text source: stdlib, a file/glob, or hf:NAME"),
    split: str = typer.Option("train"),
    context_size: int = typer.Option(128),
    batch_windows: int = typer.Option(16, help="windows per model forward"),
    windows_per_shard: int = typer.Option(256),
    tokens: int = typer.Option(1_000_000, help="approximate number of tokens to cache"),
    grads: bool = typer.Option(False, help="also store dL/dx (for gradient SAEs)"),
    dtype: str = typer.Option("float32", help="float32 or bfloat16"),
    seed: int = typer.Option(0),
) -> None:
    """Write (or resume) an on-disk activation cache: safetensors shards + manifest.json."""
    from interp.activations import ActivationCapture
    from interp.cache import CacheWriter
    from interp.data import token_windows
    from interp.models import load_model

    try:
        m = load_model(model)
        capture = ActivationCapture(m, hook, with_grads=grads, dtype=dtype)
        if windows_per_shard % batch_windows:
            raise ValueError(f"windows_per_shard ({windows_per_shard}) must be a multiple of batch_windows ({batch_windows})")
        meta = {"model": model, "source": source, "split": split, "seed": seed, "context_size": context_size}
        writer = CacheWriter(out, capture, meta, windows_per_shard)
        windows = token_windows(m.tokenizer, source=source, context_size=context_size, split=split, seed=seed)
        max_windows = -(-tokens // (context_size - 1))
        manifest = writer.write(windows, batch_windows, max_windows=max_windows)
    except (ValueError, FileNotFoundError) as e:
        _fail(e)
    typer.echo(f"cache {out}: {manifest.total_tokens:,} tokens in {len(manifest.shards)} shards, hooks {manifest.hooks}")


@app.command("train")
def train_cmd(
    config: Optional[Path] = typer.Option(None, "--config", "-c", help="JSON or YAML run config"),
    set_: List[str] = typer.Option([], "--set", help="override: key=value (repeatable)"),
    resume: bool = typer.Option(False, "--resume", help="continue from the last good checkpoint"),
    no_eval: bool = typer.Option(False, "--no-eval", help="skip evaluation at the end"),
) -> None:
    """Train an SAE (any variant) from a config file."""
    from saes.train import TrainingDiverged, train
    from saes.train_config import load_run_config

    try:
        cfg = load_run_config(config, set_)
        run_dir = train(cfg, resume=resume, evaluate=not no_eval)
    except (ValueError, FileNotFoundError, FileExistsError, TrainingDiverged) as e:
        _fail(e)
    except KeyboardInterrupt:
        raise typer.Exit(130)
    _print_metrics(run_dir)


@app.command("eval")
def eval_cmd(run_dir: Path = typer.Argument(..., help="a run folder written by `interp train`")) -> None:
    """Evaluate a trained SAE on held-out tokens (and spliced into the model); writes metrics.json."""
    from saes.evals import evaluate_run

    try:
        evaluate_run(run_dir)
    except (ValueError, FileNotFoundError) as e:
        _fail(e)
    _print_metrics(run_dir)


SUMMARY_KEYS = ("fvu", "explained_variance", "l0_mean", "dead_fraction", "dense_fraction", "cosine_mean",
                "ce_clean", "ce_spliced", "ce_zero_ablated", "ce_loss_recovered", "kl_div", "train_tokens_per_s")


def _print_metrics(run_dir: Path) -> None:
    from rich.console import Console
    from rich.table import Table

    path = Path(run_dir) / "metrics.json"
    if not path.exists():
        typer.echo(f"trained: {run_dir} (no metrics.json)")
        return
    metrics = json.loads(path.read_text())
    table = Table(title=f"{run_dir}")
    table.add_column("metric")
    table.add_column("value", justify="right")
    for key in SUMMARY_KEYS:
        if metrics.get(key) is not None:
            v = metrics[key]
            table.add_row(key, f"{v:,.4f}" if isinstance(v, float) else str(v))
    Console().print(table)


@app.command("demo")
def demo_cmd(
    out_dir: Path = typer.Option(Path("runs/demo-topk"), help="run folder"),
    train_tokens: int = typer.Option(400_000, help="training tokens (the default fits ~10 min on 2 cores)"),
) -> None:
    """The main job on the embedded defaults: TopK SAE (k=32, d_sae=4608) on SmolLM2 layer 15 over stdlib."""
    from saes.train import train
    from saes.train_config import load_run_config

    cfg_path = Path(__file__).resolve().parent.parent / "configs" / "demo_topk.json"
    cfg = load_run_config(cfg_path if cfg_path.exists() else None,
                          [f"out_dir={json.dumps(str(out_dir))}", f"train_tokens={train_tokens}"])
    resume = (out_dir / "checkpoints").exists()
    if resume and (out_dir / "metrics.json").exists():
        import shutil

        shutil.rmtree(out_dir)  # a finished demo is rerun from scratch
        resume = False
    run_dir = train(cfg, resume=resume)
    _print_metrics(run_dir)


def main() -> None:  # pragma: no cover
    app()


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
