"""Model-free runs (data.model null): training from an activation cache of synthetic activations,
evaluation on held-out cached rows (the tail of the training cache that training never reads, or a
separate eval cache), CE/KL skipped with the reason, the run finished; configs that cannot work are
refused before any training."""

from __future__ import annotations

import contextlib
import io
import json

import pytest
import torch
from _runs import tiny_config
from safetensors.torch import save_file
from typer.testing import CliRunner

from interp.cli import app
from interp.synthetic import SyntheticDictionary
from saes.artifacts import load_sae
from saes.runs import list_runs
from saes.training.activation_sources import ActivationFilesSource
from saes.training.config import RunConfig, load_run_config
from saes.training.loop import train
from saes.training.run_status import read_status

pytestmark = pytest.mark.usefixtures("one_thread_module")

HOOK = "blocks.3.hook_resid_post"  # a name only: the cache defines the hook, no model has it
D_IN = 96
ROWS = 5 * 1024  # 4096 trainable rows, then the held-out tail of eval.tokens = 1024 rows
SPLICED = ("ce_clean", "ce_spliced", "ce_zero_ablated", "ce_loss_recovered", "kl_div")


def write_cache(folder, x: torch.Tensor, shard_rows: int = 768) -> None:
    """A cache written by hand (the README's format); the "tokens" column holds each row's index,
    so a batch tells which cache rows it came from."""
    folder.mkdir(parents=True)
    shards = []
    for i, a in enumerate(range(0, len(x), shard_rows)):
        name = f"shard_{i:05d}.safetensors"
        part = x[a : a + shard_rows].contiguous()
        save_file({HOOK: part, "tokens": torch.arange(a, a + len(part))}, str(folder / name))
        shards.append({"file": name, "tokens": len(part), "bytes": (folder / name).stat().st_size})
    manifest = {
        "format": "interp-activations",
        "version": 1,
        "model": "synthetic",
        "hooks": {HOOK: x.shape[1]},
        "dtype": "float32",
        "has_grads": False,
        "complete": True,
        "shards": shards,
    }
    (folder / "manifest.json").write_text(json.dumps(manifest))


def _cfg(tmp_path, cache, name="run", data=None, eval_=None) -> RunConfig:
    """The tiny run without a model: 12 steps from ``cache``, d_sae 192, a checkpoint every 6
    steps, evaluated on 1024 held-out rows."""
    return tiny_config(
        tmp_path,
        name,
        data={
            "model": None,
            "hook": HOOK,
            "cache": str(cache),
            "train_tokens": 256 * 12,
            "init_sample_tokens": 512,
            **(data or {}),
        },
        sae={"d_sae": 192},
        log={"checkpoint_every_tokens": 256 * 6},
        eval={"tokens": 1024, **(eval_ or {})},
    )


@pytest.fixture(scope="module")
def synthetic(tmp_path_factory):
    """A 96-dim synthetic cache of ROWS rows (rows as a tensor too) and the trained model-free run."""
    root = tmp_path_factory.mktemp("model_free")
    x = SyntheticDictionary(d_in=D_IN, n_features=384, mean_active=6, seed=1).sample(ROWS)[0]
    write_cache(root / "cache", x)
    return root, x


@pytest.fixture(scope="module")
def trained(synthetic):
    root, x = synthetic
    cfg = _cfg(root, root / "cache")
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        run = train(cfg, progress=False)
    return run, cfg, x, out.getvalue()


def _hand_fvu(sae, x: torch.Tensor) -> float:
    with torch.no_grad():
        x_hat = sae(x)[0].double()
    x = x.double()
    return ((x - x_hat).pow(2).sum() / (x - x.mean(0)).pow(2).sum()).item()


def test_model_free_run_finishes_with_held_out_metrics_and_the_skipped_list(trained, synthetic):
    run, cfg, _, printed = trained
    root, _ = synthetic
    assert cfg.data.model is None and cfg.resolved_holdout_tokens == 1024
    assert read_status(run)["state"] == "finished"
    assert [r.status for r in list_runs(root) if r.path == str(run)] == ["finished"]
    assert (run / "sae_weights.safetensors").exists()
    m = json.loads((run / "metrics.json").read_text())
    for key in (
        "fvu",
        "explained_variance",
        "l0_mean",
        "dead_fraction",
        "dense_fraction",
        "cosine_mean",
        "norm_ratio_mean",
    ):
        assert isinstance(m[key], float), key
    assert 0 < m["fvu"] < 1 and m["n_tokens"] == 1024
    # the rows evaluated are the cache's tail, stated in metrics.json and printed at the start
    assert m["eval_rows"] == {
        "from": "holdout",
        "cache": str(root / "cache"),
        "rows": [4096, 5120],
        "n_rows": 1024,
    }
    assert m["eval_split"] == "holdout" and m["model"] is None
    assert "held out for evaluation: rows 4096..5119" in printed
    assert "training reads rows 0..4095 only" in printed
    # CE/KL (ours and SAELens's) skipped, with the reason; none of them reported
    reason = f"no model: the run trained from cache {root / 'cache'} with data.model null"
    assert m["skipped"] == {k: reason for k in (*SPLICED, "saelens")}
    assert not any(k in m for k in (*SPLICED, "saelens"))
    # the artifact names no model
    assert load_sae(run).cfg.model_name == ""


