"""The evaluation formulas: streamed reconstruction statistics, and the SAE spliced into the model
in two conventions, ours and SAELens's (the one published SAEs are compared by).

Reconstruction metrics (streamed over batches, exact):
    fvu = sum_n ||x_n - x_hat_n||^2 / sum_n ||x_n - mean(x)||^2   (mean over tokens, per dimension)
    explained_variance = 1 - fvu
plus L0 (mean and histogram), dead / dense fractions, feature densities, cosine(x_hat, x) and
||x_hat|| / ||x||, and ``massive_norm_tokens``: the count of tokens with ||x|| > 10x the median
norm (of the first batch) and the FVU without them. At SmolLM2's layer 15 the first token after
BOS has norms of 2,000-18,000 against a median of 175; a few such tokens carry much of the total
variance, so two FVUs compare on the same footing only with their counts (or with fvu_without).

Spliced metrics, ours (:func:`spliced_metrics`): next-token cross-entropy clean, with the hook's
activation replaced by the SAE reconstruction (spliced), and replaced by zeros (zero-ablated), at
every position except the window's BOS (kept as it is in both); every prediction counts, the one
made at BOS included; ce_loss_recovered = (ce_zero - ce_spliced) / (ce_zero - ce_clean);
KL(clean || spliced) averaged per predicted token.

SAELens's convention (:func:`saelens_metrics`, ``sae_lens.evals.get_downstream_reconstruction_metrics``
and ``get_sparsity_and_variance_metrics`` with ``ignore_tokens`` = the tokenizer's special tokens,
as ``run_evals`` sets them): a position is *kept* when its token is not special (BOS, EOS, PAD,
SEP, decoder start; by token id, wherever it occurs). The SAE is spliced at kept positions only,
but the zero ablation zeroes *every* position, BOS included. CE counts the predictions made at kept
positions (not the one made at BOS); KL(clean || patched) counts every kept position, the last one
included; each is a mean over all counted tokens of all batches. ce_loss_score = (with_ablation -
with_sae) / (with_ablation - without_sae), kl_div_score = (kl_with_ablation - kl_with_sae) /
kl_with_ablation. The sparsity and variance half is on the kept positions' activations: l0, l1,
the L2 norms in and out and their ratio (the input norm under 1e-4 counted as 1), explained
variance (1 - E||x - x_hat||^2 / (E||x||^2 - ||E x||^2)), mse (E||x - x_hat||^2), cossim.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
import torch.nn.functional as F

from interp.activations import ActivationCapture
from interp.interventions import Intervention, replace_with, run_with_interventions, zero_ablate

# a token whose norm exceeds this multiple of the median is reported apart (massive_norm_tokens)
MASSIVE_NORM_RATIO = 10.0
DENSE_THRESHOLD = 0.1  # a latent firing on more than 10% of tokens counts as dense
# a latent firing on fewer than this fraction of the mean density (l0_mean / d_sae) is under-used
# (dead ones included); 0.1 is about where a Zipf(1) usage curve over a few thousand latents ends
UNDERUSED_RATIO = 0.1
# the tokenizer attributes SAELens's get_special_token_ids reads (sae_lens.util)
SPECIAL_TOKEN_ATTRS = (
    "bos_token_id",
    "eos_token_id",
    "pad_token_id",
    "sep_token_id",
    "decoder_start_token_id",
)
# the keys of our spliced metrics (what a model-free evaluation skips)
SPLICED_KEYS = ("ce_clean", "ce_spliced", "ce_zero_ablated", "ce_loss_recovered", "kl_div")


@dataclass
class ReconstructionStats:
    """Streaming sums for exact FVU and friends over many batches."""

    d_sae: int
    n: int = 0
    sq_err: float = 0.0
    sum_x: torch.Tensor | None = None
    sum_sq_x: float = 0.0
    cos_sum: float = 0.0
    norm_ratio_sum: float = 0.0
    l0_counts: list[int] = field(default_factory=list)
    fires: torch.Tensor | None = None

    # tokens with ||x|| above MASSIVE_NORM_RATIO x the median norm of the first batch (the first
    # token after BOS in SmolLM2's middle layers: norms 10-100x the median) and the FVU without them
    norm_limit: float | None = None
    massive: int = 0
    massive_max_norm: float = 0.0
    typical: list[float] = field(default_factory=lambda: [0.0, 0.0, 0.0])  # n, sq_err, sum_sq
    typical_sum_x: torch.Tensor | None = None

    def _update_typical(self, x: torch.Tensor, x_hat: torch.Tensor) -> None:
        norms = x.norm(dim=-1)
        if self.norm_limit is None:
            self.norm_limit = MASSIVE_NORM_RATIO * norms.median().item()
        big = norms > self.norm_limit
        self.massive += int(big.sum())
        self.massive_max_norm = max(self.massive_max_norm, norms.max().item())
        keep = ~big
        xk = x[keep]
        self.typical[0] += xk.shape[0]
        self.typical[1] += (xk - x_hat[keep]).pow(2).sum().item()
        self.typical[2] += xk.pow(2).sum().item()
        sx = xk.sum(0)
        self.typical_sum_x = sx if self.typical_sum_x is None else self.typical_sum_x + sx

    def _massive_metrics(self) -> dict[str, Any]:
        n, sq_err, sum_sq = self.typical
        var = sum_sq - self.typical_sum_x.pow(2).sum().item() / max(n, 1)
        return {
            "ratio_to_median_norm": MASSIVE_NORM_RATIO,
            "norm_limit": self.norm_limit,
            "count": self.massive,
            "max_norm": self.massive_max_norm,
            "fvu_without": sq_err / max(var, 1e-30),
        }

    def update(self, x: torch.Tensor, x_hat: torch.Tensor, z: torch.Tensor) -> None:
        x, x_hat = x.double(), x_hat.double()
        self._update_typical(x, x_hat)
        self.n += x.shape[0]
        self.sq_err += (x - x_hat).pow(2).sum().item()
        self.sum_x = x.sum(0) if self.sum_x is None else self.sum_x + x.sum(0)
        self.sum_sq_x += x.pow(2).sum().item()
        self.cos_sum += F.cosine_similarity(x, x_hat, dim=-1).sum().item()
        self.norm_ratio_sum += (x_hat.norm(dim=-1) / x.norm(dim=-1).clamp_min(1e-12)).sum().item()
        active = z != 0
        self.l0_counts.extend(active.sum(-1).tolist())
        f = active.sum(0).double()
        self.fires = f if self.fires is None else self.fires + f

    def metrics(self) -> dict[str, Any]:
        assert self.sum_x is not None and self.fires is not None, "no batches seen"
        total_var = self.sum_sq_x - (self.sum_x.pow(2).sum().item() / self.n)
        fvu = self.sq_err / max(total_var, 1e-30)
        density = self.fires / self.n
        l0 = torch.tensor(self.l0_counts, dtype=torch.float64)
        hist_edges = torch.linspace(-10, 0, 41)
        log_density = torch.log10(density.clamp_min(1e-10))
        hist = torch.histogram(log_density.float(), bins=hist_edges.float())
        return {
            "n_tokens": self.n,
            "fvu": fvu,
            "explained_variance": 1.0 - fvu,
            "mse": self.sq_err / (self.n * self.sum_x.numel()),
            "l0_mean": l0.mean().item(),
            "l0_std": l0.std().item() if len(l0) > 1 else 0.0,
            "l0_quantiles": {str(q): torch.quantile(l0, q).item() for q in (0.1, 0.5, 0.9, 0.99)},
            "dead_fraction": (density == 0).double().mean().item(),
            "dense_fraction": (density > DENSE_THRESHOLD).double().mean().item(),
            "dense_threshold": DENSE_THRESHOLD,
            "underused_fraction": (density < UNDERUSED_RATIO * density.mean())
            .double()
            .mean()
            .item(),
            "underused_ratio": UNDERUSED_RATIO,
            "feature_density_log10_hist": {
                "edges": hist.bin_edges.tolist(),
                "counts": hist.hist.tolist(),
                "dead": int((density == 0).sum()),
            },
            "cosine_mean": self.cos_sum / self.n,
            "norm_ratio_mean": self.norm_ratio_sum / self.n,
            "massive_norm_tokens": self._massive_metrics(),
        }


def fvu(x: torch.Tensor, x_hat: torch.Tensor) -> float:
    """FVU of one batch: sum ||x - x_hat||^2 / sum ||x - mean_over_tokens(x)||^2."""
    x, x_hat = x.double(), x_hat.double()
    return ((x - x_hat).pow(2).sum() / (x - x.mean(0)).pow(2).sum()).item()


@torch.no_grad()
def reconstruction_metrics(
    sae, batches: Iterable[torch.Tensor], grads: Iterable[torch.Tensor] | None = None
) -> dict[str, Any]:
    """Exact streamed reconstruction metrics of ``sae`` over activation batches [N, d_in]."""
    stats = ReconstructionStats(sae.cfg.d_sae)
    grad_iter = iter(grads) if grads is not None else None
    for x in batches:
        g = next(grad_iter) if grad_iter is not None else None
        x = x.to(sae.device, sae.W_enc.dtype)
        x_hat, z = sae(x, g)
        stats.update(x, x_hat, z)
    return stats.metrics()


def _ce(logits: torch.Tensor, tokens: torch.Tensor) -> torch.Tensor:
    """Next-token cross-entropy per prediction [batch, pos - 1] (prediction t is of token t+1)."""
    lp = logits.float().log_softmax(-1)[:, :-1]  # float32: a bf16 model's sums would round
    return -lp.gather(-1, tokens[:, 1:, None])[..., 0]


@torch.no_grad()
def spliced_metrics(
    sae, model, hook: str, windows: torch.Tensor, batch_size: int = 8, use_grads: bool = False
) -> dict[str, float]:
    """CE clean / spliced / zero-ablated, CE loss recovered and KL with the SAE at ``hook``, in our
    convention (BOS kept in both runs; every prediction counted).

    With ``use_grads`` (gradient-aware SAEs) the clean pass's dL/dx is handed to the SAE's encoder.
    """
    totals = {"clean": 0.0, "spliced": 0.0, "zero": 0.0, "kl": 0.0}
    n_pred = 0
    for start in range(0, windows.shape[0], batch_size):
        tokens = windows[start : start + batch_size].to(sae.device)
        grad = None
        if use_grads:
            cap = ActivationCapture(model, [hook], with_grads=True, drop_bos=False)
            grad = cap(tokens).grads[hook].reshape(tokens.shape[0], tokens.shape[1], -1)
        clean = model(tokens)
        lp_clean = clean.float().log_softmax(-1)[:, :-1]
        g = None if grad is None else grad.reshape(-1, grad.shape[-1])
        ops = {
            "spliced": replace_with(lambda x, g=g: sae(x, g)[0]),
            "zero": zero_ablate(),
        }
        totals["clean"] += _ce(clean, tokens).sum().item()
        for mode in ("spliced", "zero"):
            # every position but the window's BOS, which is kept as it is
            logits = run_with_interventions(
                model, tokens, Intervention(hook, ops[mode], keep_bos=True)
            )
            totals[mode] += _ce(logits, tokens).sum().item()
            if mode == "spliced":
                lp = logits.float().log_softmax(-1)[:, :-1]
                totals["kl"] += (lp_clean.exp() * (lp_clean - lp)).sum().item()
        n_pred += tokens[:, 1:].numel()
    if n_pred == 0:
        raise ValueError("spliced_metrics needs at least one window of two or more tokens")
    ce = {k: v / n_pred for k, v in totals.items()}
    denom = ce["zero"] - ce["clean"]
    return {
        "ce_clean": ce["clean"],
        "ce_spliced": ce["spliced"],
        "ce_zero_ablated": ce["zero"],
        "ce_loss_recovered": (ce["zero"] - ce["spliced"]) / denom
        if abs(denom) > 1e-12
        else float("nan"),
        "kl_div": ce["kl"],
        "n_predicted_tokens": n_pred,
    }


def special_token_ids(tokenizer) -> list[int]:
    """The structural special tokens SAELens's evaluator ignores (BOS, EOS, PAD, SEP, decoder
    start: the tokenizer attributes ``sae_lens.util.get_special_token_ids`` reads)."""
    ids = {getattr(tokenizer, a, None) for a in SPECIAL_TOKEN_ATTRS}
    return sorted(int(i) for i in ids if i is not None)


def _kl_per_position(lp_clean: torch.Tensor, logits: torch.Tensor) -> torch.Tensor:
    """KL(clean || new) at every position [batch, pos]."""
    lp = logits.float().log_softmax(-1)
    return (lp_clean.exp() * (lp_clean - lp)).sum(-1)


def _score(ablation: float, with_sae: float, clean: float) -> float:
    denom = ablation - clean
    return (ablation - with_sae) / denom if abs(denom) > 1e-12 else float("nan")


@torch.no_grad()
def saelens_metrics(
    sae,
    model,
    hook: str,
    windows: torch.Tensor,
    batch_size: int = 8,
    ignore_tokens: Sequence[int] | None = None,
) -> dict[str, Any]:
    """SAELens's evaluation of ``sae`` at ``hook`` on ``windows`` (see the module docstring), under
    SAELens's key names, computed with our intervention mechanism. ``ignore_tokens`` None: the
    tokenizer's special tokens (``run_evals``'s default); ``[]``: every position counts."""
    if ignore_tokens is None:
        tokenizer = getattr(model, "tokenizer", None)
        ignore_tokens = special_token_ids(tokenizer) if tokenizer is not None else []
    ignore = torch.tensor(list(ignore_tokens), dtype=torch.long)
    sums: dict[str, float] = {}
    n_pred = n_pos = 0
    sum_x: torch.Tensor | None = None

    def add(key: str, value: torch.Tensor) -> None:
        sums[key] = sums.get(key, 0.0) + value.double().sum().item()

    splice = replace_with(lambda x: sae(x)[0])
    for start in range(0, windows.shape[0], batch_size):
        tokens = windows[start : start + batch_size].to(sae.device)
        keep = ~torch.isin(tokens, ignore.to(tokens.device))  # [batch, pos]
        clean, cache = model.run_with_cache(tokens, names_filter=[hook])
        with_sae = run_with_interventions(model, tokens, Intervention(hook, splice, positions=keep))
        ablated = run_with_interventions(model, tokens, Intervention(hook, zero_ablate()))
        # CE: the predictions made at kept positions
        pred_keep = keep[:, :-1]
        add("ce_loss_without_sae", _ce(clean, tokens)[pred_keep])
        add("ce_loss_with_sae", _ce(with_sae, tokens)[pred_keep])
        add("ce_loss_with_ablation", _ce(ablated, tokens)[pred_keep])
        n_pred += int(pred_keep.sum())
        # KL: every kept position
        lp_clean = clean.float().log_softmax(-1)
        add("kl_div_with_sae", _kl_per_position(lp_clean, with_sae)[keep])
        add("kl_div_with_ablation", _kl_per_position(lp_clean, ablated)[keep])
        n_pos += int(keep.sum())
        # sparsity and variance: the kept positions' activations
        act = cache[hook]
        x = act.reshape(act.shape[0], act.shape[1], -1)[keep].to(sae.W_enc.dtype)
        x_hat, z = sae(x)
        x, x_hat = x.double(), x_hat.double()
        norm_in, norm_out = x.norm(dim=-1), x_hat.norm(dim=-1)
        add("l0", (z != 0).sum(-1))
        add("l1", z.abs().sum(-1))
        add("l2_norm_in", norm_in)
        add("l2_norm_out", norm_out)
        add("l2_ratio", norm_out / torch.where(norm_in.abs() < 1e-4, 1.0, norm_in))
        add("mse", (x - x_hat).pow(2).sum(-1))
        add("sum_sq_x", x.pow(2).sum(-1))
        add("cossim", (x / norm_in[:, None] * (x_hat / norm_out[:, None])).sum(-1))
        sum_x = x.sum(0) if sum_x is None else sum_x + x.sum(0)
    if n_pred == 0 or n_pos == 0 or sum_x is None:
        raise ValueError("saelens_metrics: no kept position (every token is an ignored token)")
    out: dict[str, Any] = {}
    for key in ("ce_loss_without_sae", "ce_loss_with_sae", "ce_loss_with_ablation"):
        out[key] = sums[key] / n_pred
    for key in ("kl_div_with_sae", "kl_div_with_ablation"):
        out[key] = sums[key] / n_pos
    out["ce_loss_score"] = _score(
        out["ce_loss_with_ablation"], out["ce_loss_with_sae"], out["ce_loss_without_sae"]
    )
    out["kl_div_score"] = _score(out["kl_div_with_ablation"], out["kl_div_with_sae"], 0.0)
    for key in ("l0", "l1", "l2_norm_in", "l2_norm_out", "l2_ratio", "mse", "cossim"):
        out[key] = sums[key] / n_pos
    total_var = sums["sum_sq_x"] / n_pos - (sum_x / n_pos).pow(2).sum().item()
    out["explained_variance"] = (
        1.0 - out["mse"] / total_var if total_var >= 1e-10 else float(out["mse"] < 1e-10)
    )
    out.update(
        {
            "n_predicted_tokens": n_pred,
            "n_tokens": n_pos,
            "n_windows": int(windows.shape[0]),
            "ignore_tokens": [int(t) for t in ignore.tolist()],
        }
    )
    return out
