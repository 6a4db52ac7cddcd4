"""Lazy package roots: the public names a package root offers, each imported on first use.

A root (``interp``, ``saes``, ``circuits``) maps each public name to where it lives: ``"module"``
(the name is that module's attribute of the same name) or ``"module:attribute"`` (the root's name
for an attribute the root names otherwise, e.g. ``saes.dark_matter_table`` for
``saes.analysis.dark_matter.cli.format_table``). ``modules`` maps names to submodules a user reaches as
attributes of the root (``saes.figures``).
"""

from __future__ import annotations

import importlib
import sys
from collections.abc import Callable
from typing import Any


def split_spec(name: str, spec: str) -> tuple[str, str]:
    """(module, attribute) of the public ``name`` exported as ``spec``."""
    module, _, attribute = spec.partition(":")
    return module, attribute or name


def lazy_root(
    package: str, exports: dict[str, str], modules: dict[str, str] | None = None
) -> tuple[Callable[[str], Any], Callable[[], list[str]]]:
    """``__getattr__`` and ``__dir__`` for the root ``package`` (``__all__`` is the caller's)."""
    modules = modules or {}
    public = set(exports) | set(modules)

    def __getattr__(name: str) -> Any:
        if name in modules:
            value = importlib.import_module(modules[name])
        elif name in exports:
            module, attribute = split_spec(name, exports[name])
            value = getattr(importlib.import_module(module), attribute)
        else:
            raise AttributeError(f"module {package!r} has no attribute {name!r}")
        sys.modules[package].__dict__[name] = value  # later lookups skip __getattr__
        return value

    def __dir__() -> list[str]:
        return sorted(set(sys.modules[package].__dict__) | public)

    return __getattr__, __dir__
