"""The README is the way in: at most 250 lines, and its Python quickstart runs as written (on the
default model, in a fresh folder); the documentation site holds the rest (``make test`` builds it
with ``mkdocs build --strict``: a broken link or a page missing from the nav fails there)."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from _notebook_tools import deep_imports

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"
README_LIMIT = 250


def _quickstart() -> str:
    text = README.read_text()
    section = text.split("## Quickstart", 1)[1].split("\n## ", 1)[0]
    [code] = re.findall(r"```python\n(.*?)```", section, re.S)
    return code


def test_readme_is_short():
    n = len(README.read_text().splitlines())
    assert n <= README_LIMIT, (
        f"README.md has {n} lines (at most {README_LIMIT}: move detail to docs/)"
    )


def test_quickstart_uses_the_package_roots_and_one_screen():
    code = _quickstart()
    assert 8 <= len(code.splitlines()) <= 25
    assert deep_imports(code) == []  # the trainer too: saes.train


def test_python_examples_in_the_docs_import_from_the_package_roots():
    pages = [README, *sorted((ROOT / "docs").rglob("*.md"))]
    deep = {
        str(page.relative_to(ROOT)): found
        for page in pages
        for block in re.findall(r"```python\n(.*?)```", page.read_text(), re.S)
        if (found := deep_imports(block))
    }
    assert deep == {}


def test_docs_nav_lists_every_page():
    """Every page under docs/ is in mkdocs.yml's nav (mkdocs only warns about the others)."""
    cfg = yaml.load((ROOT / "mkdocs.yml").read_text(), Loader=yaml.BaseLoader)

    def walk(node):
        if isinstance(node, dict):
            for v in node.values():
                yield from walk(v)
        elif isinstance(node, list):
            for v in node:
                yield from walk(v)
        else:
            yield node

    listed = set(walk(cfg["nav"]))
    pages = {str(p.relative_to(ROOT / "docs")) for p in (ROOT / "docs").rglob("*.md")}
    pages |= {f"tutorials/{p.name}" for p in (ROOT / "notebooks").glob("*.ipynb")}
    assert pages - listed == set(), f"pages missing from mkdocs.yml's nav: {sorted(pages - listed)}"
    assert listed - pages == set(), f"nav entries with no page: {sorted(listed - pages)}"


@pytest.mark.smollm2
@pytest.mark.slow
def test_quickstart_runs_as_written(tmp_path):
    (tmp_path / "quickstart.py").write_text(_quickstart())
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    r = subprocess.run(
        [sys.executable, "quickstart.py"],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert r.returncode == 0, r.stderr[-3000:]
    assert (tmp_path / "runs" / "quickstart" / "metrics.json").exists()
    assert (tmp_path / "runs" / "quickstart" / "features" / "manifest.json").exists()
    fvu = float(re.search(r"FVU ([0-9.]+)", r.stdout).group(1))
    assert 0 < fvu < 1, r.stdout
