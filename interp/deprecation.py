"""Old names kept importable after a rename (issue 30's "names that explain themselves").

A module that moved stays importable under its old path as a thin shim: importing the shim warns
once (a ``DeprecationWarning`` naming the new module), and every name of the new module is served
under the old path; a name that was renamed as well (``interp.cache.ActivationCache`` ->
``interp.activation_files.ActivationFiles``) still answers under its old name, warning each time it
is looked up. The package roots do the same for their renamed exports. The whole table is in
docs/changelog.md; the aliases go in a later release.

The warning is attributed to the code that imported or named the old path (the frames of the
import machinery, of the shims and of this module are skipped), so it shows up where the fix is.
"""

from __future__ import annotations

import importlib
import os
import sys
import types
import warnings
from collections.abc import Callable
from typing import Any

_IMPORTLIB = os.path.dirname(importlib.__file__)
# a module whose globals hold this name is alias machinery (a shim, or a package root's
# ``__getattr__`` with renamed exports); its frames are skipped when blaming a caller
MARKER = "_RENAMED"


def _caller_stacklevel() -> int:
    """The ``stacklevel`` that points ``warnings.warn`` (called from :func:`warn_renamed`) at the
    first frame outside the import machinery, this module and the alias machinery. ``warnings``
    itself passes over importlib's bootstrap frames without counting them; so does this."""
    frame = sys._getframe(2)  # the caller of warn_renamed
    level = 2
    while frame is not None:
        name = frame.f_code.co_filename
        internal = "importlib" in name and "_bootstrap" in name  # as warnings counts frames
        machinery = (
            name == __file__
            or name.startswith(_IMPORTLIB)
            or (MARKER in frame.f_globals and frame.f_code.co_name in ("<module>", "__getattr__"))
        )
        if not internal and not machinery:
            return level
        frame = frame.f_back
        level += 0 if internal else 1
    return level


def warn_renamed(old: str, new: str) -> None:
    """Warn that ``old`` (a module path or a dotted name) is now ``new``."""
    warnings.warn(
        f"{old} is deprecated: it is now {new} (renamed in interp 0.1.0, see the changelog); "
        "the old name will be removed",
        DeprecationWarning,
        stacklevel=_caller_stacklevel(),
    )


def moved_module(
    old: str, new: types.ModuleType, renamed: dict[str, str] | None = None
) -> Callable[[str], Any]:
    """The module ``__getattr__`` of the shim left at ``old`` for ``new``.

    Called while the shim is imported, so it warns then (once: the shim stays in ``sys.modules``).
    The returned function serves every attribute of ``new``; a name in ``renamed`` (old name ->
    new name) warns when looked up and returns the new name's object.
    """
    warn_renamed(old, new.__name__)
    renamed = dict(renamed or {})

    def __getattr__(name: str) -> Any:
        if name in renamed:
            warn_renamed(f"{old}.{name}", f"{new.__name__}.{renamed[name]}")
            return getattr(new, renamed[name])
        try:
            return getattr(new, name)
        except AttributeError:
            raise AttributeError(f"module {old!r} has no attribute {name!r}") from None

    return __getattr__


def renamed_export(package: str, name: str, renamed: dict[str, str]) -> Any:
    """A package root's renamed export: ``renamed[name]`` is ``"module.NewName"``; warns and
    returns that object."""
    module, _, new = renamed[name].rpartition(".")
    if sys._getframe(2).f_code.co_name != "_handle_fromlist":  # ``from pkg import old`` asks twice
        warn_renamed(f"{package}.{name}", renamed[name])
    return getattr(importlib.import_module(module), new)
