"""How the ``interp`` command line is put together from the packages' own commands.

``interp.cli`` holds the model-side commands (``models``, ``cache``); every other sub-command is
added by the package it belongs to, through the entry-point group ``interp.commands``
(``[project.entry-points."interp.commands"]`` in pyproject.toml). Each entry point names a
function ``register(app)`` that adds commands or typer sub-apps to the root ``typer.Typer``. They
are loaded in the order of their names (``10-saes``, ``20-analysis``, ...: installed metadata keeps
no order of its own), and ``interp --help`` lists their commands in that order (typer lists
sub-apps, such as ``dashboard``, after the plain commands).

A registering module is imported by every ``interp`` call, ``--help`` included, so it imports
nothing heavy at the top: typer and the standard library, the project's modules inside the command
bodies (which only modules named ``cli``, or under a ``cli`` package, may do: tests/test_layout.py).
A command group whose module imports heavy ones at the top is registered with :func:`forward`,
which imports it only when the command runs.

The entry points live in the installed package's metadata: an install from before the group
existed, or a broken one, has none (or stale ones), and the root command then says so and how to
repair it (``pip install -e .`` in the repository) before anything else.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from importlib.metadata import EntryPoint, distributions

import typer
from typer.core import TyperGroup

GROUP = "interp.commands"
REINSTALL = "reinstall the package: `pip install -e .` in the repository (or `make setup`)"

# what went wrong loading the group, said by Root before every command
_problems: list[str] = []


def fail(e: Exception) -> None:
    """The CLI's one way to stop on a user error: a red ``error: ...`` line, exit code 2."""
    typer.secho(f"error: {e}", fg=typer.colors.RED, err=True)
    raise typer.Exit(2)


def forward(app: typer.Typer, name: str, module: str, help_text: str) -> None:
    """Add ``interp NAME ...`` that runs ``module.app`` (a typer app) on the rest of the command
    line; ``module`` is imported only then, so that ``interp --help`` imports none of it."""

    @app.command(
        name,
        help=f"{help_text} (`interp {name} --help` for its options)",
        context_settings={"allow_extra_args": True, "ignore_unknown_options": True},
        add_help_option=False,
    )
    def forwarded(ctx: typer.Context) -> None:
        sub = importlib.import_module(module).app
        sub(args=list(ctx.args), prog_name=f"interp {name}")


def command_entry_points() -> list[EntryPoint]:
    """The group's entry points, in the order of their names, from every installed metadata of the
    ``interp`` distribution on the path. ``importlib.metadata.entry_points`` reads only the first
    one it meets, and a stale ``interp.egg-info`` left in the working directory (the repository
    root comes first on ``sys.path``) would then hide the install's group."""
    found: dict[str, EntryPoint] = {}
    for dist in distributions():
        if (dist.metadata["Name"] or "").lower() == "interp":
            for ep in dist.entry_points.select(group=GROUP):
                found.setdefault(ep.name, ep)
    return sorted(found.values(), key=lambda ep: ep.name)


def discover(app: typer.Typer) -> list[str]:
    """Load every entry point of the group and let it register its commands on ``app``; returns
    the names of those that loaded. What failed is kept for :class:`Root` to report."""
    _problems.clear()
    loaded = []
    eps = command_entry_points()
    if not eps:
        _problems.append(
            f"the `interp` sub-commands (train, eval, runs, dashboard, ...) are not registered: "
            f"this install has no `{GROUP}` entry points; {REINSTALL}"
        )
    for ep in eps:
        try:
            register: Callable[[typer.Typer], None] = ep.load()
            register(app)
        except Exception as e:  # a stale or broken install: say which and go on with the rest
            _problems.append(
                f"the `{ep.name}` commands ({ep.value}) failed to load: "
                f"{type(e).__name__}: {e}; {REINSTALL}"
            )
        else:
            loaded.append(ep.name)
    return loaded


class Root(TyperGroup):
    """The root group of ``interp``: says what went wrong loading the commands (on stderr) before
    running whatever was asked."""

    def main(self, *args, **kwargs):
        for problem in _problems:
            typer.secho(f"error: {problem}", fg=typer.colors.RED, err=True)
        return super().main(*args, **kwargs)
