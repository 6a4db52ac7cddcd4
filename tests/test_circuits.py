"""The discrete-code circuit method: node/edge scores on hand-worked cases, the sparse counts
against the paper's dense loops, the evaluation metrics, and the planted-circuit model."""

from __future__ import annotations

import math
from dataclasses import replace

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
from circuits.patching import attribution_scores, find_circuit, head_effects
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
    # 3 heads. Positives (0,1,2) and (0,1,3); negative (0,1,2). Code pairs only on positives:
    # heads (0,2): (0,3); (1,2): (1,3); (2,0): (3,0); (2,1): (3,1).
    pos = np.array([[0, 1, 2], [0, 1, 3]])
    neg = np.array([[0, 1, 2]])
    expected = np.zeros((3, 3))
    expected[0, 2] = expected[1, 2] = expected[2, 0] = expected[2, 1] = 1
    np.testing.assert_array_equal(unique_cooccurrence_counts(pos, neg), expected)
    # the reduction: pairs by score then flat index: (0,2), (1,2), (2,0), (2,1), ...; list of
    # heads 0,2, 1,2, 2,0, 2,1, ...; its first 9 // 2 = 4 entries 0,2,1,2 -> counts [1, 1, 2]
    assert edge_head_counts(expected).tolist() == [1, 1, 2]
    e = math.e
    np.testing.assert_allclose(edge_scores(pos, neg), np.array([1, 1, e]) / (2 + e))


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
    norm = replace(cfg, normalize=True)
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
    cfgs = {"l1=0.05": replace(ctx["cfg"], l1=0.05)}
    whole = experiment.auc_vs_sae_config(ctx, cfgs, 8, 2)["l1=0.05"]
    saved.clear()
    with pytest.raises(Stop):
        experiment.auc_vs_sae_config(ctx, cfgs, 8, 3, on_seed=stop_after_two)
    assert saved["l1=0.05"]["l1"] == 0.05 and saved["l1=0.05"]["seeds"] == 2
    calls.clear()
    part = experiment.auc_vs_sae_config(ctx, cfgs, 8, 2, have=saved)["l1=0.05"]
    assert calls == [] and part["normalize"] is False
    assert scores(part) == pytest.approx(scores(whole))
