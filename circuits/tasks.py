"""Prompt generators for the three circuit tasks, for any tokenizer: positive prompts (the model can
predict the answer), matched negatives of the same token length (it cannot), the answer tokens and
the task metric.

* **IOI** (Wang et al. 2022): "When Mary and John went to the store, John gave a drink to" ->
  " Mary" (ABBA; BABA swaps the first two names). Negatives replace the repeated subject by a third
  name ("..., Tom gave a drink to"), so the indirect object cannot be inferred. Metric: logit
  difference logit(IO) - logit(S).
* **Greater-than** (Hanna et al. 2023): "The {noun} lasted from the year {XX}{YY} to the year
  {XX}" -> a year after XXYY. SmolLM2 (and any digit-splitting tokenizer) writes "1732" as the
  tokens "1" "7" "3" "2", so the next token after "... to the year 17" is the *tens digit* of the
  answer. We score it there: metric = P(tens digit > Y1) - P(tens digit < Y1) over the ten digit
  tokens, Y1 = YY // 10 (the tens digit equal to Y1 is left out: whether 3x > 32 depends on the next
  token). YY runs over 02-89 (for 90-98 no tens digit is greater). A tokenizer with two-digit
  tokens is scored the paper's way: P(YY' > YY) - P(YY' <= YY) over the tokens "00".."99".
  Negatives use YY = 01, scored with the positive's Y1.
* **Docstring** (Heimersheim & Janiak 2023): a function ``def f(self, a, b, c, ...)`` whose
  docstring lists ":param a: ..." and ":param b: ..." and ends in ":param" -> " c". Negatives are
  the paper's "random_random" corruption: the parameter names in the signature and in the
  docstring are replaced by fresh random names, so the next name cannot be known. Metric:
  logit(answer) - max logit of the signature's other parameter names.

Only single-token names, nouns, objects and parameter names (with their leading space) are used,
so every answer is one token and positives and negatives align token by token (needed for
patching); a pair whose lengths still differ is dropped. :func:`build_task` keeps the positives the
model gets right (metric > 0) and reports how the negatives score (they should sit near chance).
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from typing import Literal

import numpy as np
import torch

__all__ = ["TASKS", "TaskData", "build_task", "generate", "task_metric"]

TASKS = ("ioi", "greater-than", "docstring")
TaskName = Literal["ioi", "greater-than", "docstring"]

NAMES = (
    "Mary John Tom James Dan Sarah Anna Paul Mark Lisa Kate Mike David Susan Emma Laura Peter "
    "Alex Jack Rose Amy Ben Sam Kevin Steve Jane Bob Alice Eric Nick Adam Chris Ryan Tim Jim Anne "
    "Karen Lucy Ruth Carl"
).split()
PLACES = "store park school market beach office station hospital garden library".split()
OBJECTS = "drink book ring kiss bone ball basket computer necklace letter".split()
IOI_TEMPLATES = (
    "When {A} and {B} went to the {place}, {C} gave a {obj} to",
    "When {A} and {B} got a {obj} at the {place}, {C} decided to give it to",
    "Then, {A} and {B} went to the {place}. {C} gave a {obj} to",
    "After {A} and {B} went to the {place}, {C} gave a {obj} to",
    "While {A} and {B} were at the {place}, {C} gave a {obj} to",
)
NOUNS = (
    "war trial journey project reign drought festival strike program expedition dynasty empire "
    "marriage contract campaign"
).split()
PARAM_NAMES = (
    "path mode size name data value key user count index text line url port host item result "
    "file files load last first width height color order level state model query source target "
    "format label token shape limit offset status scale style range group field"
).split()
DESC_WORDS = (
    "the new old list of all main value used for each given current default input output number "
    "string object file name type time"
).split()


@dataclass
class TaskData:
    """Aligned positive and negative prompts with what the metric reads.

    ``ids`` [n, m]: token ids read at the last position; ``kind="logit_diff"``: metric =
    logit[ids[:, 0]] - max_j>=1 logit[ids[:, j]]; ``kind="prob_diff"``: metric = sum_j
    weights[:, j] * softmax(logits)[ids[:, j]]."""

    name: str
    pos: torch.Tensor
    neg: torch.Tensor
    ids: torch.Tensor
    weights: torch.Tensor | None
    kind: Literal["logit_diff", "prob_diff"]
    texts: list[str]
    counts: dict[str, float]

    def subset(self, index) -> TaskData:
        idx = torch.as_tensor(index, dtype=torch.long)
        return TaskData(
            self.name,
            self.pos[idx],
            self.neg[idx],
            self.ids[idx],
            None if self.weights is None else self.weights[idx],
            self.kind,
            [self.texts[i] for i in idx.tolist()],
            dict(self.counts),
        )

    def __len__(self) -> int:
        return self.pos.shape[0]


def task_metric(data: TaskData, logits: torch.Tensor) -> torch.Tensor:
    """[n] per-prompt metric from last-position logits [n, vocab] (or full logits [n, pos, V])."""
    if logits.ndim == 3:
        logits = logits[:, -1]
    logits = logits.float()
    picked = logits.gather(1, data.ids.to(logits.device))
    if data.kind == "logit_diff":
        return picked[:, 0] - picked[:, 1:].max(1).values
    probs = logits.softmax(-1).gather(1, data.ids.to(logits.device))
    return (probs * data.weights.to(logits.device)).sum(1)


# ---------------------------------------------------------------------------------------------
# generators
# ---------------------------------------------------------------------------------------------


def _single(tokenizer, words, space: bool = True) -> list[str]:
    return [w for w in words if len(tokenizer.encode((" " if space else "") + w)) == 1]


def _enc(tokenizer, text: str) -> list[int]:
    return list(tokenizer.encode(text))


def _tid(tokenizer, word: str) -> int:
    ids = tokenizer.encode(word)
    if len(ids) != 1:
        raise ValueError(f"{word!r} is {len(ids)} tokens for this tokenizer, not 1")
    return int(ids[0])


def _ioi(tokenizer, n: int, rng: random.Random):
    names, places, objs = (_single(tokenizer, w) for w in (NAMES, PLACES, OBJECTS))
    if len(names) < 3:
        raise ValueError(f"only {len(names)} single-token names for this tokenizer; IOI needs 3")
    out = []
    for i in range(n):
        tpl = IOI_TEMPLATES[i % len(IOI_TEMPLATES)]
        io, s, third = rng.sample(names, 3)
        place, obj = rng.choice(places), rng.choice(objs)
        a, b = (io, s) if i % 2 == 0 else (s, io)  # ABBA / BABA
        pos = tpl.format(A=a, B=b, C=s, place=place, obj=obj)
        neg = tpl.format(A=a, B=b, C=third, place=place, obj=obj)
        ids = [_tid(tokenizer, " " + io), _tid(tokenizer, " " + s)]
        out.append((pos, neg, ids, None))
    return out, "logit_diff"


def _digit_tokens(tokenizer) -> tuple[list[int], bool]:
    """The ten digit tokens and whether the tokenizer splits numbers into digits."""
    two = tokenizer.encode("1732")
    split = len(two) == 4
    return [_tid(tokenizer, str(d)) for d in range(10)], split


def _greater_than(tokenizer, n: int, rng: random.Random):
    nouns = _single(tokenizer, NOUNS)
    digits, split = _digit_tokens(tokenizer)
    out = []
    for _ in range(n):
        noun = rng.choice(nouns)
        xx = rng.randint(12, 19)
        yy = rng.randint(2, 89)
        tpl = f"The {noun} lasted from the year {xx}{{yy}} to the year {xx}"
        pos, neg = tpl.format(yy=f"{yy:02d}"), tpl.format(yy="01")
        if split:
            tens = yy // 10
            ids = digits
            w = [1.0 if d > tens else (-1.0 if d < tens else 0.0) for d in range(10)]
        else:
            ids = [_tid(tokenizer, f"{v:02d}") for v in range(100)]
            w = [1.0 if v > yy else -1.0 for v in range(100)]
        out.append((pos, neg, ids, w))
    return out, "prob_diff"


def _docstring(tokenizer, n: int, rng: random.Random):
    params = _single(tokenizer, PARAM_NAMES)
    words = _single(tokenizer, DESC_WORDS)
    fname_pool = _single(tokenizer, ["load", "run", "get", "set", "read", "write", "parse", "send"])
    if len(params) < 10:
        raise ValueError(f"only {len(params)} single-token parameter names; docstring needs 10")
    out = []

    def render(fname, args, doc_args, descs):
        sig = ", ".join(["self", *args])
        lines = [f"def {fname}({sig}):", '    """' + " ".join(rng_words(3)).capitalize() + "."]
        lines.append("")
        for a, d in zip(doc_args, descs, strict=True):
            lines.append(f"    :param {a}: {d}")
        lines.append("    :param")
        return "\n".join(lines)

    def rng_words(k):
        return [rng.choice(words) for _ in range(k)]

    for _ in range(n):
        n_args = rng.choice((3, 4))
        names = rng.sample(params, 2 * n_args)
        args, fresh = names[:n_args], names[n_args:]
        descs = [" ".join(rng_words(2)) for _ in range(2)]
        fname = rng.choice(fname_pool)
        state = rng.getstate()
        pos = render(fname, args, args[:2], descs)
        rng.setstate(state)  # the same summary line for the negative
        # random_random: signature and docstring names both replaced by other random names
        neg_doc = rng.sample([p for p in params if p not in names], 2)
        rng.setstate(state)
        neg = render(fname, fresh, neg_doc, descs)
        answer = args[2]
        others = [a for a in args if a != answer]
        ids = [_tid(tokenizer, " " + answer)] + [_tid(tokenizer, " " + a) for a in others]
        out.append((pos, neg, ids, None))
    return out, "logit_diff"


