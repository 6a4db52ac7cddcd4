"""Circuit discovery from discrete SAE codes (O'Neill & Bui 2024, "Sparse Autoencoders Enable
Scalable and Reliable Circuit Identification in Language Models"; code: charlieoneill11/sae-circuits).

Pipeline, for P positive and N negative prompts of equal length and H = n_layers * n_heads heads:

1. **Head vectors** x[e, h] in R^d for every prompt e and head h (:func:`head_vectors`):
   ``"result"`` (default, the paper's): the head's own contribution to the residual stream,
   ``z[e, p, h] @ W_O[h]`` with no b_O (what TransformerLens's ``attn.hook_result`` holds),
   averaged over positions p (``position="mean"``, the paper's) or taken at the final position
   (``position="last"``); ``"z"``: the head's ``hook_z`` vector (d_head wide) instead.
2. **One SAE shared by all heads**, trained on the H head vectors of a few examples
   (:func:`train_code_sae`): a ReLU SAE with the paper's loss MSE(x_hat, x) + lambda * mean_n
   ||f_n||_1 (lambda 0.02; 0.05 for docstring), 200 latents, Adam lr 1e-3, 500 full-batch epochs.
   Two flavours (``CodeSAEConfig.flavour``): ``"paper"``, as close to the authors' code as it can
   be read (independent random init with a random encoder bias; the decoder weight [d, F] with
   unit-norm rows, one per input dimension, so a latent's decoder norm is about sqrt(d/F)), and
   ``"ours"`` (tied init, b_enc = 0, every latent's encoder and decoder vector at unit norm). It is
   a toolkit ``saes.sae.SAE`` (variant ``relu_l1`` by default; with flavour "ours" any registered
   variant can be passed and is then trained with its own ``train_forward`` loss) and is only ever
   used through ``sae.encode``.
3. **Discrete codes** c[e, h] = argmax_f encode(x[e, h])_f (:func:`discrete_codes`); ``top_k > 1``
   keeps the k largest latents as a code *set* per (prompt, head).
4. **Node score** (:func:`node_scores`): for head h, U_h = |C+_h \\ C-_h|, the number of distinct
   codes seen on positives and never on negatives; score = softmax over all heads of U.
5. **Edge score** (:func:`edge_scores`): for an ordered pair of heads (h1 != h2), a code pair
   (a, b) co-occurs on prompt e when c[e, h1] = a and c[e, h2] = b; E_{h1,h2} = the number of code
   pairs co-occurring on some positive and on no negative. Reduced to heads as the paper does:
   the pairs are sorted by E (descending; ties by ascending flat index), each pair contributes its two heads
   in turn to a list, the first K = H^2 // 2 entries of the list are counted per head, and the
   counts are softmaxed; flavour "paper" breaks ties by descending flat index, as the paper's
   ``np.argsort(...)[::-1]``. The paper's "edge ROC" is therefore a ranking of *heads*, not edges.
   Counts are kept sparse: only the observed (h1, h2, a, b) keys of each prompt set are stored
   (at most E * H * (H-1) per set) instead of the dense [H, H, F, F] float64 tensor (23 GB for
   SmolLM2's 270 heads and 200 latents).
6. **Evaluation** against a ground-truth head set (:func:`roc_auc`, :func:`best_balanced_f1`):
   ROC AUC (Mann-Whitney, ties counted half) and the best over thresholds of the paper's
   "balanced F1", the harmonic mean of TPR and 1 - FPR.
"""

from __future__ import annotations

import math
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Literal

import numpy as np
import torch
from pydantic import BaseModel, ConfigDict, Field, model_validator
from tqdm import tqdm

from interp.hooks import hook_name
from saes.config import SAEConfig
from saes.sae import SAE

__all__ = [
    "FLAVOURS",
    "CodeSAEConfig",
    "MethodResult",
    "best_balanced_f1",
    "discrete_codes",
    "edge_scores",
    "head_vectors",
    "node_scores",
    "roc_auc",
    "run_method",
    "train_code_sae",
]

Position = Literal["mean", "last"]
Site = Literal["result", "z"]


# ---------------------------------------------------------------------------------------------
# 1. head vectors
# ---------------------------------------------------------------------------------------------


