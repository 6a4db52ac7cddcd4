"""Where a benchmark result came from: commit, uncommitted changes, date, machine, command line.

Every bench module stores ``provenance()`` under the key ``"provenance"`` of its JSON, taken when
the run starts (the commit that was measured), and its ``render`` ends with that provenance said
in a sentence (``provenance_line``; the ``@renderer`` decorator appends it). No host name is
recorded.

    from bench._provenance import provenance, renderer
    report = {"provenance": provenance(), ...}

    @renderer()
    def render(d: dict) -> str: ...          # the tables; the provenance line is appended
"""

from __future__ import annotations

import datetime
import functools
import os
import platform
import shlex
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

from bench._markdown import get, para

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "bench" / "results"

# Changes here make a measurement "dirty"; bench/results/ is excluded (the outputs themselves).
WATCHED = ("interp", "saes", "bench", "configs")
EXCLUDED = ("bench/results",)


def _git(root: Path, *args: str) -> str | None:
    try:
        out = subprocess.run(
            ["git", "-C", str(root), *args], capture_output=True, text=True, timeout=30, check=False
        )
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout if out.returncode == 0 else None


def dirty_files(root: Path = ROOT) -> list[str] | None:
    """Tracked files under WATCHED (not EXCLUDED) with uncommitted changes; None without git."""
    out = _git(
        root,
        "status",
        "--porcelain",
        "--untracked-files=no",
        "--",
        *WATCHED,
        *(f":(exclude){p}" for p in EXCLUDED),
    )
    if out is None:
        return None
    return sorted(line[3:].strip() for line in out.splitlines() if line.strip())


def cpu_model() -> str:
    """The CPU's model name from /proc/cpuinfo (Linux), else platform.processor()."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.lower().startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def machine() -> dict:
    """CPU model, core count, architecture, Python, torch version and threads (no host name)."""
    info = {
        "cpu": cpu_model(),
        "cores": os.cpu_count(),
        "arch": platform.machine(),
        "python": platform.python_version(),
        "torch": None,
        "torch_threads": None,
        "cuda": None,
    }
    try:
        import torch

        info["torch"] = torch.__version__
        info["torch_threads"] = torch.get_num_threads()
        if torch.cuda.is_available():
            info["cuda"] = torch.cuda.get_device_name(0)
    except ImportError:
        pass
    return info


def command(argv: list[str] | None = None, root: Path = ROOT) -> str:
    """The command line: ``python -m bench.NAME ...`` for a module of bench/ (``python -m`` sets
    ``sys.argv[0]`` to its file), else the script's path, relative to the repository when inside."""
    argv = list(sys.argv if argv is None else argv)
    if argv:
        try:
            rel = Path(argv[0]).resolve().relative_to(root.resolve())
        except ValueError:
            rel = None
        if rel is not None and rel.parent == Path("bench") and rel.suffix == ".py":
            argv[0:1] = ["-m", f"bench.{rel.stem}"]
        elif rel is not None:
            argv[0] = str(rel)
    return "python " + " ".join(shlex.quote(a) for a in argv)


def provenance(argv: list[str] | None = None, root: Path = ROOT) -> dict:
    """commit (full hash; None without git), dirty (+ dirty_files), date (UTC), machine, command, argv."""
    head = _git(root, "rev-parse", "HEAD")
    argv = list(sys.argv if argv is None else argv)
    files = dirty_files(root)
    return {
        "commit": head.strip() if head else None,
        "dirty": bool(files) if files is not None else None,
        "dirty_files": files or [],
        "date": datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "machine": machine(),
        "command": command(argv, root),
        "argv": argv,
    }


# ------------------------------------------------------------------------------------------------
# provenance in a sentence: the last paragraph of every rendering
# ------------------------------------------------------------------------------------------------
KEEP = "\x00keep the README's provenance line\x00"  # no git history (see _committed_at)


class Result(dict):
    """A benchmark's JSON (``bench/results/NAME.json``) as the dict it holds, knowing its file."""

    def __init__(self, data: dict, path: Path) -> None:
        super().__init__(data)
        self.path = path


def _git_out(*args: str) -> str | None:
    out = _git(ROOT, *args)
    return out.strip() if out is not None else None


