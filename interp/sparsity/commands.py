"""``interp sparsity``, registered on ``interp`` through the ``interp.commands`` entry points
(pyproject.toml) and forwarded to :mod:`interp.sparsity.cli`, which is imported only when the command
runs (so that ``interp --help`` imports none of the analysis)."""

from __future__ import annotations

import typer

from interp.commands import forward


def register(app: typer.Typer) -> None:
    forward(
        app,
        "sparsity",
        "interp.sparsity.cli",
        "Activation sparsity: measure (CETT, PPL-p%), fit the laws.",
    )
