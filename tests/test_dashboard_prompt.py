"""The Prompt page and tokens over the training norm limit: a run whose ``data.max_norm_ratio``
is set (from the prompt's own norms) so that exactly one token of the prompt is over it. By
default that token is marked and left out of the colour scale, the latent list, the heatmap and
the top-latent table; with the toggle it is back in all four."""

from __future__ import annotations

import json
import re

import pytest
from _dashboard_runs import open_page, tiny_run

from dashboards.views.prompt import DEFAULT
from saes.artifacts import load_sae
from saes.features import FeatureStore, store_dir
from saes.features.prompt import prompt_features

pytestmark = pytest.mark.usefixtures("one_thread_module")

SPAN = re.compile(r'<span class="(tok[^"]*)" style="background-color: rgba\([^)]*, ([0-9.]+)\);')


@pytest.fixture(scope="module")
def planted(tmp_path_factory, tiny):
    """(root, run, ratio, over position): the run's limit set between the prompt's largest and
    second-largest norm ratios, so exactly one token is over it."""
    root = tmp_path_factory.mktemp("prompt")
    run = tiny_run(root, tiny, "resid", "blocks.0.hook_resid_post")
    view = prompt_features(tiny, load_sae(run), DEFAULT)
    med = view.median_norm
    ratios = sorted(((n / med, t) for t, n in enumerate(view.norms) if t > 0), reverse=True)
    (r1, t1), (r2, _) = ratios[0], ratios[1]
    assert r1 > r2 > 1, ratios[:3]
    ratio = (r1 + r2) / 2
    cfg_path = run / "run_config.json"
    cfg = json.loads(cfg_path.read_text())
    cfg["data"]["max_norm_ratio"] = ratio
    cfg_path.write_text(json.dumps(cfg))
    return root, run, ratio, t1


def _view(tiny, run, ratio):
    store = FeatureStore.open(store_dir(run))
    return prompt_features(
        tiny, load_sae(run), DEFAULT, top_k=5, vocab=store.vocab, max_norm_ratio=ratio
    )


def _spans(at) -> list[tuple[bool, float]]:
    """(marked over the limit, colour alpha) per token of the highlighted prompt."""
    body = at.get("html")[0].proto.body
    return [("over" in cls, float(a)) for cls, a in SPAN.findall(body)]


def _table_rows(at) -> dict[int, str]:
    [md] = [m.value for m in at.markdown if m.value.startswith("| pos | token |")]
    rows = {}
    for line in md.splitlines()[2:]:
        pos, _tok, cells = line.strip("|").split("|", 2)
        rows[int(pos)] = cells
    return rows


def _heatmap(at) -> dict:
    [fig] = [json.loads(c.proto.spec) for c in at.get("plotly_chart")]
    return fig["data"][0]


def test_view_flags_exactly_the_planted_token(planted, tiny):
    _root, run, ratio, t_over = planted
    view = _view(tiny, run, ratio)
    assert [t for t, o in enumerate(view.over) if o] == [t_over]
    assert view.norm_limit == pytest.approx(ratio * view.median_norm)
    assert (
        view.norms[t_over]
        > view.norm_limit
        > max(n for t, n in enumerate(view.norms) if t not in (0, t_over))
    )


def test_over_limit_token_is_left_out_by_default_and_back_with_the_toggle(
    planted, tiny, monkeypatch
):
    root, run, ratio, t_over = planted
    view = _view(tiny, run, ratio)
    at = open_page(root, monkeypatch, page="prompt", run="resid")
    caption = " ".join(c.value for c in at.caption)
    assert f"{view.norm_limit:.3g}" in caption and "left out" in caption

    for include in (False, True):
        if include:
            at.toggle[0].set_value(True).run()
            assert not at.exception and not at.error
        latents = view.latents(include_over=include)
        assert [int(o.split()[0]) for o in at.selectbox[0].options] == latents
        shown = latents[0]
        acts = view.activation_of(shown, include_over=True)
        scale = max(view.activation_of(shown, include_over=include))
        spans = _spans(at)
        assert len(spans) == len(view.tokens)
        assert [m for m, _ in spans] == view.over  # the over token, and only it, is marked
        for (_, alpha), v in zip(spans, acts):  # colour = value / scale, capped at 1
            assert alpha == pytest.approx(min(1.0, max(v, 0) / scale) if scale > 0 else 0, abs=2e-3)
        if not include:  # the scale comes from the other tokens: one of them is at full colour
            assert max(a for (m, a) in spans if not m) == pytest.approx(1.0)
        rows = _table_rows(at)
        assert ("left out" in rows[t_over]) == (not include)
        assert ("feature=" in rows[t_over]) == (include and bool(view.top_ids[t_over]))
        for t in rows:
            if t != t_over and view.top_ids[t]:
                assert "feature=" in rows[t]  # the other tokens keep their latents
        z = _heatmap(at)["z"]
        column = [row[t_over] for row in z]
        if include:
            assert column == pytest.approx(
                [view.activation_of(j, True)[t_over] for j in latents[:20]]
            )
        else:
            assert all(v is None for v in column)


def test_no_limit_when_the_run_keeps_every_row(planted, monkeypatch):
    root, run, _ratio, _t = planted
    cfg_path = run / "run_config.json"
    saved = cfg_path.read_text()
    cfg = json.loads(saved)
    cfg["data"]["max_norm_ratio"] = None
    try:
        cfg_path.write_text(json.dumps(cfg))
        at = open_page(root, monkeypatch, page="prompt", run="resid")
        assert any("no norm limit" in c.value for c in at.caption)
        assert not at.toggle
        assert not any(m for m, _ in _spans(at))
    finally:
        cfg_path.write_text(saved)
