"""Evaluation of any SAE on held-out activations, and with the SAE spliced into the model.

Reconstruction metrics (streamed over batches, exact):
    fvu = sum_n ||x_n - x_hat_n||^2 / sum_n ||x_n - mean(x)||^2   (mean over tokens, per dimension)
    explained_variance = 1 - fvu
plus L0 (mean and histogram), dead / dense fractions, feature densities, cosine(x_hat, x) and
||x_hat|| / ||x||.

Spliced metrics: next-token cross-entropy clean, with the hook's activation replaced by the SAE
reconstruction (spliced), and replaced by zeros (zero-ablated), at every position except the
window's BOS; ce_loss_recovered = (ce_zero - ce_spliced) / (ce_zero - ce_clean); KL(clean || spliced)
averaged per predicted token.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F

from interp.activations import ActivationCapture, capture_stream
from interp.data import token_windows
from interp.interventions import Intervention, replace_with, run_with_interventions, zero_ablate
from interp.io import atomic_write_json
from interp.models import load_model
from saes.artifacts import load_sae
from saes.rundir import RunDir
from saes.train_config import RunConfig

DENSE_THRESHOLD = 0.1  # a latent firing on more than 10% of tokens counts as dense
# a latent firing on fewer than this fraction of the mean density (l0_mean / d_sae) is under-used
# (dead ones included); 0.1 is about where a Zipf(1) usage curve over a few thousand latents ends
UNDERUSED_RATIO = 0.1


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

    def update(self, x: torch.Tensor, x_hat: torch.Tensor, z: torch.Tensor) -> None:
        x, x_hat = x.double(), x_hat.double()
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


@torch.no_grad()
def spliced_metrics(
    sae, model, hook: str, windows: torch.Tensor, batch_size: int = 8, use_grads: bool = False
) -> dict[str, float]:
    """CE clean / spliced / zero-ablated, CE loss recovered and KL with the SAE at ``hook``.

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
        lp_clean = clean.log_softmax(-1)[:, :-1]
        g = None if grad is None else grad.reshape(-1, grad.shape[-1])
        ops = {
            "spliced": replace_with(lambda x, g=g: sae(x, g)[0]),
            "zero": zero_ablate(),
        }
        target = tokens[:, 1:]
        totals["clean"] += -lp_clean.gather(-1, target[..., None]).sum().item()
        for mode in ("spliced", "zero"):
            # every position but the window's BOS, which is kept as it is
            logits = run_with_interventions(
                model, tokens, Intervention(hook, ops[mode], keep_bos=True)
            )
            lp = logits.log_softmax(-1)[:, :-1]
            totals[mode] += -lp.gather(-1, target[..., None]).sum().item()
            if mode == "spliced":
                totals["kl"] += (lp_clean.exp() * (lp_clean - lp)).sum().item()
        n_pred += target.numel()
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


def evaluate_sae(
    sae,
    model,
    hook: str,
    source: str = "stdlib",
    context_size: int = 128,
    eval_tokens: int = 32_768,
    ce_windows: int = 32,
    batch_windows: int = 16,
    seed: int = 0,
    progress: bool = False,
) -> dict[str, Any]:
    """All metrics of ``sae`` on the validation split of ``source`` (held-out files)."""
    wins = token_windows(
        model.tokenizer, source=source, context_size=context_size, split="validation", seed=seed
    )
    windows = torch.stack(
        [w for _, w in zip(range(max(ce_windows, -(-eval_tokens // (context_size - 1)))), wins)]
    )
    needs_grads = getattr(sae.variant, "needs_grads", False)
    capture = ActivationCapture(model, [hook], with_grads=needs_grads)
    batches = list(capture_stream(capture, windows.split(batch_windows), max_tokens=eval_tokens))

    def one_mode(use_grads: bool) -> dict[str, Any]:
        grads = (b.grads[hook] for b in batches) if use_grads else None
        out = reconstruction_metrics(sae, (b.acts[hook] for b in batches), grads)
        out.update(spliced_metrics(sae, model, hook, windows[:ce_windows], use_grads=use_grads))
        return out

    # gradient-aware SAEs are evaluated in both inference modes: with dL/dx (the paper's, top level)
    # and without (plain TopK on the same weights, under "without_grads")
    metrics = one_mode(needs_grads)
    metrics["inference_mode"] = "with_grads" if needs_grads else "plain"
    if needs_grads:
        metrics["without_grads"] = one_mode(False)
    metrics.update(
        {
            "hook": hook,
            "eval_source": source,
            "eval_split": "validation",
            "context_size": context_size,
        }
    )
    return metrics


def evaluate_run(
    run_dir: str | Path, cfg=None, model=None, progress: bool = False
) -> dict[str, Any]:
    """Evaluate the SAE in a run folder and write ``metrics.json`` there."""
    run_dir = Path(run_dir)
    folder = RunDir(run_dir)
    if cfg is None:
        cfg = RunConfig.from_saved(folder.config(required=True))
    if model is None:
        model = load_model(cfg.data.model, device=cfg.device)
    sae = load_sae(run_dir, device=cfg.device)
    metrics = evaluate_sae(
        sae,
        model,
        cfg.data.hook,
        source=cfg.data.source,
        context_size=cfg.data.context_size,
        eval_tokens=cfg.eval.tokens,
        ce_windows=cfg.eval.ce_windows,
        batch_windows=cfg.data.batch_windows,
        seed=cfg.data.seed,
        progress=progress,
    )
    last = folder.last_log_record()
    if last is not None:
        metrics["train_tokens_per_s"] = last.get("tokens_per_s")
        metrics["train_tokens"] = last.get("tokens")
    atomic_write_json(folder.metrics_path, metrics)
    return metrics
