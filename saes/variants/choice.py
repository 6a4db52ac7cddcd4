"""Mutual choice and feature choice SAEs (Ayonrinde 2024): adaptive sparsity per token.

Selection is an allocation of a budget of k*B token-latent matches in a batch of B tokens:

* **mutual choice** keeps the k*B largest pre-activations of the whole [B, d_sae] matrix (no cap
  per token or per latent);
* **feature choice** lets each latent j keep its top m_j tokens, with sum_j m_j = k*B and
  m_j <= B; ``allocation="uniform"`` gives every latent k*B/d_sae (rounded, largest remainder),
  ``allocation="zipf"`` gives the latent of usage rank r the Zipf share p_r (exponent
  ``zipf_exponent``, see :mod:`saes.training.losses`), capped at B with the excess re-shared.

Kept values are ReLU(pre) (a kept non-positive entry is a zero and gets no gradient), so the
number of *nonzeros* is k*B (or m_j) whenever that many entries are positive.

Inference does not look at the rest of the batch: during training each step records the smallest
kept pre-activation (mutual choice: one global value; feature choice: one per latent, the
column's maximum when m_j = 0) and the module buffer ``threshold`` [d_sae] holds its exponential
moving average (decay ``threshold_decay``, and min(decay, (1 + t) / (10 + t)) at step t so that
early values fade fast; the first step sets it). ``encode`` is then the JumpReLU

    z = ReLU(pre) * (pre > threshold)

which SAELens's ``jumprelu`` architecture computes identically (artifacts are exported as such).
``encode_batch`` runs the training-time (batch-dependent) selection instead.

The first training step rescales the encoder to the least-squares scale of its batch (see
``_rescale_encoder``): selection is unchanged, but large-norm tokens are no longer overshot.

Dead and under-used latents are revived by ``aux_zipf_loss`` (weight ``aux_zipf_coef``; it
replaces AuxK for these variants, whose dead latents are its largest deficits), driven by the
usage EMA buffer ``usage``.

Efficient selection on CPU (measured in bench/choice_saes.py):

* mutual choice: :func:`batch_top_n`, an exact top-(k*B) in two stages: every token's top few
  (``row_candidates``, adapted to the heaviest token seen) by the parallel max-tree top-k, then a
  threshold from those candidates, a full scan of only the rows that might hold more, and
  :func:`flat_top_n` (an exact max-tree top-n on a 1-D tensor) over the candidates. The output is
  sorted by token, which is what the COO decode wants.
* feature choice: the encoder GEMM writes the transposed [d_sae, B] matrix directly, so each
  latent's column is a contiguous row for the max-tree top-k of :func:`saes.kernels.topk_select`.

Both feed the flat COO entries to ``sparse_select_encode`` / ``sparse_decode`` (``rows=``), so the
backward touches only the k*B kept entries, as for TopK.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import torch
from pydantic import BaseModel, ConfigDict, Field
from torch import Tensor

from saes.codes import SparseCode, TrainOutput
from saes.kernels import _workspace, pre_acts, sparse_decode, sparse_select_encode, topk_select
from saes.training.distributed import Comm, global_sum
from saes.training.losses import (
    aux_zipf_loss,
    capped_allocation,
    fvu_loss,
    underused_weights,
    usage_ranks,
    zipf_shares,
)
from saes.variants.base import Variant, register

__all__ = [
    "ChoiceSelection",
    "FeatureChoice",
    "MutualChoice",
    "batch_top_n",
    "flat_top_n",
    "ChoiceKnobs",
]


@dataclass
class ChoiceSelection:
    """Kept entries of one batch in flat COO form, sorted by token (row).

    ``rows``, ``cols`` int64 [N]; ``pre`` [N] their pre-activations (no autograd); ``batch_threshold``
    [d_sae] the smallest kept pre-activation per latent (what the EMA learns); ``dense`` the
    batch's pre-activation matrix ([B, d_sae], or [d_sae, B] when ``transposed``).
    """

    rows: Tensor
    cols: Tensor
    pre: Tensor
    batch_threshold: Tensor
    dense: Tensor
    transposed: bool


def flat_top_n(flat: Tensor, n: int, fanout: int = 4, max_levels: int = 4) -> Tensor:
    """Indices (ascending) of exactly the ``n`` largest entries of the 1-D tensor ``flat``.

    Max-tree: level l holds maxima of ``fanout**l`` consecutive entries. If T is the n-th largest
    of the maxima of a set of groups that holds every top-n entry, at least n entries are >= T, so
    every top-n entry lies in a group whose maximum is >= T: keep those groups, expand them to
    their children one level down, and repeat. Entries past the last full top-level group are
    always candidates. Ties at the n-th value are broken by lowest index. NaN is not supported.
    """
    N = flat.numel()
    if n >= N:
        return torch.arange(N, device=flat.device)
    if n <= 0:
        return torch.zeros(0, dtype=torch.long, device=flat.device)
    levels, size = 0, N
    while levels < max_levels and size // fanout >= 2 * n:
        size //= fanout
        levels += 1
    span = fanout**levels
    main = N // span * span
    tree = [flat[:main]]
    for _ in range(levels):
        tree.append(tree[-1].view(-1, fanout).amax(1))
    children = torch.arange(fanout, device=flat.device)
    cand = None  # None: every group of the current level
    for lvl in range(levels, 0, -1):
        vals = tree[lvl] if cand is None else tree[lvl].index_select(0, cand)
        if vals.numel() > n:
            t = torch.kthvalue(vals, vals.numel() - n + 1).values
            keep = (vals >= t).nonzero().squeeze(1)
            cand = keep if cand is None else cand.index_select(0, keep)
        elif cand is None:
            cand = torch.arange(vals.numel(), device=flat.device)
        cand = cand.unsqueeze(1).mul(fanout).add(children).view(-1)
    if cand is None:
        cand = torch.arange(main, device=flat.device)
    if main < N:
        cand = torch.cat([cand, torch.arange(main, N, device=flat.device)])
    vals = flat.index_select(0, cand)
    if vals.numel() > n:
        t = torch.kthvalue(vals, vals.numel() - n + 1).values
        above = vals > t
        n_above = int(above.sum())
        if n_above == n:
            cand = cand.index_select(0, above.nonzero().squeeze(1))
        else:  # ties at the n-th value: keep the lowest-index ones
            tie = vals == t
            keep = above | (tie & (tie.cumsum(0) <= n - n_above))
            cand = cand.index_select(0, keep.nonzero().squeeze(1))
    return cand


class ChoiceKnobs(BaseModel):
    """Keys of mutual and feature choice SAEs."""

    model_config = ConfigDict(extra="forbid", use_attribute_docstrings=True)

    allocation: Literal["uniform", "zipf"] = "zipf"
    """Feature choice's per-latent capacities: "uniform", or Zipf over usage ranks (exponent
    ``zipf_exponent``); also sets aux_zipf's usage target ("uniform": the uniform share)."""
    zipf_exponent: float = Field(1.0, ge=0)
    """Exponent a of the Zipf shares p_r = r^-a / sum_s s^-a (0: uniform)."""
    threshold_decay: float = Field(0.99, ge=0, lt=1)
    """EMA decay of the inference (JumpReLU) thresholds and of the usage shares."""
    aux_zipf_coef: float = Field(1 / 32, ge=0)
    """Weight of aux_zipf_loss, the dead and under-used latents' auxiliary loss; 0 turns it off."""


