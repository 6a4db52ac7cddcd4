"""``interp darkmatter``, registered on ``interp`` through the ``interp.commands`` entry points
(pyproject.toml) and forwarded to :mod:`saes.analysis.dark_matter.cli`, which is imported only when
the command runs (so that ``interp --help`` imports none of the analysis)."""

from __future__ import annotations

import typer

from interp.commands import forward


def register(app: typer.Typer) -> None:
    forward(
        app,
        "darkmatter",
        "saes.analysis.dark_matter.cli",
        "Split SAE errors into linear and nonlinear dark matter.",
    )
