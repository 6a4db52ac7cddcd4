"""The discrete-code circuit method: node/edge scores on hand-worked cases, the sparse counts
against the paper's dense loops, the evaluation metrics, and the planted-circuit model."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from circuits.discrete_codes import (
    CodeSAEConfig,
    best_balanced_f1,
    discrete_codes,
    edge_head_counts,
    edge_scores,
    head_vectors,
    heads_to_mask,
    node_scores,
    roc_auc,
    run_method,
    train_code_sae,
    unique_cooccurrence_counts,
    unique_positive_counts,
)
from circuits.figures import auc_vs_prompts_figure, heatmap_figure, ranked_heads
from circuits.patching import (
    attribution_scores,
    effect_order,
    find_circuit,
    head_effects,
    joint_effect,
    joint_effects,
    prefix_curve,
    smallest_prefix,
)
from circuits.planted import (
    INDUCTION,
    PLANTED,
    induction_accuracy,
    planted_model,
    planted_prompts,
)
from circuits.tasks import TaskData

pytestmark = pytest.mark.usefixtures("one_thread_module")


# ---- node score ---------------------------------------------------------------------------------


def test_node_score_hand_case():
    # head 0: positives {1}, negatives {1, 2} -> 0 codes only on positives
    # head 1: positives {2, 3}, negatives {4, 3} -> {2}: 1
    pos = np.array([[1, 2], [1, 3]])
    neg = np.array([[1, 4], [2, 3]])
    assert unique_positive_counts(pos, neg).tolist() == [0, 1]
    e = math.e
    np.testing.assert_allclose(node_scores(pos, neg), [1 / (1 + e), e / (1 + e)])


def test_node_score_top_k_code_sets():
    # top-2 code sets: head 0 positives {1, 2} and {1, 5}, negative {1, 2} -> {5}
    pos = np.array([[[1, 2]], [[1, 5]]])
    neg = np.array([[[1, 2]]])
    assert unique_positive_counts(pos, neg).tolist() == [1]


# ---- edge score ---------------------------------------------------------------------------------


def test_edge_score_hand_case():
    # 3 heads. Positive (0,1,0); negative (0,0,0). Code pairs only on the positive: heads (0,1):
    # (0,1); (1,0): (1,0); (1,2): (1,0); (2,1): (0,1). Heads (0,2) and (2,0) see (0,0) on both.
    pos = np.array([[0, 1, 0]])
    neg = np.array([[0, 0, 0]])
    expected = np.zeros((3, 3))
    expected[0, 1] = expected[1, 0] = expected[1, 2] = expected[2, 1] = 1
    np.testing.assert_array_equal(unique_cooccurrence_counts(pos, neg), expected)
    # The reduction keeps the first 9 // 2 = 4 entries of the head list, i.e. 2 of the 4 tied
    # pairs, so the tie-break decides the counts.
    # ours, ties by ascending flat index (1, 3, 5, 7): pairs (0,1), (1,0) -> heads 0,1,1,0
    assert edge_head_counts(expected).tolist() == [2, 2, 0]
    # the paper's np.argsort(flat)[::-1]: ties by descending flat index (7, 5, 3, 1): pairs
    # (2,1), (1,2) -> heads 2,1,1,2
    assert edge_head_counts(expected, flavour="paper").tolist() == [0, 2, 2]
    e = math.e
    np.testing.assert_allclose(edge_scores(pos, neg), np.array([e * e, e * e, 1]) / (2 * e * e + 1))
    np.testing.assert_allclose(
        edge_scores(pos, neg, flavour="paper"), np.array([1, e * e, e * e]) / (2 * e * e + 1)
    )
    # with distinct scores the tie-break does not matter: both take the best pairs first
    distinct = np.array([[0, 3, 1], [3, 0, 0], [1, 0, 0]], dtype=float)
    # pairs by score: (0,1) and (1,0) (3 each, tied again) -> heads 0,1,1,0 either way
    for flavour in ("ours", "paper"):
        assert edge_head_counts(distinct, flavour=flavour).tolist() == [2, 2, 0]
    with pytest.raises(ValueError, match="flavour"):
        edge_head_counts(expected, flavour="theirs")


def _dense_reference(pos, neg, n_feat):
    """The paper's loops (gen_co_occurrence_matrix + unique_co_occurrences, normalise=False)."""
    h = pos.shape[1]

    def cooc(codes):
        m = np.zeros((h, h, n_feat, n_feat))
        for e in range(codes.shape[0]):
            for h1 in range(h):
                for h2 in range(h):
                    if h1 != h2:
                        m[h1, h2, codes[e, h1], codes[e, h2]] += 1
        return m

    p, n = cooc(pos), cooc(neg)
    return ((p > 0) & ~(n > 0)).sum((2, 3)).astype(float)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_sparse_edge_counts_match_the_dense_loops(seed):
    rng = np.random.default_rng(seed)
    pos = rng.integers(0, 6, size=(7, 5))
    neg = rng.integers(0, 6, size=(5, 5))
    np.testing.assert_array_equal(
        unique_cooccurrence_counts(pos, neg, n_feat=6), _dense_reference(pos, neg, 6)
    )


