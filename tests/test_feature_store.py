"""The feature store against brute force over every token's dense code, resumed after a crash,
merged from two gloo ranks, and its text exact for multi-byte characters."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from interp.activations import ActivationCapture
from interp.data import token_windows
from interp.text import Vocab
from saes.features import FeatureStore, StoreConfig, StoreError, build_store
from saes.features.accumulate import Accumulators, sample_key

REPO = Path(__file__).resolve().parent.parent
pytestmark = pytest.mark.usefixtures("one_thread_module")
SETTINGS = dict(batch_windows=4, checkpoint_every_s=0, sample=32, examples_per_band=3, top_k=6)
TOKENS = 32 * 22  # 22 windows of 33 tokens: 6 batches, the last one partial


@pytest.fixture(scope="module")
def run(tiny_trained):
    """The common tiny run (conftest.py): the store is built from its SAE."""
    return tiny_trained


@pytest.fixture(scope="module")
def store(run, tiny, tmp_path_factory):
    out = tmp_path_factory.mktemp("store") / "features"
    build_store(run, out=out, tokens=TOKENS, model=tiny, config=StoreConfig(**SETTINGS))
    return FeatureStore.open(out)


@pytest.fixture(scope="module")
def brute(run, tiny, store):
    """Every scored token's dense code, from the same windows (what the store must summarise)."""
    from saes.artifacts import load_sae

    sae = load_sae(run)
    m = store.manifest
    wins = token_windows(tiny.tokenizer, source=m["source"], context_size=m["context_size"],
                         split="validation", seed=m["seed"])  # fmt: skip
    tokens = torch.stack([w for _, w in zip(range(m["n_windows"]), wins)])
    cap = ActivationCapture(tiny, [m["hook"]], drop_bos=False)
    with torch.no_grad():
        z = sae.encode(cap(tokens).acts[m["hook"]])
    scored = torch.ones(tokens.shape, dtype=torch.bool)
    scored[:, 0] = tokens[:, 0] != cap.bos_id
    z = z * scored.reshape(-1, 1)
    return tokens, z, scored.reshape(-1)


def _tensors(folder: Path) -> dict[str, torch.Tensor]:
    return load_file(str(folder / "features.safetensors"))


def test_store_equals_brute_force(store, brute):
    tokens, z, scored = brute
    F = z.shape[1]
    assert store.n_tokens == int(scored.sum())
    assert torch.equal(store.all_tokens.long(), tokens)
    count = (z > 0).sum(0)
    assert torch.equal(store.array("count"), count)
    assert torch.allclose(store.array("max"), z.max(0).values)
    alive = torch.nonzero(count).flatten()
    assert store.manifest["dead_latents"] == F - alive.numel()
    assert 0 < alive.numel()
    K = store.manifest["top_k"]
    g = torch.arange(z.shape[0])
    for f in alive.tolist():
        col = z[:, f]
        nz = torch.nonzero(col > 0).flatten()
        # top K by value descending, ties by token index
        order = sorted(nz.tolist(), key=lambda i: (-col[i].item(), i))[:K]
        feat = store.feature(f)
        assert [e.token_index for e in feat.top] == order
        assert [e.value for e in feat.top] == pytest.approx(col[order].tolist())
        assert feat.density == pytest.approx(nz.numel() / store.n_tokens)
        assert feat.mean == pytest.approx(col[nz].double().mean().item(), rel=1e-5)
        # the histogram's bins, by hand
        edges = torch.tensor(feat.hist_edges, dtype=torch.float64)
        bins = torch.bucketize(col[nz].double(), edges, right=True)
        assert feat.hist_counts == torch.bincount(bins, minlength=len(edges) + 1).tolist()
        # the uniform sample: the R smallest hashes of (token, latent), ties by token
        keys = sample_key(g[nz], torch.full_like(nz, f), F)
        R = store.manifest["bands"]["sample"]
        want = nz[torch.argsort(keys)[:R]]
        sample = store.row("sample_index", f)
        assert sample[sample >= 0].tolist() == want.tolist()
        # every example's per-token activations are the codes at those positions
        for e in feat.top[:2] + [x for b in feat.bands for x in b.examples][:3]:
            w0 = e.window * tokens.shape[1]
            assert e.acts == pytest.approx(z[w0 + e.start : w0 + e.start + len(e.acts), f].tolist())
            assert e.tokens == tokens[e.window, e.start : e.start + len(e.tokens)].tolist()
            assert e.acts[e.center] == pytest.approx(e.value)
        # band examples lie inside their bands
        for b in feat.bands:
            assert all(b.lo - 1e-6 <= x.value <= b.hi + 1e-6 for x in b.examples)
    # co-activation counts, by hand, for the densest latent
    f = int(count.argmax())
    both = ((z[:, f] > 0)[:, None] & (z > 0)).sum(0)
    both[f] = 0
    feat = store.feature(f)
    for other, n in feat.coactivation:
        assert n == int(both[other])
    assert feat.coactivation[0][1] == int(both.max())


