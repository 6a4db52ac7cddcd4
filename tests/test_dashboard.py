"""The explorer's pages under Streamlit's AppTest, on small run folders built here (tiny model):
each page runs without exception and shows the store's and the run's own values; a page whose
data is missing names the command that builds it; prompt text is exactly the input."""

from __future__ import annotations

import html
import json
import math
import random
import re

import pytest
import torch
from _dashboard_runs import open_page, tiny_run

from dashboards.registry import pages
from interp.text import Vocab
from saes import figures
from saes.analysis.prompts import explore_prompt
from saes.artifacts import load_sae
from saes.config import SAEConfig
from saes.features import FeatureStore, store_dir
from saes.features.dfa import example_dfa
from saes.features.prompt import prompt_features
from saes.rundir import RunDir
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
    hist, logits = [json.loads(c.proto.spec)["data"][0] for c in at.get("plotly_chart")[:2]]
    _check_histogram(hist, f, store)
    # logit effects: the store's tokens and values, most negative first, largest last
    want = f.logit_bottom + list(reversed(f.logit_top))
    assert logits["y"] == [repr(t) for _, t, _ in want]
    assert logits["x"] == pytest.approx([v for _, _, v in want])
    assert f.logit_top and f.logit_bottom and logits["x"][0] < 0 < logits["x"][-1]
    # neighbours are links to their pages
    md = " ".join(m.value for m in at.markdown)
    for j, _ in f.neighbours:
        assert f"feature={j})" in md


def _check_histogram(bars: dict, f, store) -> None:
    """The histogram shows the latent's own activations: its bars are the store's nonzero bins,
    they hold every activation inside the binned range, and the top bar's bin holds the max."""
    edges, counts = f.hist_edges, store.row("hist", f.index).tolist()
    inner = [
        (edges[j], edges[j + 1], counts[j + 1]) for j in range(len(edges) - 1) if counts[j + 1]
    ]
    assert bars["y"] == [c for _, _, c in inner]
    assert sum(bars["y"]) + counts[0] + counts[-1] == f.count
    for x, (lo, hi, _) in zip(bars["x"], inner):
        assert lo <= x < hi
    lo, hi, _ = inner[-1]
    assert lo <= f.max < hi  # the largest activation is in the last bar
    assert lo <= f.top[0].value < hi


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


def test_heads_page_for_hook_z_and_its_absence(root, tiny, monkeypatch):
    store = FeatureStore.open(store_dir(root / "attnz"))
    at = open_page(root, monkeypatch, page="heads", run="attnz")
    bars = json.loads(at.get("plotly_chart")[0].proto.spec)["data"][0]
    shares = store.array("head_attribution")[store.alive]
    expect = torch.bincount(shares.argmax(-1), minlength=shares.shape[1]).tolist()
    assert bars["y"] == expect  # live latents per main head, from the store
    charts = [json.loads(c.proto.spec)["data"][0] for c in at.get("plotly_chart")]
    heat, dfa = charts[1], charts[2]
    counts = store.array("count")
    shown = [int(y.split()[1]) for y in heat["y"]]
    want = sorted((int(counts[j]) for j in store.alive), reverse=True)[:40]
    assert [int(counts[j]) for j in shown] == want  # the 40 densest, densest first (any tie order)
    flat = [v for row in shares_of(store, shown) for v in row]
    assert [v for row in heat["z"] for v in row] == pytest.approx(flat)
    # the DFA bar of the default choice (the last position's first latent): one bar per head, and
    # with the encoder bias they add up to the latent's activation there (its TopK pre-activation)
    sae = load_sae(root / "attnz")
    here = explore_prompt(tiny, sae, at.text_input[0].value)[-1]
    j, act = here.features[0], here.activations[0]  # from the SAE's encoder
    assert at.selectbox[0].options[0] == f"{j} ({act:.3g})"
    assert dfa["x"] == [f"H{h}" for h in range(shares.shape[1])]
    with torch.no_grad():
        bias = float(sae.b_enc[j] - sae.b_dec @ sae.W_enc[:, j])
    assert sum(dfa["y"]) + bias == pytest.approx(act, rel=1e-4, abs=1e-4)
    at = open_page(root, monkeypatch, page="heads", run="resid")
    assert "attn.hook_z" in at.info[0].value


def shares_of(store, latents: list[int]) -> list[list[float]]:
    return store.array("head_attribution")[latents].tolist()


