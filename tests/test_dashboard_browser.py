"""The explorer in a real browser: `interp dashboard serve` on a free local port, each page opened
in headless Chromium (Debian's package; `make test` installs it), its content waited for, a
screenshot taken, and the page checked to show the store's values and no error box.

A missing Chromium fails this test; it never skips. The server's start (to its health check), the
Feature page's first open and its render time (a click on "next" until the next latent's numbers
are shown) are measured and printed, not asserted. The Feature page opens at latent 0; on the
tiny runs built here that is the planted latent with one tied value (all bands but one empty).

Environment (for the README's screenshots and timings; CI uses the defaults):
  INTERP_BROWSER_TARGET   a folder of runs with stores (default: tiny runs built here)
  INTERP_SCREENSHOTS_DIR  where the PNGs go (default: the test's temporary folder)
  INTERP_BROWSER_TIMINGS  a JSON file to write the measured timings to
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest
from _dashboard_runs import TIED, awkward_run, tiny_run

from saes.features import FeatureStore, store_dir

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
SERVER: dict[str, float] = {}  # the server's start: command to its health check answering
pytestmark = pytest.mark.usefixtures("one_thread_module")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def target(tmp_path_factory, tiny) -> Path:
    if os.environ.get("INTERP_BROWSER_TARGET"):
        return Path(os.environ["INTERP_BROWSER_TARGET"]).resolve()
    root = tmp_path_factory.mktemp("browser")
    awkward_run(root, tiny)  # latent 0 fires with one tied value: all its bands but one empty
    tiny_run(root, tiny, "resid", "blocks.0.hook_resid_post")
    tiny_run(root, tiny, "attnz", "blocks.0.attn.hook_z")
    return root


@pytest.fixture(scope="module")
def server(target, tmp_path_factory):
    port = _free_port()
    log = tmp_path_factory.mktemp("serve") / "serve.log"
    cmd = [
        sys.executable,
        "-m",
        "interp.cli",
        "dashboard",
        "serve",
        str(target),
        "--port",
        str(port),
    ]
    with open(log, "w") as out:
        t0 = time.perf_counter()
        proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT)
        url = f"http://127.0.0.1:{port}"
        try:
            deadline = time.time() + 90
            while True:
                try:
                    with urllib.request.urlopen(f"{url}/_stcore/health", timeout=2) as r:
                        if r.status == 200:
                            SERVER["start_s"] = time.perf_counter() - t0
                            break
                except OSError:
                    pass
                if proc.poll() is not None or time.time() > deadline:
                    raise RuntimeError(f"the server did not start:\n{log.read_text()}")
                time.sleep(0.5)
            yield url
        finally:
            proc.terminate()
            proc.wait(timeout=30)


@pytest.fixture(scope="module")
def browser():
    assert CHROMIUM, "Chromium is not installed: `make test` installs Debian's chromium package"
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        b = p.chromium.launch(
            executable_path=CHROMIUM, args=["--headless", "--no-sandbox", "--disable-gpu"]
        )
        yield b
        b.close()


@pytest.fixture(scope="module")
def shots(tmp_path_factory) -> Path:
    d = os.environ.get("INTERP_SCREENSHOTS_DIR")
    out = Path(d) if d else tmp_path_factory.mktemp("shots")
    out.mkdir(parents=True, exist_ok=True)
    return out


def _runs_with_stores(target: Path) -> dict[str, Path]:
    found = {}
    for manifest in sorted(target.rglob("features/manifest.json")):
        run = manifest.parent.parent
        found[str(run.relative_to(target))] = run
    return found


def _open(page, url: str, wait_text: str, timeout_ms: int = 120_000) -> float:
    t0 = time.perf_counter()
    page.goto(url)
    page.get_by_text(wait_text, exact=False).first.wait_for(timeout=timeout_ms)
    page.wait_for_function(
        "() => !document.querySelector('[data-testid=\"stStatusWidget\"]')", timeout=timeout_ms
    )
    return time.perf_counter() - t0


def _plots(page, n: int) -> None:
    """Wait until n plotly charts have drawn (their SVG exists)."""
    page.wait_for_function(
        "(n) => document.querySelectorAll('.js-plotly-plot .main-svg').length >= n",
        arg=n,
        timeout=60_000,
    )


def _no_error(page) -> None:
    assert page.locator('[data-testid="stException"]').count() == 0, page.inner_text("body")
    errors = page.locator('[data-testid="stAlertContentError"]')
    assert errors.count() == 0, errors.first.inner_text()


def test_every_page_in_chromium(server, browser, target, shots):
    stores = _runs_with_stores(target)
    assert stores, f"no feature store under {target}"
    # the landing run: the awkward one when built here, else the first with a store
    name = "awkward" if "awkward" in stores else next(iter(stores))
    run = stores[name]
    store = FeatureStore.open(store_dir(run))
    alive = store.alive.tolist()
    i = 0  # where the Feature page opens; on the demo's store it has empty, tied bands
    f = store.feature(i)
    assert not f.dead, "latent 0 of the browser test's store is dead: pick a store where it fires"
    if name == "awkward":
        assert i == TIED and len({b.lo for b in f.bands}) == 1  # the case that used to crash
    page = browser.new_page(viewport={"width": 1400, "height": 1000})
    timings = {"server_start_s": SERVER.get("start_s")}

    # Feature: the numbers, the top example and every band of latent 0
    timings["feature_open_s"] = _open(
        page, f"{server}/?page=feature&run={name}&feature={i}", "Top activations"
    )
    for value in (f"{f.count:,}", f"{f.max:.3g}", f"{f.density:.4%}"):
        page.get_by_text(value, exact=True).first.wait_for(timeout=30_000)  # the metrics
    body = page.inner_text("body")
    assert f.top[0].texts[f.top[0].center].strip() in body
    for b in f.shown_bands:
        assert f"{b.q_lo:.0%}-{b.q_hi:.0%}" in body
        if b.lo == b.hi:
            assert f"all at {b.lo:.3g}" in body
    _plots(page, 2)
    _no_error(page)
    page.screenshot(path=str(shots / "feature.png"), full_page=True)
    # the same page in a second fresh session (the server's per-process costs already paid):
    # what is left is the session's own (connect, the frontend's load, the script run, drawing)
    again = browser.new_page(viewport={"width": 1400, "height": 1000})
    timings["feature_reopen_s"] = _open(
        again, f"{server}/?page=feature&run={name}&feature={i}", "Top activations"
    )
    again.get_by_text(f"{f.count:,}", exact=True).first.wait_for(timeout=30_000)
    again.close()

    # "next": time until the next live latent's count is on screen
    j = next(a for a in alive if a > i)
    g = store.feature(j)
    t0 = time.perf_counter()
    page.get_by_role("button", name="next ▶").click()
    page.wait_for_function(
        "(n) => document.querySelector('input[aria-label=\"latent\"]')?.value === n",
        arg=str(j),
        timeout=60_000,
    )
    page.get_by_text(f"{g.count:,}", exact=True).first.wait_for(timeout=60_000)
    timings["feature_next_s"] = time.perf_counter() - t0
    _no_error(page)

    # Prompt: the typed text, its tokens shown exactly
    prompt = "import os\nprint(os.getcwd())"
    url = f"{server}/?page=prompt&run={name}&text={urllib.request.quote(prompt)}"
    timings["prompt_open_s"] = _open(page, url, "Top latents per token")
    assert "os.getcwd()" in page.inner_text("body")
    _plots(page, 1)
    # a new 64-token prompt on the warm server (model and SAE cached): time to the new tokens
    marker = "zebra_marker_42"
    words = " ".join(f"x{j} = {j}" for j in range(18))
    text = f"{marker} = [{words}]"
    box = page.get_by_label("text")
    box.fill(text)
    t0 = time.perf_counter()
    box.press("Control+Enter")
    page.wait_for_function(
        "(m) => [...document.querySelectorAll('.ctx')].some(e => e.innerText.includes(m))",
        arg=marker,
        timeout=60_000,
    )
    timings["prompt_answer_s"] = time.perf_counter() - t0
    timings["prompt_answer_tokens"] = _count_tokens(page)
    _no_error(page)
    _no_error(page)
    page.screenshot(path=str(shots / "prompt.png"), full_page=True)

    # Heads: an attention-output run if there is one
    z_runs = [n for n, r in stores.items() if "hook_z" in json.dumps(_manifest(r))]
    if z_runs:
        _open(page, f"{server}/?page=heads&run={z_runs[0]}", "Direct feature attribution")
        _plots(page, 3)
        _no_error(page)
        page.screenshot(path=str(shots / "heads.png"), full_page=True)

    # Runs: every run's name, and the training curves
    _open(page, f"{server}/?page=runs&run={name}", f"Training curves: {name}")
    _plots(page, 2)  # the frontier and the run's curves (the run table is a canvas grid)
    _no_error(page)
    page.screenshot(path=str(shots / "runs.png"), full_page=True)

    print("browser timings:", json.dumps(timings))
    if os.environ.get("INTERP_BROWSER_TIMINGS"):
        out = {"timings_s": timings, "store": str(store_dir(run)), "d_sae": store.d_sae}
        Path(os.environ["INTERP_BROWSER_TIMINGS"]).write_text(json.dumps(out, indent=1) + "\n")
    for png in ("feature.png", "prompt.png", "runs.png"):
        assert (shots / png).stat().st_size > 10_000  # a rendered page, not a blank one


def _count_tokens(page) -> int:
    """Tokens shown in the prompt page's first highlighted line (BOS included)."""
    return page.locator(".ctx").first.locator("span.tok").count()


def _manifest(run: Path) -> dict:
    return json.loads((store_dir(run) / "manifest.json").read_text())
