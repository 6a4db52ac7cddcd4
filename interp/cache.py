"""Deprecated: ``interp.cache`` is now :mod:`interp.activation_files` (renamed in issue 30; the
table is in docs/changelog.md). Importing this module warns once; its names are those of the new
module. The renamed names (``ActivationCache`` -> ``ActivationFiles``, ``CacheWriter`` ->
``ActivationFilesWriter``, ``CacheError`` -> ``ActivationFilesError``, ``CacheManifest`` ->
``ActivationManifest``, ``check_cache`` -> ``check_activation_files``, ``CACHE_DTYPES`` ->
``ACTIVATION_DTYPES``) still answer, warning when used.
"""
# rename-shim (issue 30): an old module path kept importable; nothing in the project imports it

from __future__ import annotations

import interp.activation_files as _new
from interp.deprecation import moved_module

_RENAMED: dict[str, str] = {
    "ActivationCache": "ActivationFiles",
    "CacheWriter": "ActivationFilesWriter",
    "CacheError": "ActivationFilesError",
    "CacheManifest": "ActivationManifest",
    "check_cache": "check_activation_files",
    "CACHE_DTYPES": "ACTIVATION_DTYPES",
}

__getattr__ = moved_module(__name__, _new, _RENAMED)