@torch.no_grad()
def head_vectors(
    model,
    tokens: torch.Tensor,
    *,
    site: Site = "result",
    position: Position = "mean",
    batch_size: int = 32,
) -> torch.Tensor:
    """[E, n_layers * n_heads, d] per-head vectors (heads layer-major: index = layer * n_heads +
    head). ``site="result"``: z @ W_O[h] (no b_O), d = d_model; ``"z"``: hook_z, d = d_head.
    ``position``: "mean" over positions (the paper) or "last" (the final token)."""
    if site not in ("result", "z"):
        raise ValueError(f"site must be 'result' or 'z', got {site!r}")
    if position not in ("mean", "last"):
        raise ValueError(f"position must be 'mean' or 'last', got {position!r}")
    cfg = model.cfg
    names = [hook_name(layer, "attn.z") for layer in range(cfg.n_layers)]
    outs = []
    for start in range(0, tokens.shape[0], batch_size):
        chunk = tokens[start : start + batch_size]
        _, cache = model.run_with_cache(chunk, names_filter=lambda n: n in names)
        per_layer = []
        for layer, name in enumerate(names):
            z = cache[name].float()  # [b, p, H, d_head]
            z = z.mean(1) if position == "mean" else z[:, -1]
            if site == "result":
                # the mean over positions commutes with the linear map z -> z @ W_O[h]
                z = torch.einsum("bhd,hdm->bhm", z, model.blocks[layer].attn.W_O.float())
            per_layer.append(z)
        outs.append(torch.cat(per_layer, 1))
    return torch.cat(outs, 0)


# ---------------------------------------------------------------------------------------------
# 2. the shared SAE
# ---------------------------------------------------------------------------------------------


Flavour = Literal["ours", "paper"]
FLAVOURS = ("ours", "paper")


class CodeSAEConfig(BaseModel):
    """The SAE that turns head vectors into codes, and the edge reduction's tie-break (defaults:
    the paper's hyperparameters). Unknown keys are an error."""

    model_config = ConfigDict(extra="forbid", frozen=True, use_attribute_docstrings=True)

    d_sae: int = Field(200, ge=2)
    """Number of latents (the paper: 200)."""
    l1: float = Field(0.02, ge=0)
    """lambda of the loss MSE + lambda * mean_n ||f_n||_1 (the paper: 0.02; 0.05 for docstring)."""
    lr: float = Field(1e-3, gt=0)
    """Adam learning rate (the paper: 1e-3)."""
    epochs: int = Field(500, ge=0)
    """Full-batch training epochs (the paper: 500)."""
    variant: str = "relu_l1"
    """The toolkit SAE variant. relu_l1 trains with the paper's loss above; any other registered
    variant trains with its own ``train_forward`` loss (only with flavour "ours")."""
    k: int = Field(8, ge=1)
    """Latents kept per row, for variants with a k (ignored by relu_l1)."""
    normalize: bool = False
    """Scale the training rows to mean norm sqrt(d) (the toolkit's convention for SAE inputs; the
    scale is kept in the SAE, so codes of new rows are scaled the same), so that lambda means the
    same whatever the model's head-vector norms. False: the raw vectors, as the paper."""
    flavour: Flavour = "ours"
    """Whose choices the SAE and the edge reduction follow. "ours": encoder tied to the decoder at
    initialisation (W_enc = W_dec^T, b_enc = 0), every latent's encoder and decoder vector kept at
    unit norm (renormalised before each step and after training), edge pairs with equal counts
    taken in ascending flat index. "paper": as close to charlieoneill11/sae-circuits as its code
    can be read (``src/sae.py``, ``train.py``, ``edge.py``): encoder and decoder initialised
    independently (normal, then unit rows), encoder bias uniform in +-1/sqrt(d); encoder latents
    unit norm, but the decoder weight [d, F] normalised along its last dimension, so each *input
    dimension's* row has unit norm and a latent's decoder vector has norm about sqrt(d/F); weights
    renormalised at every forward and gradients projected off the normalised rows (their backward
    hook); edge pairs sorted by ``np.argsort(...)[::-1]``, so equal counts go in descending flat
    index. Only variant relu_l1."""

    @model_validator(mode="after")
    def _paper_is_relu_l1(self) -> CodeSAEConfig:
        if self.flavour == "paper" and self.variant != "relu_l1":
            raise ValueError(
                f"flavour 'paper' is the paper's ReLU SAE (variant relu_l1), got {self.variant!r}"
            )
        return self

    def with_(self, **changes) -> CodeSAEConfig:
        """A validated copy with ``changes``."""
        return CodeSAEConfig(**{**self.model_dump(), **changes})