def _committed_at(path: Path) -> tuple[str, str] | str | None:
    """(short hash, date) of the last commit that changed path; "uncommitted" when the file has
    uncommitted changes; None when git history cannot tell (no git, not a repo, shallow clone)."""
    if _git_out("rev-parse", "--is-shallow-repository") != "false":
        return None
    try:
        rel = str(path.resolve().relative_to(ROOT))
    except ValueError:
        return None  # a copy outside the repository (tests): no history
    if _git_out("status", "--porcelain", "--", rel):
        return "uncommitted"
    out = _git_out("log", "-1", "--format=%H %cs", "--", rel)
    if not out:
        return "uncommitted"
    commit, date = out.split()
    return commit[:7], date


def _machine(d: dict) -> str:
    """'torch 2.13.0+cpu, 2 threads, 2 cores, <cpu>' from the provenance or the older keys."""
    m = get(d, "provenance", "machine") or {}
    torch_v = m.get("torch") or d.get("torch") or get(d, "machine", "torch")
    threads = m.get("torch_threads") or d.get("threads") or d.get("torch_threads")
    cores = m.get("cores") or d.get("cpu_count") or get(d, "machine", "cpu_count")
    cpu = m.get("cpu") or (d.get("cpu") if isinstance(d.get("cpu"), str) else None)
    parts = [
        f"torch {torch_v}" if torch_v else "",
        f"{threads} threads" if threads else "",
        f"{cores} cores" if cores else "",
        cpu or "",
        f"GPU {m['cuda']}" if m.get("cuda") else "",
    ]
    return ", ".join(p for p in parts if p)


def provenance_line(d: dict, path: Path, command: str) -> str:
    """The last paragraph of every rendering: which commit the figures were measured at, and how
    (``command``: for a file that records no provenance of its own)."""
    machine = _machine(d)
    machine = f" ({machine})" if machine else ""
    p = d.get("provenance")
    if isinstance(p, dict):
        commit = (p.get("commit") or "")[:7] or "an unrecorded commit"
        date = (p.get("date") or "")[:10]
        when = f" ({date})" if date else ""
        dirty = ""
        if p.get("dirty"):
            files = ", ".join(f"`{f}`" for f in p.get("dirty_files") or [])
            dirty = f", with uncommitted changes{' to ' + files if files else ''}"
        cmd = p.get("command") or command
        return para(
            f"Measured at commit {commit}{when}{dirty}: `{cmd}`{machine}; `bench/results/{path.name}`."
        )
    at = _committed_at(path)
    if at is None:
        return KEEP
    if at == "uncommitted":
        return para(
            f"Not committed yet and no provenance recorded: `{command}`{machine}; "
            f"`bench/results/{path.name}`."
        )
    commit, date = at
    return para(
        f"`bench/results/{path.name}` committed at {commit} ({date}); it records no commit of its "
        f"own, so it was measured at or before that commit: `{command}`{machine}."
    )


def _command(template: str, d: dict) -> str:
    """``template`` filled in from the JSON (``--seeds {seeds}``); without what it names, the
    command up to its first option."""
    try:
        return template.format(**d)
    except (KeyError, IndexError, TypeError, ValueError, AttributeError):
        return template.split(" --")[0]


def renderer(command: str | None = None) -> Callable[[Callable], Callable]:
    """Decorates a benchmark's ``render(result)`` (or ``render_VIEW``): what it returns for a JSON
    ends with the file's provenance line (none for ``None``, no JSON). ``command``: how the file
    was measured, said where it records no provenance (a template over the JSON); by default
    ``python -m bench.NAME``. A plain dict is taken for the committed ``bench/results/NAME.json``
    (NAME: the module's, without a ``_render`` suffix); a :class:`Result` knows its file."""

    def wrap(fn: Callable[[dict | None], str]) -> Callable[[dict | None], str]:
        module = fn.__module__
        if module == "__main__":  # python -m bench.NAME: the module's own name
            module = getattr(sys.modules["__main__"].__spec__, "name", module)
        name = module.rsplit(".", 1)[-1].removesuffix("_render")

        @functools.wraps(fn)
        def render(result: dict | None) -> str:
            if result is None:
                return fn(None)
            path = getattr(result, "path", None) or RESULTS / f"{name}.json"
            how = _command(command or f"python -m bench.{name}", result)
            return fn(result) + "\n\n" + provenance_line(result, path, how)

        return render

    return wrap


if __name__ == "__main__":
    import json

    print(json.dumps(provenance(), indent=2))
