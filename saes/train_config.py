"""Deprecated: ``saes.train_config`` is now :mod:`saes.training.config` (renamed in issue 30; the
table is in docs/changelog.md). Importing this module warns once; its names are those of the new
module.
"""
# rename-shim (issue 30): an old module path kept importable; nothing in the project imports it

from __future__ import annotations

import saes.training.config as _new
from interp.deprecation import moved_module

_RENAMED: dict[str, str] = {}

__getattr__ = moved_module(__name__, _new, _RENAMED)
