"""The training-dynamics experiment: resumption gives the same run as an uninterrupted one, the
records hold a PPL-1% measurement at every checkpoint, and the CLI writes results and figures."""

from __future__ import annotations

import json

import pytest
import torch
from safetensors.torch import load_file
from typer.testing import CliRunner

from interp.sparsity.cli import app
from interp.sparsity.dynamics import DynamicsConfig, RunSpec, collect, train_run


def _cfg(**kw) -> DynamicsConfig:
    base = {
        "runs": [RunSpec(act_fn="relu", n_layers=1, d_model=16)],
        "context_size": 32,
        "batch_size": 4,
        "steps": 12,
        "checkpoints": [4, 8, 12],
        "eval_tokens": 512,
        "calib_tokens": 128,
        "warmup": 2,
    }
    return DynamicsConfig(**(base | kw))


def test_resumed_run_equals_the_uninterrupted_one(tmp_path):
    """Stopping after checkpoint 4 and resuming replays the same data and optimizer state: the
    weights match to float rounding (1e-6; identical ops in the same order) and the records match."""
    cfg = _cfg()
    run = cfg.runs[0]
    whole = train_run(cfg, run, tmp_path / "a", progress=False)
    part = train_run(cfg, run, tmp_path / "b", progress=False, stop_after=4)
    assert part["step"] == 4 and not part["done"]
    resumed = train_run(cfg, run, tmp_path / "b", progress=False)
    assert resumed["done"] and resumed["step"] == whole["step"] == 12
    wa = load_file(tmp_path / "a" / run.name / "model.safetensors")
    wb = load_file(tmp_path / "b" / run.name / "model.safetensors")
    assert wa.keys() == wb.keys()
    for k in wa:
        assert torch.allclose(wa[k], wb[k], atol=1e-6), k
    for ra, rb in zip(whole["records"], resumed["records"], strict=True):
        assert ra["step"] == rb["step"] and ra["tokens"] == rb["tokens"]
        assert ra["train_loss"] == pytest.approx(rb["train_loss"], rel=1e-5)
    assert [r["step"] for r in whole["records"]] == [4, 8, 12]
    assert all(r["tokens"] == r["step"] * 4 * 32 for r in whole["records"])
    # a finished run is read back, not retrained; another config in the same folder is refused
    assert train_run(cfg, run, tmp_path / "a", progress=False)["records"] == whole["records"]
    with pytest.raises(ValueError, match="another config.*lr"):
        train_run(_cfg(lr=1e-4), run, tmp_path / "a", progress=False)


def test_collect_fits_each_run_with_its_law():
    """Planted series: a ReLU run falling toward 0.1 and a SiLU run rising toward 0.4 (exact law
    values); collect picks the law from the run's activation and recovers both limits."""
    tokens = [1e6 * t for t in (1, 2, 3, 5, 8, 12, 20)]

    def meta(act, values):
        recs = [
            {"tokens": t, "activation_ratio": v, "ppl_dense": 10.0}
            for t, v in zip(tokens, values, strict=True)
        ]
        run = {"name": f"{act}_x", "act_fn": act, "d_model": 32, "n_layers": 2}
        return {"run": run, "records": recs, "non_embedding_params": 1, "train_s": 1.0}

    relu = [0.1 + 0.2 * 2.718281828 ** (-0.5 * (t / 1e6) ** 0.7) for t in tokens]
    silu = [0.4 - 0.1 * (t / 1e6) ** -0.8 for t in tokens]
    res = collect([meta("relu", relu), meta("silu", silu)])
    assert res["fits"]["relu_x"]["law"] == "relu" and res["fits"]["silu_x"]["law"] == "silu"
    assert res["fits"]["relu_x"]["fit"]["params"]["A0"] == pytest.approx(0.1, abs=2e-3)
    assert res["fits"]["silu_x"]["fit"]["params"]["A0"] == pytest.approx(0.4, abs=2e-3)
    rows = {r["run"]: r for r in res["summary"]}
    assert rows["relu_x"]["trend"] < 0 < rows["silu_x"]["trend"]
    assert rows["relu_x"]["width_depth"] == 16
    assert rows["relu_x"]["spearman"] == -1.0 and rows["silu_x"]["spearman"] == 1.0  # monotone
    dirs = res["directions"]
    assert (dirs["relu_falling"], dirs["silu_rising"], dirs["silu_converging"]) == (1, 1, 1)