class _Choice(Variant):
    """Shared machinery: buffers, thresholds, JumpReLU inference, the training step."""

    Knobs = ChoiceKnobs
    #: module buffers that are training state: in checkpoints, not in exported artifacts
    training_buffers = ("usage", "ema_steps")
    # batch-level selection at training, JumpReLU with learned thresholds at inference
    saelens_architecture = "jumprelu"
    transposed = False

    def __init__(self, cfg) -> None:
        super().__init__(cfg)
        #: exponent of aux_zipf's usage target (``allocation="uniform"``: 0, the uniform share)
        self.target_exponent = 0.0 if cfg.allocation == "uniform" else cfg.zipf_exponent

    # ---- module state -------------------------------------------------------------------------
    def init_module(self, sae) -> None:
        """Register ``threshold`` [d_sae] (JumpReLU thresholds), ``usage`` [d_sae] (EMA usage share)
        and ``ema_steps`` [1] (how many batches the EMAs have seen) on the SAE."""
        F = self.cfg.d_sae
        sae.register_buffer("threshold", torch.zeros(F))
        sae.register_buffer("usage", torch.full((F,), 1.0 / F))
        sae.register_buffer("ema_steps", torch.zeros(1))

    # ---- selection ----------------------------------------------------------------------------
    def budget(self, batch: int) -> int:
        return self.cfg.k * batch

    def select(self, sae, x_c: Tensor) -> ChoiceSelection:
        """The kept entries of the centred batch ``x_c`` (each variant's own rule)."""
        raise NotImplementedError(
            f"{type(self).__name__} must define select(); use MutualChoice or FeatureChoice"
        )

    # ---- inference ----------------------------------------------------------------------------
    def encode(self, sae, x_in: Tensor, grad: Tensor | None = None) -> Tensor:
        """Batch-independent JumpReLU code: ReLU(pre) * (pre > threshold), dense [N, d_sae]."""
        pre = torch.addmm(sae.b_enc, x_in, sae.W_enc)
        return pre.relu_().mul_(pre > sae.threshold.to(pre.dtype))

    def encode_batch(self, sae, x: Tensor):
        """The training-time (batch-dependent) selection of raw inputs x [B, d_in]: a padded
        SparseCode [B, max L0] (no autograd)."""
        sae.check_input(x)
        with torch.no_grad():
            sel = self.select(sae, sae.scale_input(x) - sae.b_dec)
            return SparseCode.flat(sel.rows, sel.cols, sel.pre.relu(), x.shape[0]).padded()

    # ---- training -----------------------------------------------------------------------------
    def train_forward(
        self,
        sae,
        x: Tensor,
        grad: Tensor | None,
        dead_mask: Tensor | None,
        comm: Comm | None = None,
    ) -> TrainOutput:
        B = x.shape[0]
        if self.budget(B) > B * self.cfg.d_sae:
            raise ValueError(
                f"budget k*B = {self.budget(B)} exceeds the {B * self.cfg.d_sae} entries of the batch"
            )
        with torch.no_grad():
            sel = self.select(sae, x.detach() - sae.b_dec.detach())
            if float(sae.ema_steps) == 0 and self._rescale_encoder(sae, x, sel, comm):
                sel = self.select(sae, x.detach() - sae.b_dec.detach())
        values = sparse_select_encode(
            x,
            sae.W_enc,
            sae.b_enc,
            sel.cols,
            sel.rows,
            selected=sel.pre.to(sae.W_enc.dtype),
            b_dec=sae.b_dec,
        )
        x_hat = sparse_decode(values, sel.cols, sae.W_dec, sae.b_dec, rows=sel.rows, n_rows=B)
        losses = {"fvu": fvu_loss(x, x_hat, comm)}
        with torch.no_grad():
            weights = self._update_state(sae, sel, values.detach())
        if self.cfg.aux_zipf_coef > 0 and bool((weights > 0).any()):
            aux = aux_zipf_loss(
                x,
                x_hat,
                sel.dense,
                weights,
                self.cfg.k_aux,
                sae,
                pre_is_transposed=sel.transposed,
                comm=comm,
            )
            if aux is not None:
                losses["aux_zipf"] = self.cfg.aux_zipf_coef * aux
        return TrainOutput(x_hat, SparseCode.flat(sel.rows, sel.cols, values.detach(), B), losses)

    @staticmethod
    def _rescale_encoder(sae, x: Tensor, sel: ChoiceSelection, comm: Comm | None = None) -> bool:
        """First step only: scale W_enc (and b_enc) by the least-squares optimal c for this batch.

        Batch-level selection hands a large-norm token many latents; with the tied init each adds
        its projection of x, so those tokens are overshot several-fold (FVU > 1 for the first
        hundreds of steps). Scaling the encoder by c > 0 does not change which entries are kept
        (ReLU is positively homogeneous and the ranking is scale-free), so c = <x - b_dec, x0> /
        ||x0||^2, with x0 the bias-free reconstruction at c = 1, fixes the scale at no cost. Under
        data parallelism both sums run over the global batch, so every rank gets the same c.
        """
        x0 = sparse_decode(
            sel.pre.relu().to(sae.W_dec.dtype),
            sel.cols,
            sae.W_dec.detach(),
            None,
            rows=sel.rows,
            n_rows=x.shape[0],
        )
        num, den = global_sum([float((x - sae.b_dec).mul_(x0).sum()), float(x0.pow(2).sum())], comm)
        c = num / max(den, 1e-30)
        if not 0 < c < float("inf"):
            return False
        sae.W_enc.mul_(c)
        sae.b_enc.mul_(c)
        return True

    def _update_state(self, sae, sel: ChoiceSelection, values: Tensor) -> Tensor:
        """EMA updates of thresholds and usage (no autograd); returns aux_zipf's weights [d_sae]
        computed from the usage *before* this batch."""
        F = self.cfg.d_sae
        steps = float(sae.ema_steps)
        # warm-up: early on average over ~the last tenth of the steps so far, not the random init
        decay = min(self.cfg.threshold_decay, (1.0 + steps) / (10.0 + steps))
        weights = (
            underused_weights(sae.usage, self.target_exponent)
            if self.cfg.aux_zipf_coef > 0
            else torch.zeros_like(sae.usage)
        )
        counts = torch.bincount(sel.cols[values > 0], minlength=F).to(sae.usage.dtype)
        share = counts / counts.sum().clamp_min(1.0)
        t = sel.batch_threshold.to(sae.threshold.dtype)
        if steps == 0:
            sae.threshold.copy_(t)
            sae.usage.copy_(share)
        else:
            sae.threshold.lerp_(t, 1.0 - decay)
            sae.usage.lerp_(share, 1.0 - decay)
        sae.ema_steps += 1
        return weights


