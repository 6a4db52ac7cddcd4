"""The house rules of the code's shape, checked on the source tree (README, Architecture):

- no import circle among the project's modules, function-local imports counted;
- no function-local import of the project's own modules outside the CLI modules (named ``cli`` or
  under a ``cli`` package; a deferred import of a heavy third-party package is fine, and is not
  counted here);
- no module over 700 lines;
- nothing in ``interp`` imports ``saes``, ``circuits`` or ``dashboards`` (each package adds its own
  commands to ``interp`` through entry points).
"""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("interp", "saes", "circuits", "dashboards")
MAX_LINES = 700


def _is_cli(mod: str) -> bool:
    return "cli" in mod.split(".")


def _modules() -> dict[str, Path]:
    out = {}
    for pkg in PACKAGES:
        for path in (ROOT / pkg).rglob("*.py") if (ROOT / pkg).is_dir() else ():
            parts = list(path.relative_to(ROOT).with_suffix("").parts)
            if parts[-1] == "__init__":
                parts = parts[:-1]
            out[".".join(parts)] = path
    return out


def _resolve(name: str, modules: dict[str, Path]) -> str | None:
    while name and name not in modules:
        name = name.rpartition(".")[0]
    return name or None


def _imports(mod: str, path: Path, modules: dict[str, Path]) -> list[tuple[str, bool, int]]:
    """(imported project module, inside a function?, line) for every import in ``path``."""
    tree = ast.parse(path.read_text())
    found = []
    is_pkg = path.name == "__init__.py"

    def visit(node: ast.AST, in_function: bool) -> None:
        for child in ast.iter_child_nodes(node):
            inner = in_function or isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef))
            if isinstance(child, ast.Import):
                names = [a.name for a in child.names]
            elif isinstance(child, ast.ImportFrom):
                base = child.module or ""
                if child.level:
                    pkg = mod if is_pkg else mod.rpartition(".")[0]
                    for _ in range(child.level - 1):
                        pkg = pkg.rpartition(".")[0]
                    base = f"{pkg}.{base}".strip(".")
                names = [f"{base}.{a.name}" for a in child.names] or [base]
            else:
                visit(child, inner)
                continue
            for n in names:
                target = _resolve(n, modules)
                if target is not None and target != mod:
                    found.append((target, in_function, child.lineno))

    visit(tree, False)
    return found


def _graph() -> tuple[dict[str, set[str]], dict[str, list[tuple[str, bool, int]]]]:
    modules = _modules()
    imports = {m: _imports(m, p, modules) for m, p in modules.items()}
    return {m: {t for t, _, _ in imps} for m, imps in imports.items()}, imports


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on: set[str] = set()
    out: list[list[str]] = []

    def strong(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on.add(v)
        for w in graph.get(v, ()):
            if w not in index:
                strong(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                out.append(sorted(comp))

    for v in sorted(graph):
        if v not in index:
            strong(v)
    return out


def test_cycle_finder_finds_a_planted_cycle():
    graph = {"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}, "e": set()}
    assert _cycles(graph) == [["a", "b", "c"]]
    assert _cycles({"a": {"b"}, "b": set()}) == []


def test_no_import_cycles():
    graph, _ = _graph()
    assert len(graph) > 30  # the walk found the project
    assert _cycles(graph) == []


def test_no_function_local_project_imports_outside_the_cli():
    _, imports = _graph()
    local = [
        f"{m}:{line} imports {t}"
        for m, imps in imports.items()
        if not _is_cli(m)
        for t, in_function, line in imps
        if in_function
    ]
    assert local == []


def test_interp_does_not_import_saes():
    _, imports = _graph()
    bad = [
        f"{m} imports {t}"
        for m, imps in imports.items()
        if m.startswith("interp")
        for t, _, _ in imps
        if t.split(".")[0] != "interp"
    ]
    assert bad == []


def test_no_module_over_700_lines():
    files = {**_modules(), **{f"bench.{p.stem}": p for p in (ROOT / "bench").glob("*.py")}}
    long = {m: n for m, p in files.items() if (n := len(p.read_text().splitlines())) > MAX_LINES}
    assert long == {}
