"""What every page gets: the runs root, the selected run, and cached loaders.

The target (``INTERP_DASHBOARD_TARGET``, set by ``interp dashboard serve TARGET``) is either one
run / SAE folder, whose parent is then the root of the Runs page, or a folder of runs. The
selected run is the ``?run=`` query parameter (a path relative to the root), else the target,
else the first run that has a feature store. Model, SAE and store are loaded once per process
(``st.cache_resource``) and shared by every session and page.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import streamlit as st

from interp.models import load_model
from saes.artifacts import load_sae
from saes.features import FeatureStore, StoreError, store_dir
from saes.rundir import RunDir
from saes.runs import RunInfo, list_runs

ENV_TARGET = "INTERP_DASHBOARD_TARGET"


@st.cache_resource(show_spinner="opening the feature store ...")
def _store(path: str) -> FeatureStore:
    return FeatureStore.open(path)


@st.cache_resource(show_spinner="loading the SAE ...")
def _sae(path: str):
    sae = load_sae(path, device="cpu")
    sae.eval()
    return sae


@st.cache_resource(show_spinner="loading the model (once per server) ...")
def _model(spec: str, dtype: str):
    return load_model(spec, device="cpu", dtype=dtype)


def missing(what: str, command: str) -> None:
    """Say which data is missing and the one command that builds it, then end the page."""
    st.info(f"{what}\n\nBuild it with:\n\n```\n{command}\n```")
    st.stop()


@dataclass
class Context:
    target: Path
    root: Path
    runs: list[RunInfo]
    run: Path | None

    @classmethod
    def from_env(cls) -> Context:
        target = Path(os.environ.get(ENV_TARGET, "runs")).resolve()
        if not target.exists():
            st.error(f"{target} does not exist: pass a run folder or a folder of runs")
            st.stop()
        single = RunDir(target).is_run() or (target / "cfg.json").is_file()
        root = target.parent if single else target
        try:
            runs = list_runs(root)
        except (FileNotFoundError, NotADirectoryError) as e:
            st.error(str(e))
            st.stop()
        chosen = st.query_params.get("run")
        run = None
        if chosen and (root / chosen).is_dir():
            run = (root / chosen).resolve()
        elif single:
            run = target
        else:
            with_store = [r for r in runs if (store_dir(r.path) / "manifest.json").is_file()]
            run = Path((with_store or runs)[0].path).resolve() if (with_store or runs) else None
        return cls(target, root, runs, run)

    # ---- what pages read -------------------------------------------------------------------
    @property
    def run_name(self) -> str:
        if self.run is None:
            return ""
        try:
            return str(self.run.relative_to(self.root))
        except ValueError:
            return str(self.run)

    def require_run(self) -> Path:
        if self.run is None:
            missing(f"No run folder under {self.root}.", "interp demo   # or: interp train ...")
        return self.run

    def store(self) -> FeatureStore:
        """The selected run's feature store, or a page that says how to build it."""
        run = self.require_run()
        path = store_dir(run)
        if not (path / "manifest.json").is_file():
            missing(f"No feature store for {self.run_name}.", f"interp dashboard build {run}")
        try:
            return _store(str(path))
        except StoreError as e:
            missing(str(e), f"interp dashboard build {run}")
            raise

    def sae(self):
        return _sae(str(self.require_run()))

    def model(self):
        """The model the store was built with (its spec and dtype are in the manifest)."""
        m = self.store().manifest
        spec = (m.get("describe") or {}).get("model_spec") or m.get("model")
        if not spec:
            missing("The store does not say which model it read.", "interp dashboard build RUN")
        return _model(spec, m.get("model_dtype") or "float32")

    def link(self, page: str, **params) -> str:
        """A relative URL to another page of this app, keeping the selected run."""
        q = {"page": page, "run": self.run_name, **params}
        return "?" + "&".join(f"{k}={v}" for k, v in q.items() if v not in (None, ""))
