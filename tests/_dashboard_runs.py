"""Test helper: small run folders with feature stores, for the explorer's tests (tiny model)."""

from __future__ import annotations

from pathlib import Path

from _configs import flat_config

from saes.features import StoreConfig, build_store
from saes.train import train

STORE = StoreConfig(batch_windows=4, sample=32, examples_per_band=3, top_k=6, tokens=32 * 24)


def tiny_run(root: Path, model, name: str, hook: str, with_store: bool = True) -> Path:
    """A trained and evaluated TopK run of the tiny model at ``hook``, and its store."""
    cfg = flat_config(
        model="tiny", hook=hook, context_size=33, batch_windows=8, buffer_tokens=1024,
        d_sae=96, k=6, train_tokens=256 * 8, batch_tokens=256, warmup_steps=2,
        out_dir=str(root / name), eval_tokens=512, eval_ce_windows=2, log_every=2,
    )  # fmt: skip
    train(cfg, progress=False, evaluate=True, model=model)
    if with_store:
        build_store(root / name, model=model, config=STORE)
    return root / name


APP = str(Path(__file__).resolve().parents[1] / "dashboards" / "app.py")


def open_page(root: Path, monkeypatch, **params):
    """The explorer over ``root`` in Streamlit's AppTest, run once with ``params`` as the URL's
    query (``page=...``, ``run=...``), failing on any exception or error box."""
    from streamlit.testing.v1 import AppTest

    monkeypatch.setenv("INTERP_DASHBOARD_TARGET", str(root))
    at = AppTest.from_file(APP, default_timeout=120)
    for k, v in params.items():
        at.query_params[k] = str(v)
    at.run()
    assert not at.exception, [e.value for e in at.exception]
    assert not at.error, [e.value for e in at.error]
    return at
