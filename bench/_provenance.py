"""Where a benchmark result came from: commit, uncommitted changes, date, machine, command line.

Every bench script stores ``provenance()`` under the key ``"provenance"`` of its JSON, taken when
the run starts (the commit that was measured). ``python -m bench.report`` prints it under each
rendered table. No host name is recorded.

    from bench._provenance import provenance
    report = {"provenance": provenance(), ...}
"""

from __future__ import annotations

import datetime
import os
import platform
import shlex
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

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


if __name__ == "__main__":
    import json

    print(json.dumps(provenance(), indent=2))
