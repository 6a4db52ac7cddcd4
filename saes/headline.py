"""The headline metrics of an SAE run: the few numbers every listing of runs shows, in one place.

``interp runs`` (:func:`saes.runs.runs_table`) and the explorer's Runs page show them as columns,
with these labels and formats; a sweep's summary (:mod:`saes.training.sweep`) has one column each (named by
``name``, as in ``metrics.json``) and prints them in its table; ``interp train`` / ``interp eval``
print them first in their metrics table. Before a run is evaluated its training log has estimates
of some of them (``log_name``, the key in ``train_log.jsonl``), which listings show instead.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Headline:
    """One headline metric."""

    name: str
    """its key in ``metrics.json``"""
    label: str
    """its column header in tables (``interp runs``, a sweep's, the explorer's Runs page)"""
    fmt: str
    """a format spec for one value (``format(v, fmt)``)"""
    log_name: str | None
    """the same quantity's key in the training log (``train_log.jsonl``), None if it has none"""

    def format(self, value: object) -> str:
        """``value`` in this metric's format; ``-`` for a missing one."""
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return format(value, self.fmt)
        return "-"


HEADLINE: tuple[Headline, ...] = (
    Headline("fvu", "FVU", ".3f", "fvu"),
    Headline("l0_mean", "L0", ".1f", "l0"),
    Headline("dead_fraction", "dead (never fired)", ".1%", "dead_fraction"),
    Headline("ce_loss_recovered", "CE recovered", ".1%", None),
)
HEADLINE_NAMES: tuple[str, ...] = tuple(h.name for h in HEADLINE)


def from_log(record: dict) -> dict:
    """The headline metrics a training-log record estimates, by their ``metrics.json`` names (None
    where the log has no estimate)."""
    return {h.name: record.get(h.log_name) if h.log_name else None for h in HEADLINE}