def test_neighbours_and_logits_match_the_weights(store, run, tiny):
    from interp.logit_lens import direct_logit_effect
    from saes.artifacts import load_sae

    sae = load_sae(run)
    W = sae.W_dec.detach().float()
    W = W / W.norm(dim=1, keepdim=True)
    f = int(store.alive[0])
    feat = store.feature(f)
    cos = W[f] @ W.T
    cos[f] = -2
    cos[store.array("count") == 0] = -2  # only live neighbours
    assert [n for n, _ in feat.neighbours] == cos.topk(len(feat.neighbours)).indices.tolist()
    eff = direct_logit_effect(tiny, sae.cfg.hook_name, sae.W_dec[f].detach())
    assert [t for t, _, _ in feat.logit_top] == eff.topk(len(feat.logit_top)).indices.tolist()
    assert [t for t, _, _ in feat.logit_bottom] == (-eff).topk(10).indices.tolist()


@pytest.mark.parametrize("every_s", [0.0, 1e9])
def test_resume_after_a_crash_gives_the_same_store(run, tiny, store, tmp_path, every_s):
    out = tmp_path / "features"
    cfg = StoreConfig(**{**SETTINGS, "checkpoint_every_s": every_s})
    # a crash after 3 batches: their state saved after each (0 s), or never (their shards are
    # on disk but not in any saved state, so the rerun redoes them)
    build_store(run, out=out, tokens=TOKENS, model=tiny, config=cfg, stop_after_batches=3)
    assert not json.loads((out / "manifest.json").read_text())["complete"]
    with pytest.raises(StoreError, match="did not finish"):
        FeatureStore.open(out)
    build_store(run, out=out, tokens=TOKENS, model=tiny, config=cfg)
    build = json.loads((out / "manifest.json").read_text())["build"]
    assert build["resumed"] == (every_s == 0)
    assert build["batches_this_process"] == (3 if every_s == 0 else 6)
    a, b = _tensors(out), _tensors(store.folder)
    assert a.keys() == b.keys()
    for k in a:
        assert torch.equal(a[k], b[k]), k
    assert not (out / ".build").exists()


def test_dead_latents_are_skipped_and_counted(run, tiny, tmp_path):
    from saes.artifacts import load_sae, save_sae

    sae = load_sae(run)
    with torch.no_grad():  # 5 latents that can never win a top-k slot with a positive value
        sae.b_enc[:5] = -1e4
    save_sae(sae, tmp_path / "sae")
    out = build_store(tmp_path / "sae", tokens=256, model=tiny, model_spec="tiny",
                      config=StoreConfig(batch_windows=4))  # fmt: skip
    s = FeatureStore.open(out)
    assert s.manifest["dead_latents"] >= 5
    assert (s.array("count")[:5] == 0).all()
    assert (s.array("neighbour_ids")[:5] == -1).all()
    assert (s.array("logit_top_ids")[:5] == -1).all()
    live = s.array("neighbour_ids")[s.alive]
    assert not torch.isin(live, torch.arange(5)).any()  # no live latent's neighbour is dead
    assert s.feature(0).dead and s.feature(0).top == []


