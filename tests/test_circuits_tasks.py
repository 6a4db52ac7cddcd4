"""Task generators on SmolLM2's tokenizer: single-token answers, aligned positive/negative pairs,
the corruption each task promises, and the metric on hand-made logits."""

from __future__ import annotations

import re

import pytest
import torch

from circuits.tasks import TASKS, TaskData, generate, task_metric


@pytest.fixture(scope="module")
def tok(smollm2):
    return smollm2.tokenizer


@pytest.mark.parametrize("task", TASKS)
def test_answers_are_single_tokens_and_pairs_align(tok, task):
    data = generate(task, tok, 60, seed=3)
    assert len(data) >= 20, data.counts
    assert data.pos.shape == data.neg.shape
    for i in range(len(data)):
        for t in data.ids[i].tolist():
            # every id read by the metric is one whole token of this tokenizer
            assert len(tok.encode(tok.decode([t]))) == 1
        # the pair differs only where the corruption put other names / years
        assert (data.pos[i] != data.neg[i]).any()
        assert tok.decode(data.pos[i].tolist()) == data.texts[i]


def test_ioi_structure(tok):
    data = generate("ioi", tok, 40, seed=1)
    for i in range(len(data)):
        pos, neg = tok.decode(data.pos[i].tolist()), tok.decode(data.neg[i].tolist())
        io, s = (tok.decode([t]).strip() for t in data.ids[i].tolist())
        # positive: IO once, S twice; negative: S once, plus a third name where S2 was
        assert pos.split().count(io) + pos.count(io + ",") >= 1
        assert len(re.findall(rf"\b{s}\b", pos)) == 2
        assert len(re.findall(rf"\b{s}\b", neg)) == 1
        assert len(re.findall(rf"\b{io}\b", neg)) == 1


def test_greater_than_structure(tok):
    data = generate("greater-than", tok, 40, seed=2)
    digits = [tok.decode([t]) for t in data.ids[0].tolist()]
    assert digits == [str(d) for d in range(10)]  # SmolLM2 splits numbers into digits
    for i in range(len(data)):
        m = re.search(r"year (\d\d)(\d\d) to the year (\d\d)$", data.texts[i])
        assert m and m.group(1) == m.group(3)
        yy = int(m.group(2))
        assert 2 <= yy <= 89
        w = data.weights[i].tolist()
        assert w == [1.0 if d > yy // 10 else (-1.0 if d < yy // 10 else 0.0) for d in range(10)]
        assert re.search(r"year \d\d01 to", tok.decode(data.neg[i].tolist()))


def test_docstring_structure(tok):
    data = generate("docstring", tok, 40, seed=4)
    for i in range(len(data)):
        pos, neg = data.texts[i], tok.decode(data.neg[i].tolist())
        sig = re.match(r"def \w+\(self, ([^)]*)\):", pos).group(1).split(", ")
        answer = tok.decode([data.ids[i, 0].item()]).strip()
        assert answer == sig[2]
        assert re.findall(r":param (\w+):", pos) == sig[:2]
        # random_random: no signature or docstring name of the positive survives
        assert not set(re.findall(r"\w+", neg.split(":", 1)[0])) & set(sig)
        assert answer not in neg


def test_metrics_on_hand_made_logits():
    ld = TaskData(
        "x",
        torch.zeros(2, 1),
        torch.zeros(2, 1),
        torch.tensor([[0, 1, 2], [2, 0, 1]]),
        None,
        "logit_diff",
        ["", ""],
        {},
    )
    logits = torch.tensor([[3.0, 1.0, 2.0], [0.0, 5.0, 1.0]])
    # row 0: 3 - max(1, 2) = 1; row 1: logit[2] - max(logit[0], logit[1]) = 1 - 5 = -4
    assert task_metric(ld, logits).tolist() == [1.0, -4.0]
    pd = TaskData(
        "x",
        torch.zeros(1, 1),
        torch.zeros(1, 1),
        torch.tensor([[0, 1, 2]]),
        torch.tensor([[-1.0, 0.0, 1.0]]),
        "prob_diff",
        [""],
        {},
    )
    logits = torch.log(torch.tensor([[0.2, 0.3, 0.5]]))
    assert task_metric(pd, logits).item() == pytest.approx(0.5 - 0.2)
