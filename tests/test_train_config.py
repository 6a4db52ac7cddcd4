"""The nested run config: sections, dotted --set, old flat keys named in their new place, per-SAE
overrides limited to sae/optim, old run folders still read, and `interp config` documentation."""

from __future__ import annotations

import json

import pytest
from typer.testing import CliRunner

from interp.cli import app
from saes.config import SAEConfig
from saes.multi import check_shared, expand_job
from saes.train_config import (
    SECTIONS,
    RunConfig,
    apply_changes,
    describe_fields,
    load_run_config,
    nest_flat,
)
from saes.variants import variant_class, variant_names


def test_dotted_set_and_sections():
    cfg = load_run_config(None, ["sae.k=64", "optim.lr=1e-3", "data.model=tiny", "eval.tokens=8"])
    assert (cfg.sae.k, cfg.optim.lr, cfg.data.model, cfg.eval.tokens) == (64, 1e-3, "tiny", 8)
    assert isinstance(cfg.sae, SAEConfig)  # the SAE section is the SAE's own config
    s = cfg.sae_config(576)
    assert (s.d_in, s.k, s.hook_name, s.model_name) == (576, 64, cfg.data.hook, "tiny")
    with pytest.raises(ValueError, match="sae.d_in is 8 but .* has width 576"):
        load_run_config(None, ["sae.d_in=8"]).sae_config(576)


def test_old_flat_keys_name_their_new_place(tmp_path):
    for key, place in (
        ("k", "sae.k"),
        ("lr", "optim.lr"),
        ("eval_tokens", "eval.tokens"),
        ("out_dir", "log.out_dir"),
        ("beta", "sae.beta"),
        ("hook", "data.hook"),
    ):
        with pytest.raises(ValueError, match=f"'{key}' moved to '{place}'"):
            load_run_config(None, [f"{key}=1"])
    (tmp_path / "flat.json").write_text(json.dumps({"k": 8, "model": "tiny"}))
    res = CliRunner().invoke(app, ["train", "--config", str(tmp_path / "flat.json")])
    assert res.exit_code == 2 and "'k' moved to 'sae.k'" in res.output
    assert "flat.json" in res.output  # names the file
    with pytest.raises(ValueError, match="'beta' is a key of variant"):
        load_run_config(None, ["sae.beta=2"])  # a knob of another variant than the chosen one
    assert load_run_config(None, ["sae.variant=gtopk", "sae.beta=2"]).sae.beta == 2


def test_old_run_folders_are_read():
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


def test_per_sae_overrides_are_sae_and_optim_sections():
    base = nest_flat({"model": "tiny", "hooks": ["blocks.0.hook_resid_post"], "d_sae": 64, "k": 8})
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