# ---- evaluation ---------------------------------------------------------------------------------


def test_roc_auc_and_balanced_f1_hand_cases():
    # circuit heads score 0.9 and 0.3, others 0.8 and 0.1: 3 of 4 (in, out) pairs ordered right
    assert roc_auc([0.9, 0.8, 0.3, 0.1], [1, 0, 1, 0]) == pytest.approx(0.75)
    # a tie counts 1/2: (1 vs 1) 0.5, (1 vs 0) 1 -> 0.75
    assert roc_auc([1, 1, 0], [1, 0, 0]) == pytest.approx(0.75)
    # thr 0.9: TPR 1/2, TNR 1 -> 2/3; thr 0.3: TPR 1, TNR 1/2 -> 2/3; thr 0.8: 1/2; 0.1: 0
    f1, thr = best_balanced_f1([0.9, 0.8, 0.3, 0.1], [1, 0, 1, 0])
    assert f1 == pytest.approx(2 / 3) and thr in (0.3, 0.9)
    assert best_balanced_f1([0.9, 0.8, 0.3, 0.1], [1, 1, 0, 0])[0] == 1.0
    with pytest.raises(ValueError, match="at least one head"):
        roc_auc([1, 2], [1, 1])
    with pytest.raises(ValueError, match="3 scores but 2"):
        roc_auc([1, 2, 3], [1, 0])
    with pytest.raises(ValueError, match="unknown head"):
        heads_to_mask(["L9H0"], 2, 4)


# ---- the planted circuit ------------------------------------------------------------------------


@pytest.fixture(scope="module")
def planted():
    return planted_model(), planted_model(content_distractors=True)


def test_planted_model_does_induction(planted):
    for model in planted:
        pos, neg = planted_prompts(16, seed=5)
        assert induction_accuracy(model, pos) == 1.0
        # no repeats: the induction head rests on BOS and the logits carry nothing; chance is
        # 1/39 per position and the argmax never equals the (unseen) next token here
        assert induction_accuracy(model, neg) <= 0.1


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_method_ranks_the_planted_heads_first(planted, seed):
    model, with_content = planted
    pos, neg = planted_prompts(20, seed=seed)
    truth = heads_to_mask(PLANTED, 2, 4)
    r = run_method(head_vectors(model, pos), head_vectors(model, neg), seed=seed)
    assert set(r.ranked(4, "node")[:2]) == set(PLANTED)
    # strictly above every distractor (ties at the boundary would not be "ranked first")
    assert r.node[truth].min() > r.node[~truth].max()
    assert roc_auc(r.node, truth) == 1.0
    # distractors reading the tokens: the induction head still comes first
    r2 = run_method(head_vectors(with_content, pos), head_vectors(with_content, neg), seed=seed)
    assert r2.ranked(4, "node")[0] == INDUCTION
    assert r2.ranked(4, "edge")[0] == INDUCTION


