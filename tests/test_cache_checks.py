"""A cache is checked when opened: hand-written caches (the README's format, written the way a user
would) with a wrong d_in, token count, dtype or ``complete`` flag fail with an ActivationFilesError naming the
file, the key and both values; a correct one opens and trains; the project's own writer passes."""

from __future__ import annotations

import json

import pytest
import torch
from _runs import tiny_config
from safetensors.torch import save_file

from interp.activation_files import (
    ACTIVATION_DTYPES,
    ActivationFiles,
    ActivationFilesError,
    ActivationFilesWriter,
)
from interp.activations import ActivationCapture
from saes.training.activation_sources import ActivationFilesSource
from saes.training.loop import train

HOOK = "blocks.0.hook_resid_post"


def _hand_cache(
    folder, rows=(2000,), d_in=32, hooks=None, tensors=None, grads=False, **manifest_keys
):
    """A cache as a user writes it from the README: one safetensors file per shard holding
    ``"<hook>"`` [rows, d_in] (and ``"<hook>.grad"``), and a manifest.json listing them."""
    hooks = hooks or {HOOK: d_in}
    folder.mkdir(parents=True, exist_ok=True)
    g = torch.Generator().manual_seed(0)
    shards = []
    for i, n in enumerate(rows):
        name = f"shard_{i:05d}.safetensors"
        if tensors is not None:
            shard = tensors(i, n)
        else:
            shard = {h: torch.randn(n, d, generator=g) for h, d in hooks.items()}
            if grads:
                shard.update(
                    {f"{h}.grad": torch.randn(n, d, generator=g) for h, d in hooks.items()}
                )
            shard["tokens"] = torch.randint(0, 100, (n,), generator=g)
        save_file(shard, str(folder / name))
        shards.append({"file": name, "tokens": n})
    manifest = {
        "format": "interp-activations",
        "version": 1,
        "hooks": hooks,
        "dtype": "float32",
        "has_grads": grads,
        "model": "tiny",
        "source": "my own activations",
        "complete": True,
        "shards": shards,
    }
    for k, v in manifest_keys.items():
        if v is None:
            manifest.pop(k)
        else:
            manifest[k] = v
    (folder / "manifest.json").write_text(json.dumps(manifest, indent=1))
    return folder


def _error(folder, **kw) -> str:
    with pytest.raises(ActivationFilesError) as e:
        ActivationFiles(folder, **kw)
    return str(e.value)


# ---- the four hand-written caches of the issue ----------------------------------------------


def test_d_in_differs_from_the_shard(tmp_path):
    folder = _hand_cache(
        tmp_path / "c", tensors=lambda i, n: {HOOK: torch.randn(n, 32)}, hooks={HOOK: 48}
    )
    msg = _error(folder)
    assert "shard_00000.safetensors" in msg and "manifest.json" in msg
    assert repr(HOOK) in msg and "32 columns" in msg and "d_in 48" in msg
    # ...and training reports it at once, not as a torch error from b_dec.copy_
    cfg = tiny_config(tmp_path, data={"hook": HOOK, "cache": str(folder), "batch_tokens": 64})
    with pytest.raises(ActivationFilesError, match="32 columns.*d_in 48"):
        ActivationFilesSource(cfg)


def test_token_count_differs_from_the_shards(tmp_path):
    # the shard's own entry says 30,000 rows, the file holds 20,000
    folder = _hand_cache(tmp_path / "c", rows=(20_000,))
    m = json.loads((folder / "manifest.json").read_text())
    m["shards"][0]["tokens"] = 30_000
    (folder / "manifest.json").write_text(json.dumps(m))
    msg = _error(folder)
    assert "shard_00000.safetensors" in msg and "manifest.json" in msg
    assert "20000 rows" in msg and "tokens 30000" in msg
    # a total 'tokens' at the top of the manifest is checked against the shards' rows too
    folder = _hand_cache(tmp_path / "t", rows=(10_000, 10_000), tokens=30_000)
    msg = _error(folder)
    assert "manifest.json" in msg and "'tokens' is 30000" in msg and "hold 20000 rows" in msg


def test_incomplete_is_refused_with_the_ways_forward(tmp_path):
    folder = _hand_cache(tmp_path / "c", rows=(300, 200), complete=False)
    msg = _error(folder)
    assert "manifest.json" in msg and "'complete' is False" in msg
    assert "2 shards / 500 tokens" in msg
    assert "interp cache" in msg and "data.cache_allow_incomplete" in msg
    assert "allow_incomplete=True" in msg


