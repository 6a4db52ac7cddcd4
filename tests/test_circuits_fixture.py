"""The SmolLM2 ground-truth fixtures, checked against a recomputation on their own prompts (the
clean metric, the first head's effect and the joint effects at k - 1 and k), and the IOI circuit
reproduced by rerunning the fixture's command on a few of its prompts. Also where the
ground-truth command writes, its refusal to replace a shipped fixture, the model check when a
fixture is read, and the CLI's error paths (no model needed)."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

import circuits.cli as cli
import circuits.ground_truth as gtmod
from circuits.cli import app, resolve_ground_truth
from circuits.discrete_codes import heads_to_mask
from circuits.ground_truth import (
    circuit_at_share,
    fixture_path,
    load_ground_truth,
    save_ground_truth,
)
from circuits.patching import (
    corrupt_cache,
    effect_order,
    head_effects,
    joint_effect,
    joint_effects,
    smallest_prefix,
)
from circuits.tasks import TASKS, build_task, task_metric

N_RERUN = 8


def _fixture_invariants(rec: dict) -> None:
    """What any correct fixture satisfies, whatever its numbers."""
    n = rec["n_layers"] * rec["n_heads"]
    eff, curve = np.array(rec["effects"]), np.array(rec["curve"])
    assert eff.shape == (n,) and curve.shape == (n + 1,) and curve[0] == 0.0
    order = effect_order(eff)
    # the circuit is the smallest prefix of the effect order whose joint effect reaches the
    # share: a scan of the stored curve finds the same k, and no shorter prefix reaches it
    k = rec["k"]
    assert k == smallest_prefix(curve, rec["share"])
    assert (curve[1:k] < rec["share"]).all() and curve[k] >= rec["share"]
    labels = [f"L{i // rec['n_heads']}H{i % rec['n_heads']}" for i in order[:k]]
    assert labels == rec["circuit"]
    assert rec["joint_effect"] == curve[k] and rec["joint_effect_k_minus_1"] == curve[k - 1]
    # a prefix of one head is that head's single-head patch
    assert curve[1] == pytest.approx(eff[order[0]], abs=1e-4)
    # patching every head at every position gives the corrupt run (same last token)
    assert curve[-1] == pytest.approx(1.0, abs=1e-3)
    # the circuit at other shares is read off the same curve, and grows with the share
    ks = [circuit_at_share(rec, s)["k"] for s in (0.7, rec["share"], 0.9)]
    assert ks == sorted(ks) and ks[1] == k


@pytest.mark.parametrize("task", TASKS)
def test_fixtures_are_well_formed(task, smollm2):
    """Invariants of the stored record, then a recomputation on SmolLM2 from the fixture's own
    prompts: the clean and corrupt metrics, the first head's effect and the joint effects at k - 1
    and k (a stale or hand-edited fixture, or one made on another model, fails here)."""
    rec = load_ground_truth(fixture_path(task), model="smollm2-135m")
    assert rec["task"] == task and (rec["n_layers"], rec["n_heads"]) == (30, 9)
    assert f"--task {task}" in rec["command"] and "--model smollm2-135m" in rec["command"]
    assert rec["seconds"]["total"] > 0
    _fixture_invariants(rec)
    data = build_task(task, smollm2, rec["n_prompts"], seed=rec["seed"])
    assert len(data) == rec["n_prompts"] and data.texts[0] == rec["example_positive"]
    with torch.no_grad():
        clean = float(task_metric(data, smollm2(data.pos)[:, -1]).mean())
        corrupt = float(task_metric(data, smollm2(data.neg)[:, -1]).mean())
    assert clean == pytest.approx(rec["clean_metric"], abs=1e-3)
    assert corrupt == pytest.approx(rec["corrupt_metric"], abs=1e-3)
    order = effect_order(rec["effects"])
    k = rec["k"]
    ks = sorted({1, max(1, k - 1), k})
    cache = corrupt_cache(smollm2, data) if rec["mode"] == "patch" else None
    got = joint_effects(smollm2, data, [order[:j] for j in ks], clean, corrupt, rec["mode"], cache)
    np.testing.assert_allclose(got, [rec["curve"][j] for j in ks], atol=2e-3)


def test_invariants_catch_a_wrong_fixture():
    """The invariants above fail on fixtures that are wrong in each way they check."""
    rng = np.random.default_rng(0)
    eff = 0.5 * rng.random(12)
    order = effect_order(eff)
    curve = np.concatenate([[0.0], np.linspace(0.3, 1.0, 12)])
    curve[1] = eff[order[0]]
    share = 0.8
    k = smallest_prefix(curve, share)
    good = {
        "n_layers": 3,
        "n_heads": 4,
        "effects": eff.tolist(),
        "curve": curve.tolist(),
        "share": share,
        "k": k,
        "circuit": [f"L{i // 4}H{i % 4}" for i in order[:k]],
        "joint_effect": curve[k],
        "joint_effect_k_minus_1": curve[k - 1],
        "task": "ioi",
    }
    _fixture_invariants(good)
    bigger = {**good, "k": k + 1, "circuit": [f"L{i // 4}H{i % 4}" for i in order[: k + 1]]}
    bigger.update(joint_effect=curve[k + 1], joint_effect_k_minus_1=curve[k])
    dip = dict(good, curve=[*curve[:2], 0.85, *curve[3:]])  # a shorter prefix reached the share
    unsorted = dict(good, circuit=list(reversed(good["circuit"])))
    for bad in (bigger, dip, unsorted):
        with pytest.raises(AssertionError):
            _fixture_invariants(bad)


def test_ioi_circuit_is_reproduced_on_a_few_prompts(smollm2):
    """Rerun the fixture's command (same task, seed, mode) on the first N_RERUN of its prompts.
    Criterion: every circuit head is among the rerun's top max(2k, 5) heads by single-head
    effect, and the fixture's circuit patched jointly moves the rerun's metric by at least
    share - 0.1 (8 prompts instead of 40: the 0.1 allows for the sampling spread of the mean
    metric, whose per-prompt joint effects spread by about 0.1 - 0.15 around the fixture's)."""
    rec = load_ground_truth(fixture_path("ioi"), model="smollm2-135m")
    data = build_task("ioi", smollm2, rec["n_prompts"], seed=rec["seed"]).subset(range(N_RERUN))
    assert data.texts[0] == rec["example_positive"]
    eff = head_effects(smollm2, data, rec["mode"], progress=False)
    k = rec["k"]
    top = np.lexsort((np.arange(270), -eff["effects"]))[: max(2 * k, 5)]
    circuit = np.nonzero(heads_to_mask(rec["circuit"], 30, 9))[0]
    assert set(circuit.tolist()) <= set(top.tolist())
    joint = joint_effect(
        smollm2, data, circuit.tolist(), eff["clean"], eff["corrupt"], rec["mode"], eff["cache"]
    )
    assert joint >= rec["share"] - 0.1


# ---- where fixtures are written and which model they are read for -----------------------------


def _record(model: str, task: str = "ioi") -> dict:
    return {
        "task": task,
        "model": model,
        "n_layers": 1,
        "n_heads": 2,
        "effects": [0.9, 0.1],
        "curve": [0.0, 0.9, 1.0],
        "circuit": ["L0H0"],
        "k": 1,
        "joint_effect": 0.9,
        "share": 0.8,
        "seconds": {"total": 1.0},
    }


@pytest.fixture
def fake_ground_truth(monkeypatch, tmp_path):
    """The CLI with no model: ``load_model`` returns a stand-in and ``ground_truth`` a record of
    the requested model; the package's fixture folder is a temporary copy."""
    shipped = tmp_path / "pkg_fixtures"
    shipped.mkdir()
    (shipped / "ioi.json").write_text(json.dumps(_record("smollm2-135m")))
    monkeypatch.setattr(gtmod, "FIXTURES", shipped)
    monkeypatch.setattr(cli, "load_model", lambda spec: object())
    monkeypatch.setattr(
        cli, "ground_truth", lambda m, task, model_name, **kw: _record(model_name, task)
    )
    work = tmp_path / "work"
    work.mkdir()
    monkeypatch.chdir(work)
    return shipped, work


def test_ground_truth_writes_to_the_users_folder_by_default(fake_ground_truth):
    shipped, work = fake_ground_truth
    before = (shipped / "ioi.json").read_text()
    r = CliRunner().invoke(app, ["ground-truth", "--task", "ioi", "--model", "gpt2"])
    assert r.exit_code == 0, r.output
    written = work / "circuits_out" / "ground_truth" / "ioi.json"
    assert json.loads(written.read_text())["model"] == "gpt2"
    assert (shipped / "ioi.json").read_text() == before  # the shipped fixture is untouched


def test_ground_truth_refuses_a_shipped_fixture_unless_asked(fake_ground_truth):
    shipped, _ = fake_ground_truth
    before = (shipped / "ioi.json").read_text()
    runner = CliRunner()
    r = runner.invoke(
        app,
        ["ground-truth", "--task", "ioi", "--model", "gpt2", "--out", str(shipped / "ioi.json")],
    )
    assert r.exit_code == 2 and "refusing" in r.output and "--replace-shipped-fixture" in r.output
    assert (shipped / "ioi.json").read_text() == before
    with pytest.raises(ValueError, match="replace-shipped-fixture"):
        save_ground_truth(_record("gpt2"), shipped / "docstring.json")
    assert not (shipped / "docstring.json").exists()
    # asked in so many words: the shipped fixture is replaced
    r = runner.invoke(
        app, ["ground-truth", "--task", "ioi", "--model", "gpt2", "--replace-shipped-fixture"]
    )
    assert r.exit_code == 0, r.output
    assert json.loads((shipped / "ioi.json").read_text())["model"] == "gpt2"


def test_a_fixture_read_for_another_model_is_an_error(fake_ground_truth, tmp_path):
    shipped, work = fake_ground_truth
    path = tmp_path / "gpt2_ioi.json"
    path.write_text(json.dumps(_record("gpt2")))
    assert load_ground_truth(path, model="gpt2")["model"] == "gpt2"
    with pytest.raises(ValueError) as e:
        load_ground_truth(path, model="smollm2-135m")
    for part in (str(path), "'gpt2'", "'smollm2-135m'"):
        assert part in str(e.value)
    # through the CLI, before any model is loaded
    r = CliRunner().invoke(
        app, ["--task", "ioi", "--model", "smollm2-135m", "--ground-truth-file", str(path)]
    )
    assert r.exit_code == 2 and "'gpt2'" in r.output and "'smollm2-135m'" in r.output
    # the default lookup: the shipped fixture only for its own model, else none (computed)
    rec, source = resolve_ground_truth("ioi", "smollm2-135m", work / "out", None)
    assert rec["model"] == "smollm2-135m" and source == str(shipped / "ioi.json")
    rec, source = resolve_ground_truth("ioi", "gpt2", work / "out", None)
    assert rec is None and "no ground truth for 'gpt2'" in source
    # the user's own ground truth comes first, and is checked too
    mine = work / "out" / "ground_truth" / "ioi.json"
    save_ground_truth(_record("gpt2"), mine)
    assert resolve_ground_truth("ioi", "gpt2", work / "out", None)[1] == str(mine)
    with pytest.raises(ValueError, match="not on the requested 'smollm2-135m'"):
        resolve_ground_truth("ioi", "smollm2-135m", work / "out", None)


def test_cli_errors_name_the_problem(tmp_path):
    runner = CliRunner()
    r = runner.invoke(app, ["--task", "nope", "--out", str(tmp_path)])
    assert r.exit_code == 2 and "unknown task 'nope'" in r.output
    r = runner.invoke(app, ["ground-truth", "--task", "ioi", "--mode", "zero"])
    assert r.exit_code == 2 and "--mode must be patch or mean" in r.output
    with pytest.raises(FileNotFoundError, match="no ground-truth fixture"):
        load_ground_truth(tmp_path / "missing.json")