def test_head_vector_options(planted):
    model, _ = planted
    pos, _ = planted_prompts(3, seed=0)
    mean = head_vectors(model, pos)
    last = head_vectors(model, pos, position="last")
    z = head_vectors(model, pos, site="z")
    assert mean.shape == last.shape == (3, 8, model.cfg.d_model)
    assert z.shape == (3, 8, model.cfg.d_head)
    # the result vector is z @ W_O (no b_O): check one head by hand from the cache
    _, cache = model.run_with_cache(pos)
    want = cache["blocks.1.attn.hook_z"][:, -1, 2] @ model.blocks[1].attn.W_O[2]
    torch.testing.assert_close(last[:, 4 + 2], want)
    with pytest.raises(ValueError, match="position"):
        head_vectors(model, pos, position="first")


# ---- patching -----------------------------------------------------------------------------------


def _planted_task(model, n=12, seed=0):
    pos, neg = planted_prompts(n, seed=seed)
    # the answer at the last position is the token after its first occurrence; the wrong id is
    # a token absent from the prompt (one wrong id: the metric is linear in the logits)
    # the last token is first[-1], which first occurred just before the repeat began: the answer
    # is the repeat's first token, pos[:, 1]
    answer = pos[:, 1]
    wrong = torch.tensor([[t for t in range(1, 40) if t not in row][0] for row in pos.tolist()])
    return TaskData(
        "planted",
        pos,
        neg,
        torch.stack([answer, wrong], 1),
        None,
        "logit_diff",
        [""] * n,
        {},
    )


@pytest.mark.parametrize("mode", ["patch", "mean"])
def test_batched_patching_equals_one_forward_per_head(tiny, mode):
    gen = torch.Generator().manual_seed(0)
    pos = torch.randint(0, 256, (5, 9), generator=gen)
    neg = torch.randint(0, 256, (5, 9), generator=gen)
    ids = torch.randint(0, 256, (5, 3), generator=gen)
    data = TaskData("rand", pos, neg, ids, None, "logit_diff", [""] * 5, {})
    a = head_effects(tiny, data, mode, progress=False, batched=True)
    b = head_effects(tiny, data, mode, progress=False, batched=False)
    np.testing.assert_allclose(a["effects"], b["effects"], atol=1e-4)
    assert np.abs(a["effects"]).max() > 1e-3  # the patches do something


def test_planted_patching_and_attribution(planted):
    model, _ = planted
    data = _planted_task(model)
    eff = head_effects(model, data, progress=False)
    # the logit difference is carried by the induction head alone: patching it (its output on
    # a prompt with no repeat is 0) moves the metric all the way; the other heads only write
    # into subspaces W_U never reads, except the previous-token head, which the induction head
    # needs (patching it breaks the match too)
    e = dict(zip([f"L{i // 4}H{i % 4}" for i in range(8)], eff["effects"], strict=True))
    assert e[INDUCTION] == pytest.approx(1.0, abs=1e-3)
    assert e[PLANTED[0]] == pytest.approx(1.0, abs=1e-3)
    assert max(v for k, v in e.items() if k not in PLANTED) == pytest.approx(0.0, abs=1e-4)
    circ = find_circuit(
        model, data, eff["effects"], eff["clean"], eff["corrupt"], cache=eff["cache"]
    )
    assert circ["k"] == 1 and circ["joint_effect"] >= 0.8
    # attribution patching is exact where the metric is linear in z: the last layer of an
    # attention-only model without LayerNorm (z -> W_O -> W_U, a logit difference of 2 ids)
    attr = attribution_scores(model, data)
    np.testing.assert_allclose(attr["scores"][4:], eff["effects"][4:], atol=1e-4)


def _bisect_prefix(curve, share):
    """The search the ground truth used before the scan (exponential, then binary search over the
    prefix length): right only when the joint effect grows with the prefix."""
    n = len(curve) - 1
    hi = 1
    while hi < n and curve[hi] < share:
        hi = min(2 * hi, n)
    lo = hi // 2 if hi > 1 else 0
    while hi - lo > 1:
        mid = (lo + hi) // 2
        if curve[mid] >= share:
            hi = mid
        else:
            lo = mid
    return hi


