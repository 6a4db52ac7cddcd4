"""Test helper: the notebooks under ``notebooks/``, checked for committed outputs and executed.

Execution runs in a temporary copy (the committed file is never written), in the venv's
``python3`` kernel (jupyter_client starts the kernel spec's ``python`` as ``sys.executable``, so
the kernel is this interpreter and sees the editable install), with ``INTERP_NB_SIZE`` set and
``INTERP_NB_OUT`` pointing into the temporary folder (where the notebooks write their runs).

A guard cell is put in front of the notebook: any warning raised from a module of the project's
own packages (the frame that calls ``warnings.warn``, whatever its ``stacklevel`` says) becomes a
``PackageWarningError`` in the cell that caused it, and so do warnings that third-party code
attributes to our modules (``filterwarnings("error", module=...)``). Warnings of other libraries
pass as they do for a researcher.
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import nbformat

REPO = Path(__file__).resolve().parent.parent
NOTEBOOKS = REPO / "notebooks"
PACKAGES = ("interp", "saes", "circuits", "dashboards")
SIZE_LINE = 'SIZE = os.environ.get("INTERP_NB_SIZE", "small")'

GUARD = f"""\
import sys as _sys
import warnings as _warnings

_PACKAGES = {PACKAGES!r}
_original_warn = _warnings.warn


class PackageWarningError(AssertionError):
    "A warning raised by the project's own code while a notebook ran."


def _guarded_warn(message, category=None, stacklevel=1, source=None, **kwargs):
    caller = _sys._getframe(1).f_globals.get("__name__", "")
    if caller.split(".")[0] in _PACKAGES:
        kind = getattr(category, "__name__", "UserWarning")
        raise PackageWarningError(f"{{caller}} warned ({{kind}}): {{message}}")
    return _original_warn(message, category, stacklevel + 1, source, **kwargs)


_warnings.warn = _guarded_warn
_warnings.filterwarnings("error", module=r"({"|".join(PACKAGES)})(\\.|$)")
"""


def notebook_paths() -> list[Path]:
    return sorted(NOTEBOOKS.glob("*.ipynb"))


def committed_output_problems(nb: Any) -> list[str]:
    """What a committed notebook holds that should have been stripped (empty: clean)."""
    problems = []
    for i, cell in enumerate(nb.cells):
        if cell.cell_type != "code":
            continue
        if cell.get("outputs"):
            problems.append(f"cell {i} has {len(cell['outputs'])} output(s)")
        if cell.get("execution_count") is not None:
            problems.append(f"cell {i} has execution_count {cell['execution_count']}")
    for key in ("widgets", "varInspector"):
        if key in nb.metadata:
            problems.append(f"notebook metadata holds {key!r} (saved widget state)")
    return problems


@contextmanager
def _env(**values: str) -> Iterator[None]:
    old = {k: os.environ.get(k) for k in values}
    os.environ.update(values)
    try:
        yield
    finally:
        for k, v in old.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


def execute(
    nb: Any, workdir: Path, size: str = "small", timeout: int = 600, guard: bool = True
) -> tuple[Any, float]:
    """Run a copy of ``nb`` (a NotebookNode) in ``workdir``; returns (executed copy, seconds).
    Raises nbclient's CellExecutionError on the first cell that fails."""
    from nbclient import NotebookClient

    nb = nbformat.from_dict(nb)  # a copy: the caller's notebook keeps no outputs
    if guard:
        nb.cells.insert(0, nbformat.v4.new_code_cell(GUARD))
    workdir.mkdir(parents=True, exist_ok=True)
    client = NotebookClient(
        nb,
        kernel_name="python3",
        timeout=timeout,
        resources={"metadata": {"path": str(workdir)}},
    )
    t0 = time.perf_counter()
    with _env(INTERP_NB_SIZE=size, INTERP_NB_OUT=str(workdir / "runs"), PYTHONWARNINGS=""):
        client.execute()
    return nb, time.perf_counter() - t0


def output_mimetypes(nb: Any) -> set[str]:
    """Every mimetype among the executed notebook's display outputs."""
    kinds: set[str] = set()
    for cell in nb.cells:
        for out in cell.get("outputs", []):
            kinds.update(out.get("data", {}).keys())
    return kinds


def html_outputs(nb: Any) -> list[str]:
    return [
        out["data"]["text/html"]
        for cell in nb.cells
        for out in cell.get("outputs", [])
        if "text/html" in out.get("data", {})
    ]
