"""The patching ground truth of a task on a model, as a JSON fixture.

:func:`ground_truth` builds the task's prompts (positives the model gets right, aligned
negatives), measures every head's single-head patching effect (:func:`circuits.patching.
head_effects`), and finds the circuit: the smallest prefix of heads sorted by effect whose joint
patch moves the metric by at least ``share`` of (clean - corrupt) (:func:`circuits.patching.
find_circuit`). The fixture records the command that made it and its wall time; fixtures for
SmolLM2 live in ``circuits/fixtures/<task>.json``.
"""

from __future__ import annotations

import json
import platform
import shlex
import sys
import time
from pathlib import Path
from typing import Any

from circuits.discrete_codes import head_labels
from circuits.patching import Mode, find_circuit, head_effects
from circuits.tasks import TaskName, build_task

__all__ = ["FIXTURES", "fixture_path", "ground_truth", "load_ground_truth", "save_ground_truth"]

FIXTURES = Path(__file__).resolve().parent / "fixtures"


def fixture_path(task: str) -> Path:
    return FIXTURES / f"{task}.json"


def ground_truth(
    model,
    task: TaskName,
    *,
    model_name: str,
    n: int = 40,
    seed: int = 0,
    share: float = 0.8,
    mode: Mode = "patch",
    progress: bool = True,
    command: str | None = None,
) -> dict[str, Any]:
    """The ground-truth record of ``task`` on ``model`` (see the module docstring)."""
    t0 = time.perf_counter()
    data = build_task(task, model, n, seed)
    if len(data) < 2:
        raise ValueError(f"{task}: only {len(data)} positives the model gets right; need >= 2")
    t1 = time.perf_counter()
    eff = head_effects(model, data, mode, progress=progress)
    t2 = time.perf_counter()
    circ = find_circuit(
        model, data, eff["effects"], eff["clean"], eff["corrupt"], share, mode, eff["cache"]
    )
    t3 = time.perf_counter()
    labels = head_labels(model.cfg.n_layers, model.cfg.n_heads)
    # stricter shares, for a larger reference circuit (a few joint forwards each)
    larger = {}
    for s in (0.9, 0.95):
        if s > share:
            c = find_circuit(
                model, data, eff["effects"], eff["clean"], eff["corrupt"], s, mode, eff["cache"]
            )
            larger[str(s)] = {"circuit": [labels[i] for i in c["heads"]], "k": c["k"]}
    return {
        "task": task,
        "model": model_name,
        "n_layers": model.cfg.n_layers,
        "n_heads": model.cfg.n_heads,
        "n_prompts": len(data),
        "seed": seed,
        "share": share,
        "mode": mode,
        "counts": data.counts,
        "clean_metric": eff["clean"],
        "corrupt_metric": eff["corrupt"],
        "effects": [float(x) for x in eff["effects"]],
        "circuit": [labels[i] for i in circ["heads"]],
        "k": circ["k"],
        "joint_effect": circ["joint_effect"],
        "joint_effect_k_minus_1": circ["joint_effect_k_minus_1"],
        "joint_effects_evaluated": circ["evaluated"],
        "circuits_at_larger_shares": larger,
        "example_positive": data.texts[0],
        "seconds": {
            "prompts": t1 - t0,
            "single_head_patching": t2 - t1,
            "circuit_search": t3 - t2,
            "total": t3 - t0,
        },
        "command": command or " ".join(shlex.quote(a) for a in sys.argv),
        "machine": {"python": platform.python_version(), "processor": platform.machine()},
    }


def save_ground_truth(record: dict[str, Any], path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(record, indent=1) + "\n")


def load_ground_truth(path: Path) -> dict[str, Any]:
    """A ground-truth record, with a clear error when the file is missing or malformed."""
    if not path.is_file():
        raise FileNotFoundError(
            f"no ground-truth fixture at {path}; make it with "
            "`python -m circuits.cli ground-truth --task TASK`"
        )
    rec = json.loads(path.read_text())
    for key in ("task", "model", "effects", "circuit", "n_layers", "n_heads"):
        if key not in rec:
            raise ValueError(f"{path}: the ground-truth record has no {key!r}")
    if len(rec["effects"]) != rec["n_layers"] * rec["n_heads"]:
        raise ValueError(
            f"{path}: {len(rec['effects'])} effects for {rec['n_layers']} x {rec['n_heads']} heads"
        )
    return rec