def test_scan_finds_the_smallest_prefix_on_a_non_monotone_curve():
    # k = 3 reaches 0.85, k = 4 falls back to 0.70 (a head that helps the task once the others
    # are patched): the bisection probes 1, 2, 4 (all < 0.8), then 8, and narrows within (4, 8]
    curve = [0.0, 0.3, 0.5, 0.85, 0.70, 0.72, 0.75, 0.78, 0.9, 0.95]
    assert smallest_prefix(curve, 0.8) == 3
    assert _bisect_prefix(curve, 0.8) == 8
    eff = np.array([0.5, 0.1, 0.4, 0.3, 0.05, 0.2, 0.0, -0.1, 0.01])  # order 0, 2, 3, 5, 1, ...
    circ = find_circuit(None, None, eff, 1.0, 0.0, 0.8, curve=curve)
    assert circ["k"] == 3 and circ["heads"] == [0, 2, 3] and circ["reached"]
    assert circ["joint_effect"] == 0.85 and circ["joint_effect_k_minus_1"] == 0.5
    # no prefix reaches 0.99: every head, flagged
    circ = find_circuit(None, None, eff, 1.0, 0.0, 0.99, curve=curve)
    assert circ["k"] == 9 and not circ["reached"] and smallest_prefix(curve, 0.99) is None
    with pytest.raises(ValueError, match="10 points"):
        find_circuit(None, None, eff, 1.0, 0.0, 0.8, curve=curve[:-1])


@pytest.mark.parametrize("seed", range(5))
def test_scan_is_the_smallest_k_on_random_curves(seed):
    rng = np.random.default_rng(seed)
    curve = np.concatenate([[0.0], rng.random(40)])
    for share in (0.5, 0.8, 0.95):
        k = smallest_prefix(curve, share)
        brute = [i for i in range(1, 41) if curve[i] >= share]
        assert k == (brute[0] if brute else None)
        if k is not None:
            assert (curve[1:k] < share).all() and curve[k] >= share


@pytest.mark.parametrize("mode", ["patch", "mean"])
def test_batched_joint_effects_equal_one_forward_per_set(tiny, mode):
    """The prefix curve's batched joint patches (several head sets to a forward, started at the
    first layer any of them touches) equal one full forward per set."""
    gen = torch.Generator().manual_seed(3)
    pos = torch.randint(0, 256, (5, 9), generator=gen)
    neg = torch.randint(0, 256, (5, 9), generator=gen)
    ids = torch.randint(0, 256, (5, 3), generator=gen)
    data = TaskData("rand", pos, neg, ids, None, "logit_diff", [""] * 5, {})
    e = head_effects(tiny, data, mode, progress=False)
    n_heads = tiny.cfg.n_layers * tiny.cfg.n_heads
    rng = np.random.default_rng(0)
    sets = [sorted(rng.choice(n_heads, rng.integers(0, n_heads + 1), replace=False).tolist())]
    sets += [
        sorted(rng.choice(n_heads, rng.integers(1, n_heads + 1), replace=False).tolist())
        for _ in range(8)
    ]
    args = (e["clean"], e["corrupt"], mode, e["cache"])
    got = joint_effects(tiny, data, sets, *args, batch_size=3)
    want = [joint_effect(tiny, data, hs, *args) for hs in sets]
    np.testing.assert_allclose(got, want, atol=1e-5)
    assert np.ptp(want) > 0.05  # the sets differ in effect
    order = effect_order(e["effects"])
    curve = prefix_curve(tiny, data, order, *args, batch_size=3)
    want = [0.0] + [joint_effect(tiny, data, order[:k], *args) for k in range(1, n_heads + 1)]
    np.testing.assert_allclose(curve, want, atol=1e-5)


# ---- figures ------------------------------------------------------------------------------------


def test_heatmap_figure_marks_the_circuit():
    nl, nh = 3, 2
    truth = [False, True, False, False, True, False]
    scores = {k: list(np.linspace(0, 1, 6)) for k in ("node", "edge", "attribution", "patching")}
    result = {
        "task": "ioi",
        "model": "m",
        "n_layers": nl,
        "n_heads": nh,
        "truth": truth,
        "scores": scores,
        "labels": [f"L{i // nh}H{i % nh}" for i in range(6)],
        "ground_truth": {"k": 2, "joint_effect": 0.9},
    }
    fig = heatmap_figure(result)
    heat = [t for t in fig.data if t.type == "heatmap"]
    marks = [t for t in fig.data if t.type == "scatter"]
    assert len(heat) == len(marks) == 4
    np.testing.assert_array_equal(np.array(heat[0].z), np.linspace(0, 1, 6).reshape(3, 2))
    # circuit heads L0H1 and L2H0 -> (head, layer) = (1, 0) and (0, 2)
    assert list(zip(marks[0].x, marks[0].y, strict=True)) == [(1, 0), (0, 2)]
    assert ranked_heads(result, "node", top=2) == [("L2H1", 1.0, False), ("L2H0", 0.8, True)]
    bench = {
        "tasks": {
            "ioi": {
                "auc_vs_n_train": {
                    "5": {"node_mean": 0.7, "node_std": 0.1, "edge_mean": 0.6, "edge_std": 0.1}
                }
            }
        }
    }
    assert len(auc_vs_prompts_figure(bench).data) == 2


