"""Steering with SAE latents: add alpha * d_i at the SAE's hook and measure what it does.

For latent i with decoder direction d_i (in the model's raw activation space, normalised to unit
norm, so alpha is in the activation's own units), every position of every prompt except the BOS
gets x <- x + alpha * d_i. Two things are measured per alpha, averaged over predicted tokens:

- ``kl``: KL(clean || steered) of the next-token distributions (how much the output moved);
- ``target_logprob_change``: the change in log-probability of the ``n_targets`` tokens that the
  decoder direction itself predicts, i.e. the top tokens of its direct path to the logits
  (``d_i`` -> (W_O or W_out for attention/MLP hooks) -> W_U, centred over the vocabulary:
  ``interp.logit_lens.direct_logit_effect``).

Summaries per latent: least-squares slopes through the origin, effect per unit alpha and KL per
unit alpha, and ``effect_per_kl`` (how much of the output change goes where the latent says it
should: the "steering efficacy" compared across SAEs in bench/gsae_vs_topk.py).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import torch
from tqdm.auto import tqdm

from interp.activations import ActivationCapture
from interp.interventions import Intervention, add_direction, run_with_interventions
from interp.logit_lens import direct_logit_effect


@dataclass
class SteeringResult:
    """One latent steered at several strengths."""

    latent: int
    alphas: list[float]
    kl: list[float]
    target_logprob_change: list[float]
    target_tokens: list[int]
    target_strings: list[str] = field(default_factory=list)

    @staticmethod
    def _slope(xs: Sequence[float], ys: Sequence[float]) -> float:
        num = sum(x * y for x, y in zip(xs, ys))
        den = sum(x * x for x in xs)
        return num / den if den else float("nan")

    @property
    def effect_per_alpha(self) -> float:
        """Least-squares slope (through 0) of the target tokens' log-prob change against alpha."""
        return self._slope(self.alphas, self.target_logprob_change)

    @property
    def kl_per_alpha(self) -> float:
        return self._slope(self.alphas, self.kl)

    @property
    def effect_per_kl(self) -> float:
        """Mean over alphas of target log-prob change / KL: steering that lands on the latent's tokens."""
        ratios = [e / k for e, k in zip(self.target_logprob_change, self.kl) if k > 0]
        return sum(ratios) / len(ratios) if ratios else float("nan")

    def to_dict(self) -> dict[str, Any]:
        return {
            **asdict(self),
            "effect_per_alpha": self.effect_per_alpha,
            "kl_per_alpha": self.kl_per_alpha,
            "effect_per_kl": self.effect_per_kl,
        }


def decoder_direction(sae, latent: int) -> torch.Tensor:
    """Unit-norm decoder direction of ``latent`` in the raw activation space [d_in]."""
    if not 0 <= latent < sae.cfg.d_sae:
        raise ValueError(f"latent {latent} is out of range: the SAE has d_sae={sae.cfg.d_sae}")
    d = sae.W_dec[latent].detach().float()
    return d / d.norm().clamp_min(1e-12)


@torch.no_grad()
def steer_latents(
    model,
    sae,
    latents: Sequence[int],
    alphas: Sequence[float],
    tokens: torch.Tensor,
    hook: str | None = None,
    n_targets: int = 10,
    batch_rows: int = 16,
    progress: bool = False,
) -> list[SteeringResult]:
    """Steer each latent at each alpha over prompts ``tokens`` [n, t] (position 0 = BOS, left untouched)."""

    hook = hook or sae.cfg.hook_name
    if not hook:
        raise ValueError("the SAE records no hook_name: pass hook=")
    if hook not in model.hook_dict:
        raise ValueError(f"hook {hook!r} does not exist in the model")
    if tokens.ndim != 2 or tokens.shape[1] < 2:
        raise ValueError(f"tokens must be [n_prompts, seq >= 2], got {tuple(tokens.shape)}")
    if not alphas:
        raise ValueError("give at least one alpha")
    device = next(model.parameters()).device
    tokens = tokens.to(device)
    clean_lp = torch.cat(
        [model(chunk).log_softmax(-1)[:, 1:].float().cpu() for chunk in tokens.split(batch_rows)]
    )
    n = tokens.shape[0]
    results = []
    for latent in tqdm(list(latents), desc="steer", disable=not progress):
        direction = decoder_direction(sae, latent).to(device)
        logit_dir = direct_logit_effect(model, hook, direction)
        targets = logit_dir.topk(n_targets).indices
        # one batch row per (alpha, prompt); each row gets its own alpha
        rows_alpha = torch.tensor(alphas, dtype=torch.float32).repeat_interleave(n)
        rows_tokens = tokens.repeat(len(alphas), 1)
        kl_sum = torch.zeros(len(alphas))
        eff_sum = torch.zeros(len(alphas))
        for start in range(0, rows_tokens.shape[0], batch_rows):
            chunk = rows_tokens[start : start + batch_rows]
            a = rows_alpha[start : start + batch_rows].to(device)
            # each row gets its own alpha; the BOS position stays as it is
            steer = Intervention(hook, add_direction(direction, scale=a), keep_bos=True)
            lp = run_with_interventions(model, chunk, steer).log_softmax(-1)[:, 1:].float().cpu()
            ref = clean_lp[(torch.arange(start, start + chunk.shape[0]) % n)]
            kl = (ref.exp() * (ref - lp)).sum(-1).mean(-1)  # per row
            eff = (lp[..., targets.cpu()] - ref[..., targets.cpu()]).mean((-1, -2))
            which = torch.arange(start, start + chunk.shape[0]) // n
            kl_sum.index_add_(0, which, kl)
            eff_sum.index_add_(0, which, eff)
        tok = getattr(model, "tokenizer", None)
        results.append(
            SteeringResult(
                latent=int(latent),
                alphas=[float(x) for x in alphas],
                kl=(kl_sum / n).tolist(),
                target_logprob_change=(eff_sum / n).tolist(),
                target_tokens=targets.tolist(),
                target_strings=[tok.decode([t]) for t in targets.tolist()]
                if tok is not None
                else [],
            )
        )
    return results


@torch.no_grad()
def mean_activation_norm(model, hook: str, tokens: torch.Tensor) -> float:
    """Mean ||x|| at ``hook`` over the non-BOS positions of ``tokens`` (a natural unit for alpha)."""
    acts = ActivationCapture(model, [hook])(tokens).acts[hook]
    return acts.norm(dim=-1).mean().item()


def summarize(results: Sequence[SteeringResult]) -> dict[str, float]:
    """Means over latents of the per-latent summaries."""
    out = {}
    for key in ("effect_per_alpha", "kl_per_alpha", "effect_per_kl"):
        vals = [getattr(r, key) for r in results if not math.isnan(getattr(r, key))]
        out[key] = sum(vals) / len(vals) if vals else float("nan")
    out["n_latents"] = len(results)
    return out
