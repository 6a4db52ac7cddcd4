"""The explorer's pages under Streamlit's AppTest, on small run folders built here (tiny model):
each page runs without exception and shows the store's and the run's own values; a page whose
data is missing names the command that builds it; prompt text is exactly the input."""

from __future__ import annotations

import html
import json
import re

import pytest
import torch
from _dashboard_runs import open_page, tiny_run

from dashboards.registry import pages
from interp.text import Vocab
from saes.artifacts import load_sae
from saes.config import SAEConfig
from saes.features import FeatureStore, store_dir
from saes.features.dfa import example_dfa
from saes.features.prompt import prompt_features
from saes.sae import SAE

pytestmark = pytest.mark.usefixtures("one_thread_module")
UNICODE_PROMPT = 'def café(x):\n    """Naïve — 🙂🦜 漢字 ok."""\n\treturn x  # ünïcode\n'


@pytest.fixture(scope="module")
def root(tmp_path_factory, tiny):
    root = tmp_path_factory.mktemp("dash")
    tiny_run(root, tiny, "resid", "blocks.0.hook_resid_post")
    tiny_run(root, tiny, "attnz", "blocks.0.attn.hook_z")
    tiny_run(root, tiny, "nostore", "blocks.0.hook_resid_post", with_store=False)
    return root


def _shown_text(fragment: str) -> str:
    """The text a reader sees in our token HTML, with the visible-whitespace marks undone."""
    text = fragment.replace("<br>", "\n")
    text = html.unescape(re.sub(r"<[^>]+>", "", text))
    return text.replace("\u21b5", "").replace("\u00b7", " ").replace("\u2192", "\t")


def test_pages_are_registered_in_order():
    keys = [p.key for p in pages()]
    assert keys[:4] == ["feature", "prompt", "heads", "runs"]


def test_feature_page_shows_the_store(root, monkeypatch):
    store = FeatureStore.open(store_dir(root / "resid"))
    i = int(store.alive[len(store.alive) // 2])
    f = store.feature(i)
    at = open_page(root, monkeypatch, page="feature", run="resid", feature=i)
    metrics = {m.label: m.value for m in at.metric}
    assert metrics["tokens"] == f"{f.count:,}"
    assert metrics["max activation"] == f"{f.max:.3g}"
    shown = [_shown_text(h.proto.body) for h in at.get("html")]
    # top examples, then one block per shown band that has examples
    assert len(shown) == 1 + sum(bool(b.examples) for b in f.shown_bands)
    for ex in f.top:
        assert ex.text in shown[0]  # every top context, exact
    assert len(at.get("plotly_chart")) >= 2  # histogram, logit effects
    # neighbours are links to their pages
    md = " ".join(m.value for m in at.markdown)
    for j, _ in f.neighbours:
        assert f"feature={j})" in md


def test_feature_page_next_steps_to_the_next_live_latent(root, monkeypatch):
    store = FeatureStore.open(store_dir(root / "resid"))
    alive = store.alive.tolist()
    at = open_page(root, monkeypatch, page="feature", run="resid", feature=alive[0])
    at.button[1].click().run()  # "next ▶"
    assert at.query_params["feature"] in (str(alive[1]), [str(alive[1])])
    assert {m.label: m.value for m in at.metric}["tokens"] == f"{store.feature(alive[1]).count:,}"


def test_prompt_page_text_is_exactly_the_input(root, monkeypatch):
    at = open_page(root, monkeypatch, page="prompt", run="resid")
    at.text_area[0].set_value(UNICODE_PROMPT).run()
    assert not at.exception
    first = _shown_text(at.get("html")[0].proto.body)
    assert first == "<|endoftext|>" + UNICODE_PROMPT


def test_heads_page_for_hook_z_and_its_absence(root, monkeypatch):
    store = FeatureStore.open(store_dir(root / "attnz"))
    at = open_page(root, monkeypatch, page="heads", run="attnz")
    bars = json.loads(at.get("plotly_chart")[0].proto.spec)["data"][0]
    shares = store.array("head_attribution")[store.alive]
    expect = torch.bincount(shares.argmax(-1), minlength=shares.shape[1]).tolist()
    assert bars["y"] == expect  # live latents per main head, from the store
    assert len(at.get("plotly_chart")) >= 3  # + the share heatmap and a DFA bar for the prompt
    at = open_page(root, monkeypatch, page="heads", run="resid")
    assert "attn.hook_z" in at.info[0].value


def test_runs_page_lists_runs_with_their_metrics(root, monkeypatch):
    at = open_page(root, monkeypatch, page="runs", run="resid")
    table = at.dataframe[0].value
    assert set(table["run"]) == {"attnz", "nostore", "resid"}
    fvu = json.loads((root / "resid" / "metrics.json").read_text())["fvu"]
    assert table.set_index("run").loc["resid", "fvu"] == pytest.approx(fvu)
    assert len(at.get("plotly_chart")) == 2  # the frontier, the selected run's curves


def test_missing_store_names_the_command(root, monkeypatch):
    for page in ("feature", "prompt", "heads"):
        at = open_page(root, monkeypatch, page=page, run="nostore")
        assert "interp dashboard build" in at.info[0].value
        assert str(root / "nostore") in at.info[0].value


def test_prompt_text_is_exact_for_smollm2(smollm2):
    """SmolLM2's byte-level BPE splits é, — and the emoji across tokens: the view's texts join to
    exactly the input, and every token's text is whole characters."""
    hook = "blocks.1.hook_resid_post"
    sae = SAE(SAEConfig(d_in=smollm2.cfg.d_model, d_sae=64, k=4, hook_name=hook), seed=0)
    vocab = Vocab.from_tokenizer(smollm2.tokenizer)
    view = prompt_features(smollm2, sae, UNICODE_PROMPT, top_k=3, vocab=vocab)
    assert view.text == UNICODE_PROMPT
    assert "\ufffd" not in "".join(view.texts)
    assert any(t == "" for t in view.texts)  # some character spans tokens
    assert all(len(ids) <= 3 for ids in view.top_ids)


def test_example_dfa_sums_to_the_pre_activation(root, tiny):
    """DFA over (source, head) plus the bias is the encoder's pre-activation at the example's
    centre, which for a live TopK latent there is its stored activation (the pre-activation of a
    kept TopK latent is its value)."""
    store = FeatureStore.open(store_dir(root / "attnz"))
    sae = load_sae(root / "attnz")
    i = int(store.alive[0])
    f = store.feature(i)
    res = example_dfa(store, tiny, sae, i, f.top[:3])
    assert len(res) == min(3, len(f.top))
    for r in res:
        full = sum(r.by_source) + r.bias
        assert full == pytest.approx(r.pre_activation, abs=1e-4)
        assert sum(r.by_head) == pytest.approx(sum(r.by_source), abs=1e-4)
        assert r.pre_activation == pytest.approx(r.example.value, rel=1e-3, abs=1e-4)
        assert all(v == 0 for v in r.by_source[r.example.center + 1 :])  # causal: no later source


def test_feature_page_dfa_for_hook_z(root, monkeypatch):
    store = FeatureStore.open(store_dir(root / "attnz"))
    i = int(store.alive[0])
    at = open_page(root, monkeypatch, page="feature", run="attnz", feature=i)
    [go] = [b for b in at.button if b.label == "compute DFA"]
    go.click().run()
    assert not at.exception
    assert any("top heads: H" in m.value for m in at.markdown)