def test_codes_break_ties_to_the_lowest_latent():
    class Fixed:
        def encode(self, x):
            return x

    # rows: all zero -> code 0 (np.argmax's convention); a tie between latents 1 and 3 -> 1
    x = torch.tensor([[[0.0, 0.0, 0.0, 0.0], [0.0, 2.0, 0.5, 2.0]]])
    assert discrete_codes(Fixed(), x).reshape(-1).tolist() == [0, 1]
    assert discrete_codes(Fixed(), x, top_k=2)[0, 1].tolist() == [1, 3]


@pytest.mark.parametrize("variant", ["relu_l1", "topk"])
def test_code_sae_trains_with_any_variant(variant):
    # 6 well-separated clusters of 16-d vectors: a trained SAE reconstructs them far better than
    # its initialisation, and gives the rows of one cluster one argmax code (with 32 latents and
    # 6 clusters, a cluster split over two codes would cost reconstruction under either rule)
    gen = torch.Generator().manual_seed(0)
    centres = 4 * torch.randn(6, 16, generator=gen)
    x = (centres[torch.arange(60) % 6] + 0.05 * torch.randn(60, 16, generator=gen)).float()
    cfg = CodeSAEConfig(d_sae=32, variant=variant, k=2, l1=0.02, lr=1e-2, epochs=300)
    sae0 = train_code_sae(x, CodeSAEConfig(d_sae=32, variant=variant, k=2, epochs=0))
    sae = train_code_sae(x, cfg)
    assert sae.cfg.variant == variant

    def fvu(s):
        with torch.no_grad():
            return float(((s.decode(s.encode(x)) - x) ** 2).sum() / ((x - x.mean(0)) ** 2).sum())

    assert fvu(sae) < 0.5 * fvu(sae0)
    codes = discrete_codes(sae, x[:, None]).reshape(-1)
    for c in range(6):
        assert codes[c::6].unique().numel() == 1


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_normalised_code_sae_does_not_see_the_input_scale(seed):
    """With ``normalize`` the training rows are scaled to mean norm sqrt(d), so an SAE trained on
    c * x gives the same codes as one trained on x (lambda means the same at any scale); without
    it, a large enough lambda silences the small-scale copy but not the large one."""
    gen = torch.Generator().manual_seed(seed)
    centres = torch.randn(5, 16, generator=gen)
    x = centres[torch.arange(40) % 5] + 0.05 * torch.randn(40, 16, generator=gen)
    cfg = CodeSAEConfig(d_sae=24, l1=0.05, lr=1e-2, epochs=150)
    norm = cfg.with_(normalize=True)
    small, big = train_code_sae(0.1 * x, norm, seed=seed), train_code_sae(10 * x, norm, seed=seed)
    assert small.cfg.input_scale == pytest.approx(100 * big.cfg.input_scale, rel=1e-4)
    with torch.no_grad():
        zs, zb = small.encode(0.1 * x), big.encode(10 * x)
        # mean norm sqrt(d) after scaling
        assert (big.scale_input(10 * x)).norm(dim=1).mean() == pytest.approx(4.0, rel=1e-4)
    torch.testing.assert_close(zs, zb, rtol=1e-3, atol=1e-4)
    assert (zs > 0).any(1).float().mean() > 0.5  # the codes say something
    raw_small = train_code_sae(0.1 * x, cfg, seed=seed)
    raw_big = train_code_sae(10 * x, cfg, seed=seed)
    with torch.no_grad():
        silent_small = (raw_small.encode(0.1 * x) == 0).all(1).float().mean()
        silent_big = (raw_big.encode(10 * x) == 0).all(1).float().mean()
    assert silent_small > silent_big


