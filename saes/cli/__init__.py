"""The ``saes`` commands of ``interp``: training (:mod:`saes.cli.train`: kernels, config, train,
sweep, demo), results (:mod:`saes.cli.runs`: eval, runs) and the feature explorer
(:mod:`saes.cli.dashboard`: dashboard build / serve). Registered on ``interp`` through the
``interp.commands`` entry points (pyproject.toml); the modules here import typer only, and ``saes``
inside the commands, so that ``interp --help`` stays fast."""

from __future__ import annotations

import typer

from saes.cli import dashboard, runs, train


def register(app: typer.Typer) -> None:
    """Add the SAE commands to the ``interp`` app, in the order ``interp --help`` lists them."""
    app.command("kernels")(train.kernels_cmd)
    app.command("config")(train.config_cmd)
    app.command("train")(train.train_cmd)
    app.command("sweep")(train.sweep_cmd)
    app.command("eval")(runs.eval_cmd)
    app.command("runs")(runs.runs_cmd)
    app.command("demo")(train.demo_cmd)
    app.add_typer(dashboard.app, name="dashboard")
