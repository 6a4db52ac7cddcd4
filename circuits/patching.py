"""Ground truth by head-level activation patching, and the baselines, all through
``interp.interventions`` at ``blocks.L.attn.hook_z``.

For a task with positive (clean) prompts and aligned negative (corrupt) prompts and metric M (mean
over prompts of the task metric, read at the last position):

* **Single-head effect** of head h: run the positives with h's ``hook_z`` replaced at every
  position by its value on the negatives (``patch``), or by its mean over the positives at each
  position (``mean``, i.e. mean ablation), and normalise:
  ``effect_h = (M_clean - M_patched) / (M_clean - M_corrupt)`` (1 = the head alone carries the
  whole difference; negative = patching helps the task).
* **Circuit** (the ground truth): heads sorted by effect (descending); the smallest prefix of this
  order whose *joint* patch reaches ``effect >= share`` (default 0.8). The prefix length is found
  by exponential then binary search (about 2 log2 k joint forwards), which assumes the joint effect
  grows with the prefix; the joint effects at k and k - 1 are recorded. Patching every head at every
  position reproduces the corrupt final-position residual exactly when the last token is the same
  (it is, for our three tasks), so the full prefix always reaches 1.
* **Attribution patching** (Nanda 2023; first order): effect_h ~ -(z_corrupt - z_clean) .
  dM/dz_h / (M_clean - M_corrupt), summed over positions and d_head: one forward and one backward on
  the positives plus one forward on the negatives, for all heads at once.
* **Random**: scores drawn uniformly (seeded).
"""

from __future__ import annotations

import time
from typing import Literal

import numpy as np
import torch
from tqdm import tqdm

from circuits.tasks import TaskData, task_metric
from interp.hooks import hook_name
from interp.interventions import Intervention, apply, mean_ablate, patch, run_with_interventions

__all__ = [
    "attribution_scores",
    "find_circuit",
    "head_effects",
    "joint_effect",
    "random_scores",
]

Mode = Literal["patch", "mean"]


def _z_names(model) -> list[str]:
    return [hook_name(layer, "attn.z") for layer in range(model.cfg.n_layers)]


@torch.no_grad()
def _metric(model, data: TaskData, tokens, interventions=()) -> float:
    logits = run_with_interventions(model, tokens, list(interventions))
    return float(task_metric(data, logits[:, -1].cpu()).mean())


@torch.no_grad()
def corrupt_cache(model, data: TaskData) -> dict[str, torch.Tensor]:
    """hook_z of every layer on the negatives."""
    names = _z_names(model)
    _, cache = model.run_with_cache(data.neg.to(model.cfg.device), names_filter=names.__contains__)
    return {n: cache[n] for n in names}


