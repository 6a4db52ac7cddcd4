"""The ``interp`` command line: the model-side commands (``models``, ``cache``) and the ones every
other package adds through the ``interp.commands`` entry-point group (:mod:`interp.commands`):
``saes`` (train, sweep, eval, runs, demo, config, kernels, dashboard), its analyses (steer,
induction, darkmatter), ``circuits`` and ``sparsity``. Nothing here imports those packages.
"""

from __future__ import annotations

import sys
from pathlib import Path

import typer

from interp.commands import Root, discover, fail

app = typer.Typer(
    cls=Root,
    add_completion=False,
    no_args_is_help=True,
    help="interp: capture activations, train and evaluate SAEs.",
)


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
    hook: list[str] = typer.Option(["blocks.15.hook_resid_post"], help="hook name (repeatable)"),
    source: str = typer.Option("stdlib", help="text source: stdlib, a file/glob, or hf:NAME"),
    split: str = typer.Option("train"),
    context_size: int = typer.Option(128),
    batch_windows: int = typer.Option(16, help="windows per model forward"),
    windows_per_shard: int = typer.Option(256),
    tokens: int = typer.Option(1_000_000, help="approximate number of tokens to cache"),
    grads: bool = typer.Option(False, help="also store dL/dx (for gradient SAEs)"),
    dtype: str = typer.Option("float32", help="stored dtype: float32, bfloat16 or float16"),
    model_dtype: str = typer.Option(
        "float32", help="dtype the model runs in: float32, bfloat16, or auto (bf16 where native)"
    ),
    skip_positions: int = typer.Option(0, help="positions left out after each window's BOS"),
    max_norm_ratio: float | None = typer.Option(
        None, help="leave out rows whose norm exceeds this multiple of the batch median"
    ),
    seed: int = typer.Option(0),
) -> None:
    """Write (or resume) an on-disk activation cache: safetensors shards + manifest.json."""
    from interp.activation_files import ActivationFilesWriter
    from interp.activations import ActivationCapture
    from interp.data import token_windows
    from interp.models import dtype_name, load_model

    try:
        m = load_model(model, dtype=model_dtype)
        capture = ActivationCapture(
            m,
            hook,
            with_grads=grads,
            dtype=dtype,
            skip_positions=skip_positions,
            max_norm_ratio=max_norm_ratio,
        )
        if windows_per_shard % batch_windows:
            raise ValueError(
                f"windows_per_shard ({windows_per_shard}) must be a multiple of batch_windows ({batch_windows})"
            )
        meta = {
            "model": model,
            "model_dtype": dtype_name(next(m.parameters()).dtype),
            "source": source,
            "split": split,
            "seed": seed,
            "context_size": context_size,
        }
        writer = ActivationFilesWriter(out, capture, meta, windows_per_shard)
        windows = token_windows(
            m.tokenizer, source=source, context_size=context_size, split=split, seed=seed
        )
        max_windows = -(-tokens // (context_size - 1))
        manifest = writer.write(windows, batch_windows, max_windows=max_windows)
    except (ValueError, FileNotFoundError) as e:
        fail(e)
    typer.echo(
        f"cache {out}: {manifest.total_tokens:,} tokens in {len(manifest.shards)} shards, hooks {manifest.hooks}"
    )


def main() -> None:  # pragma: no cover
    app()


discover(app)  # the other packages' commands, after the model side's


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
