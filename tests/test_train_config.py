"""The nested run config: sections, dotted --set, old flat keys an error naming their section (in
a config, a config file, --set, a per-SAE entry), per-SAE overrides limited to sae/optim, run
folders of the old flat layout still read, and `interp config` documentation."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from pydantic import ValidationError
from typer.testing import CliRunner

from interp.cli import app
from saes.config import SAEConfig
from saes.rundir import RunDir
from saes.runs import list_runs
from saes.training.config import (
    SECTIONS,
    RunConfig,
    apply_changes,
    describe_fields,
    load_run_config,
)
from saes.training.shared_stream import check_shared, expand_job
from saes.variants import variant_class, variant_names


def test_dotted_set_and_sections():
    cfg = load_run_config(None, ["sae.k=64", "optim.lr=1e-3", "data.model=tiny", "eval.tokens=8"])
    assert (cfg.sae.k, cfg.optim.lr, cfg.data.model, cfg.eval.tokens) == (64, 1e-3, "tiny", 8)
    assert isinstance(cfg.sae, SAEConfig)  # the SAE section is the SAE's own config
    s = cfg.sae_config(576)
    assert (s.d_in, s.k, s.hook_name, s.model_name) == (576, 64, cfg.data.hook, "tiny")
    with pytest.raises(ValueError, match="sae.d_in is 8 but .* has width 576"):
        load_run_config(None, ["sae.d_in=8"]).sae_config(576)
    with pytest.raises(ValueError, match="'beta' is a key of variant"):
        load_run_config(None, ["sae.beta=2"])  # a knob of another variant than the chosen one
    assert load_run_config(None, ["sae.variant=gtopk", "sae.beta=2"]).sae.beta == 2


FLAT = (
    ("k", "sae.k"),
    ("lr", "optim.lr"),
    ("eval_tokens", "eval.tokens"),
    ("out_dir", "log.out_dir"),
    ("beta", "sae.beta"),
    ("hook", "data.hook"),
)


def _names_section(key: str, place: str) -> str:
    section = place.split(".")[0]
    return f"'{key}' belongs in section '{section}' \\({place}\\)"


@pytest.mark.parametrize(("key", "place"), FLAT)
def test_a_flat_key_is_an_error_naming_its_section(key, place):
    """The schema itself refuses the old flat layout, wherever a config comes from."""
    with pytest.raises(ValidationError, match=_names_section(key, place)):
        RunConfig(**{key: 1})
    with pytest.raises(ValueError, match=_names_section(key, place)):
        load_run_config(None, [f"{key}=1"])


def test_flat_keys_in_a_config_file_or_a_per_sae_entry_name_their_section(tmp_path):
    (tmp_path / "flat.json").write_text(json.dumps({"k": 8, "model": "tiny"}))
    res = CliRunner().invoke(app, ["train", "--config", str(tmp_path / "flat.json")])
    assert res.exit_code == 2 and "'k' belongs in section 'sae' (sae.k)" in res.output
    assert "'model' belongs in section 'data' (data.model)" in res.output
    assert "flat.json" in res.output  # names the file
    (tmp_path / "flat.yaml").write_text("data:\n  model: tiny\nd_sae: 64\n")
    with pytest.raises(ValueError, match="flat.yaml.*'d_sae' belongs in section 'sae'"):
        load_run_config(tmp_path / "flat.yaml")
    with pytest.raises(ValidationError, match=r"'lr' belongs in section 'optim' \(optim.lr\)"):
        RunConfig(saes=[{"name": "a", "sae": {"k": 4}, "lr": 1e-3}])


def test_old_saved_configs_are_read():
    flat = {
        "model": "tiny",
        "k": 8,
        "d_sae": 64,
        "variant": "topk",
        "beta": 1.0,
        "lr": 0.01,
        "eval_tokens": 99,
        "out_dir": "x",
        "saes": [{"k": 4}],
    }
    cfg = RunConfig.from_saved(flat)
    assert (cfg.data.model, cfg.sae.k, cfg.optim.lr, cfg.eval.tokens, cfg.log.out_dir) == (
        "tiny",
        8,
        0.01,
        99,
        "x",
    )
    assert "beta" not in cfg.sae.knobs  # old configs held every variant's keys
    assert cfg.saes[0].sae == {"k": 4}
    assert RunConfig.from_saved(cfg.model_dump()) == cfg  # nested round trip


def _old_flat_layout(saved: dict) -> dict:
    """A run folder's saved config as runs wrote it before the sections: one flat mapping, the
    eval keys named ``eval_tokens`` / ``eval_ce_windows``, every variant's knobs (here gtopk's
    beta beside topk's) and none of the fields added since (eval.cache, eval.holdout_tokens)."""
    flat = {k: v for section in ("data", "sae", "optim", "log") for k, v in saved[section].items()}
    flat.update(eval_tokens=saved["eval"]["tokens"], eval_ce_windows=saved["eval"]["ce_windows"])
    return {**flat, "beta": 1.0, "device": saved["device"], "saes": saved["saes"]}


