"""``interp eval`` and ``interp runs``: a run's metrics and the list of run folders; the metrics
table ``interp train`` / ``eval`` / ``demo`` print."""

from __future__ import annotations

import json
from pathlib import Path

import typer

from interp.commands import fail
from saes.headline import HEADLINE_NAMES

# the metrics table after training or evaluation: the headline metrics (saes.headline), then these
DETAIL_METRICS = (
    "explained_variance",
    "dense_fraction",
    "cosine_mean",
    "ce_clean",
    "ce_spliced",
    "ce_zero_ablated",
    "kl_div",
    "train_tokens_per_s",
)


def eval_cmd(
    run_dir: Path = typer.Argument(..., help="a run folder written by `interp train`"),
    no_model: bool = typer.Option(
        False, "--no-model", help="do not load the run's model: cached held-out rows only, no CE/KL"
    ),
    eval_cache: Path | None = typer.Option(
        None, "--eval-cache", help="a cache of held-out activations for FVU, L0, ... (eval.cache)"
    ),
) -> None:
    """Evaluate a trained SAE or transcoder on held-out tokens (and spliced into the model);
    writes metrics.json."""
    from saes.evaluation.evaluate import evaluate_run
    from saes.rundir import RunDir
    from saes.training.config import RunConfig
    from saes.transcoders.evaluate import evaluate_transcoder_run

    try:
        cfg = RunConfig.from_saved(RunDir(run_dir).config(required=True))
        if cfg.sae.kind != "sae":  # transcoders: through their model (CE with MLPs replaced)
            if no_model or eval_cache is not None:
                raise ValueError(
                    f"{run_dir} is a {cfg.sae.kind}: it is evaluated through its model "
                    "(--no-model and --eval-cache apply to SAEs)"
                )
            evaluate_transcoder_run(run_dir, cfg=cfg)
        else:
            evaluate_run(run_dir, use_model=not no_model, eval_cache=eval_cache)
    except (ValueError, FileNotFoundError) as e:
        fail(e)
    print_metrics(run_dir)


def runs_cmd(
    root: Path = typer.Argument(
        Path("runs"), help="folder holding run folders (searched recursively)"
    ),
    as_json: bool = typer.Option(
        False, "--json", help="print JSON (one object per run) instead of a table"
    ),
    verify: bool = typer.Option(
        False, "--verify", help="also check every newest checkpoint's sha256 (slower)"
    ),
    stale_after: float = typer.Option(
        30.0, help="minutes without a status update before a live run is 'stalled'"
    ),
) -> None:
    """List run folders: status (running, finished, failed, interrupted/crashed (resumable)), tokens, metrics."""
    from saes.runs import list_runs, runs_table

    try:
        runs = list_runs(root, verify=verify, stale_after_s=stale_after * 60)
    except (FileNotFoundError, NotADirectoryError) as e:
        fail(e)
    if as_json:
        typer.echo(json.dumps([r.to_dict() for r in runs], indent=2))
        return
    from rich.console import Console

    Console().print(
        runs_table(runs, title=f"runs under {root}") if runs else f"no run folders under {root}"
    )


def print_metrics(run_dir: Path) -> None:
    """The run's metrics.json as a table: the headline metrics first, then the details."""
    from rich.console import Console
    from rich.table import Table

    from saes.rundir import METRICS_FILE, RunDir

    metrics = RunDir(run_dir).metrics()
    if metrics is None:
        typer.echo(f"trained: {run_dir} (no {METRICS_FILE})")
        return
    table = Table(title=f"{run_dir}")
    table.add_column("metric")
    table.add_column("value", justify="right")
    for key in (*HEADLINE_NAMES, *DETAIL_METRICS):
        if metrics.get(key) is not None:
            v = metrics[key]
            name = key
            if key == "dead_fraction" and metrics.get("n_tokens"):  # a dead count needs its window
                name = f"dead_fraction (never fired in {metrics['n_tokens']:,} eval tokens)"
            table.add_row(name, f"{v:,.4f}" if isinstance(v, float) else str(v))
    Console().print(table)
    every = metrics.get("all_layers_replaced")
    if every:  # a transcoder run: the replacement model's own loss, no error terms
        typer.echo(
            f"every MLP of {metrics.get('reconstruction', {}).get('layers')} replaced: CE "
            f"{every['ce_spliced']:.4f} (clean {every['ce_clean']:.4f}, +{every['ce_delta']:.4f}), "
            f"KL {every['kl_div']:.4f}"
        )
    rows = metrics.get("eval_rows")
    if rows:
        typer.echo(f"evaluated on rows {rows['rows'][0]}..{rows['rows'][1] - 1} of {rows['cache']}")
    sl = metrics.get("saelens")
    if sl:
        typer.echo(
            f"SAELens convention: ce_loss_score {sl['ce_loss_score']:.4f}, "
            f"kl_div_score {sl['kl_div_score']:.4f}"
        )
    reasons: dict[str, list[str]] = {}
    for key, why in (metrics.get("skipped") or {}).items():
        reasons.setdefault(why, []).append(key)
    for why, keys in reasons.items():
        typer.echo(f"skipped {', '.join(keys)}: {why}")


def dead_latents_line(manifest: dict, metrics: dict) -> str:
    """Dead latents (never fired) in a feature store's window and in the evaluation's, each with
    its window, so the two figures read as what they are rather than as a contradiction."""
    m = manifest
    line = (
        f"dead latents (never fired): {m['dead_latents'] / m['d_sae']:.2%} "
        f"({m['dead_latents']:,} of {m['d_sae']:,}) in the store's {m['n_tokens']:,} held-out tokens"
    )
    if metrics.get("dead_fraction") is not None and metrics.get("n_tokens"):
        line += (
            f", {metrics['dead_fraction']:.2%} in the evaluation's {metrics['n_tokens']:,}: a "
            "larger window finds fewer dead latents; the explorer shows the store's"
        )
    return line
