"""Render the benchmarks' results (bench/results/*.json) into the documentation: a generated page
per benchmark (docs/benchmarks/NAME.md), and the regions of the README and of the pages that quote
a table.

Every module ``bench/NAME.py`` (its name not starting with "_"; not this one, nor a ``NAME_render``
sibling) is a benchmark: ``python -m bench.NAME`` saves ``bench/results/NAME.json``, and the module
declares

    TITLE = "One TopK training step"       # a literal: its page's title
    def render(result) -> str: ...         # the JSON as markdown, ending with its provenance line
    def render_VIEW(result) -> str: ...    # optional: another view of the same JSON

(defined or imported there: a module that would pass 700 lines keeps them in
``bench/NAME_render.py``; ``bench._provenance.renderer`` appends the provenance line). As
``dashboards/registry.py`` finds pages, the registry reads ``TITLE`` and the ``render`` names from
each module's source, and imports a module only to render it. Adding a benchmark is adding such a
module (and its page to mkdocs.yml's nav).

A page written by hand marks each generated region with HTML comments::

    <!-- report:sae_step.headline -->
    ...generated from bench/results/sae_step.json...
    <!-- /report:sae_step.headline -->

Region ``NAME`` renders bench/results/NAME.json through ``render``, region ``NAME.VIEW`` through
``render_VIEW`` (e.g. the README's headline table); a region is held by one such page at most.
Renderers look every key up by name and print "not measured" for what a file lacks, so a JSON that
gains rows or keys only needs this rerun.

    python -m bench.report           # write the generated pages, rewrite the regions in place
    python -m bench.report --check   # exit 1 with a diff where a page and its JSON disagree
"""

from __future__ import annotations

import argparse
import ast
import difflib
import functools
import importlib
import json
import pkgutil
import re
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bench._markdown import para
from bench._provenance import KEEP, RESULTS, ROOT, Result

BENCH = Path(__file__).resolve().parent
NOT_BENCHMARKS = ("report",)  # modules of bench/ that are not benchmarks (besides _x and x_render)


# ------------------------------------------------------------------------------------------------
# the registry: one module per benchmark
# ------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Benchmark:
    name: str  # bench/NAME.py, bench/results/NAME.json
    title: str
    views: tuple[str, ...]  # render_VIEW: region NAME.VIEW

    @property
    def module(self) -> str:
        return f"bench.{self.name}"

    def renderer(self, view: str | None = None) -> Callable[[Result | None], str]:
        """Import the benchmark's module (once) and return its ``render`` (or ``render_VIEW``)."""
        module = importlib.import_module(self.module)
        return getattr(module, "render" if view is None else f"render_{view}")


def _declared(path: Path) -> dict[str, Any]:
    """The module's literal top-level ``TITLE`` and the ``render``/``render_*`` names it defines
    or imports."""
    found: dict[str, Any] = {"renders": []}
    for node in ast.parse(path.read_text(), filename=str(path)).body:
        if isinstance(node, ast.Assign) and getattr(node.targets[0], "id", None) == "TITLE":
            try:
                found["TITLE"] = ast.literal_eval(node.value)
            except ValueError as e:
                raise TypeError(f"{path}: TITLE must be a literal (the registry reads it)") from e
        names = (
            [node.name]
            if isinstance(node, ast.FunctionDef)
            else [a.asname or a.name for a in node.names]
            if isinstance(node, ast.ImportFrom)
            else []
        )
        found["renders"] += [n for n in names if n == "render" or n.startswith("render_")]
    return found


def benchmarks() -> list[Benchmark]:
    """Every benchmark, by name. A module missing ``TITLE`` or ``render`` is an error that names it
    (a half-written benchmark should not vanish from the docs silently)."""
    return list(_scan())


@functools.cache
def _scan() -> tuple[Benchmark, ...]:
    """bench/'s modules read once per process (their source, not imported)."""
    found = []
    for info in pkgutil.iter_modules([str(BENCH)]):
        name = info.name
        if name.startswith("_") or name.endswith("_render") or name in NOT_BENCHMARKS:
            continue
        have = _declared(BENCH / f"{name}.py")
        missing = [a for a in ("TITLE", "render") if a not in have and a not in have["renders"]]
        if missing:
            raise TypeError(f"bench/{name}.py is not a benchmark: missing {missing}")
        views = sorted(r.removeprefix("render_") for r in have["renders"] if r != "render")
        found.append(Benchmark(name, str(have["TITLE"]), tuple(views)))
    return tuple(sorted(found, key=lambda b: b.name))


