"""On-disk activation cache: round trip, crash-resume, corruption and mismatch errors."""

from __future__ import annotations

import json

import pytest
import torch

from interp.activation_files import ActivationFiles, ActivationFilesError, ActivationFilesWriter
from interp.activations import ActivationCapture

HOOKS = ["blocks.0.hook_resid_post", "blocks.1.attn.hook_z"]


def _windows(model, n=16, t=9, seed=0):
    g = torch.Generator().manual_seed(seed)
    toks = torch.randint(3, model.cfg.d_vocab, (n, t), generator=g)
    toks[:, 0] = model.tokenizer.bos_token_id
    return list(toks)


def _write(tiny, folder, windows, max_windows=None, grads=False, dtype="float32"):
    cap = ActivationCapture(tiny, HOOKS, with_grads=grads, dtype=dtype)
    meta = {"model": "tiny", "source": "test", "seed": 0, "context_size": 9}
    return ActivationFilesWriter(folder, cap, meta, windows_per_shard=4).write(
        iter(windows), batch_windows=2, max_windows=max_windows, progress=False
    )


def test_round_trip_matches_capture(tiny, tmp_path):
    windows = _windows(tiny)
    manifest = _write(tiny, tmp_path / "c", windows, grads=True)
    assert manifest.data["complete"] and len(manifest.shards) == 4
    cache = ActivationFiles(tmp_path / "c", verify=True)
    assert (
        len(cache) == 16 * 8
        and cache.d_in("blocks.1.attn.hook_z") == tiny.cfg.n_heads * tiny.cfg.d_head
    )
    got = list(cache.batches(HOOKS, with_grads=True, rows_per_read=7))
    ref = ActivationCapture(tiny, HOOKS, with_grads=True)(torch.stack(windows))
    for h in HOOKS:
        torch.testing.assert_close(torch.cat([b.acts[h] for b in got]), ref.acts[h])
        torch.testing.assert_close(torch.cat([b.grads[h] for b in got]), ref.grads[h])
    assert torch.equal(torch.cat([b.tokens for b in got]), ref.tokens)


def test_bf16_storage(tiny, tmp_path):
    _write(tiny, tmp_path / "c", _windows(tiny, n=4), dtype="bfloat16")
    b = next(ActivationFiles(tmp_path / "c").batches())
    assert b.acts[HOOKS[0]].dtype == torch.bfloat16


def test_resume_after_crash_no_duplicates_no_gaps(tiny, tmp_path):
    windows = _windows(tiny)
    _write(tiny, tmp_path / "ref", windows)
    # a crashed run: two shards written, plus a half-written shard file left behind
    _write(tiny, tmp_path / "c", windows, max_windows=8)
    (tmp_path / "c" / "shard_00002.safetensors.tmp").write_bytes(b"partial")
    m = json.loads((tmp_path / "c" / "manifest.json").read_text())
    m["complete"] = False
    (tmp_path / "c" / "manifest.json").write_text(json.dumps(m))
    calls = []
    cap = ActivationCapture(tiny, HOOKS)
    orig = cap.__call__
    writer = ActivationFilesWriter(
        tmp_path / "c", cap, {"model": "tiny", "source": "test", "seed": 0, "context_size": 9}, 4
    )
    writer.capture = lambda t: calls.append(t.shape[0]) or orig(t)
    writer.write(iter(windows), batch_windows=2, progress=False)
    assert sum(calls) == 8  # only the missing 8 windows were recomputed
    a = torch.cat([b.acts[HOOKS[0]] for b in ActivationFiles(tmp_path / "c").batches()])
    r = torch.cat([b.acts[HOOKS[0]] for b in ActivationFiles(tmp_path / "ref").batches()])
    torch.testing.assert_close(a, r)
    assert not list((tmp_path / "c").glob("*.tmp"))


def test_truncated_and_corrupt_shards_are_named(tiny, tmp_path):
    _write(tiny, tmp_path / "c", _windows(tiny, n=8))
    shard = tmp_path / "c" / "shard_00001.safetensors"
    data = shard.read_bytes()
    shard.write_bytes(data[: len(data) // 2])
    with pytest.raises(ActivationFilesError, match="shard_00001"):
        ActivationFiles(tmp_path / "c")
    flipped = bytearray(data)
    flipped[-5] ^= 0xFF
    shard.write_bytes(bytes(flipped))
    with pytest.raises(ActivationFilesError, match="shard_00001.*sha256"):
        ActivationFiles(tmp_path / "c", verify=True)


def test_mismatch_errors(tiny, tmp_path):
    _write(tiny, tmp_path / "c", _windows(tiny, n=4))
    cache = ActivationFiles(tmp_path / "c")
    with pytest.raises(ActivationFilesError, match=r"d_in=64.*d_in=65|d_in=\d+.*d_in=999"):
        cache.check_hook(HOOKS[0], d_in=999)
    with pytest.raises(ActivationFilesError, match="no hook"):
        cache.check_hook("blocks.5.hook_resid_post")
    with pytest.raises(ActivationFilesError, match="without gradients"):
        next(cache.batches(with_grads=True))
    with pytest.raises(ActivationFilesError, match="not an activation cache"):
        ActivationFiles(tmp_path)