_GENERATORS = {"ioi": _ioi, "greater-than": _greater_than, "docstring": _docstring}


def generate(task: TaskName, tokenizer, n: int, seed: int = 0) -> TaskData:
    """``n`` candidate prompt pairs (unfiltered), kept to the most common token length so they
    batch without padding."""
    if task not in _GENERATORS:
        raise ValueError(f"unknown task {task!r}; choose one of {', '.join(TASKS)}")
    rows, kind = _GENERATORS[task](tokenizer, n, random.Random(f"{task}-{seed}"))
    enc = [(_enc(tokenizer, p), _enc(tokenizer, q), ids, w, p) for p, q, ids, w in rows]
    enc = [r for r in enc if len(r[0]) == len(r[1])]
    if not enc:
        raise ValueError(f"{task}: no positive/negative pair has matching token lengths")
    lengths = np.array([len(r[0]) for r in enc])
    keep_len = int(np.bincount(lengths).argmax())
    enc = [r for r in enc if len(r[0]) == keep_len]
    m = max(len(r[2]) for r in enc)
    if any(len(r[2]) != m for r in enc):
        # pad answer-id lists (docstring: 3 or 4 parameters) by repeating a wrong id
        enc = [(a, b, ids + [ids[-1]] * (m - len(ids)), w, t) for a, b, ids, w, t in enc]
    weights = None if kind == "logit_diff" else torch.tensor([r[3] for r in enc])
    return TaskData(
        name=task,
        pos=torch.tensor([r[0] for r in enc]),
        neg=torch.tensor([r[1] for r in enc]),
        ids=torch.tensor([r[2] for r in enc]),
        weights=weights,
        kind=kind,
        texts=[r[4] for r in enc],
        counts={"generated": n, "aligned": len(enc), "length": keep_len},
    )