def test_an_old_flat_run_folder_opens(tiny_trained, tiny, tmp_path, one_thread):
    """A run folder whose run_config.json has the old flat layout is still listed, read and
    evaluated (the readers of run folders convert it); only they do: the schema refuses it."""
    from saes.evaluation.evaluate import evaluate_run

    old = Path(shutil.copytree(tiny_trained, tmp_path / "old"))
    saved = RunDir(old).config(required=True)
    flat = _old_flat_layout(saved)
    RunDir(old).config_path.write_text(json.dumps(flat))
    assert RunConfig.from_saved(RunDir(old).config(required=True)) == RunConfig(**saved)
    (info,) = list_runs(tmp_path)
    assert (info.status, info.variant, info.k, info.d_sae) == ("finished", "topk", 8, 128)
    before = json.loads(RunDir(old).metrics_path.read_text())
    RunDir(old).metrics_path.unlink()
    after = evaluate_run(old, model=tiny)
    assert after["fvu"] == pytest.approx(before["fvu"], rel=1e-6)
    assert after["n_tokens"] == before["n_tokens"] == saved["eval"]["tokens"]
    with pytest.raises(ValidationError, match="'k' belongs in section 'sae'"):
        RunConfig(**flat)


def test_per_sae_overrides_are_sae_and_optim_sections():
    base = {"data": {"model": "tiny", "hooks": ["blocks.0.hook_resid_post"]}}
    base["sae"] = {"d_sae": 64, "k": 8}
    job = RunConfig(
        **base,
        saes=[
            {"sae": {"k": 4}},
            {
                "name": "r",
                "sae": {"variant": "relu_l1", "l1_coefficient": 2.0},
                "optim": {"lr": 1e-3},
            },
        ],
    )
    runs = expand_job(job, ["blocks.0.hook_resid_post"])
    assert [(r.sae.variant, r.sae.k, r.optim.lr) for r in runs] == [
        ("topk", 4, None),
        ("relu_l1", 8, 1e-3),
    ]
    assert runs[1].sae.knobs == {"l1_coefficient": 2.0}  # topk's aux_k_coef dropped with the switch
    assert [r.log.out_dir.split("/")[-1] for r in runs] == ["k4", "r"]
    check_shared(runs)  # one stream
    with pytest.raises(ValueError, match=r"cannot change \['data.batch_tokens'\]"):
        RunConfig(**base, saes=[{"data": {"batch_tokens": 512}}])
    other = apply_changes(runs[1], {"data.context_size": 64})
    with pytest.raises(ValueError, match="must share 'data.context_size'"):
        check_shared([runs[0], other])


def test_every_field_has_a_docstring_and_interp_config_prints_them():
    rows = describe_fields()
    keys = [k for k, _, _ in rows]
    for name, model in SECTIONS.items():
        for field in model.model_fields:
            assert f"{name}.{field}" in keys
    for v in variant_names():
        for field in variant_class(v).Knobs.model_fields:
            assert f"sae.{field}" in keys
    undocumented = [k for k, _, doc in rows if not doc.strip() or doc.strip().endswith("]")]
    assert undocumented == []
    res = CliRunner().invoke(app, ["config"])
    assert res.exit_code == 0
    assert "sae.k = 32" in res.output and "optim.warmup_steps = 50" in res.output
    assert "[gtopk] Gradient weight" in res.output
    res = CliRunner().invoke(app, ["config", "--set", "sae.k=7"])
    assert res.exit_code == 0 and json.loads(res.output)["sae"]["k"] == 7