def region_names() -> dict[str, tuple[Benchmark, str | None]]:
    """Region name -> (benchmark, view): ``NAME`` for ``render``, ``NAME.VIEW`` for ``render_VIEW``."""
    out: dict[str, tuple[Benchmark, str | None]] = {}
    for b in benchmarks():
        out[b.name] = (b, None)
        out.update({f"{b.name}.{v}": (b, v) for v in b.views})
    return out


# ------------------------------------------------------------------------------------------------
# rendering
# ------------------------------------------------------------------------------------------------
def json_path(name: str, results: Path = RESULTS) -> Path:
    """Region ``NAME`` or ``NAME.VIEW`` renders bench/results/NAME.json."""
    return results / f"{name.split('.', 1)[0]}.json"


def render(name: str, results: Path = RESULTS) -> str:
    """Region ``name`` from its JSON (the last paragraph: provenance)."""
    bench, view = region_names()[name]
    fn = bench.renderer(view)
    path = json_path(name, results)
    if not path.exists():
        try:
            return fn(None)
        except (TypeError, AttributeError):
            return para(f"Not measured: no `bench/results/{path.name}`.")
    return fn(Result(json.loads(path.read_text()), path))


def render_all(results: Path = RESULTS) -> dict[str, str]:
    return {name: render(name, results) for name in region_names()}


# ------------------------------------------------------------------------------------------------
# the generated pages (docs/benchmarks/NAME.md) and the regions of the pages written by hand
# ------------------------------------------------------------------------------------------------
REGION = re.compile(
    r"(<!-- report:(?P<name>[\w.-]+) -->)\n(?P<body>.*?)\n?(<!-- /report:(?P=name) -->)", re.DOTALL
)
PAGES = Path("docs") / "benchmarks"  # under the root: index.md (written by hand) and NAME.md
INDEX = "index.md"
PAGE = """# {title}

<!-- Generated by `python -m bench.report` from bench/results/{name}.json through `render` in
{source}: edit that, not this page (`python -m bench.report --check` fails where the two disagree). -->

Measured by `python -m bench.{name}`; what it measures and how to run it: [Benchmarks](index.md).

<!-- report:{name} -->
{body}
<!-- /report:{name} -->
"""


def page_path(bench: Benchmark, root: Path = ROOT) -> Path:
    return root / PAGES / f"{bench.name}.md"


def _source(bench: Benchmark) -> str:
    sibling = BENCH / f"{bench.name}_render.py"
    return f"bench/{sibling.name}" if sibling.exists() else f"bench/{bench.name}.py"


def page(bench: Benchmark, body: str, current: str | None = None) -> str:
    """The generated page of ``bench`` around ``body``, its rendering; ``current`` (the page as it
    is) gives the provenance paragraph to keep where git history is unavailable."""
    held = regions(current).get(bench.name) if current else None
    source = _source(bench)
    return PAGE.format(title=bench.title, name=bench.name, source=source, body=_merge(body, held))


def _stale(root: Path) -> list[Path]:
    """Pages in docs/benchmarks/ that are neither the index nor a benchmark's (left behind)."""
    own = {page_path(b, root) for b in benchmarks()} | {root / PAGES / INDEX}
    return sorted(p for p in (root / PAGES).glob("*.md") if p not in own)


def pages(root: Path = ROOT) -> list[Path]:
    """The pages written by hand, which may hold regions: the README and every page under docs/
    but the generated ones."""
    generated = {page_path(b, root) for b in benchmarks()} | set(_stale(root))
    docs = sorted(p for p in (root / "docs").rglob("*.md") if p not in generated)
    return [root / "README.md", *docs]


def _merge(rendered: str, current: str | None) -> str:
    """Where git history is unavailable (KEEP), keep the page's own provenance paragraph."""
    if not rendered.endswith(KEEP):
        return rendered
    kept = current.rsplit("\n\n", 1)[-1] if current else "Provenance: git history unavailable."
    return rendered[: -len(KEEP)] + kept


def regions(text: str) -> dict[str, str]:
    return {m["name"]: m["body"] for m in REGION.finditer(text)}