def test_undocumented_dtype_is_refused_with_the_accepted_list(tmp_path):
    # float16 is accepted (the writer stores it too), but it must match the tensors
    folder = _hand_cache(tmp_path / "c", dtype="float16")  # tensors saved as float32
    msg = _error(folder)
    assert "shard_00000.safetensors" in msg and repr(HOOK) in msg
    assert "is F32 (float32)" in msg and "dtype 'float16'" in msg
    for bad in ("float64", "fp16", "half"):
        msg = _error(_hand_cache(tmp_path / bad, dtype=bad))
        assert "manifest.json" in msg and f"'dtype' is {bad!r}" in msg
        assert all(repr(d) in msg for d in ("float32", "bfloat16", "float16")), msg
    assert set(ACTIVATION_DTYPES) == {"float32", "bfloat16", "float16"}


def test_float16_cache_reads(tmp_path):
    folder = _hand_cache(
        tmp_path / "c",
        dtype="float16",
        tensors=lambda i, n: {HOOK: torch.randn(n, 32).half()},
    )
    b = next(ActivationFiles(folder).batches())
    assert b.acts[HOOK].dtype == torch.float16 and b.acts[HOOK].shape == (2000, 32)


# ---- the rest of what is checked --------------------------------------------------------------


@pytest.mark.parametrize("key", ["format", "version", "hooks", "dtype", "shards"])
def test_missing_manifest_key_is_named(tmp_path, key):
    folder = _hand_cache(tmp_path / "c")
    m = json.loads((folder / "manifest.json").read_text())
    del m[key]
    (folder / "manifest.json").write_text(json.dumps(m))
    msg = _error(folder)
    assert "manifest.json" in msg and f"required key {key!r}" in msg


def test_shard_entry_without_tokens_is_named(tmp_path):
    folder = _hand_cache(tmp_path / "c")
    m = json.loads((folder / "manifest.json").read_text())
    del m["shards"][0]["tokens"]
    (folder / "manifest.json").write_text(json.dumps(m))
    msg = _error(folder)
    assert "manifest.json" in msg and "shards[0]" in msg and "'tokens'" in msg


def test_missing_hook_unequal_rows_and_grads(tmp_path):
    hooks = {HOOK: 32, "blocks.1.hook_resid_post": 32}
    only_one = _hand_cache(
        tmp_path / "a", hooks=hooks, tensors=lambda i, n: {HOOK: torch.randn(n, 32)}
    )
    msg = _error(only_one)
    assert "shard_00000.safetensors" in msg and "no tensor 'blocks.1.hook_resid_post'" in msg
    assert repr(HOOK) in msg  # what the shard does hold
    uneven = _hand_cache(
        tmp_path / "b",
        hooks=hooks,
        tensors=lambda i, n: {
            HOOK: torch.randn(n, 32),
            "blocks.1.hook_resid_post": torch.randn(7, 32),
        },
    )
    msg = _error(uneven)
    assert "shard_00000.safetensors" in msg and "7 rows" in msg and "2000" in msg
    no_grads = _hand_cache(
        tmp_path / "g", tensors=lambda i, n: {HOOK: torch.randn(n, 32)}, has_grads=True
    )
    msg = _error(no_grads)
    assert f"no tensor '{HOOK}.grad'" in msg and "'has_grads' is true" in msg
    bad_grads = _hand_cache(
        tmp_path / "h",
        tensors=lambda i, n: {HOOK: torch.randn(n, 32), f"{HOOK}.grad": torch.randn(n, 16)},
        has_grads=True,
    )
    msg = _error(bad_grads)
    assert f"'{HOOK}.grad' has 16 columns" in msg and "d_in 32" in msg
    wrong_tokens = _hand_cache(
        tmp_path / "t",
        tensors=lambda i, n: {HOOK: torch.randn(n, 32), "tokens": torch.zeros(n - 1).long()},
    )
    msg = _error(wrong_tokens)
    assert "'tokens'" in msg and f"[{2000 - 1}]" in msg and "[2000]" in msg


def test_second_shard_is_named(tmp_path):
    folder = _hand_cache(
        tmp_path / "c",
        rows=(100, 100, 100),
        tensors=lambda i, n: {HOOK: torch.randn(n, 32 if i != 1 else 31)},
    )
    msg = _error(folder)
    assert "shard_00001.safetensors" in msg and "31 columns" in msg and "d_in 32" in msg


def test_checks_read_headers_only(tmp_path, monkeypatch):
    import interp.activation_files as cache_mod

    folder = _hand_cache(tmp_path / "c", rows=(5000, 5000))
    monkeypatch.setattr(
        cache_mod, "_mmap_safetensors", lambda p: pytest.fail(f"opening mapped {p}")
    )
    cache = ActivationFiles(folder)  # no tensor is mapped or loaded
    assert len(cache) == 10_000