def test_sweep_point_resumes_seed_by_seed(planted, monkeypatch):
    """A sweep point saved after each seed and resumed from what was saved equals the point run
    in one go; resuming runs only the missing seeds; a point stored before rows were kept (one
    seed, means only) counts as seed 0."""
    import circuits.experiment as experiment

    model, _ = planted
    pos, neg = planted_prompts(12, seed=3)
    ctx = {
        "xp": head_vectors(model, pos),
        "xn": head_vectors(model, neg),
        "truth": heads_to_mask(PLANTED, 2, 4),
        "data": pos,
        "cfg": CodeSAEConfig(epochs=60),
    }
    full = experiment.auc_vs_n_train(ctx, (8,), 3)["8"]
    assert [r["seed"] for r in full["per_seed"]] == [0, 1, 2]

    saved: dict = {}

    class Stop(Exception):
        pass

    def stop_after_two(key, point):
        saved[key] = point
        if point["seeds"] == 2:
            raise Stop

    with pytest.raises(Stop):
        experiment.auc_vs_n_train(ctx, (8,), 3, on_seed=stop_after_two)
    assert saved["8"]["seeds"] == 2
    calls = []
    real = experiment.run_method
    monkeypatch.setattr(
        experiment, "run_method", lambda *a, **k: calls.append(k["seed"]) or real(*a, **k)
    )
    resumed = experiment.auc_vs_n_train(ctx, (8,), 3, have=saved)["8"]
    assert calls == [2]

    def scores(point):
        return [r[k] for r in point["per_seed"] for k in ("seed", "node", "edge", "silent")]

    # the seeds differ (silent share, edge AUC), so a reused or reordered seed would show
    assert len({r["silent"] for r in full["per_seed"]}) > 1
    assert scores(resumed) == pytest.approx(scores(full))
    for key in ("node", "edge", "silent"):
        assert resumed[f"{key}_mean"] == pytest.approx(full[f"{key}_mean"])
        assert resumed[f"{key}_std"] == pytest.approx(full[f"{key}_std"])

    old = {k: v for k, v in full.items() if k != "per_seed"}
    old.update(seeds=1, **{f"{k}_mean": full["per_seed"][0][k] for k in ("node", "edge")})
    old["silent_mean"] = full["per_seed"][0]["silent"]
    calls.clear()
    again = experiment.auc_vs_n_train(ctx, (8,), 3, have={"8": old})["8"]
    assert calls == [1, 2]
    assert scores(again) == pytest.approx(scores(full))
    del old["silent_mean"]  # a score the old point lacks: its seed is run again
    calls.clear()
    experiment.auc_vs_n_train(ctx, (8,), 2, have={"8": old})
    assert calls == [0, 1]

    # the lambda sweep's points resume the same way, keeping their config tags
    cfgs = {"l1=0.05": ctx["cfg"].with_(l1=0.05)}
    whole = experiment.auc_vs_sae_config(ctx, cfgs, 8, 2)["l1=0.05"]
    saved.clear()
    with pytest.raises(Stop):
        experiment.auc_vs_sae_config(ctx, cfgs, 8, 3, on_seed=stop_after_two)
    assert saved["l1=0.05"]["l1"] == 0.05 and saved["l1=0.05"]["seeds"] == 2
    calls.clear()
    part = experiment.auc_vs_sae_config(ctx, cfgs, 8, 2, have=saved)["l1=0.05"]
    assert calls == [] and part["normalize"] is False
    assert scores(part) == pytest.approx(scores(whole))