def test_cli_fit_and_dynamics_write_json_and_figures(tmp_path):
    runner = CliRunner()
    series = tmp_path / "toy_silu.txt"
    d = [1, 2, 4, 8, 16, 32, 64]
    series.write_text(
        json.dumps(
            {
                "token_passed": [x * 1e9 for x in d],
                "activation_ratio": [0.4 - 0.1 * x**-0.8 for x in d],
            }
        )
    )
    res = runner.invoke(
        app, ["fit", str(series), "--out", str(tmp_path / "fit"), "--profile-points", "5"]
    )
    assert res.exit_code == 0, res.output
    fit = json.loads((tmp_path / "fit" / "fit.json").read_text())["series"]["toy_silu"]
    assert fit["fit"]["params"]["A0"] == pytest.approx(0.4, abs=1e-3)
    for name in ("fit_series", "fit_linearised", "fit_profile"):
        fig = json.loads((tmp_path / "fit" / f"{name}.fig.json").read_text())
        assert fig["data"], name
    cfg = tmp_path / "dyn.json"
    cfg.write_text(_cfg(steps=8, checkpoints=[4, 8]).model_dump_json())
    res = runner.invoke(app, ["dynamics", "--out", str(tmp_path / "dyn"), "--config", str(cfg)])
    assert res.exit_code == 0, res.output
    out = json.loads((tmp_path / "dyn" / "dynamics.json").read_text())
    assert [r["step"] for r in out["runs"][0]["records"]] == [4, 8]
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps({"stepz": 3}))
    res = runner.invoke(app, ["dynamics", "--out", str(tmp_path / "x"), "--config", str(bad)])
    assert res.exit_code == 2 and "stepz" in res.output


def test_cli_measure_writes_thresholds_and_figure(tmp_path):
    args = ["measure", "--model", "tiny:act_fn=relu", "--dtype", "float32", "--n-tokens", "2048"]
    args += ["--context-size", "128", "--calib-tokens", "512", "--out", str(tmp_path)]
    args += ["--heldout-tokens", "1024"]
    res = CliRunner().invoke(app, args)
    assert res.exit_code == 0, res.output
    out = json.loads((tmp_path / "measure.json").read_text())
    assert len(out["thresholds"]) == len(out["layers"]) == 2
    assert abs(out["ppl_increase"] - 0.01) <= 0.05 * 0.01 + 1e-9  # searched on all 2048 tokens
    assert len(out["lazy"]["layers"]) == 2
    # the held-out windows are the 8 after the 16 searched ones: perplexity recomputed there
    held = out["heldout"]
    assert held["tokens"] == 1024 and len(held["layers"]) == 2
    from interp.models import load_model
    from interp.sparsity.measure import (
        MeasureConfig,
        perplexity,
        threshold_interventions,
        windows_for,
    )

    m = load_model("tiny:act_fn=relu", dtype="float32")
    rows = windows_for(m, MeasureConfig(context_size=128), 3072)[16:]
    dense = perplexity(m, rows)
    sparse = perplexity(m, rows, threshold_interventions(m, out["thresholds"]))
    assert held["ppl_dense"] == pytest.approx(dense, rel=1e-9)
    assert held["ppl_increase"] == pytest.approx(sparse / dense - 1, abs=1e-9)
    fig = json.loads((tmp_path / "measure_layers.fig.json").read_text())
    assert len(fig["data"]) == 3  # ratio bars, fraction nonzero, thresholds


def test_direction_rule_flags_trends_and_not_noise():
    """direction(): one rule for both activations. On 12 checkpoints with Gaussian noise sd 0.03
    (the scatter of our runs): pure noise is called flat in most of 200 seeds (a 2-SE rule on a
    near-normal change flags about 5%; the estimated sigma adds a little), a rise of 6 SE of the
    change is called "rises" in nearly all of them, and the mirrored series is called "falls" with
    the same numbers."""
    import numpy as np

    from interp.sparsity.dynamics import direction

    n, sd = 12, 0.03
    se = sd * np.sqrt(2 / 3)
    flagged, risen = 0, 0
    for seed in range(200):
        rng = np.random.default_rng(seed)
        noise = 0.2 + rng.normal(0, sd, n)
        d = direction(noise)
        flagged += d["verdict"] != "flat"
        ramp = noise + np.linspace(0, 6 * se * (n - 1) / (n - 3), n)  # ends' means differ by 6 SE
        up, down = direction(ramp), direction(-ramp)
        risen += up["verdict"] == "rises"
        assert (
            down["verdict"] == {"rises": "falls", "falls": "rises", "flat": "flat"}[up["verdict"]]
        )
        assert down["change"] == pytest.approx(-up["change"]) and down["se"] == pytest.approx(
            up["se"]
        )
        assert up["change"] == pytest.approx(ramp[-3:].mean() - ramp[:3].mean())
    assert flagged <= 0.12 * 200, flagged
    assert risen >= 0.9 * 200, risen
    with pytest.raises(ValueError, match="needs >= 6 values, got 5"):
        direction([0.1, 0.2, 0.3, 0.4, 0.5])
