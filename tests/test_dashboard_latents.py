"""The Feature page on every latent of a store built to hold the awkward cases (a latent with one
tied value, a dead one, one seen once, one seen twice with empty bands between): the store is
checked to really hold them, then every latent's page is opened in Streamlit's AppTest and must
run without an exception and show each band in words. The band merging the page uses is checked
on random samples through the store builder's own quantile code."""

from __future__ import annotations

import random
from types import SimpleNamespace

import pytest
import torch
from _dashboard_runs import APP, DEAD, ONCE, TIED, TWICE, awkward_run

from saes.features import FeatureStore, StoreConfig, store_dir
from saes.features.store import Band, merge_tied_bands
from saes.features.summarize import quantile_bands

pytestmark = pytest.mark.usefixtures("one_thread_module")


@pytest.fixture(scope="module")
def root(tmp_path_factory, tiny):
    root = tmp_path_factory.mktemp("awkward")
    awkward_run(root, tiny)
    awkward_run(root, tiny, "awkward_z", "blocks.0.attn.hook_z")  # + the DFA panel's slider
    return root


RUNS = ["awkward", "awkward_z"]


@pytest.fixture(scope="module", params=RUNS)
def run(request):
    return request.param


@pytest.fixture(scope="module")
def store(root, run):
    return FeatureStore.open(store_dir(root / run))


def test_the_store_holds_every_awkward_case(store):
    """Without these the page test below would prove nothing: each planted case is there."""
    count = store.array("count")
    assert int(count[DEAD]) == 0
    assert int(count[ONCE]) == 1
    assert int(count[TWICE]) == 2
    tied = store.feature(TIED)
    assert tied.count > 1 and len({b.lo for b in tied.bands} | {b.hi for b in tied.bands}) == 1
    assert sum(not b.examples for b in tied.bands) == len(tied.bands) - 1  # the crash's cause
    twice = store.feature(TWICE)
    empty = [b for b in twice.bands if not b.examples]
    assert empty and all(b.lo < b.hi for b in empty)  # empty without a tie
    assert len({ex.value for b in twice.bands for ex in b.examples}) == 2
    once = store.feature(ONCE)
    assert len(once.top) == 1 and once.n_sample == 1
    assert store.feature(DEAD).dead


def test_every_latent_page_opens(root, run, store, monkeypatch):
    """Every latent, dead ones included, in one AppTest session: no exception or error box; a live
    latent shows one HTML block for its top examples and one per band that has examples, every
    band's caption, and the empty and tied bands in words."""
    from streamlit.testing.v1 import AppTest

    monkeypatch.setenv("INTERP_DASHBOARD_TARGET", str(root))
    at = AppTest.from_file(APP, default_timeout=120)
    at.query_params["page"] = "feature"
    at.query_params["run"] = run
    for i in range(store.d_sae):
        at.query_params["feature"] = str(i)
        at.run()
        assert not at.exception, (i, [e.value for e in at.exception])
        assert not at.error, (i, [e.value for e in at.error])
        f = store.feature(i)
        if f.dead:
            assert any("never fired" in w.value for w in at.warning), i
            continue
        assert {m.label: m.value for m in at.metric}["tokens"] == f"{f.count:,}", i
        shown = f.shown_bands
        blocks = at.get("html")
        assert len(blocks) == 1 + sum(bool(b.examples) for b in shown), i
        captions = [m.value for m in at.markdown if "of the nonzero activations" in m.value]
        assert len(captions) == len(shown), i
        for b, cap in zip(reversed(shown), captions):
            assert cap.startswith(f"**{b.q_lo:.0%}-{b.q_hi:.0%}**"), (i, cap)
            assert ("all at" in cap) == (b.lo == b.hi), (i, cap)
            assert ("no example" in cap) == (not b.examples), (i, cap)
    # the planted cases read as a researcher should see them
    for latent in (TIED, ONCE):
        [band] = store.feature(latent).shown_bands
        assert (band.q_lo, band.q_hi) == (0.0, 1.0) and band.lo == band.hi


def _random_sample(rng: random.Random, R: int) -> list[float]:
    """A latent's sampled activations: from one value up to R, often with ties."""
    n = rng.choice([1, 2, 3, 5, rng.randint(1, R)])
    levels = [round(rng.uniform(0.1, 5.0), 3) for _ in range(rng.randint(1, 6))]
    tie_share = rng.random()
    return [
        rng.choice(levels) if rng.random() < tie_share else rng.uniform(0.1, 5.0) for _ in range(n)
    ]


@pytest.mark.parametrize("seed", range(4))
def test_shown_bands_cover_the_quantiles_with_every_example(seed):
    """Bands cut by the builder's own code (saes.features.summarize.quantile_bands) from random
    samples with ties: the merged bands are contiguous in quantile and value, keep every example
    in order and inside its band, and only the top band may be tied."""
    rng = random.Random(seed)
    cfg = StoreConfig(sample=32, examples_per_band=3)
    F, R = 200, cfg.sample
    index = torch.full((F, R), -1, dtype=torch.int64)
    value = torch.zeros(F, R)
    for f in range(F):
        vals = _random_sample(rng, R)
        index[f, : len(vals)] = torch.arange(len(vals))
        value[f, : len(vals)] = torch.tensor(vals)
    acc = SimpleNamespace(sample=SimpleNamespace(index=index, value=value))
    out = quantile_bands(acc, cfg)
    q = cfg.band_quantiles
    saw_tie = saw_empty_untied = 0
    for f in range(F):
        edges = out["band_edges"][f].tolist()
        bands = []
        for j in range(len(q) - 1):
            ex = [v for g, v in zip(out["band_index"][f, j], out["band_value"][f, j]) if g >= 0]
            bands.append(Band(q[j], q[j + 1], edges[j], edges[j + 1], [float(v) for v in ex]))
        saw_tie += any(b.tied for b in bands[:-1])
        saw_empty_untied += any(not b.examples and not b.tied for b in bands)
        shown = merge_tied_bands(bands)
        assert shown[0].q_lo == 0.0 and shown[-1].q_hi == 1.0
        for a, b in zip(shown, shown[1:]):
            assert a.q_hi == b.q_lo and a.hi == b.lo
            assert a.examples or b.examples or a.tied_to or b.tied_to  # no two empty in a row
        assert not any(b.tied for b in shown[:-1])  # a tie is merged upwards
        assert [v for b in shown for v in b.examples] == [v for b in bands for v in b.examples]
        for b in shown:
            assert all(b.lo <= v <= b.hi for v in b.examples)
    assert saw_tie > 10 and saw_empty_untied > 10  # the random cases do hold both kinds
