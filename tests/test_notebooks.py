"""The notebooks (``notebooks/*.ipynb``): committed without outputs, each opening with its paragraph
and reading its size in the first code cell, each executed at the small size in a fresh kernel (a
temporary copy), failing on any error and on any warning the project's own code raises. The
warning guard itself is tested on a real package warning and on third-party ones."""

from __future__ import annotations

import re

import nbformat
import pytest
from _notebook_tools import (
    SIZE_LINE,
    committed_output_problems,
    execute,
    html_outputs,
    notebook_paths,
    output_mimetypes,
)
from nbclient.exceptions import CellExecutionError

EXPECTED = [
    "01_quickstart.ipynb",
    "02_features.ipynb",
    "03_variants.ipynb",
    "04_attention.ipynb",
    "05_bring_your_own.ipynb",
    "06_dark_matter.ipynb",
    "07_circuits.ipynb",
    "08_sparsity_laws.ipynb",
]
PATHS = notebook_paths()
IDS = [p.stem for p in PATHS]
# the limit for one notebook at the small size on a 2-core CPU
SMALL_LIMIT_S = 180
PLOTLY_JSON = "application/vnd.plotly.v1+json"


def _read(path):
    return nbformat.read(path, as_version=4)


def _code(nb) -> list[str]:
    return [c.source for c in nb.cells if c.cell_type == "code"]


def test_the_five_notebooks_exist():
    names = [p.name for p in PATHS]
    assert set(EXPECTED) <= set(names), f"missing: {sorted(set(EXPECTED) - set(names))}"


@pytest.mark.parametrize("path", PATHS, ids=IDS)
def test_committed_without_outputs(path):
    nb = _read(path)
    nbformat.validate(nb)
    assert committed_output_problems(nb) == [], f"{path.name}: strip its outputs before committing"


def test_output_check_finds_outputs_and_counts():
    nb = _read(PATHS[0])
    code = [i for i, c in enumerate(nb.cells) if c.cell_type == "code"]
    nb.cells[code[0]].outputs = [nbformat.v4.new_output("stream", name="stdout", text="hi\n")]
    nb.cells[code[1]].execution_count = 7
    problems = committed_output_problems(nb)
    assert problems == [f"cell {code[0]} has 1 output(s)", f"cell {code[1]} has execution_count 7"]


@pytest.mark.parametrize("path", PATHS, ids=IDS)
def test_opens_with_its_paragraph_and_reads_its_size(path):
    nb = _read(path)
    first = nb.cells[0]
    assert first.cell_type == "markdown" and first.source.startswith("# ")
    paragraph = first.source.split("\n", 1)[1].strip()
    assert len(paragraph) > 300, "the opening says what the notebook shows and why it matters"
    assert SIZE_LINE in _code(nb)[0], "the first code cell reads INTERP_NB_SIZE"
    timing = [c.source for c in nb.cells if c.cell_type == "markdown" and "**Time.**" in c.source]
    assert timing and "`full`" in timing[0] and "minute" in timing[0]


@pytest.mark.parametrize("path", PATHS, ids=IDS)
def test_uses_only_the_public_api(path):
    """No helper functions or classes of its own, no private names of the packages."""
    for src in _code(_read(path)):
        assert not re.search(r"^\s*(def|class) ", src, re.M), f"a notebook helper:\n{src}"
        assert not re.search(r"from (interp|saes|circuits)\S* import .*\b_\w", src), src
        assert not re.search(r"\b(interp|saes|circuits)(\.\w+)*\._\w", src), src


# ---- execution --------------------------------------------------------------------------------


@pytest.mark.smollm2
@pytest.mark.slow
@pytest.mark.parametrize("path", PATHS, ids=IDS)
def test_runs_at_the_small_size(path, tmp_path):
    nb = _read(path)
    out, seconds = execute(nb, tmp_path, size="small", timeout=2 * SMALL_LIMIT_S)
    assert seconds < SMALL_LIMIT_S, f"{path.name} took {seconds:.0f} s at the small size"
    # the committed file is untouched (execution ran on a copy)
    assert committed_output_problems(_read(path)) == []
    # figures: plotly's JSON for Jupyter, and HTML that draws them in an exported page
    assert PLOTLY_JSON in output_mimetypes(out)
    html = html_outputs(out)
    assert any("Plotly.newPlot" in h for h in html)
    if any(name in "".join(_code(nb)) for name in ("examples_html", "tokens_html")):
        assert any('class="tok"' in h for h in html), "token highlighting was displayed"


# ---- the warning guard ------------------------------------------------------------------------


def _cells(*sources: str):
    nb = nbformat.v4.new_notebook()
    nb.cells = [nbformat.v4.new_code_cell(s) for s in sources]
    return nb


def test_guard_fails_the_cell_of_a_package_warning(tmp_path):
    """saes.checkpoint warns (stacklevel=2, so the warning names the caller, not the package) on a
    checkpoint folder without its manifest: the guard still fails that cell."""
    nb = _cells(
        "x = 1",
        "from pathlib import Path\n"
        "from saes.checkpoint import latest_checkpoint\n"
        f"(Path({str(tmp_path)!r}) / 'run' / 'checkpoints' / 'step_000000001').mkdir(parents=True)\n"
        f"latest_checkpoint(Path({str(tmp_path)!r}) / 'run')",
    )
    with pytest.raises(CellExecutionError) as e:
        execute(nb, tmp_path / "work", timeout=120)
    assert "PackageWarningError" in str(e.value)
    assert "saes.checkpoint warned (CheckpointWarning): skipping bad checkpoint" in str(e.value)


def test_guard_lets_other_warnings_through(tmp_path):
    nb = _cells(
        "import warnings\nwarnings.warn('from the notebook', DeprecationWarning)",
        "exec(compile('import warnings; warnings.warn(\"from a library\")', 'lib.py', 'exec'),"
        " {'__name__': 'somelib.module'})",
        "print('reached')",
    )
    out, _ = execute(nb, tmp_path, timeout=120)
    assert "reached" in out.cells[-1].outputs[0]["text"]