def test_runs_page_lists_runs_with_their_metrics(root, monkeypatch):
    at = open_page(root, monkeypatch, page="runs", run="resid")
    table = at.dataframe[0].value
    assert set(table["run"]) == {"attnz", "nostore", "resid"}
    fvu = json.loads((root / "resid" / "metrics.json").read_text())["fvu"]
    assert table.set_index("run").loc["resid", "FVU"] == pytest.approx(fvu)
    # dead latents: the store's count and window where there is a store, else the evaluation's
    for name in ("resid", "nostore"):
        row = table.set_index("run").loc[name]
        manifest = store_dir(root / name) / "manifest.json"
        if manifest.is_file():
            m = json.loads(manifest.read_text())
            assert row["dead (never fired)"] == pytest.approx(m["dead_latents"] / m["d_sae"])
            assert row["dead: in"] == f"{m['n_tokens']:,} store tokens"
        else:
            ev = json.loads((root / name / "metrics.json").read_text())
            assert row["dead (never fired)"] == pytest.approx(ev["dead_fraction"])
            assert row["dead: in"] == f"{ev['n_tokens']:,} eval tokens"
    frontier, curves = [json.loads(c.proto.spec) for c in at.get("plotly_chart")]
    runs_fvu = {n: json.loads((root / n / "metrics.json").read_text()) for n in table["run"]}
    ys = sorted(y for tr in frontier["data"] if tr["mode"] == "markers" for y in tr["y"])
    assert ys == pytest.approx(sorted(m["fvu"] for m in runs_fvu.values()))
    lo, hi = frontier["layout"]["yaxis"]["range"]
    assert 0 <= lo < min(ys) and max(ys) < hi
    # the selected run's curves are its training log's records
    records = RunDir(root / "resid").log_records()
    fvu_curve = next(tr for tr in curves["data"] if tr["name"] == "fvu")
    assert fvu_curve["y"] == pytest.approx([r["fvu"] for r in records if "fvu" in r])
    titles = [a["text"] for a in curves["layout"]["annotations"]]
    assert any(t.startswith("dead_fraction (training: never fired in the last") for t in titles)


@pytest.mark.parametrize("seed", range(5))
def test_frontier_axes_pad_the_data(seed):
    """One point sits inside an axis on its own scale (not Plotly's -0.5 to 1); several points
    all lie inside with padding; FVU never goes below 0."""
    rng = random.Random(seed)
    n = 1 if seed == 0 else rng.randint(1, 12)
    rows = [
        {"hook": "h", "name": f"r{i}", "variant": "topk", "d_sae": 64,
         "l0_mean": 10 ** rng.uniform(0, 3), "fvu": rng.uniform(0.0, 1.2) ** 2}
        for i in range(n)
    ]  # fmt: skip
    fig = figures.frontier_figure(rows)
    y0, y1 = fig.layout.yaxis.range
    x0, x1 = fig.layout.xaxis.range
    fvu = [r["fvu"] for r in rows]
    l0 = [math.log10(r["l0_mean"]) for r in rows]
    assert 0 <= y0 and y0 <= min(fvu) and max(fvu) < y1
    assert y0 < min(fvu) or y0 == 0
    assert x0 < min(l0) and max(l0) < x1
    if n == 1:  # the axes are on the point's scale
        assert y1 - y0 <= max(fvu) + 0.02 and x1 - x0 <= 1


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


def test_demo_states_both_dead_counts_with_their_windows(root):
    """`interp demo` prints the store's and the evaluation's dead latents, each with its window."""
    from saes.cli.runs import dead_latents_line

    m = json.loads((store_dir(root / "resid") / "manifest.json").read_text())
    ev = json.loads((root / "resid" / "metrics.json").read_text())
    line = dead_latents_line(m, ev)
    assert f"{m['dead_latents'] / m['d_sae']:.2%} ({m['dead_latents']:,} of {m['d_sae']:,})" in line
    assert f"store's {m['n_tokens']:,} held-out tokens" in line
    assert f"{ev['dead_fraction']:.2%} in the evaluation's {ev['n_tokens']:,}" in line
    assert "evaluation" not in dead_latents_line(m, {})


def test_pages_are_listed_without_importing_them():
    """The sidebar reads each page's title and order from its source; a page's module (and its
    analyses' imports) is imported only when the page is drawn, or by the server's warm-up."""
    import subprocess
    import sys

    code = (
        "import sys; from dashboards.registry import pages; ps = pages(); "
        "print(len(ps), sum(p.module in sys.modules for p in ps))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    n, imported = map(int, out.stdout.split())
    assert n >= 7 and imported == 0


def test_cli_runs_table_states_the_dead_window(root):
    """``interp runs`` shows the same dead-latent figure as the Runs page, with its window."""
    from rich.console import Console

    from saes.headline import HEADLINE
    from saes.runs import list_runs, runs_table

    [dead] = [h for h in HEADLINE if h.name == "dead_fraction"]
    console = Console(width=400, record=True)
    console.print(runs_table(list_runs(root)))
    text = console.export_text()
    for name in ("resid", "nostore"):
        [line] = [ln for ln in text.splitlines() if ln.strip().startswith(name)]
        manifest = store_dir(root / name) / "manifest.json"
        if manifest.is_file():
            m = json.loads(manifest.read_text())
            assert dead.format(m["dead_latents"] / m["d_sae"]) in line
            window = f"in {m['n_tokens']:,} store tokens"
        else:
            ev = json.loads((root / name / "metrics.json").read_text())
            assert dead.format(ev["dead_fraction"]) in line
            window = f"in {ev['n_tokens']:,} eval tokens"
        # the window sits in the row's second line, under the figure
        below = text.splitlines()[text.splitlines().index(line) + 1]
        assert window in below, (line, below)
