"""Test helper: a run config from the flat key list the tests were written with.

``flat_config(k=8, lr=1e-3)`` is ``RunConfig(sae={"k": 8}, optim={"lr": 1e-3})``: each flat key
is put in its section by ``saes.train_config.nest_flat`` (the reader of old run folders).
"""

from __future__ import annotations

from typing import Any

from saes.train_config import RunConfig, nest_flat


def flat_config(**flat: Any) -> RunConfig:
    return RunConfig(**nest_flat(flat))


def nested(**flat: Any) -> dict[str, Any]:
    """The nested mapping of flat keys (for config files and sweep bases)."""
    return nest_flat(flat)
