"""``interp darkmatter`` (saes.analysis.dark_matter.cli) end to end on a tiny model: two widths of
TopK SAEs and a hook_z SAE, JSON per run and combined, figures, the scaling block."""

from __future__ import annotations

import json

import plotly.io as pio
import pytest
from typer.testing import CliRunner

from saes.analysis.dark_matter.cli import app
from saes.artifacts import save_sae
from saes.config import SAEConfig
from saes.sae import SAE

pytestmark = pytest.mark.usefixtures("one_thread_module")


def test_darkmatter_cli_on_tiny(tmp_path, tiny):
    runs = []
    for d_sae, hook in (
        (64, "blocks.0.hook_resid_post"),
        (128, "blocks.0.hook_resid_post"),
        (96, "blocks.1.attn.hook_z"),
    ):
        cfg = SAEConfig(d_in=64, d_sae=d_sae, k=4, hook_name=hook, model_name="tiny")
        runs.append(str(save_sae(SAE(cfg, seed=d_sae), tmp_path / f"sae{d_sae}")))
    out = tmp_path / "dm.json"
    res = CliRunner().invoke(
        app,
        [
            *runs,
            "--tokens",
            "3000",
            "--test-tokens",
            "1500",
            "--ce-windows",
            "2",
            "--ce-start",
            "100",
            "--pursuit-tokens",
            "200",
            "--model-dtype",
            "float32",
            "--out",
            str(out),
        ],
    )
    assert res.exit_code == 0, res.output
    result = json.loads(out.read_text())
    assert len(result["saes"]) == 3
    for rep in result["saes"].values():
        assert rep["decomposition"]["n_fit"] == 3000 and rep["decomposition"]["n_test"] == 1500
        assert rep["downstream"]["start"] == 100
        assert rep["pursuit"]["test"]["n_tokens"] == 200
    assert result["scaling"]["widths"] == [64, 128]
    assert (tmp_path / "sae64" / "dark_matter.json").exists()
    figs = sorted(p.stem for p in (tmp_path / "dm_figures").iterdir())
    assert figs == ["decomposition", "downstream", "norm_prediction", "pursuit", "scaling"]
    pio.read_json(tmp_path / "dm_figures" / "scaling.json")
    assert "FVU x_hat+xa*" in res.output


def test_darkmatter_cli_names_a_missing_folder(tmp_path):
    res = CliRunner().invoke(app, [str(tmp_path / "nope")])
    assert res.exit_code == 2
    assert "nope" in res.output