def train_code_sae(x: torch.Tensor, cfg: CodeSAEConfig = CodeSAEConfig(), seed: int = 0) -> SAE:
    """Train one SAE on rows ``x`` [N, d] (all heads of the training prompts, flattened),
    full batch. relu_l1: the paper's loss MSE + l1 * mean ||f||_1, with the norm constraints and
    initialisation of ``cfg.flavour``; other variants: their own ``train_forward`` losses, summed."""
    if x.ndim != 2 or x.shape[0] == 0:
        raise ValueError(f"train_code_sae needs rows [N, d] with N > 0, got {tuple(x.shape)}")
    x = x.float()
    scale = None
    if cfg.normalize:
        scale = float(x.shape[1] ** 0.5 / x.norm(dim=1).mean().clamp_min(1e-12))
    sae_cfg = SAEConfig(
        d_in=x.shape[1],
        d_sae=cfg.d_sae,
        variant=cfg.variant,
        input_scale=scale,
        **({"k": min(cfg.k, cfg.d_sae - 1)} if cfg.variant != "relu_l1" else {}),
    )
    torch.manual_seed(seed)
    sae = SAE(sae_cfg, seed=seed)
    if cfg.flavour == "paper":
        return _train_paper(sae, x, cfg, seed)
    opt = torch.optim.Adam(sae.parameters(), lr=cfg.lr)
    paper_loss = cfg.variant == "relu_l1"
    for _ in range(cfg.epochs):
        opt.zero_grad(set_to_none=True)
        if paper_loss:
            _unit_norm_latents(sae)
            z = sae.encode(x)  # (in the scaled space when normalize)
            mse = torch.nn.functional.mse_loss(sae.decode_scaled(z), sae.scale_input(x))
            loss = mse + cfg.l1 * z.abs().sum(-1).mean()
        else:
            out = sae.variant.train_forward(sae, sae.scale_input(x), None, None)
            loss = sum(out.losses.values())
        loss.backward()
        opt.step()
        if sae.variant.unit_norm_decoder:
            sae.set_decoder_norm_to_unit_norm()
    if paper_loss:
        _unit_norm_latents(sae)
    return sae


@torch.no_grad()
def _unit_norm_latents(sae: SAE) -> None:
    """Our constraint: each latent's encoder vector (a column of W_enc) and decoder vector (a row
    of W_dec) has unit norm."""
    sae.W_enc.div_(sae.W_enc.norm(dim=0, keepdim=True).clamp_min(1e-12))
    sae.W_dec.div_(sae.W_dec.norm(dim=1, keepdim=True).clamp_min(1e-12))


@torch.no_grad()
def paper_init(sae: SAE, seed: int) -> None:
    """The paper's initialisation (``SparseAutoencoder.__init__``, ``ConstrainedUnitNormLinear.
    reset_parameters``): tied pre-encoder bias (our b_dec) 0; encoder weight [F, d] normal with
    unit rows (each latent's encoder vector), encoder bias uniform in +-1/sqrt(d); decoder weight
    [d, F] normal with unit rows (each input dimension), drawn independently of the encoder. Our
    W_enc [d, F] is their encoder weight transposed, our W_dec [F, d] their decoder weight
    transposed."""
    d, f = sae.cfg.d_in, sae.cfg.d_sae
    gen = torch.Generator().manual_seed(seed)
    enc = torch.randn(f, d, generator=gen)
    sae.W_enc.copy_((enc / enc.norm(dim=1, keepdim=True).clamp_min(1e-12)).t())
    bound = 1 / math.sqrt(d)
    sae.b_enc.copy_(torch.rand(f, generator=gen) * 2 * bound - bound)
    dec = torch.randn(d, f, generator=gen)
    sae.W_dec.copy_((dec / dec.norm(dim=1, keepdim=True).clamp_min(1e-12)).t())
    sae.b_dec.zero_()


@torch.no_grad()
def _paper_norms(sae: SAE) -> None:
    """The paper's constraint (``constrain_weights_unit_norm``, at every forward): encoder weight
    [F, d] rows (our W_enc's columns) and decoder weight [d, F] rows (our W_dec's columns, one per
    input dimension) unit norm."""
    sae.W_enc.div_(sae.W_enc.norm(dim=0, keepdim=True).clamp_min(1e-12))
    sae.W_dec.div_(sae.W_dec.norm(dim=0, keepdim=True).clamp_min(1e-12))