def test_the_training_source_never_yields_the_held_out_rows(synthetic, tmp_path):
    """Every training batch (and the initial sample) comes from rows 0..4095; all of those are used.
    Without the hold-out the same source reads the tail too (so the check can fail)."""
    root, _ = synthetic
    src = ActivationFilesSource(_cfg(tmp_path, root / "cache"))
    assert src.train_rows == 4096
    seen = torch.cat([b.tokens for _, _, b in src.batches(256)])
    assert seen.max().item() == 4095 and torch.equal(seen.sort().values, torch.arange(4096))
    assert src.sample_batch(512).tokens.max().item() < 4096
    open_src = ActivationFilesSource(
        _cfg(tmp_path, root / "cache", data={"model": "tiny"}, eval_={"holdout_tokens": 0})
    )
    assert open_src.train_rows is None
    assert torch.cat([b.tokens for _, _, b in open_src.batches(256)]).max().item() == ROWS - 1


def test_fvu_in_metrics_equals_a_hand_computation_on_the_held_out_rows(trained):
    run, _, x, _ = trained
    m = json.loads((run / "metrics.json").read_text())
    sae = load_sae(run)
    held_out, trained_on = x[4096:], x[:4096]
    assert m["fvu"] == pytest.approx(_hand_fvu(sae, held_out), rel=1e-6)
    assert m["explained_variance"] == pytest.approx(1 - _hand_fvu(sae, held_out), rel=1e-6)
    with torch.no_grad():
        l0 = (sae(held_out)[1] != 0).sum(-1).double().mean().item()
    assert m["l0_mean"] == pytest.approx(l0)
    assert m["fvu"] != pytest.approx(_hand_fvu(sae, trained_on), rel=1e-6)  # other rows, other FVU


def test_interp_eval_on_the_model_free_folder(trained):
    run, _, _, _ = trained
    before = json.loads((run / "metrics.json").read_text())
    (run / "metrics.json").unlink()
    res = CliRunner().invoke(app, ["eval", str(run)])
    assert res.exit_code == 0, res.output
    after = json.loads((run / "metrics.json").read_text())
    assert after["fvu"] == pytest.approx(before["fvu"], rel=1e-9)
    assert after["skipped"] == before["skipped"]
    assert "evaluated on rows 4096..5119" in res.output
    assert "skipped ce_clean, ce_spliced" in res.output and "data.model null" in res.output


def test_a_separate_eval_cache_is_used_when_given(synthetic, tmp_path):
    """With eval.cache nothing is held out of the training cache, and the metrics are those of the
    eval cache's first eval.tokens rows."""
    root, x = synthetic
    other = SyntheticDictionary(d_in=D_IN, n_features=384, mean_active=6, seed=1)
    other.sample(ROWS)  # the same dictionary, the next rows
    x_eval = other.sample(1500)[0]
    write_cache(tmp_path / "eval_cache", x_eval, shard_rows=400)
    cfg = _cfg(
        tmp_path,
        root / "cache",
        data={"train_tokens": 256 * 16},
        eval_={"cache": str(tmp_path / "eval_cache")},
    )
    assert cfg.resolved_holdout_tokens == 0
    assert ActivationFilesSource(cfg).train_rows is None  # the whole training cache is trainable
    run = train(cfg, progress=False)
    assert read_status(run)["state"] == "finished"
    m = json.loads((run / "metrics.json").read_text())
    assert m["eval_rows"] == {
        "from": "eval_cache",
        "cache": str(tmp_path / "eval_cache"),
        "rows": [0, 1024],
        "n_rows": 1024,
    }
    assert m["n_tokens"] == 1024
    assert m["fvu"] == pytest.approx(_hand_fvu(load_sae(run), x_eval[:1024]), rel=1e-6)
    assert "ce_loss_recovered" in m["skipped"]


def test_a_model_less_config_without_a_cache_is_refused():
    with pytest.raises(ValueError, match=r"needs a model \(data.model\) or an activation cache"):
        RunConfig(data={"model": None})
    with pytest.raises(ValueError, match="needs a model"):
        load_run_config(None, ["data.model=null"])
    # absent: the default model without a cache, no model with one
    assert RunConfig().data.model == "smollm2-135m"
    assert RunConfig(data={"cache": "somewhere"}).data.model is None
    # a model-free run must have rows to be evaluated on
    with pytest.raises(ValueError, match="set eval.cache .* or eval.holdout_tokens > 0"):
        RunConfig(data={"model": None, "cache": "c"}, eval={"holdout_tokens": 0})
    with pytest.raises(ValueError, match="holds rows out of data.cache, which is not set"):
        RunConfig(eval={"holdout_tokens": 10})


