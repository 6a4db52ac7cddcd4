"""``interp circuits``, registered on ``interp`` through the ``interp.commands`` entry points
(pyproject.toml) and forwarded to :mod:`circuits.cli`, which is imported only when the command runs
(so that ``interp --help`` imports none of circuits)."""

from __future__ import annotations

import typer

from interp.commands import forward


def register(app: typer.Typer) -> None:
    forward(
        app,
        "circuits",
        "circuits.cli",
        "Circuit discovery from discrete SAE codes, against patching.",
    )