@torch.no_grad()
def last_logits(model, tokens: torch.Tensor, batch_size: int = 64) -> torch.Tensor:
    """Final-position logits [n, vocab] in batches."""
    out = []
    for s in range(0, tokens.shape[0], batch_size):
        out.append(model(tokens[s : s + batch_size])[:, -1].float())
    return torch.cat(out)


def build_task(
    task: TaskName, model, n: int, seed: int = 0, oversample: float = 2.0, batch_size: int = 64
) -> TaskData:
    """Up to ``n`` positives the model gets right (metric > 0), with their negatives. Counts
    (generated, aligned, correct, kept) and the mean metric on positives and negatives go into
    ``counts``."""
    cand = generate(task, model.tokenizer, max(n, int(n * oversample)), seed)
    device = model.cfg.device
    pos_m = task_metric(cand, last_logits(model, cand.pos.to(device), batch_size).cpu())
    neg_m = task_metric(cand, last_logits(model, cand.neg.to(device), batch_size).cpu())
    right = torch.nonzero(pos_m > 0).ravel()
    data = cand.subset(right[:n])
    data.counts.update(
        correct=int(right.numel()),
        kept=len(data),
        pos_accuracy=float((pos_m > 0).float().mean()),
        neg_accuracy=float((neg_m > 0).float().mean()),
        pos_metric_mean=float(pos_m.mean()),
        neg_metric_mean=float(neg_m.mean()),
        kept_pos_metric_mean=float(pos_m[right[:n]].mean()) if len(data) else float("nan"),
        kept_neg_metric_mean=float(neg_m[right[:n]].mean()) if len(data) else float("nan"),
    )
    return data
