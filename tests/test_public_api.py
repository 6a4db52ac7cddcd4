"""The package roots offer the public API (``from interp import load_model``, ``from saes import
FeatureStore``, ``from circuits import run_experiment``): every advertised name resolves to the
object its module defines (under the root's own name where it gives one: ``saes.dark_matter_table`` is
``saes.analysis.dark_matter.cli.format_table``), also after every submodule has been imported (a submodule of the same name
would otherwise shadow it), and an unknown name fails with the package's own AttributeError."""

from __future__ import annotations

import importlib
import importlib.util
import pkgutil
import types
import warnings

import pytest

import circuits
import interp
import saes
from interp._lazy import split_spec

ROOTS = [interp, saes, circuits]


def _import_all(pkg) -> None:
    for info in pkgutil.walk_packages(pkg.__path__, pkg.__name__ + "."):
        if ".cli" in info.name or info.name.endswith("__main__"):
            continue
        with warnings.catch_warnings():  # the old module paths, kept as shims, warn when imported
            warnings.filterwarnings("ignore", ".* is deprecated: it is now", DeprecationWarning)
            importlib.import_module(info.name)


@pytest.mark.parametrize("root", ROOTS, ids=lambda r: r.__name__)
def test_every_root_name_is_what_its_module_defines(root):
    _import_all(root)  # submodules bound as attributes of the root must not shadow an export
    exports = root._EXPORTS
    assert exports and set(exports) <= set(root.__all__)
    for name, spec in exports.items():
        value = getattr(root, name)
        assert not isinstance(value, types.ModuleType), f"{root.__name__}.{name} is a module"
        module, attribute = split_spec(name, spec)
        assert value is getattr(importlib.import_module(module), attribute), name
        assert name in dir(root)


def test_the_trainer_is_train_at_the_root_even_once_the_training_modules_are_imported():
    """``saes.train`` is the function: no submodule of that name exists to replace it."""
    import saes.training.loop
    from saes.training.loop import train

    assert saes.train is train and callable(saes.train)
    assert importlib.util.find_spec("saes.train") is None


@pytest.mark.parametrize("root", ROOTS, ids=lambda r: r.__name__)
def test_unknown_root_name_is_a_clear_attribute_error(root):
    with pytest.raises(AttributeError, match=f"module '{root.__name__}' has no attribute 'nope'"):
        root.nope  # noqa: B018