# ---- what passes ------------------------------------------------------------------------------


def test_correct_hand_written_cache_opens_and_trains(tmp_path, tiny):
    d = tiny.cfg.d_model
    folder = _hand_cache(tmp_path / "c", rows=(2048, 2048), d_in=d, tokens=4096, grads=True)
    cache = ActivationFiles(folder, verify=True)
    assert len(cache) == 4096 and cache.d_in(HOOK) == d
    cfg = tiny_config(
        tmp_path,
        data={"hook": HOOK, "cache": str(folder), "buffer_tokens": 512, "train_tokens": 256 * 4},
        sae={"d_sae": 64, "k": 4},
        optim={"warmup_steps": 1},
    )
    run = train(cfg, progress=False, evaluate=False)
    assert (run / "sae_weights.safetensors").exists()


def test_allow_incomplete_reads_the_shards_so_far(tmp_path):
    folder = _hand_cache(tmp_path / "c", rows=(300, 200), complete=False)
    cache = ActivationFiles(folder, allow_incomplete=True)
    got = torch.cat([b.acts[HOOK] for b in cache.batches()])
    assert got.shape == (500, 32) and len(cache) == 500
    cfg = tiny_config(
        tmp_path,
        data={"hook": HOOK, "cache": str(folder), "buffer_tokens": 128, "batch_tokens": 64},
    )
    with pytest.raises(ActivationFilesError, match="cache_allow_incomplete"):
        ActivationFilesSource(cfg)
    cfg.data.cache_allow_incomplete = True
    source = ActivationFilesSource(cfg)
    assert sum(len(b) for b in source.blocks()) == 500


def test_train_on_an_incomplete_cache_needs_the_flag(tmp_path, tiny):
    """Through ``train`` (which lists the cache's hooks before the source opens it), too."""
    folder = _hand_cache(tmp_path / "c", rows=(512, 512), d_in=tiny.cfg.d_model, complete=False)
    run = {
        "data": {
            "hook": HOOK,
            "cache": str(folder),
            "buffer_tokens": 256,
            "batch_tokens": 128,
            "train_tokens": 128 * 4,
        },
        "sae": {"d_sae": 32, "k": 4},
        "optim": {"warmup_steps": 1},
    }
    with pytest.raises(ActivationFilesError, match="complete"):
        train(tiny_config(tmp_path, "a", run), progress=False, evaluate=False)
    assert not (tmp_path / "a" / "sae_weights.safetensors").exists()
    for hooks in (None, [HOOK]):  # one run, and a job (which lists the cache's hooks first)
        out = tmp_path / f"b{hooks is None}"
        data = {"cache_allow_incomplete": True, "hooks": hooks}
        cfg = tiny_config(tmp_path, out.name, run, data=data)
        train(cfg, progress=False, evaluate=False)
        assert list(out.rglob("sae_weights.safetensors"))


def test_project_writer_passes_all_checks(tiny, tmp_path):
    hooks = ["blocks.0.hook_resid_post", "blocks.1.attn.hook_z"]
    g = torch.Generator().manual_seed(0)
    toks = torch.randint(3, tiny.cfg.d_vocab, (12, 9), generator=g)
    toks[:, 0] = tiny.tokenizer.bos_token_id
    windows = list(toks)
    for dtype in ("float32", "bfloat16", "float16"):
        cap = ActivationCapture(tiny, hooks, with_grads=True, dtype=dtype)
        manifest = ActivationFilesWriter(
            tmp_path / dtype, cap, {"model": "tiny"}, windows_per_shard=4
        ).write(iter(windows), batch_windows=2, progress=False)
        assert manifest.data["dtype"] == dtype and manifest.data["tokens"] == 12 * 8
        cache = ActivationFiles(tmp_path / dtype, verify=True)
        assert len(cache) == 12 * 8 and len(cache.manifest.shards) == 3
        b = next(cache.batches(with_grads=True))
        assert b.acts[hooks[0]].dtype == getattr(torch, dtype)
    # mid-write (the manifest after the first shard) it is refused, unless asked for
    cap = ActivationCapture(tiny, hooks)
    writer = ActivationFilesWriter(tmp_path / "mid", cap, {"model": "tiny"}, windows_per_shard=4)
    writer.write(iter(windows), batch_windows=2, max_windows=4, progress=False)
    m = json.loads((tmp_path / "mid" / "manifest.json").read_text())
    m["complete"] = False
    (tmp_path / "mid" / "manifest.json").write_text(json.dumps(m))
    assert "'complete' is False" in _error(tmp_path / "mid")
    assert len(ActivationFiles(tmp_path / "mid", allow_incomplete=True)) == 4 * 8
