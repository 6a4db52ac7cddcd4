"""The explorer in Chromium on a real run: the README's screenshots and the page timings.

Runs ``tests/test_dashboard_browser.py`` against a folder of runs with stores (default ``runs``,
where ``make demo`` leaves the demo run and its store), writing the screenshots to
``docs/screenshots/`` and the timings (server start, feature page open at latent 0, next-latent
render, prompt page open, a ~64-token prompt answered on the warm server) to ``--out`` (JSON, with
provenance). Not a test. ``render(d)`` renders its table from that JSON.

    python -m bench.dashboard_browser [--target runs]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

from bench._markdown import criterion_target, verdict_target
from bench._provenance import provenance, renderer

TITLE = "The explorer in a browser"  # its name in the docs (python -m bench.report)

ROOT = Path(__file__).resolve().parents[1]
FEATURE_GOAL_S = 1.0  # the Feature page's first open
PROMPT_GOAL_S = 3.0  # a 64-token prompt answered on the warm server


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


def _s(x) -> str:
    return f"{x:.2f} s" if isinstance(x, (int, float)) else "not measured"


def _n(x) -> str:
    return f"{x:,}" if isinstance(x, int) else "not measured"


@renderer()
def render(d: dict | None) -> str:
    """The table of page timings, with each goal's verdict from its number."""
    if d is None:
        return "Not measured: no `bench/results/dashboard_browser.json`."
    t, m = d.get("timings_s") or {}, d.get("store_manifest") or {}
    rows = [
        ("Server started (command to health check; imports every page first)", "server_start_s"),
        ("Feature page opened at latent 0 (a fresh session: connect, run, draw)", "feature_open_s"),
        ("Feature page opened again in a second fresh session", "feature_reopen_s"),
        ("Feature page: next latent rendered after a click", "feature_next_s"),
        ("Prompt page opened (first: loads the model and SAE)", "prompt_open_s"),
        (f"Prompt page: a {t.get('prompt_answer_tokens', '?')}-token prompt answered (warm)",
         "prompt_answer_s"),
    ]  # fmt: skip
    goals = {"feature_open_s": FEATURE_GOAL_S, "prompt_answer_s": PROMPT_GOAL_S}

    def goal(key: str) -> str:
        if key not in goals:
            return "-"
        return f"under {goals[key]:g} s: {verdict_target(t.get(key), goals[key], at_least=False)}"

    lines = [
        f"Measured in headless Chromium by the browser test on the store of "
        f"{m.get('model', 'not measured')} `{m.get('hook', 'not measured')}`, "
        f"{_n(m.get('d_sae'))} latents, {_n(m.get('n_tokens'))} tokens "
        f"(goals: the Feature page's first open under {FEATURE_GOAL_S:g} s, a 64-token prompt "
        f"under {PROMPT_GOAL_S:g} s; criterion: {criterion_target()}):",
        "",
        "| what | time | goal |",
        "|---|---|---|",
        *[f"| {what} | {_s(t.get(key))} | {goal(key)} |" for what, key in rows],
        "",
    ]
    return "\n".join(lines).rstrip()


if __name__ == "__main__":
    main()