@register
class MutualChoice(_Choice):
    """Keep the k*B largest pre-activations of the batch (one global threshold)."""

    name = "mutual_choice"
    # the [B, d_sae] pre-activation workspace, the per-row candidates, aux_zipf's subset
    step_arrays = 3

    def describe(self) -> str:
        return "mutual choice (training); jumprelu thresholds (inference)"

    def __init__(self, cfg) -> None:
        super().__init__(cfg)
        self.row_candidates = min(cfg.d_sae, 4 * cfg.k)  # adapted to the L0 tail as training goes

    def select(self, sae, x_c: Tensor) -> ChoiceSelection:
        B, F = x_c.shape[0], self.cfg.d_sae
        out = _workspace("choice_pre", (B, F), sae.W_enc.dtype, x_c.device)
        pre = pre_acts(x_c, sae.W_enc.detach(), sae.b_enc.detach(), out=out)
        rows, cols, kept = batch_top_n(pre, self.budget(B), self.row_candidates)
        if rows.numel():  # next time: room for all but the heaviest 1% of tokens (exact either way)
            heavy = int(torch.quantile(torch.bincount(rows, minlength=B).float(), 0.99))
            self.row_candidates = min(F, max(2 * self.cfg.k, heavy + heavy // 4))
        t = kept.min() if kept.numel() else pre.new_tensor(float("inf"))
        return ChoiceSelection(rows, cols, kept, t.expand(F), pre, transposed=False)


def batch_top_n(pre: Tensor, n: int, per_row: int) -> tuple[Tensor, Tensor, Tensor]:
    """Exactly the ``n`` largest entries of ``pre`` [B, F] as (rows, cols, values), row-sorted.

    Stage 1: each row's top ``per_row`` (the max-tree :func:`saes.kernels.topk_select`, parallel
    over rows); T = the n-th largest of these candidates is <= the true n-th largest T*. A row
    whose smallest candidate is >= T may hold more entries >= T: those rows are scanned in full.
    Stage 2: the candidates now contain every entry >= T*; :func:`flat_top_n` picks the n largest.
    Falls back to :func:`flat_top_n` on the whole matrix when ``per_row`` cannot hold n entries.
    """
    B, F = pre.shape
    if per_row * B < n or per_row >= F:
        flat_idx = flat_top_n(pre.view(-1), n)
        rows = torch.div(flat_idx, F, rounding_mode="floor")
        return rows, flat_idx - rows * F, pre.view(-1).index_select(0, flat_idx)
    vals, idx = topk_select(pre, per_row)
    t = torch.kthvalue(vals.view(-1), vals.numel() - n + 1).values
    full = (vals.amin(1) >= t).nonzero().squeeze(1)  # rows that may have more entries >= t
    rows = torch.arange(B, device=pre.device).unsqueeze(1).expand(B, per_row)
    if full.numel():
        part = torch.ones(B, dtype=torch.bool, device=pre.device)
        part[full] = False
        r_f, c_f = (pre.index_select(0, full) >= t).nonzero(as_tuple=True)
        r_all = torch.cat([rows[part].reshape(-1), full[r_f]])
        c_all = torch.cat([idx[part].reshape(-1), c_f])
        v_all = torch.cat([vals[part].reshape(-1), pre[full[r_f], c_f]])
        order = torch.argsort(r_all, stable=True)
        r_all, c_all, v_all = r_all[order], c_all[order], v_all[order]
    else:
        r_all, c_all, v_all = rows.reshape(-1), idx.reshape(-1), vals.reshape(-1)
    keep = flat_top_n(v_all, n)
    return r_all.index_select(0, keep), c_all.index_select(0, keep), v_all.index_select(0, keep)


@register
class FeatureChoice(_Choice):
    """Each latent j keeps its top m_j tokens of the batch (sum_j m_j = k*B, m_j <= B)."""

    name = "feature_choice"
    transposed = True
    # the transposed [d_sae, B] pre-activations, a capacity group's sorted values and int64
    # indices, aux_zipf's subset
    step_arrays = 4

    def describe(self) -> str:
        return (
            f"feature choice, {self.cfg.allocation} capacities (training); "
            "jumprelu thresholds (inference)"
        )

    def capacities(self, sae, batch: int) -> Tensor:
        """m_j [d_sae] for a batch of ``batch`` tokens (uniform or Zipf over usage ranks)."""
        F = self.cfg.d_sae
        if self.cfg.allocation == "uniform":
            weights = torch.ones(F, dtype=torch.float64)
        else:
            shares = zipf_shares(F, self.cfg.zipf_exponent)
            weights = shares[usage_ranks(sae.usage.detach().cpu())]
        return capped_allocation(self.budget(batch), weights, batch).to(sae.W_enc.device)

    def select(self, sae, x_c: Tensor) -> ChoiceSelection:
        B, F = x_c.shape[0], self.cfg.d_sae
        out = _workspace("choice_pre_t", (F, B), sae.W_enc.dtype, x_c.device)
        W, b = sae.W_enc.detach(), sae.b_enc.detach()
        pre_t = (
            torch.addmm(b.unsqueeze(1), W.t(), x_c.t(), out=out)
            if out is not None
            else torch.addmm(b.unsqueeze(1), W.t(), x_c.t())
        )
        m = self.capacities(sae, B)
        feats, toks, vals, thresh = column_top_m(pre_t, m)
        key = toks * F + feats
        order = torch.sort(
            key.to(torch.int32) if B * F < 2**31 else key
        ).indices  # int32 sorts ~2x faster
        return ChoiceSelection(
            toks[order], feats[order], vals[order], thresh, pre_t, transposed=True
        )


def column_top_m(pre_t: Tensor, m: Tensor) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """Row j of ``pre_t`` [F, B] keeps its ``m[j]`` largest entries.

    Returns (latents, tokens, values, smallest kept value per latent [F]; the row maximum when
    m_j = 0). Latents are grouped by capacity (powers of two) so each group needs one top-k.
    """
    F, B = pre_t.shape
    device = pre_t.device
    bucket = torch.where(
        m > 0, torch.ceil(torch.log2(m.clamp_min(1).double())).long() + 1, torch.zeros_like(m)
    )
    thresh = torch.empty(F, dtype=pre_t.dtype, device=device)
    out_f, out_t, out_v = [], [], []
    for b in torch.unique(bucket).tolist():
        if b == 0:
            zero = (bucket == 0).nonzero().squeeze(1)
            thresh[zero] = pre_t.index_select(0, zero).amax(1)
            continue
        members = (bucket == b).nonzero().squeeze(1)
        whole = members.numel() == F
        sub = pre_t if whole else pre_t.index_select(0, members)
        mm = m[members]
        kmax = int(mm.max())
        if kmax >= B:
            vals, idx = torch.sort(sub, dim=1, descending=True)
        else:
            vals, idx = topk_select(sub, kmax)
            vals, order = torch.sort(vals, dim=1, descending=True)
            idx = idx.gather(1, order)
            if kmax < vals.shape[1]:
                vals, idx = vals[:, :kmax], idx[:, :kmax]
        keep = torch.arange(vals.shape[1], device=device).unsqueeze(0) < mm.unsqueeze(1)
        thresh[members] = vals.gather(1, (mm - 1).unsqueeze(1)).squeeze(1)
        r, c = keep.nonzero(as_tuple=True)
        out_f.append(members[r])
        out_t.append(idx[r, c])
        out_v.append(vals[r, c])
    if not out_f:
        empty = torch.zeros(0, dtype=torch.long, device=device)
        return empty, empty, pre_t.new_zeros(0), thresh
    return torch.cat(out_f), torch.cat(out_t), torch.cat(out_v), thresh
