"""Page discovery: every module of :mod:`dashboards.views` that defines a page.

A page module defines ``TITLE`` (the sidebar name), ``ORDER`` (its place in the sidebar) and
``render(ctx)`` (draws the page for a :class:`dashboards.context.Context`). Its key (the
``?page=`` query parameter) is the module's name. Adding a page is adding such a file.

The sidebar needs only each module's title and order, so they are read from its source (literal
assignments) and a module is imported when its page is first drawn: opening the Feature page
does not import the Circuits or Sparsity pages' analyses (``import_all`` imports every page, as
``dashboards.serve`` does before the server starts).
"""

from __future__ import annotations

import ast
import importlib
import pkgutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import dashboards.views as views


@dataclass(frozen=True)
class Page:
    key: str
    title: str
    order: int

    @property
    def module(self) -> str:
        return f"{views.__name__}.{self.key}"

    def render(self, ctx: Any) -> None:
        """Import the page's module (once) and draw the page."""
        importlib.import_module(self.module).render(ctx)


def _declared(path: Path) -> dict[str, Any]:
    """The module's literal top-level ``TITLE`` and ``ORDER``, and whether it defines ``render``."""
    found: dict[str, Any] = {}
    for node in ast.parse(path.read_text(), filename=str(path)).body:
        if isinstance(node, ast.Assign) and len(node.targets) == 1:
            name = getattr(node.targets[0], "id", None)
            if name in ("TITLE", "ORDER"):
                try:
                    found[name] = ast.literal_eval(node.value)
                except ValueError as e:
                    raise TypeError(
                        f"{path}: {name} must be a literal (the sidebar reads it)"
                    ) from e
        elif isinstance(node, ast.FunctionDef) and node.name == "render":
            found["render"] = True
    return found


def pages() -> list[Page]:
    """Every page, in sidebar order. A module missing ``TITLE``/``ORDER``/``render`` is an error
    that names it (a half-written page should not vanish silently)."""
    found = []
    for info in pkgutil.iter_modules(views.__path__):
        if info.name.startswith("_"):
            continue
        path = Path(views.__path__[0]) / f"{info.name}.py"
        have = _declared(path)
        missing = [a for a in ("TITLE", "ORDER", "render") if a not in have]
        if missing:
            raise TypeError(f"dashboards/views/{info.name}.py is not a page: missing {missing}")
        found.append(Page(info.name, str(have["TITLE"]), int(have["ORDER"])))
    return sorted(found, key=lambda p: (p.order, p.key))


def import_all() -> None:
    """Import every page's module (a server does this once before its first session)."""
    for p in pages():
        importlib.import_module(p.module)
