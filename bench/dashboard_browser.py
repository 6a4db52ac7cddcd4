"""The explorer in Chromium on a real run: the README's screenshots and the page timings.

Runs ``tests/test_dashboard_browser.py`` against a folder of runs with stores (default ``runs``,
where ``make demo`` leaves the demo run and its store), writing the screenshots to
``docs/screenshots/`` and the timings (feature page open, next-latent render, prompt page open,
a ~64-token prompt answered on the warm server) to ``--out`` (JSON, with provenance). Not a test.

    python bench/dashboard_browser.py [--target runs]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "bench"))

from _provenance import provenance  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--target", default="runs")
    ap.add_argument("--shots", default=str(ROOT / "docs" / "screenshots"))
    ap.add_argument("--out", default=str(ROOT / "bench" / "results" / "dashboard_browser.json"))
    args = ap.parse_args()
    record = {"provenance": provenance(), "target": args.target}
    with tempfile.TemporaryDirectory() as tmp:
        timings = Path(tmp) / "timings.json"
        env = {
            **os.environ,
            "INTERP_BROWSER_TARGET": str(Path(args.target).resolve()),
            "INTERP_SCREENSHOTS_DIR": args.shots,
            "INTERP_BROWSER_TIMINGS": str(timings),
        }
        test = str(ROOT / "tests" / "test_dashboard_browser.py")
        rc = subprocess.call([sys.executable, "-m", "pytest", "-q", "-s", test], env=env)
        if rc != 0:
            raise SystemExit(f"the browser test failed (exit {rc})")
        record.update(json.loads(timings.read_text()))
    manifest = json.loads((Path(record["store"]) / "manifest.json").read_text())
    record["store_manifest"] = {
        k: manifest.get(k) for k in ("model", "hook", "d_sae", "n_tokens", "alive_latents")
    }
    Path(args.out).write_text(json.dumps(record, indent=1) + "\n")
    print(json.dumps(record["timings_s"], indent=1))
    print(f"saved {args.out}; screenshots in {args.shots}")


if __name__ == "__main__":
    main()