def _ivs(model, heads: list[int], mode: Mode, cache) -> list[Intervention]:
    """One intervention per layer touched by ``heads`` (flat indices, layer-major)."""
    nh = model.cfg.n_heads
    by_layer: dict[int, list[int]] = {}
    for h in heads:
        by_layer.setdefault(h // nh, []).append(h % nh)
    out = []
    for layer, hs in sorted(by_layer.items()):
        name = hook_name(layer, "attn.z")
        op = patch(cache[name]) if mode == "patch" else mean_ablate(over="batch")
        out.append(Intervention(name, op, heads=hs))
    return out


def _last_logits(model, x: torch.Tensor) -> torch.Tensor:
    """Logits at the last position from the final block's residual [b, p, d]."""
    ln = getattr(model, "ln_final", None)
    x = x[:, -1:]
    return model.unembed(ln(x) if ln is not None else x)[:, 0]


def head_effects(
    model, data: TaskData, mode: Mode = "patch", progress: bool = True, batched: bool = True
) -> dict[str, object]:
    """Single-head normalised effects [n_layers * n_heads] and the clean/corrupt metrics.

    ``batched`` (default): for each layer L, one forward starts at L from the clean
    ``resid_pre`` (layers before L are unchanged by a patch at L) with the prompts repeated once
    per head of L, copy g patching head g; only last-position logits are computed. Same numbers
    as one full forward per head (``batched=False``), in far fewer, larger forwards."""
    t0 = time.perf_counter()
    device = model.cfg.device
    tokens = data.pos.to(device)
    clean = _metric(model, data, tokens)
    corrupt = _metric(model, data, data.neg.to(device))
    if abs(clean - corrupt) < 1e-6:
        raise ValueError(
            f"{data.name}: the clean metric ({clean:.4g}) equals the corrupt one ({corrupt:.4g});"
            " nothing to patch"
        )
    cache = corrupt_cache(model, data) if mode == "patch" else None
    nl, nh = model.cfg.n_layers, model.cfg.n_heads
    eff = np.zeros(nl * nh)
    if not batched:
        for h in tqdm(range(nl * nh), desc=f"patching {data.name}", disable=not progress):
            m = _metric(model, data, tokens, _ivs(model, [h], mode, cache))
            eff[h] = (clean - m) / (clean - corrupt)
    else:
        resid_names = [hook_name(layer, "resid_pre") for layer in range(nl)]
        with torch.no_grad():
            _, rc = model.run_with_cache(tokens, names_filter=resid_names.__contains__)
        n = tokens.shape[0]
        for layer in tqdm(range(nl), desc=f"patching {data.name}", disable=not progress):
            name = hook_name(layer, "attn.z")
            src = cache[name] if mode == "patch" else None

            def op(act, src=src):
                a = act.reshape(nh, n, *act.shape[1:]).clone()
                for g in range(nh):
                    a[g, :, :, g] = src[:, :, g] if src is not None else a[g, :, :, g].mean(0)
                return a.reshape(act.shape)

            x = rc[resid_names[layer]].repeat(nh, 1, 1)
            with torch.no_grad():
                out = run_with_interventions(
                    model, x, Intervention(name, apply(op)), start_at_layer=layer, stop_at_layer=nl
                )
                metric = task_metric(_repeat(data, nh), _last_logits(model, out).cpu())
            m = metric.reshape(nh, n).mean(1).numpy()
            eff[layer * nh : (layer + 1) * nh] = (clean - m) / (clean - corrupt)
    return {
        "effects": eff,
        "clean": clean,
        "corrupt": corrupt,
        "cache": cache,
        "seconds": time.perf_counter() - t0,
    }


def _repeat(data: TaskData, times: int) -> TaskData:
    """The task's metric inputs repeated ``times`` (for prompts repeated once per head)."""
    return data.subset(torch.arange(len(data)).repeat(times))


def joint_effect(
    model, data: TaskData, heads: list[int], clean: float, corrupt: float, mode: Mode, cache
) -> float:
    """Normalised effect of patching ``heads`` together."""
    if not heads:
        return 0.0
    m = _metric(model, data, data.pos.to(model.cfg.device), _ivs(model, heads, mode, cache))
    return (clean - m) / (clean - corrupt)


def find_circuit(
    model,
    data: TaskData,
    effects: np.ndarray,
    clean: float,
    corrupt: float,
    share: float = 0.8,
    mode: Mode = "patch",
    cache=None,
) -> dict[str, object]:
    """The smallest prefix of the heads sorted by effect whose joint patch reaches ``share``
    (exponential + binary search over the prefix length)."""
    if not 0 < share <= 1:
        raise ValueError(f"share must be in (0, 1], got {share}")
    order = [int(i) for i in np.lexsort((np.arange(effects.size), -effects))]
    seen: dict[int, float] = {}

    def eff(k: int) -> float:
        if k not in seen:
            seen[k] = joint_effect(model, data, order[:k], clean, corrupt, mode, cache)
        return seen[k]

    hi = 1
    while hi < len(order) and eff(hi) < share:
        hi = min(2 * hi, len(order))
    lo = hi // 2 if hi > 1 else 0  # eff(lo) < share (or lo = 0)
    while hi - lo > 1:
        mid = (lo + hi) // 2
        if eff(mid) >= share:
            hi = mid
        else:
            lo = mid
    k = hi
    return {
        "k": k,
        "heads": order[:k],
        "joint_effect": eff(k),
        "joint_effect_k_minus_1": eff(k - 1) if k > 1 else 0.0,
        "evaluated": {str(a): b for a, b in sorted(seen.items())},
    }


def attribution_scores(model, data: TaskData) -> dict[str, object]:
    """First-order estimate of every head's normalised patching effect (one forward + backward
    on the positives, one forward on the negatives)."""
    t0 = time.perf_counter()
    device = model.cfg.device
    names = _z_names(model)
    cache = corrupt_cache(model, data)
    with torch.no_grad():
        corrupt = float(task_metric(data, model(data.neg.to(device))[:, -1].cpu()).mean())
    saved: dict[str, torch.Tensor] = {}

    def keep(name):
        def fn(act):
            saved[name] = act
            return act

        return fn

    requires = [p.requires_grad for p in model.parameters()]
    for p in model.parameters():
        p.requires_grad_(False)
    try:
        with torch.enable_grad():
            ivs = [Intervention(n, apply(keep(n))) for n in names]
            # make hook_z a leaf of the graph even though no weight requires grad
            embed = Intervention("hook_embed", apply(lambda a: a.detach().requires_grad_(True)))
            logits = run_with_interventions(model, data.pos.to(device), [embed, *ivs])
            m = task_metric(data, logits[:, -1].float().cpu()).mean()
            grads = torch.autograd.grad(m, [saved[n] for n in names])
    finally:
        for p, r in zip(model.parameters(), requires, strict=True):
            p.requires_grad_(r)
    clean = float(m.detach())
    scores = []
    for n, g in zip(names, grads, strict=True):
        delta = (cache[n] - saved[n].detach()).float()  # [b, p, H, d]
        # the metric is a mean over prompts: dM/dz already carries the 1/n
        scores.append(-(delta * g.float()).sum((0, 1, 3)) / (clean - corrupt))
    return {
        "scores": torch.cat(scores).numpy().astype(np.float64),
        "clean": clean,
        "corrupt": corrupt,
        "seconds": time.perf_counter() - t0,
    }


def random_scores(n_heads_total: int, seed: int) -> np.ndarray:
    """Uniform random scores (the chance baseline)."""
    return np.random.default_rng(seed).random(n_heads_total)
