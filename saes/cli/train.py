"""``interp kernels``, ``config``, ``train``, ``sweep`` and ``demo``: set up, configure and run
SAE training."""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import typer

from interp.commands import fail
from saes.cli.runs import dead_latents_line, print_metrics


def kernels_cmd(
    build: bool = typer.Option(
        False, "--build", help="compile the C++ top-k kernel now (once; cached by torch)"
    ),
) -> None:
    """Which top-k selection kernel SAE training uses on CPU; --build compiles the C++ one."""
    from saes import kernels

    if build:
        typer.echo("building the C++ top-k kernel (once, 30-60 s) ...")
        kernels.enable_native(True)
    status = kernels.native_status()
    typer.echo(json.dumps(status, indent=2))
    typer.echo(f"CPU top-k selection: {kernels.selection_kernel()}")
    if build and not status["built"]:
        if status["compiler"] is None:  # the one accepted reason; said loudly, exit 0
            typer.echo(
                "="
                * 78
                + "\nNO C++ COMPILER on this machine ($CXX / c++ not found): the C++ top-k cannot "
                "be built.\nTraining uses the pure-torch selection (about half the selection speed), and "
                "the C++ kernel tests are skipped.\n" + "=" * 78,
                err=True,
            )
            return
        typer.echo(
            f"error: the C++ top-k failed to build with {status['compiler']}: {status['error']}",
            err=True,
        )
        raise typer.Exit(1)


def config_cmd(
    config: Path | None = typer.Option(None, "--config", "-c", help="show this config resolved"),
    set_: list[str] = typer.Option([], "--set", help="override by dotted key (repeatable)"),
    variants: bool = typer.Option(
        False, "--variants", help="list the registered selection rules (sae.variant) and stop"
    ),
) -> None:
    """Every run-config field with its default and docstring (or, with --config/--set, the
    resolved config as JSON; with --variants, the selection rules). The text comes from the code
    (pydantic attribute docstrings, each variant's class docstring)."""
    from saes.training.config import describe_fields, load_run_config

    if variants:
        from saes.variants import variant_class, variant_names

        for name in variant_names():
            cls = variant_class(name)
            doc = (cls.__doc__ or sys.modules[cls.__module__].__doc__ or "").strip().splitlines()
            typer.echo(f"{name:<16} {doc[0] if doc else ''}")
        return
    if config is not None or set_:
        try:
            typer.echo(load_run_config(config, set_).model_dump_json(indent=2))
        except (ValueError, FileNotFoundError) as e:
            fail(e)
        return
    section = None
    for key, default, doc in describe_fields():
        head = key.split(".", 1)[0] if "." in key else "top level"
        if head != section:
            section = head
            typer.echo(f"\n[{section}]")
        typer.echo(f"  {key} = {default}")
        for line in (doc or "").splitlines():
            typer.echo(f"      {line.strip()}")


def train_cmd(
    config: Path | None = typer.Option(None, "--config", "-c", help="JSON or YAML run config"),
    set_: list[str] = typer.Option(
        [], "--set", help="override by dotted key: sae.k=64, optim.lr=1e-3 (repeatable)"
    ),
    resume: bool = typer.Option(False, "--resume", help="continue from the last good checkpoint"),
    no_eval: bool = typer.Option(False, "--no-eval", help="skip evaluation at the end"),
    plan: bool = typer.Option(
        False, "--plan", help="print the memory plan (what fits at which batch size) and stop"
    ),
) -> None:
    """Train an SAE (any variant) from a config file; with hooks/saes, many SAEs from one forward pass.
    Under torchrun: data parallel (or shard_hooks=true)."""
    from saes.training.config import load_run_config
    from saes.training.loop import TrainingDiverged, train

    try:
        cfg = load_run_config(config, set_)
        run_dir = train(cfg, resume=resume, evaluate=not no_eval, plan_only=plan)
    except (ValueError, FileNotFoundError, FileExistsError, TrainingDiverged) as e:
        fail(e)
    except KeyboardInterrupt:
        raise typer.Exit(130) from None
    if plan or os.environ.get("RANK", "0") != "0":  # under torchrun, rank 0 reports
        return
    if cfg.is_job:
        from saes.rundir import CONFIG_FILE, RunDir
        from saes.training.config import RunConfig
        from saes.training.sweep import summarize

        runs = sorted(p.parent for p in Path(run_dir).rglob(CONFIG_FILE))
        summarize([RunConfig.from_saved(RunDir(r).config(required=True)) for r in runs], run_dir)
        return
    print_metrics(run_dir)


def sweep_cmd(
    config: Path = typer.Option(
        ..., "--config", "-c", help="sweep config (YAML/JSON): base, grid, mode, out_dir"
    ),
    set_: list[str] = typer.Option(
        [], "--set", help="override a top-level key: key=value (repeatable)"
    ),
    resume: bool = typer.Option(
        False, "--resume", help="continue unfinished runs from their checkpoints"
    ),
) -> None:
    """Train a grid of SAEs (together, sequentially or in parallel processes sharing one activation
    cache); writes summary.json/.csv and an FVU-vs-L0 frontier figure (frontier.html)."""
    from saes.training.loop import TrainingDiverged
    from saes.training.memory import MemoryPlanError
    from saes.training.sweep import load_sweep_config, run_sweep

    try:
        sweep = load_sweep_config(config, set_)
        run_sweep(sweep, resume=resume)
    except (
        ValueError,
        FileNotFoundError,
        FileExistsError,
        TrainingDiverged,
        MemoryPlanError,
        RuntimeError,
    ) as e:
        fail(e)
    except KeyboardInterrupt:
        raise typer.Exit(130) from None
    typer.echo(
        f"summary: {Path(sweep.out_dir) / 'summary.csv'}, figure: {Path(sweep.out_dir) / 'frontier.html'}"
    )


def demo_cmd(
    out_dir: Path = typer.Option(Path("runs/demo-topk"), help="run folder"),
    train_tokens: int = typer.Option(
        400_000, help="training tokens (bench/results/demo.json records how long the default takes)"
    ),
    store_tokens: int = typer.Option(
        200_000, help="held-out tokens of the feature store built after training (0: none)"
    ),
) -> None:
    """The main job on the embedded defaults: TopK SAE (k=32, d_sae=4608) on SmolLM2 layer 15 over
    stdlib, evaluated, then its feature store for the explorer."""
    from saes.features import build_store
    from saes.rundir import RunDir
    from saes.training.config import load_run_config
    from saes.training.loop import train

    cfg_path = Path(__file__).resolve().parents[2] / "configs" / "demo_topk.json"
    cfg = load_run_config(
        cfg_path if cfg_path.exists() else None,
        [f"log.out_dir={json.dumps(str(out_dir))}", f"data.train_tokens={train_tokens}"],
    )
    folder = RunDir(out_dir)
    resume = folder.checkpoints_dir.exists()
    if resume and folder.metrics_path.exists():
        import shutil

        shutil.rmtree(out_dir)  # a finished demo is rerun from scratch
        resume = False
    run_dir = train(cfg, resume=resume)
    print_metrics(run_dir)
    if store_tokens > 0:
        typer.echo(f"building the feature store over {store_tokens:,} held-out tokens ...")
        store = build_store(run_dir, tokens=store_tokens, progress=True)
        m = json.loads((store / "manifest.json").read_text())
        typer.echo(
            f"feature store: {store} ({m['alive_latents']:,} live latents, "
            f"{m['dead_latents']:,} dead)"
        )
        typer.echo(dead_latents_line(m, RunDir(run_dir).metrics() or {}))
        typer.echo(f"open the explorer: interp dashboard serve {run_dir}")