# ---- the two code SAEs: ours and the paper's -------------------------------------------------


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_paper_code_sae_init_and_norms(seed):
    """flavour "paper": encoder and decoder drawn independently, a random encoder bias, each input
    dimension's decoder row (their [d, F] weight's rows = our W_dec's columns) at unit norm, so a
    latent's decoder norm is about sqrt(d / F), not 1; "ours": tied, b_enc = 0, unit latents."""
    d, f = 48, 12
    gen = torch.Generator().manual_seed(seed)
    x = torch.randn(30, d, generator=gen)
    for epochs in (0, 40):
        paper = train_code_sae(x, CodeSAEConfig(d_sae=f, epochs=epochs, flavour="paper"), seed)
        ours = train_code_sae(x, CodeSAEConfig(d_sae=f, epochs=epochs), seed)
        with torch.no_grad():
            # the paper's constraint: per input dimension (columns of our [F, d] W_dec) ...
            torch.testing.assert_close(paper.W_dec.norm(dim=0), torch.ones(d))
            # ... so the latents' decoder norms are not 1: their squares sum to d
            lat = paper.W_dec.norm(dim=1)
            assert float((lat**2).sum()) == pytest.approx(d, rel=1e-4)
            assert float((lat - 1).abs().max()) > 0.3
            assert float(lat.mean()) == pytest.approx((d / f) ** 0.5, rel=0.15)
            # encoder latents unit norm in both
            torch.testing.assert_close(paper.W_enc.norm(dim=0), torch.ones(f))
            torch.testing.assert_close(ours.W_enc.norm(dim=0), torch.ones(f))
            torch.testing.assert_close(ours.W_dec.norm(dim=1), torch.ones(f))
        if epochs == 0:
            with torch.no_grad():
                # ours is tied with b_enc = 0; the paper's are independent, b_enc in +-1/sqrt(d)
                torch.testing.assert_close(ours.W_enc, ours.W_dec.t())
                assert float(ours.b_enc.abs().max()) == 0.0
                cos = (paper.W_enc * paper.W_dec.t()).sum(0) / (
                    paper.W_enc.norm(dim=0) * paper.W_dec.norm(dim=1)
                )
                assert float(cos.abs().max()) < 0.7  # independent random directions in 48-d
                b = paper.b_enc
                assert float(b.abs().max()) <= 1 / d**0.5 and float(b.abs().min()) > 0
                assert len(set(b.tolist())) == f
                assert float(paper.b_dec.abs().max()) == 0.0


def test_paper_code_sae_trains_and_keeps_its_constraint_through_adam():
    """Trained with the paper's loss it reconstructs clusters far better than at init, and its
    decoder rows per input dimension stay unit norm (renormalised each forward; the gradient
    hook removes the radial part, which the final renormalisation alone would not show)."""
    gen = torch.Generator().manual_seed(0)
    centres = 4 * torch.randn(6, 16, generator=gen)
    x = (centres[torch.arange(60) % 6] + 0.05 * torch.randn(60, 16, generator=gen)).float()
    cfg = CodeSAEConfig(d_sae=32, l1=0.02, lr=1e-2, epochs=300, flavour="paper")
    sae0 = train_code_sae(x, cfg.with_(epochs=0))
    sae = train_code_sae(x, cfg)

    def fvu(s):
        with torch.no_grad():
            return float(((s.decode(s.encode(x)) - x) ** 2).sum() / ((x - x.mean(0)) ** 2).sum())

    assert fvu(sae) < 0.5 * fvu(sae0)
    torch.testing.assert_close(sae.W_dec.norm(dim=0), torch.ones(16))
    # no hooks left behind on the returned SAE: a backward through it leaves raw gradients
    z = sae.encode(x)
    z.sum().backward()
    g = sae.W_enc.grad
    assert float((g * sae.W_enc.detach()).sum(0).abs().max()) > 1e-3
    with pytest.raises(ValueError, match="relu_l1"):
        CodeSAEConfig(flavour="paper", variant="topk")
    with pytest.raises(ValueError, match="flavour"):
        CodeSAEConfig(flavour="theirs")


def test_gradient_hook_removes_the_radial_part():
    from circuits.discrete_codes import _project_off_columns

    gen = torch.Generator().manual_seed(1)
    w = torch.randn(5, 7, generator=gen)
    w = w / w.norm(dim=0, keepdim=True)
    g = torch.randn(5, 7, generator=gen)
    out = _project_off_columns(w)(g)
    # orthogonal to each column, and what was removed is parallel to it
    torch.testing.assert_close((out * w).sum(0), torch.zeros(7), atol=1e-6, rtol=0)
    removed = g - out
    torch.testing.assert_close(removed, (g * w).sum(0, keepdim=True) * w)
