"""The SmolLM2 ground-truth fixtures: well-formed, and the IOI circuit reproduced by rerunning the
fixture's command on a few of its prompts. Also the CLI's error paths (no model needed)."""

from __future__ import annotations

import numpy as np
import pytest
from typer.testing import CliRunner

from circuits.cli import app
from circuits.discrete_codes import heads_to_mask
from circuits.ground_truth import fixture_path, load_ground_truth
from circuits.patching import head_effects, joint_effect
from circuits.tasks import TASKS, build_task

N_RERUN = 8


@pytest.mark.parametrize("task", TASKS)
def test_fixtures_are_well_formed(task):
    rec = load_ground_truth(fixture_path(task))
    assert rec["task"] == task and rec["model"] == "smollm2-135m"
    assert (rec["n_layers"], rec["n_heads"]) == (30, 9)
    assert f"--task {task}" in rec["command"]
    assert rec["seconds"]["total"] > 0
    # the circuit is the prefix of the effect order, and its joint patch reached the share
    eff = np.array(rec["effects"])
    order = np.lexsort((np.arange(eff.size), -eff))
    labels = [f"L{i // 9}H{i % 9}" for i in order[: rec["k"]]]
    assert labels == rec["circuit"]
    assert rec["joint_effect"] >= rec["share"] > rec["joint_effect_k_minus_1"]


def test_ioi_circuit_is_reproduced_on_a_few_prompts(smollm2):
    """Rerun the fixture's command (same task, seed, mode) on the first N_RERUN of its prompts.
    Criterion: every circuit head is among the rerun's top max(2k, 5) heads by single-head
    effect, and the fixture's circuit patched jointly moves the rerun's metric by at least
    share - 0.1 (8 prompts instead of 40: the 0.1 allows for the sampling spread of the mean
    metric, whose per-prompt joint effects spread by about 0.1 - 0.15 around the fixture's)."""
    rec = load_ground_truth(fixture_path("ioi"))
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


def test_cli_errors_name_the_problem(tmp_path):
    runner = CliRunner()
    r = runner.invoke(app, ["--task", "nope", "--out", str(tmp_path)])
    assert r.exit_code == 2 and "unknown task 'nope'" in r.output
    r = runner.invoke(app, ["ground-truth", "--task", "ioi", "--mode", "zero"])
    assert r.exit_code == 2 and "--mode must be patch or mean" in r.output
    with pytest.raises(FileNotFoundError, match="no ground-truth fixture"):
        load_ground_truth(tmp_path / "missing.json")
