"""The package roots offer the public API (``from interp import load_model``, ``from saes import
FeatureStore``, ``from circuits import run_experiment``): every advertised name resolves to the
object its module defines (under the root's own name where it gives one: ``saes.train_sae`` is
``saes.train.train``), also after every submodule has been imported (a submodule of the same name
would otherwise shadow it), and an unknown name fails with the package's own AttributeError."""

from __future__ import annotations

import importlib
import pkgutil
import types

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


def test_the_trainer_is_train_sae_at_the_root():
    from saes.train import train

    assert saes.train_sae is train


@pytest.mark.parametrize("root", ROOTS, ids=lambda r: r.__name__)
def test_unknown_root_name_is_a_clear_attribute_error(root):
    with pytest.raises(AttributeError, match=f"module '{root.__name__}' has no attribute 'nope'"):
        root.nope  # noqa: B018