def rewrite(text: str, rendered: dict[str, str]) -> str:
    def sub(m: re.Match) -> str:
        body = rendered.get(m["name"])
        return (
            m.group(0) if body is None else f"{m.group(1)}\n{_merge(body, m['body'])}\n{m.group(4)}"
        )

    return REGION.sub(sub, text)


def _rel(path: Path, root: Path) -> str:
    try:
        return str(path.relative_to(root))
    except ValueError:
        return str(path)


def _diff(current: str, want: str, where: str, name: str) -> str:
    lines = difflib.unified_diff(
        current.splitlines(keepends=True),
        want.splitlines(keepends=True),
        where,
        f"bench/results/{json_path(name).name} (rendered)",
    )
    return "".join(lines) + "\n"


def check(root: Path = ROOT, results: Path = RESULTS) -> list[str]:
    """Where the pages under ``root`` and what the JSON renders to disagree (empty: consistent):
    a generated page that differs, is missing or is left behind; a region (README, hand-written
    pages) that differs, has no renderer or is held twice; a view no page shows."""
    rendered = render_all(results)
    problems = []
    for b in benchmarks():
        path = page_path(b, root)
        if not path.exists():
            problems.append(f"{_rel(path, root)} is missing (`python -m bench.report` writes it)\n")
        elif (want := page(b, rendered[b.name], current := path.read_text())) != current:
            where = f"{_rel(path, root)} (report:{b.name}, the generated page)"
            problems.append(_diff(current, want, where, b.name))
    problems += [
        f"{_rel(p, root)}: no bench/{p.stem}.py renders this page (left behind?)\n"
        for p in _stale(root)
    ]
    known = region_names()
    where: dict[str, list[tuple[Path, str]]] = {}
    for hand in pages(root):
        for name, body in regions(hand.read_text()).items():
            where.setdefault(name, []).append((hand, body))
    problems += [
        f"{_rel(p, root)}: region report:{n} has no renderer (known: {', '.join(known)})\n"
        for n, held in where.items()
        if n not in known
        for p, _ in held
    ]
    problems += [
        f"region report:{n} is in {len(held)} pages ({', '.join(_rel(p, root) for p, _ in held)})\n"
        for n, held in where.items()
        if len(held) > 1
    ]
    problems += [
        f"no page has a region report:{n} (bench/{b.name}.py's render_{view})\n"
        for n, (b, view) in known.items()
        if view is not None and n not in where
    ]
    for name, held in where.items():
        for hand, current in held if name in rendered else ():
            if (want := _merge(rendered[name], current)) != current:
                problems.append(_diff(current, want, f"{_rel(hand, root)} (report:{name})", name))
    return problems


def write(root: Path = ROOT, results: Path = RESULTS) -> list[str]:
    """Write the generated pages and rewrite the regions; what changed."""
    rendered = render_all(results)
    changed = []
    (root / PAGES).mkdir(parents=True, exist_ok=True)
    for b in benchmarks():
        path = page_path(b, root)
        current = path.read_text() if path.exists() else None
        if (new := page(b, rendered[b.name], current)) != current:
            path.write_text(new)
            changed.append(_rel(path, root))
    for hand in pages(root):
        text = hand.read_text()
        if (new := rewrite(text, rendered)) != text:
            hand.write_text(new)
            old = regions(text)
            changed += [f"{_rel(hand, root)}:{n}" for n, b in regions(new).items() if old[n] != b]
    return changed


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument(
        "--check", action="store_true", help="exit 1 with a diff when a page is out of date"
    )
    ap.add_argument("--root", type=Path, default=ROOT, help="holds README.md and docs/")
    ap.add_argument("--results", type=Path, default=RESULTS)
    args = ap.parse_args(argv)
    if args.check:
        problems = check(args.root, args.results)
        sys.stdout.write("".join(problems))
        print(
            f"{len(problems)} page(s) or region(s) differ from bench/results"
            if problems
            else "README and docs match bench/results"
        )
        return 1 if problems else 0
    changed = write(args.root, args.results)
    print(f"wrote {', '.join(changed)}" if changed else "README and docs already up to date")
    for p in _stale(args.root):
        print(f"{_rel(p, args.root)}: no bench/{p.stem}.py renders this page (left behind?)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
