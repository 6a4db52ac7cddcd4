"""Page discovery: every module of :mod:`dashboards.views` that defines a page.

A page module defines ``TITLE`` (the sidebar name), ``ORDER`` (its place in the sidebar) and
``render(ctx)`` (draws the page for a :class:`dashboards.context.Context`). Its key (the
``?page=`` query parameter) is the module's name. Adding a page is adding such a file.
"""

from __future__ import annotations

import importlib
import pkgutil
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import dashboards.views as views


@dataclass(frozen=True)
class Page:
    key: str
    title: str
    order: int
    render: Callable[[Any], None]


def pages() -> list[Page]:
    """Every page, in sidebar order. A module missing ``TITLE``/``ORDER``/``render`` is an error
    that names it (a half-written page should not vanish silently)."""
    found = []
    for info in pkgutil.iter_modules(views.__path__):
        if info.name.startswith("_"):
            continue
        mod = importlib.import_module(f"{views.__name__}.{info.name}")
        missing = [a for a in ("TITLE", "ORDER", "render") if not hasattr(mod, a)]
        if missing:
            raise TypeError(f"dashboards/views/{info.name}.py is not a page: missing {missing}")
        found.append(Page(info.name, mod.TITLE, int(mod.ORDER), mod.render))
    return sorted(found, key=lambda p: (p.order, p.key))
