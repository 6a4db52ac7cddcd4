"""The names renamed in issue 30 (docs/changelog.md) stay importable: each old module path is a
shim that warns (DeprecationWarning) when imported and serves the new module's objects, each renamed
name answers under its old name (from its old module and, where it was exported, from the package
root) with a warning, and is the very object of its new name. ``saes.train`` is gone on purpose:
``from saes import train`` is the function."""

# rename-aliases-test (issue 30): generated with the rename, from its table (docs/changelog.md)

from __future__ import annotations

import importlib
import sys
import types
import warnings
from pathlib import Path

import pytest

MODULES = [
    ("interp.cache", "interp.activation_files"),
    ("interp.models.cache", "interp.models.converted_weights"),
    ("interp.data.sources", "interp.data.text_sources"),
    ("interp.io", "interp.atomic_files"),
    ("interp.fast_forward", "interp.models.fast_forward"),
    ("saes.train_config", "saes.training.config"),
    ("saes.train_log", "saes.training.log"),
    ("saes.step", "saes.training.step"),
    ("saes.job", "saes.training.job"),
    ("saes.optim", "saes.training.optim"),
    ("saes.losses", "saes.training.losses"),
    ("saes.memory", "saes.training.memory"),
    ("saes.distributed", "saes.training.distributed"),
    ("saes.checkpoint", "saes.training.checkpoint"),
    ("saes.run_status", "saes.training.run_status"),
    ("saes.sweep", "saes.training.sweep"),
    ("saes.geometric_median", "saes.training.geometric_median"),
    ("saes.sources", "saes.training.activation_sources"),
    ("saes.multi", "saes.training.shared_stream"),
    ("saes.evals", "saes.evaluation.evaluate"),
    ("saes.eval_metrics", "saes.evaluation.metrics"),
    ("saes.foreign", "saes.formats"),
]
NAMES = [
    ("interp.activation_files", "ActivationCache", "ActivationFiles"),
    ("interp.activation_files", "CacheWriter", "ActivationFilesWriter"),
    ("interp.activation_files", "CacheError", "ActivationFilesError"),
    ("interp.activation_files", "CacheManifest", "ActivationManifest"),
    ("interp.activation_files", "check_cache", "check_activation_files"),
    ("interp.activation_files", "CACHE_DTYPES", "ACTIVATION_DTYPES"),
    ("saes.training.activation_sources", "CacheSource", "ActivationFilesSource"),
]
OLD_MODULE = {new: old for old, new in MODULES}
ROOT_RENAMED = {"interp": {"ActivationCache": "interp.activation_files.ActivationFiles"}}


def _fresh_import(name: str) -> types.ModuleType:
    sys.modules.pop(name, None)
    return importlib.import_module(name)


@pytest.mark.parametrize(("old", "new"), MODULES, ids=[o for o, _ in MODULES])
def test_old_module_path_warns_and_serves_the_new_module(old, new):
    with pytest.warns(DeprecationWarning, match=rf"{old} is deprecated: it is now {new}"):
        shim = _fresh_import(old)
    target = importlib.import_module(new)
    public = [
        k
        for k, v in vars(target).items()
        if not k.startswith("_") and not isinstance(v, types.ModuleType)
    ]
    assert public, new
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # plain names come without a further warning
        for name in public:
            assert getattr(shim, name) is getattr(target, name), f"{old}.{name}"
        with pytest.raises(AttributeError, match=f"module '{old}' has no attribute 'nope'"):
            shim.nope  # noqa: B018
        importlib.import_module(old)  # imported again: no second warning


@pytest.mark.parametrize(("module", "old", "new"), NAMES, ids=[o for _, o, _ in NAMES])
def test_old_name_warns_and_is_the_new_object(module, old, new):
    obj = getattr(importlib.import_module(module), new)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        shim = importlib.import_module(OLD_MODULE[module])
    with pytest.warns(DeprecationWarning, match=rf"{OLD_MODULE[module]}\.{old} is deprecated"):
        assert getattr(shim, old) is obj
    namespace: dict = {}
    with pytest.warns(DeprecationWarning, match=rf"\.{old} is deprecated"):
        exec(f"from {OLD_MODULE[module]} import {old} as got", namespace)
    assert namespace["got"] is obj


@pytest.mark.parametrize(
    ("root", "old", "where"),
    [(r, o, w) for r, names in ROOT_RENAMED.items() for o, w in names.items()],
)
def test_root_keeps_its_renamed_exports(root, old, where):
    pkg = importlib.import_module(root)
    module, _, new = where.rpartition(".")
    with pytest.warns(DeprecationWarning, match=rf"{root}\.{old} is deprecated: it is now {where}"):
        assert getattr(pkg, old) is getattr(importlib.import_module(module), new)
    assert old not in pkg.__all__ and old not in pkg._EXPORTS  # advertised under its new name only
    assert new in pkg.__all__


def test_the_warning_points_at_the_importing_line():
    with pytest.warns(DeprecationWarning) as record:
        _fresh_import(MODULES[0][0])
    assert record[0].filename == __file__


def test_saes_train_is_the_function_not_a_module():
    import saes
    from saes.training.loop import train as loop_train

    with warnings.catch_warnings():
        warnings.simplefilter("error")
        from saes import train
    assert train is loop_train and callable(train) and not isinstance(train, types.ModuleType)
    assert "train" in saes.__all__
    package = Path(saes.__file__).parent
    assert not (package / "train.py").exists() and not (package / "train").exists()
    assert saes.train is loop_train