def test_train_tokens_beyond_the_held_out_tail_is_a_clear_error(synthetic, tmp_path):
    root, _ = synthetic
    cfg = _cfg(tmp_path, root / "cache", data={"train_tokens": 256 * 20})
    with pytest.raises(ValueError, match=r"train_tokens \(5120\) is more than the 4096 rows") as e:
        train(cfg, progress=False)
    assert "rows 4096..5119" in str(e.value) and "eval.holdout_tokens" in str(e.value)
    assert not (tmp_path / "run").exists()


def test_a_model_name_that_is_no_model_fails_before_training(synthetic, tmp_path):
    """The reported failure: model set to a name that is not a model, found only at evaluation after
    training. Now it fails at the start, and says to set data.model: null."""
    root, _ = synthetic
    cfg = _cfg(
        tmp_path, root / "cache", data={"model": "synthetic-96"}, eval_={"holdout_tokens": 0}
    )
    with pytest.raises(
        ValueError, match="'synthetic-96' is not a model spec: .* set data.model: null"
    ):
        train(cfg, progress=False)
    assert not (tmp_path / "run" / "sae_weights.safetensors").exists()


def test_interp_eval_without_the_model_on_an_eval_cache(synthetic, tmp_path):
    """A run from a cache whose model cannot evaluate it (here: "tiny" has no such hook) is
    evaluated by ``interp eval --no-model --eval-cache``: held-out rows only, CE/KL skipped; without
    the eval cache (the run held nothing out) it is a clear error, not a crash."""
    root, _ = synthetic
    x_eval = SyntheticDictionary(d_in=D_IN, n_features=384, mean_active=6, seed=2).sample(600)[0]
    write_cache(tmp_path / "eval_cache", x_eval)
    cfg = _cfg(tmp_path, root / "cache", data={"model": "tiny"})
    assert cfg.resolved_holdout_tokens == 0
    run = train(cfg, progress=False, evaluate=False)
    runner = CliRunner()
    res = runner.invoke(app, ["eval", str(run), "--no-model"])
    assert res.exit_code == 2 and "no held-out cached rows" in res.output
    res = runner.invoke(
        app, ["eval", str(run), "--no-model", "--eval-cache", str(tmp_path / "eval_cache")]
    )
    assert res.exit_code == 0, res.output
    m = json.loads((run / "metrics.json").read_text())
    assert m["eval_rows"]["from"] == "eval_cache" and m["n_tokens"] == 600
    assert m["fvu"] == pytest.approx(_hand_fvu(load_sae(run), x_eval), rel=1e-6)
    assert m["skipped"]["kl_div"] == "no model: evaluated without loading data.model 'tiny'"
    listing = runner.invoke(app, ["runs", str(tmp_path)])
    assert listing.exit_code == 0 and "finished" in listing.output


def test_interp_train_with_no_model_key_in_the_config(synthetic, tmp_path):
    """The reported run through the CLI: a config naming a cache and no model trains, evaluates on
    the held-out tail and exits 0; a model-less config without a cache exits 2 with the reason."""
    root, _ = synthetic
    cfg = _cfg(tmp_path, root / "cache").model_dump(exclude_defaults=True)
    del cfg["data"]["model"]
    (tmp_path / "run.json").write_text(json.dumps(cfg))
    runner = CliRunner()
    res = runner.invoke(app, ["train", "-c", str(tmp_path / "run.json")])
    assert res.exit_code == 0, res.output
    assert read_status(tmp_path / "run")["state"] == "finished"
    assert "held out for evaluation: rows 4096..5119" in res.output
    assert "skipped ce_clean" in res.output
    res = runner.invoke(app, ["train", "--set", "data.model=null"])
    assert res.exit_code == 2 and "needs a model (data.model) or an activation cache" in res.output


@pytest.mark.parametrize("mode", ["sequential", "together"])
def test_a_model_free_sweep_trains_from_the_base_cache(synthetic, tmp_path, mode):
    """A sweep whose base run has no model reads the base's cache (no sweep-level cache needed)."""
    from saes.training.sweep import SweepConfig, run_sweep

    root, _ = synthetic
    base = _cfg(tmp_path, root / "cache").model_dump()
    base["log"].pop("out_dir")
    sweep = SweepConfig(
        base=base,
        grid={"sae.k": [4, 8]},
        mode=mode,
        out_dir=str(tmp_path / "sweep"),
    )
    with contextlib.redirect_stdout(io.StringIO()):
        rows = run_sweep(sweep, progress=False)
    assert sorted(r["k"] for r in rows) == [4, 8]
    assert all(r["fvu"] < 1.0 for r in rows)
