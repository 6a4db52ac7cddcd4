"""The patching ground truth of a task on a model, as a JSON fixture.

:func:`ground_truth` builds the task's prompts (positives the model gets right, aligned
negatives), measures every head's single-head patching effect (:func:`circuits.patching.
head_effects`), measures the joint effect of every prefix of the heads sorted by effect (the
``curve``, :func:`circuits.patching.prefix_curve`) and finds the circuit: the smallest prefix whose
joint patch moves the metric by at least ``share`` of (clean - corrupt) (:func:`circuits.patching.
find_circuit`). The circuit at any other share is read off the stored curve
(:func:`circuit_at_share`). The record names the model it was made on, the command that made it
and its wall time.

Fixtures for SmolLM2 ship in ``circuits/fixtures/<task>.json``. :func:`save_ground_truth` refuses
to write there unless told to in so many words (``replace_shipped=True``, the CLI's
``--replace-shipped-fixture``), and :func:`load_ground_truth` checks the record's model against the
one asked for.
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
from circuits.patching import Mode, effect_order, find_circuit, head_effects, smallest_prefix
from circuits.tasks import TaskName, build_task

__all__ = [
    "FIXTURES",
    "SHARES",
    "circuit_at_share",
    "fixture_path",
    "ground_truth",
    "is_shipped",
    "load_ground_truth",
    "save_ground_truth",
]

SHARES = (0.7, 0.8, 0.9)  # the shares whose circuits the benchmark reports

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
        model,
        data,
        eff["effects"],
        eff["clean"],
        eff["corrupt"],
        share,
        mode,
        eff["cache"],
        progress=progress,
    )
    t3 = time.perf_counter()
    labels = head_labels(model.cfg.n_layers, model.cfg.n_heads)
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
        "reached": circ["reached"],
        "curve": circ["curve"],
        "curve_is": "curve[k]: the joint effect of patching the first k heads of the effect order "
        "(effects sorted descending, ties by index), k = 0..n_layers * n_heads",
        "example_positive": data.texts[0],
        "seconds": {
            "prompts": t1 - t0,
            "single_head_patching": t2 - t1,
            "prefix_curve": t3 - t2,
            "total": t3 - t0,
        },
        "command": command or " ".join(shlex.quote(a) for a in sys.argv),
        "machine": {"python": platform.python_version(), "processor": platform.machine()},
    }


def is_shipped(path: Path) -> bool:
    """Whether ``path`` lies in the package's fixture folder."""
    return Path(path).resolve().is_relative_to(FIXTURES.resolve())


def save_ground_truth(record: dict[str, Any], path: Path, *, replace_shipped: bool = False) -> None:
    """Write ``record`` to ``path``; a path in the package's fixture folder (the shipped SmolLM2
    fixtures) is refused unless ``replace_shipped``."""
    path = Path(path)
    if is_shipped(path) and not replace_shipped:
        raise ValueError(
            f"{path} is in the package's shipped fixtures ({FIXTURES}); refusing to write there. "
            "Write elsewhere (--out), or pass --replace-shipped-fixture to replace it on purpose"
        )
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(record, indent=1) + "\n")


def load_ground_truth(path: Path, model: str | None = None) -> dict[str, Any]:
    """A ground-truth record, with a clear error when the file is missing or malformed, or (with
    ``model``) was made on another model."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(
            f"no ground-truth fixture at {path}; make it with "
            "`interp circuits ground-truth --task TASK --model MODEL --out PATH`"
        )
    rec = json.loads(path.read_text())
    for key in ("task", "model", "effects", "circuit", "n_layers", "n_heads"):
        if key not in rec:
            raise ValueError(f"{path}: the ground-truth record has no {key!r}")
    if model is not None and rec["model"] != model:
        raise ValueError(
            f"{path}: the ground truth was made on model {rec['model']!r}, not on the requested "
            f"{model!r}; make one for {model!r} with `interp circuits ground-truth --task "
            f"{rec['task']} --model {model}`"
        )
    n = rec["n_layers"] * rec["n_heads"]
    if len(rec["effects"]) != n:
        raise ValueError(
            f"{path}: {len(rec['effects'])} effects for {rec['n_layers']} x {rec['n_heads']} heads"
        )
    if "curve" in rec and len(rec["curve"]) != n + 1:
        raise ValueError(f"{path}: the prefix curve has {len(rec['curve'])} points, not {n + 1}")
    return rec


def circuit_at_share(rec: dict[str, Any], share: float) -> dict[str, Any]:
    """The circuit of a ground-truth record at ``share``, read off its prefix curve: the smallest
    prefix of the heads sorted by effect whose joint effect reaches ``share`` (all heads, with
    ``reached`` False, when none does)."""
    if "curve" not in rec:
        raise ValueError(
            f"the {rec.get('task', '?')} ground truth has no prefix curve (made before the scan); "
            "remake it with `interp circuits ground-truth`"
        )
    order = effect_order(rec["effects"])
    k = smallest_prefix(rec["curve"], share)
    reached = k is not None
    k = len(order) if k is None else k
    labels = head_labels(rec["n_layers"], rec["n_heads"])
    return {
        "share": share,
        "k": k,
        "circuit": [labels[i] for i in order[:k]],
        "joint_effect": float(rec["curve"][k]),
        "reached": reached,
    }