def test_two_gloo_ranks_build_the_same_store(run, store, tmp_path):
    script = tmp_path / "worker.py"
    script.write_text(
        textwrap.dedent(f"""
        import sys, torch
        torch.set_num_threads(1)
        from interp.models import load_model
        from saes.training.distributed import init_from_env
        from saes.features import StoreConfig, build_store
        comm = init_from_env()
        build_store({str(run)!r}, out=sys.argv[1], tokens={TOKENS}, model=load_model("tiny"),
                    config=StoreConfig(**{SETTINGS!r}), comm=comm)
    """)
    )
    out = tmp_path / "features"
    proc = subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
         str(script), str(out)],
        cwd=REPO, capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    m = json.loads((out / "manifest.json").read_text())
    assert m["complete"] and m["build"]["world"] == 2
    a, b = _tensors(out), _tensors(store.folder)
    for k in b:
        assert torch.equal(a[k], b[k]), k
    assert torch.equal(FeatureStore.open(out).all_tokens, store.all_tokens)


def test_accumulators_merge_exactly_in_any_split():
    """Random entries fed as one stream, in two halves merged, and in reverse order: same state."""
    gen = torch.Generator().manual_seed(0)
    F, N, k = 40, 600, 5
    values = torch.rand(N, k, generator=gen).round(decimals=2)  # many ties
    values[torch.rand(N, k, generator=gen) < 0.3] = 0
    indices = torch.stack([torch.randperm(F, generator=gen)[:k] for _ in range(N)])
    rows = torch.arange(N)
    edges = torch.logspace(-3, 1, 9)

    def acc():
        return Accumulators(F, 4, 8, edges, True, 3)

    one = acc()
    one.update(values, indices, rows, N)
    parts = [acc(), acc()]
    parts[0].update(values[N // 2 :], indices[N // 2 :], rows[N // 2 :], N - N // 2)
    parts[1].update(values[: N // 2], indices[: N // 2], rows[: N // 2], N // 2)
    parts[0].merge(parts[1])
    # and in uneven chunks fed in a shuffled order (merges into partly filled rows)
    cuts = torch.cat([torch.tensor([0]), torch.randperm(N - 1, generator=gen)[:9].sort().values
                      + 1, torch.tensor([N])])  # fmt: skip
    chunks = acc()
    for c in torch.randperm(10, generator=gen).tolist():
        sl = slice(int(cuts[c]), int(cuts[c + 1]))
        chunks.update(values[sl], indices[sl], rows[sl], sl.stop - sl.start)
    for key, t in one.state().items():
        assert torch.equal(t, parts[0].state()[key]), key
        assert torch.equal(t, chunks.state()[key]), key
    # the top 4 by hand for one latent (value descending, ties by the earlier token)
    f = 7
    hits = [(values[n, j].item(), n) for n in range(N) for j in range(k)
            if indices[n, j] == f and values[n, j] > 0]  # fmt: skip
    want = [n for _, n in sorted(hits, key=lambda p: (-p[0], p[1]))[:4]]
    assert one.top.index[f].tolist() == want
    # every latent's sample: its 8 smallest sample keys, in key order
    for f in range(F):
        n, j = torch.nonzero((indices == f) & (values > 0), as_tuple=True)
        keys = sample_key(n, torch.full_like(n, f), F)
        assert one.sample.index[f][: n.numel()].tolist() == n[keys.argsort()][:8].tolist()


def test_quantile_bands_are_true_quantiles():
    """A latent whose activations are uniform on (0, 1) and one that is exponential: the band
    edges are the distributions' quantiles (within the sample's error), not equal-width cuts."""
    from saes.features.summarize import quantile_bands

    gen = torch.Generator().manual_seed(1)
    N = 200_000
    u = torch.rand(N, generator=gen).clamp_min(1e-6)
    e = -torch.log(torch.rand(N, generator=gen).clamp_min(1e-12))
    values = torch.stack([u, e], 1)
    indices = torch.tensor([[0, 1]]).expand(N, 2)
    acc = Accumulators(2, 4, 4096, torch.logspace(-3, 2, 11), False, 2)
    for s in range(0, N, 50_000):
        sl = slice(s, s + 50_000)
        acc.update(values[sl], indices[sl], torch.arange(N)[sl], 50_000)
    q = [0.0, 0.25, 0.5, 0.75, 0.9, 1.0]
    cfg = StoreConfig(band_quantiles=q, examples_per_band=4, sample=4096)
    out = quantile_bands(acc, cfg)
    edges = out["band_edges"]
    for j, qq in enumerate(q[1:-1], start=1):
        assert edges[0, j].item() == pytest.approx(qq, abs=0.03)  # uniform: quantile = q
        assert edges[1, j].item() == pytest.approx(
            -torch.log(torch.tensor(1 - qq)).item(), rel=0.08
        )
    # equal-width bands would put the exponential's 0.5 edge at max/2, far above its median
    assert edges[1, 2] < acc.max[1] / 4
    for j in range(len(q) - 1):
        v = out["band_value"][1, j]
        assert ((v >= edges[1, j]) & (v <= edges[1, j + 1])).all()


def test_missing_and_foreign_folders_are_named(tmp_path):
    with pytest.raises(StoreError, match="interp dashboard build"):
        FeatureStore.open(tmp_path)
    (tmp_path / "manifest.json").write_text(json.dumps({"format": "something else"}))
    with pytest.raises(StoreError, match="format 'something else'"):
        FeatureStore.open(tmp_path)


def test_text_is_exact_for_multibyte_characters_and_indentation(tiny):
    """Byte tokens split é (2 bytes), — (3) and an emoji (4): each token's text is the characters
    it completes, and joined they are exactly the input (indentation and newlines included)."""
    text = 'def café():\n    return "— 🐍"\n\tpass\n'
    vocab = Vocab.from_tokenizer(tiny.tokenizer)
    ids = tiny.tokenizer.encode(text)
    pieces = vocab.token_texts(ids)
    assert "".join(pieces) == text == vocab.text(ids)
    assert len(ids) == len(text.encode()) and "" in pieces  # the split characters' first bytes
    assert "🐍" in pieces
    assert vocab.label(ids[text.encode().index("—".encode())]).startswith("<0xE2")


@pytest.mark.smollm2
def test_smollm2_token_bytes_round_trip(smollm2):
    vocab = Vocab.from_tokenizer(smollm2.tokenizer)
    for text in ['    x = "é — 🐍"\n', "naïve café\n\tdef f():\n        pass", "日本語テキスト"]:
        ids = smollm2.tokenizer.encode(text, add_special_tokens=False)
        assert "".join(vocab.token_texts(ids)) == text
        assert vocab.span_bytes(ids) == text.encode()


def test_a_source_smaller_than_asked_gives_the_store_it_holds(run, tiny, tmp_path):
    """Asking for more tokens than the held-out split holds: a warning that says both numbers,
    and a complete store of every window the split has (no missing shard)."""
    texts = tmp_path / "texts"
    texts.mkdir()
    for i in range(24):
        (texts / f"f{i}.txt").write_text(f"file {i}: " + "some words here. " * (20 + i))
    source = str(texts / "*.txt")
    have = sum(1 for _ in token_windows(tiny.tokenizer, source=source, context_size=33,
                                        split="validation", seed=0))  # fmt: skip
    assert have > 0
    cfg = StoreConfig(**{**SETTINGS, "source": source, "tokens": 32 * (have + 50)})
    with pytest.warns(UserWarning, match=f"holds {have:,} windows"):
        out = build_store(run, out=tmp_path / "st", model=tiny, config=cfg)
    store = FeatureStore.open(out)
    assert store.n_windows == have
    assert store.manifest["build"]["source_exhausted"] is True
    assert store.all_tokens.shape[0] == have