def _project_off_columns(weight: torch.Tensor):
    """The paper's backward hook in our layout: remove from each column of the gradient its
    component along the (normalised) column of ``weight``."""

    def hook(grad: torch.Tensor) -> torch.Tensor:
        w = weight.detach()
        dot = (grad * w).sum(0, keepdim=True)
        return grad - dot * w / w.norm(dim=0, keepdim=True).clamp_min(1e-12)

    return hook


def _train_paper(sae: SAE, x: torch.Tensor, cfg: CodeSAEConfig, seed: int) -> SAE:
    """The paper's training (``train.py``): Adam, full batch, loss MSE + l1 * mean ||f||_1, the
    weights renormalised at every forward and their gradients projected (``sae.py``)."""
    paper_init(sae, seed)
    hooks = [
        sae.W_enc.register_hook(_project_off_columns(sae.W_enc)),
        sae.W_dec.register_hook(_project_off_columns(sae.W_dec)),
    ]
    try:
        opt = torch.optim.Adam(sae.parameters(), lr=cfg.lr)
        for _ in range(cfg.epochs):
            opt.zero_grad(set_to_none=True)
            _paper_norms(sae)
            z = sae.encode(x)
            mse = torch.nn.functional.mse_loss(sae.decode_scaled(z), sae.scale_input(x))
            loss = mse + cfg.l1 * z.abs().sum(-1).mean()
            loss.backward()
            opt.step()
    finally:
        for h in hooks:
            h.remove()
    _paper_norms(sae)  # their evaluation forward renormalises before encoding
    return sae


# ---------------------------------------------------------------------------------------------
# 3. codes
# ---------------------------------------------------------------------------------------------


@torch.no_grad()
def discrete_codes(sae: SAE, x: torch.Tensor, top_k: int = 1) -> torch.Tensor:
    """[E, H, top_k] latent indices of the ``top_k`` largest activations of each head vector
    (top_k = 1: the argmax code). Ties go to the lowest index, as ``np.argmax`` does in the
    paper's code: a vector with no active latent gets code 0 (top-k: 0, 1, ..)."""
    e, h, d = x.shape
    return _top_codes(sae.encode(x.reshape(e * h, d).float()), top_k).reshape(e, h, top_k)


def _top_codes(f: torch.Tensor, top_k: int) -> torch.Tensor:
    """[R, top_k] indices of the ``top_k`` largest of each row of activations ``f`` [R, F]."""
    if not 1 <= top_k <= f.shape[-1]:
        raise ValueError(f"top_k must be in [1, {f.shape[-1]}], got {top_k}")
    return torch.sort(f, dim=-1, descending=True, stable=True).indices[:, :top_k]


# ---------------------------------------------------------------------------------------------
# 4-5. scores
# ---------------------------------------------------------------------------------------------


def _codes3(codes: torch.Tensor | np.ndarray) -> np.ndarray:
    c = np.asarray(codes)
    if c.ndim == 2:
        c = c[:, :, None]
    if c.ndim != 3:
        raise ValueError(f"codes must be [E, H] or [E, H, k], got shape {c.shape}")
    return c.astype(np.int64)


def softmax(x: np.ndarray) -> np.ndarray:
    e = np.exp(x - x.max())
    return e / e.sum()


def unique_positive_counts(pos_codes, neg_codes) -> np.ndarray:
    """[H] the number of distinct codes of each head seen on positives and never on negatives."""
    pos, neg = _codes3(pos_codes), _codes3(neg_codes)
    if pos.shape[1] != neg.shape[1]:
        raise ValueError(f"positives have {pos.shape[1]} heads, negatives {neg.shape[1]}")
    return np.array(
        [len(set(pos[:, h].ravel()) - set(neg[:, h].ravel())) for h in range(pos.shape[1])],
        dtype=np.float64,
    )


def node_scores(pos_codes, neg_codes) -> np.ndarray:
    """[H] softmax over heads of :func:`unique_positive_counts`."""
    return softmax(unique_positive_counts(pos_codes, neg_codes))


def _pair_keys(codes: np.ndarray, n_feat: int) -> np.ndarray:
    """Sorted unique int64 keys ((h1 * H + h2) * F + a) * F + b of the (head pair, code pair)
    co-occurrences of a prompt set, h1 != h2 (top-k code sets: every pair of their members)."""
    e, h, k = codes.shape
    h1, h2 = np.nonzero(~np.eye(h, dtype=bool))
    keys = []
    for i in range(k):
        for j in range(k):
            a = codes[:, h1, i]  # [E, P]
            b = codes[:, h2, j]
            pair = h1 * h + h2
            keys.append(((pair[None] * n_feat + a) * n_feat + b).ravel())
    return np.unique(np.concatenate(keys))


