"""Test helper: small run folders with feature stores, for the explorer's tests (tiny model)."""

from __future__ import annotations

from pathlib import Path

import _runs

from saes.features import StoreConfig, build_store

STORE = StoreConfig(batch_windows=4, sample=32, examples_per_band=3, top_k=6, tokens=32 * 24)


def tiny_run(root: Path, model, name: str, hook: str, with_store: bool = True) -> Path:
    """The common tiny run (``tests/_runs.py``) at ``hook`` with a narrower SAE (d_sae 96, k 6),
    trained and evaluated, and its store."""
    run = _runs.tiny_run(
        root,
        name,
        data={"hook": hook},
        sae={"d_sae": 96, "k": 6},
        eval={"ce_windows": 2},
        model=model,
        evaluate=True,
    )
    if with_store:
        build_store(run, model=model, config=STORE)
    return run


APP = str(Path(__file__).resolve().parents[1] / "dashboards" / "app.py")


def open_page(root: Path, monkeypatch, **params):
    """The explorer over ``root`` in Streamlit's AppTest, run once with ``params`` as the URL's
    query (``page=...``, ``run=...``), failing on any exception or error box."""
    from streamlit.testing.v1 import AppTest

    monkeypatch.setenv("INTERP_DASHBOARD_TARGET", str(root))
    at = AppTest.from_file(APP, default_timeout=120)
    for k, v in params.items():
        at.query_params[k] = str(v)
    at.run()
    assert not at.exception, [e.value for e in at.exception]
    assert not at.error, [e.value for e in at.error]
    return at


# latents of :func:`awkward_run`'s SAE, planted so that its store has every awkward case
TIED, DEAD, ONCE, TWICE = 0, 1, 2, 3


def awkward_run(
    root: Path, model, name: str = "awkward", hook: str = "blocks.0.hook_resid_post"
) -> Path:
    """A tiny run whose SAE is planted so that its store holds the Feature page's awkward cases:

    * latent 0 (``TIED``) fires with one constant value (zero encoder column, a bias near the k-th
      largest pre-activation, so it wins a top-k slot on some tokens only): every band edge is
      that value, a tie;
    * latent 1 (``DEAD``) never fires;
    * latent 2 (``ONCE``) fires on exactly one token, latent 3 (``TWICE``) on exactly two with
      different values (a random direction, thresholded between the largest projections): their
      middle bands are empty with distinct edges.

    The SAE is trained first, the latents planted into its weights file, and the store built from
    the planted weights. Callers assert what the store holds; this only aims for it.
    """
    import torch
    from safetensors.torch import load_file, save_file

    from interp.activations import ActivationCapture
    from saes.artifacts import load_sae
    from saes.features import FeatureStore, store_dir

    run = tiny_run(root, model, name, hook)
    store = FeatureStore.open(store_dir(run))
    tokens = store.all_tokens.long()
    sae = load_sae(run)
    cap = ActivationCapture(model, [sae.cfg.hook_name], drop_bos=False)
    x = cap(tokens).acts[sae.cfg.hook_name].reshape(*tokens.shape, -1)[:, 1:]  # scored positions
    x = x.reshape(-1, x.shape[-1]).float()
    with torch.no_grad():
        x_in = sae.scale_input(x) - sae.b_dec
        pre = sae.pre_acts(x)
        others = pre.clone()
        others[:, :4] = -float("inf")
        kth = others.topk(sae.cfg.k, dim=1).values[:, -1]  # the bar a planted latent must clear
        scale = float(pre.abs().max()) * 10
    weights = sorted(run.glob("*.safetensors"))
    [wfile] = [w for w in weights if "W_enc" in load_file(str(w))]
    w = load_file(str(wfile))
    W, b = w["W_enc"].clone(), w["b_enc"].clone()
    W[:, TIED], b[TIED] = 0.0, float(kth.median())
    W[:, DEAD], b[DEAD] = 0.0, -1e4
    gen = torch.Generator().manual_seed(0)
    for latent, m in ((ONCE, 1), (TWICE, 2)):
        best = None
        for _ in range(64):  # the direction whose m-th and (m+1)-th projections are furthest apart
            u = torch.randn(x.shape[1], generator=gen)
            u /= u.norm()
            p = (x_in @ u).sort(descending=True).values
            gap = float(p[m - 1] - p[m]) / float(p[0] - p[-1])
            if best is None or gap > best[0]:
                best = (gap, u, float(p[m - 1] + p[m]) / 2, float(p[0]) - float(p[m]))
        _, u, t, span = best
        s = scale / max(span, 1e-6)  # the largest planted value is `scale`, above every k-th
        W[:, latent], b[latent] = s * u, -s * t
    w["W_enc"], w["b_enc"] = W.contiguous(), b.contiguous()
    save_file(w, str(wfile))
    import shutil

    shutil.rmtree(store_dir(run))
    build_store(run, model=model, config=STORE)
    return run
