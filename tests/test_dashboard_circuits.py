"""The Circuits explorer page under Streamlit's AppTest, on a result JSON made by the real code
(``run_experiment`` on the hand-built planted-circuit model, 2 seeds): the page shows that
result's numbers (summary table, heatmap values, ranked heads), and names the command when no
result exists."""

from __future__ import annotations

import base64
import json
from pathlib import Path

import numpy as np
import pytest
import torch
from streamlit.testing.v1 import AppTest

from circuits.discrete_codes import head_labels, head_vectors, heads_to_mask
from circuits.experiment import run_experiment, sae_config_for
from circuits.figures import ranked_heads
from circuits.patching import find_circuit, head_effects
from circuits.planted import planted_model, planted_prompts
from circuits.tasks import TaskData
from interp.models.hooked import quiet_tl

APP = str(Path(__file__).resolve().parents[1] / "dashboards" / "app.py")
pytestmark = pytest.mark.usefixtures("one_thread_module")


def _array(v) -> np.ndarray:
    """A plotly JSON array: a list, or the typed form ``{"dtype", "bdata", "shape"}``."""
    if isinstance(v, dict):
        a = np.frombuffer(base64.b64decode(v["bdata"]), dtype=v["dtype"])
        shape = [int(x) for x in str(v.get("shape", a.size)).split(",")]
        return a.reshape(shape).astype(float)
    return np.array(v, dtype=float)


def _planted_result() -> dict:
    with quiet_tl():  # TransformerLens 3's HookedTransformer deprecation warning
        model = planted_model()
    pos, neg = planted_prompts(12, seed=0)
    # answer: the repeat's first token (the induction target); wrong: a token absent from the row
    wrong = torch.tensor([[t for t in range(1, 40) if t not in row][0] for row in pos.tolist()])
    data = TaskData(
        "planted", pos, neg, torch.stack([pos[:, 1], wrong], 1), None, "logit_diff", [""] * 12, {}
    )
    eff = head_effects(model, data, progress=False)
    circ = find_circuit(
        model, data, eff["effects"], eff["clean"], eff["corrupt"], 0.8, "patch", eff["cache"]
    )
    nl, nh = model.cfg.n_layers, model.cfg.n_heads
    labels = head_labels(nl, nh)
    gt = {
        "circuit": [labels[i] for i in circ["heads"]],
        "k": circ["k"],
        "joint_effect": circ["joint_effect"],
        "share": 0.8,
        "mode": "patch",
        "n_prompts": len(pos),
        "effects": [float(x) for x in eff["effects"]],
        "curve": circ["curve"],
        "n_layers": nl,
        "n_heads": nh,
        "seconds": {"total": 0.0},
    }
    ctx = {
        "gt": gt,
        "data": data,
        "xp": head_vectors(model, pos),
        "xn": head_vectors(model, neg),
        "t_vec": 0.0,
        "truth": heads_to_mask(gt["circuit"], nl, nh),
        "cfg": sae_config_for("ioi"),
    }
    return run_experiment(
        model, "ioi", model_name="planted", seeds=2, ctx=ctx, progress=False, shares=(0.5, 0.8)
    )


@pytest.fixture(scope="module")
def result_root(tmp_path_factory):
    root = tmp_path_factory.mktemp("circ")
    res = _planted_result()
    (root / "circuits_out").mkdir()
    (root / "circuits_out" / "ioi.json").write_text(json.dumps(res))
    return root, res


def _app(root: Path, monkeypatch) -> AppTest:
    monkeypatch.setenv("INTERP_DASHBOARD_TARGET", str(root))
    at = AppTest.from_file(APP, default_timeout=120)
    at.query_params["page"] = "circuits"
    at.run()
    assert not at.exception, [e.value for e in at.exception]
    assert not at.error, [e.value for e in at.error]
    return at


def test_page_shows_the_result(result_root, monkeypatch):
    root, res = result_root
    # the result is meaningful: the planted circuit (previous-token -> induction) was found
    assert set(res["ground_truth"]["circuit"]) <= {"L0H1", "L1H2"}
    at = _app(root, monkeypatch)
    summary = at.dataframe[0].value
    assert list(summary["method"]) == list(res["summary"])
    for _, row in summary.iterrows():
        s = res["summary"][row["method"]]
        assert row["ROC AUC"] == pytest.approx(s["auc_mean"])
        assert row["balanced F1"] == pytest.approx(s["f1_mean"])
    # the heatmap's panels hold the result's scores, layer x head
    spec = json.loads(at.get("plotly_chart")[0].proto.spec)
    heat = [t for t in spec["data"] if t["type"] == "heatmap"]
    nl, nh = res["n_layers"], res["n_heads"]
    for t, key in zip(heat, ("node", "edge", "attribution", "patching"), strict=True):
        want = np.array(res["scores"][key]).reshape(nl, nh)
        np.testing.assert_allclose(_array(t["z"]), want, rtol=1e-6)
    # the AUC at each share: the result's circuit sizes and mean AUCs
    shares = at.dataframe[1].value
    assert list(shares["share"]) == [0.5, 0.8]
    for _, row in shares.iterrows():
        point = res["by_share"][f"{row['share']:g}"]
        assert row["k"] == point["k"] and len(point["methods"]) == len(res["summary"])
        for name, m in point["methods"].items():
            assert row[name] == pytest.approx(m["auc_mean"])
    # the ranked heads are the result's, in its order
    ranked = at.dataframe[2].value
    want = ranked_heads(res, "node", len(ranked))
    assert list(ranked["head"]) == [h for h, _, _ in want]
    np.testing.assert_allclose(ranked["score"], [s for _, s, _ in want], rtol=1e-9)
    assert any(res["ground_truth"]["circuit"][0] in m.value for m in at.markdown)


def test_missing_results_name_the_command(tmp_path, monkeypatch):
    at = _app(tmp_path, monkeypatch)
    assert "interp circuits --task ioi" in at.info[0].value