def unique_cooccurrence_counts(pos_codes, neg_codes, n_feat: int | None = None) -> np.ndarray:
    """[H, H] E_{h1,h2}: the number of code pairs (a, b) with (c[h1], c[h2]) = (a, b) on some
    positive and on no negative (diagonal 0)."""
    pos, neg = _codes3(pos_codes), _codes3(neg_codes)
    h = pos.shape[1]
    if n_feat is None:
        n_feat = int(max(pos.max(), neg.max())) + 1
    if h * h * n_feat * n_feat >= 2**62:
        raise ValueError(f"{h} heads x {n_feat} codes overflow the int64 pair keys")
    only_pos = np.setdiff1d(_pair_keys(pos, n_feat), _pair_keys(neg, n_feat), assume_unique=True)
    counts = np.bincount(only_pos // (n_feat * n_feat), minlength=h * h)
    return counts.reshape(h, h).astype(np.float64)


def edge_head_counts(
    unique_counts: np.ndarray, k: int | None = None, flavour: Flavour = "ours"
) -> np.ndarray:
    """[H] the paper's reduction of pair scores to heads: pairs sorted by score (descending), both
    heads of each pair appended to a list, the first ``k`` list entries (default H^2 // 2) counted
    per head. Equal scores: ``flavour="ours"`` takes the pairs in ascending flat index;
    ``"paper"`` in descending flat index, as the paper's ``np.argsort(flat)[::-1]`` does (a
    stable sort here: numpy's default sort keeps ties in index order on short arrays but leaves
    it unspecified on long ones)."""
    if flavour not in FLAVOURS:
        raise ValueError(f"flavour must be one of {FLAVOURS}, got {flavour!r}")
    h = unique_counts.shape[0]
    k = (h * h) // 2 if k is None else k
    flat = unique_counts.ravel()
    if flavour == "ours":
        order = np.lexsort((np.arange(flat.size), -flat))  # primary: -score; secondary: index
    else:
        order = np.argsort(flat, kind="stable")[::-1]
    heads = np.stack(np.unravel_index(order, unique_counts.shape), 1).ravel()[:k]
    return np.bincount(heads, minlength=h).astype(np.float64)


def edge_scores(
    pos_codes,
    neg_codes,
    n_feat: int | None = None,
    k: int | None = None,
    flavour: Flavour = "ours",
):
    """[H] softmax of :func:`edge_head_counts` of :func:`unique_cooccurrence_counts`."""
    counts = unique_cooccurrence_counts(pos_codes, neg_codes, n_feat)
    return softmax(edge_head_counts(counts, k, flavour))


# ---------------------------------------------------------------------------------------------
# 6. evaluation
# ---------------------------------------------------------------------------------------------


def _check_scores(scores, truth) -> tuple[np.ndarray, np.ndarray]:
    s = np.asarray(scores, dtype=np.float64).ravel()
    t = np.asarray(truth).ravel().astype(bool)
    if s.shape != t.shape:
        raise ValueError(f"{s.size} scores but {t.size} ground-truth labels")
    if t.all() or not t.any():
        raise ValueError("the ground truth needs at least one head in and one out of the circuit")
    return s, t


def _ranks(s: np.ndarray) -> np.ndarray:
    """Average ranks (1-based), ties sharing their mean rank."""
    order = np.argsort(s, kind="stable")
    ranks = np.empty(s.size)
    sorted_s = s[order]
    i = 0
    while i < s.size:
        j = i
        while j + 1 < s.size and sorted_s[j + 1] == sorted_s[i]:
            j += 1
        ranks[order[i : j + 1]] = (i + j) / 2 + 1
        i = j + 1
    return ranks


def roc_auc(scores, truth) -> float:
    """ROC AUC: P(score of a circuit head > score of another head), ties counted 1/2."""
    s, t = _check_scores(scores, truth)
    n_pos, n_neg = t.sum(), (~t).sum()
    r = _ranks(s)
    return float((r[t].sum() - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg))


def best_balanced_f1(scores, truth) -> tuple[float, float]:
    """(best F1, its threshold) over thresholds "score >= thr", F1 being the paper's balanced one
    2 TPR (1 - FPR) / (TPR + 1 - FPR)."""
    s, t = _check_scores(scores, truth)
    best, best_thr = 0.0, math.inf
    for thr in np.unique(s):
        pred = s >= thr
        tpr = (pred & t).sum() / t.sum()
        tnr = (~pred & ~t).sum() / (~t).sum()
        f1 = 0.0 if tpr + tnr == 0 else 2 * tpr * tnr / (tpr + tnr)
        if f1 > best:
            best, best_thr = float(f1), float(thr)
    return best, best_thr


# ---------------------------------------------------------------------------------------------
# the whole method
# ---------------------------------------------------------------------------------------------


@dataclass
class MethodResult:
    """Per-head scores (layer-major), the time each step took and the SAE's training rows."""

    node: np.ndarray
    edge: np.ndarray
    unique_counts: np.ndarray
    seconds: dict[str, float] = field(default_factory=dict)
    n_train: int = 0
    silent: float = 0.0  # share of all head vectors (positives and negatives) with no active latent

    def ranked(self, n_heads: int, which: str = "node") -> list[str]:
        scores = self.node if which == "node" else self.edge
        order = np.lexsort((np.arange(scores.size), -scores))
        return [f"L{i // n_heads}H{i % n_heads}" for i in order]


def run_method(
    pos_vectors: torch.Tensor,
    neg_vectors: torch.Tensor,
    *,
    n_train: int = 10,
    sae_cfg: CodeSAEConfig = CodeSAEConfig(),
    top_k: int = 1,
    seed: int = 0,
    progress: bool = False,
) -> MethodResult:
    """Node and edge scores from head vectors of positives [P, H, d] and negatives [N, H, d]:
    the SAE is trained on ``n_train`` prompts drawn at random (seeded) from both sets, as the
    paper does, and codes are read on every prompt."""
    if pos_vectors.shape[1:] != neg_vectors.shape[1:]:
        raise ValueError(
            f"positive vectors {tuple(pos_vectors.shape)} and negative vectors "
            f"{tuple(neg_vectors.shape)} differ in heads or width"
        )
    gen = torch.Generator().manual_seed(seed)
    both = torch.cat([pos_vectors, neg_vectors])
    n_train = min(n_train, both.shape[0])
    pick = torch.randperm(both.shape[0], generator=gen)[:n_train]
    t0 = time.perf_counter()
    bar = tqdm(total=1, desc="code SAE", disable=not progress, leave=False)
    sae = train_code_sae(both[pick].reshape(-1, both.shape[-1]), sae_cfg, seed=seed)
    bar.update()
    bar.close()
    t1 = time.perf_counter()
    with torch.no_grad():  # one encode per set: its codes and its silent rows
        acts = [sae.encode(v.reshape(-1, v.shape[-1]).float()) for v in (pos_vectors, neg_vectors)]
    pos, neg = (
        _top_codes(f, top_k).reshape(*v.shape[:2], top_k).numpy()
        for f, v in zip(acts, (pos_vectors, neg_vectors), strict=True)
    )
    silent = float(torch.cat(acts).eq(0).all(-1).float().mean())
    t2 = time.perf_counter()
    counts = unique_positive_counts(pos, neg)
    node = softmax(counts)
    t3 = time.perf_counter()
    edge = edge_scores(pos, neg, n_feat=sae_cfg.d_sae, flavour=sae_cfg.flavour)
    t4 = time.perf_counter()
    return MethodResult(
        node=node,
        edge=edge,
        unique_counts=counts,
        seconds={"sae": t1 - t0, "codes": t2 - t1, "node": t3 - t2, "edge": t4 - t3},
        n_train=n_train,
        silent=silent,
    )


def head_labels(n_layers: int, n_heads: int) -> list[str]:
    """ "L{layer}H{head}" for every head, layer-major."""
    return [f"L{layer}H{h}" for layer in range(n_layers) for h in range(n_heads)]


def heads_to_mask(heads: Sequence[str], n_layers: int, n_heads: int) -> np.ndarray:
    """A [n_layers * n_heads] bool mask from "L{l}H{h}" labels."""
    labels = head_labels(n_layers, n_heads)
    index = {lab: i for i, lab in enumerate(labels)}
    mask = np.zeros(len(labels), dtype=bool)
    for lab in heads:
        if lab not in index:
            raise ValueError(f"unknown head {lab!r} for {n_layers} layers x {n_heads} heads")
        mask[index[lab]] = True
    return mask
