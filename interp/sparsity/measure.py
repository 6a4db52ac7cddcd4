"""Activation sparsity of a TransformerLens model's MLPs, measured as "The Lazy Neuron Phenomenon"
(Li et al., 2022) and "Sparsing Law" (Luo, Song et al., 2024) do.

The hidden activation h of layer L is ``blocks.L.mlp.hook_post`` (act(pre) for a plain MLP;
act(gate) * up (+ b_in) for a gated one, where TransformerLens calls the gate ``hook_pre`` (x @
W_gate) and the up projection ``hook_pre_linear`` (x @ W_in)); the MLP output is
y = h @ W_out + b_out with ``W_out`` [d_mlp, d_model] (``blocks.L.mlp.W_out``). See
:mod:`interp.sparsity.cett` for CETT and the threshold search.

* :func:`lazy_metrics`: per layer, the fraction of exactly nonzero activations, the fraction with
  |h| > eps, the neurons active on fewer than ``dead_fraction`` (0.1%) of tokens, and the top-k
  baselines: the CETT of keeping only the k largest |h_i| ||W_out[i]|| per token.
* :func:`ppl_sparsity` (PPL-p%): for a CETT c, every layer's threshold is found by binary search
  on calibration activations; then c itself is found by binary search so that perplexity with the
  thresholds applied (neurons with n_i <= eps zeroed through an :func:`interp.interventions.apply`
  intervention at ``mlp.hook_post``) is ``(1 + p)`` times the dense perplexity, to within
  ``ppl_rtol``. Finally one pass over all tokens measures the activation ratio (the fraction of
  neurons kept, per layer and averaged over tokens and layers), the perplexities and the dead
  neurons under the thresholds. With held-out windows (``heldout_tokens``, the windows after the
  searched ones, so disjoint tokens), the same thresholds are measured again there: the searched
  increase is p by construction, the held-out one is what the thresholds do on new text.

Perplexity is exp of the mean next-token cross-entropy over every predicted position of the windows.
The standard error of a perplexity increase is that of log(PPL_sparse / PPL_dense) = the mean over
predicted tokens of (sparse - dense) cross-entropy, clustered by document: the windows are cut from
one packed stream, so the tokens of one document (which may fill many windows) are not independent
and a per-window standard error understates the spread between token sets (on a trained 1-layer
byte model, blocks of 16 windows differ 3-10x more than independent windows would). Documents are
told apart by the EOS token the packing puts between them (:func:`document_ids`); the cluster-robust
variance is G / (G - 1) * sum_j (D_j - mean * n_j)^2 / N^2 over the G documents, D_j and n_j
document j's summed difference and token count, N all tokens (with equal clusters: the sample
variance, ddof=1, of their means over G).
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Iterable
from typing import Any

import torch
from pydantic import BaseModel, ConfigDict, Field
from tqdm.auto import tqdm

from interp.data import token_windows
from interp.hooks import hook_name
from interp.interventions import Intervention, apply, intervened
from interp.sparsity.cett import Calibration, keep_mask, neuron_norms, threshold_for_cett, topk_cett

__all__ = [
    "MeasureConfig",
    "capture_hidden",
    "document_ids",
    "increase_stats",
    "lazy_metrics",
    "mlp_hook",
    "mlp_layers",
    "perplexity",
    "ppl_sparsity",
    "search_and_heldout",
    "threshold_interventions",
    "token_losses",
    "window_losses",
    "windows_for",
]


class MeasureConfig(BaseModel):
    """What to measure and on which tokens."""

    model_config = ConfigDict(extra="forbid")

    source: str = "stdlib"
    """Text source (``interp.data`` spec): "stdlib", a local path, or "hf:NAME"."""
    split: str = "validation"
    """Split of the source to read."""
    context_size: int = Field(256, ge=2)
    """Tokens per window (BOS included)."""
    n_tokens: int = Field(100_000, ge=2)
    """Tokens to measure on (rounded down to whole windows, at least one)."""
    batch_size: int = Field(8, ge=1)
    """Windows per forward."""
    calib_tokens: int = Field(2048, ge=1)
    """Tokens (the first windows) whose MLP activations calibrate the per-layer thresholds."""
    search_tokens: int | None = Field(None, ge=2)
    """Tokens (the first windows) on which the global CETT is searched; None: all n_tokens."""
    heldout_tokens: int = Field(0, ge=0)
    """Tokens of further windows, after the n_tokens ones (disjoint tokens), on which the
    thresholds found on n_tokens are measured again; 0: no held-out measurement."""
    ppl_increase: float = Field(0.01, gt=0)
    """p of PPL-p%: the relative perplexity increase the thresholds are tuned to (0.01 = 1%)."""
    ppl_rtol: float = Field(0.05, gt=0, lt=1)
    """The search stops when the increase is within ppl_rtol * p of p (0.05: 1% +- 0.05%)."""
    cett_start: float = Field(0.2, gt=0)
    """The first CETT the global search tries (doubled until perplexity rises by more than p)."""
    max_search_steps: int = Field(16, ge=1)
    """At most this many perplexity evaluations in the global CETT search."""
    cett_rtol: float = Field(1e-3, gt=0)
    """Per-layer threshold search: stop within this relative distance of the target CETT."""
    eps: float = Field(1e-6, ge=0)
    """Lazy-neuron metric: the fraction of activations with |h| > eps."""
    topk_fractions: list[float] = [0.01, 0.05, 0.1, 0.2, 0.5]
    """Top-k baselines: k as fractions of d_mlp."""
    dead_fraction: float = Field(1e-3, gt=0, lt=1)
    """A neuron is dead when active on fewer than this fraction of tokens (0.1%)."""
    seed: int = 0
    """Document-order seed of the token windows."""


# ---------------------------------------------------------------------------------------------
# the model's MLPs and tokens
# ---------------------------------------------------------------------------------------------


def mlp_hook(layer: int) -> str:
    """``blocks.L.mlp.hook_post``: the hidden activation h."""
    return hook_name(layer, "mlp.hook_post")


def mlp_layers(model) -> list[int]:
    """The layers with an MLP (all of them unless the model is attention-only)."""
    if getattr(model.cfg, "attn_only", False) or model.cfg.d_mlp is None:
        raise ValueError(f"{model.cfg.model_name} is attention-only: it has no MLP to measure")
    return list(range(model.cfg.n_layers))


def _w_out(model, layer: int) -> tuple[torch.Tensor, torch.Tensor | None]:
    mlp = model.blocks[layer].mlp
    b = getattr(mlp, "b_out", None)
    return mlp.W_out.detach(), None if b is None else b.detach()


def windows_for(model, cfg: MeasureConfig, n_tokens: int | None = None) -> torch.Tensor:
    """[n_windows, context_size] token windows of cfg's source (n_tokens // context_size, >= 1)."""
    n = max(1, (n_tokens or cfg.n_tokens) // cfg.context_size)
    rows = list(
        token_windows(
            model.tokenizer,
            cfg.source,
            context_size=cfg.context_size,
            split=cfg.split,
            seed=cfg.seed,
            max_windows=n,
        )
    )
    return torch.stack(rows)


def search_and_heldout(model, cfg: MeasureConfig) -> tuple[torch.Tensor, torch.Tensor | None]:
    """cfg's n_tokens windows and, when cfg.heldout_tokens > 0, the heldout_tokens windows that
    follow them in the same stream (disjoint tokens; at most one document straddles the cut)."""
    n = max(1, cfg.n_tokens // cfg.context_size)
    if not cfg.heldout_tokens:
        return windows_for(model, cfg), None
    m = cfg.heldout_tokens // cfg.context_size
    if m < 2:
        raise ValueError(
            f"heldout_tokens = {cfg.heldout_tokens} is under 2 windows of {cfg.context_size} "
            "tokens: too few to measure on (or to estimate a standard error)"
        )
    rows = windows_for(model, cfg, (n + m) * cfg.context_size)
    if rows.shape[0] < n + m:
        raise ValueError(
            f"source {cfg.source!r} ({cfg.split}) has {rows.shape[0]} windows of "
            f"{cfg.context_size} tokens: fewer than the {n} searched + {m} held-out ones asked for"
        )
    return rows[:n], rows[n:]


def _batches(tokens: torch.Tensor, batch_size: int) -> list[torch.Tensor]:
    return list(tokens.split(batch_size))


def _device(model) -> torch.device:
    return next(model.parameters()).device


# ---------------------------------------------------------------------------------------------
# passes
# ---------------------------------------------------------------------------------------------


def _run(
    model, batches: Iterable[torch.Tensor], ivs: list[Intervention], desc: str, progress: bool
) -> torch.Tensor:
    """Forward every batch with the interventions; returns the next-token CE of every predicted
    position ([n_windows, context_size - 1] float64)."""
    out = []
    dev = _device(model)
    with torch.inference_mode(), intervened(model, ivs):
        for b in tqdm(list(batches), desc=desc, disable=not progress, leave=False):
            loss = model(b.to(dev), return_type="loss", loss_per_token=True)
            out.append(loss.double().cpu())
    return torch.cat(out)


def token_losses(
    model,
    tokens: torch.Tensor,
    interventions: list[Intervention] | None = None,
    batch_size: int = 8,
    progress: bool = False,
) -> torch.Tensor:
    """The next-token cross-entropy of every predicted position ([n_windows, context_size - 1]
    float64), with the interventions attached."""
    return _run(model, _batches(tokens, batch_size), interventions or [], "ppl", progress)


def window_losses(
    model,
    tokens: torch.Tensor,
    interventions: list[Intervention] | None = None,
    batch_size: int = 8,
    progress: bool = False,
) -> torch.Tensor:
    """Each window's mean next-token cross-entropy ([n_windows] float64), with the interventions
    attached; perplexity is exp of their mean (every window has the same length)."""
    return token_losses(model, tokens, interventions, batch_size, progress).mean(dim=1)


def perplexity(
    model,
    tokens: torch.Tensor,
    interventions: list[Intervention] | None = None,
    batch_size: int = 8,
    progress: bool = False,
) -> float:
    """exp(mean next-token cross-entropy) over the windows, with the interventions attached."""
    return math.exp(float(window_losses(model, tokens, interventions, batch_size, progress).mean()))


def document_ids(model, tokens: torch.Tensor) -> torch.Tensor:
    """The document of every predicted token of consecutive packed windows ([n_windows,
    context_size - 1]; the target of position t is token t + 1): the number of EOS tokens before it
    in the stream of window bodies (column 0 is the prepended BOS, left out; an EOS belongs to the
    document it ends). Without an EOS token in the tokenizer: each window is its own cluster."""
    tok = getattr(model, "tokenizer", None)
    eos = getattr(tok, "eos_token_id", None) if tok is not None else None
    body = tokens[:, 1:]
    if eos is None:
        return torch.arange(tokens.shape[0]).unsqueeze(1).expand_as(body).clone()
    is_eos = (body.reshape(-1) == eos).long()
    return (torch.cumsum(is_eos, 0) - is_eos).reshape(body.shape)


def increase_stats(
    dense: torch.Tensor, sparse: torch.Tensor, groups: torch.Tensor | None = None
) -> dict[str, float]:
    """From cross-entropies on the same positions (per token [n_windows, T] or per window
    [n_windows]): the perplexities, the increase PPL_sparse / PPL_dense - 1, and the
    cluster-robust standard error of log(PPL_sparse / PPL_dense) over ``groups`` (cluster ids of
    the same shape; None: the windows); nan with one cluster. See the module doc."""
    if dense.shape != sparse.shape:
        raise ValueError(
            f"dense and sparse losses differ in shape: {dense.shape} vs {sparse.shape}"
        )
    if groups is None:
        rows = torch.arange(dense.shape[0]).reshape(-1, *[1] * (dense.ndim - 1))
        groups = rows.expand_as(dense)
    elif groups.shape != dense.shape:
        raise ValueError(f"groups {tuple(groups.shape)} do not match the losses {dense.shape}")
    diff = (sparse - dense).double().reshape(-1)
    _, g = torch.unique(groups.reshape(-1), return_inverse=True)
    n_g = int(g.max()) + 1
    d_sum = torch.zeros(n_g, dtype=torch.float64).index_add_(0, g, diff)
    n_sum = torch.zeros(n_g, dtype=torch.float64).index_add_(0, g, torch.ones_like(diff))
    n = diff.numel()
    mean = float(diff.sum()) / n
    se = math.nan
    if n_g > 1:
        se = math.sqrt(n_g / (n_g - 1) * float(((d_sum - mean * n_sum) ** 2).sum()) / n**2)
    ppl_d, ppl_s = math.exp(float(dense.double().mean())), math.exp(float(sparse.double().mean()))
    return {
        "ppl_dense": ppl_d,
        "ppl_sparse": ppl_s,
        "ppl_increase": ppl_s / ppl_d - 1,
        "log_increase_se": se,
        "se_clusters": n_g,
    }


def _recorder(fn: Callable[[torch.Tensor], None]) -> Callable[[torch.Tensor], torch.Tensor]:
    def op(h: torch.Tensor) -> torch.Tensor:
        fn(h)
        return h

    return op


def capture_hidden(
    model,
    tokens: torch.Tensor,
    layers: list[int],
    batch_size: int = 8,
    interventions: list[Intervention] | None = None,
) -> dict[int, torch.Tensor]:
    """The hidden activations h of ``layers`` on the windows, [n_tokens, d_mlp] float32 each (read
    through an identity :func:`apply` intervention, after any ``interventions`` at the same
    hook)."""
    got: dict[int, list[torch.Tensor]] = {L: [] for L in layers}
    ivs = [
        Intervention(
            mlp_hook(L),
            apply(_recorder(lambda h, L=L: got[L].append(h.reshape(-1, h.shape[-1]).float()))),
        )
        for L in layers
    ]
    _run(model, _batches(tokens, batch_size), [*(interventions or []), *ivs], "capture", False)
    return {L: torch.cat(v) for L, v in got.items()}


def lazy_metrics(
    model, tokens: torch.Tensor, cfg: MeasureConfig, progress: bool = False
) -> dict[str, Any]:
    """Per layer: fraction nonzero, fraction |h| > eps, dead neurons (active, |h| > eps, on fewer
    than dead_fraction of tokens), and top-k baseline CETTs on the calibration tokens."""
    layers = mlp_layers(model)
    d_mlp = model.cfg.d_mlp
    nonzero = torch.zeros(len(layers), dtype=torch.float64)
    above = torch.zeros(len(layers), dtype=torch.float64)
    active = torch.zeros(len(layers), d_mlp, dtype=torch.float64)
    n_tok = [0]

    def stats(i: int) -> Callable[[torch.Tensor], None]:
        def fn(h: torch.Tensor) -> None:
            rows = h.reshape(-1, h.shape[-1])
            nonzero[i] += float((rows != 0).sum())
            a = rows.abs() > cfg.eps
            above[i] += float(a.sum())
            active[i] += a.sum(0).double().cpu()
            if i == 0:
                n_tok[0] += rows.shape[0]

        return fn

    ivs = [Intervention(mlp_hook(L), apply(_recorder(stats(i)))) for i, L in enumerate(layers)]
    _run(model, _batches(tokens, cfg.batch_size), ivs, "lazy metrics", progress)
    n = n_tok[0]
    calib = capture_hidden(
        model, tokens[: max(1, cfg.calib_tokens // cfg.context_size)], layers, cfg.batch_size
    )
    out = []
    for i, L in enumerate(layers):
        w, b = _w_out(model, L)
        ks = sorted({max(1, round(f * d_mlp)) for f in cfg.topk_fractions})
        out.append(
            {
                "layer": L,
                "frac_nonzero": float(nonzero[i]) / (n * d_mlp),
                "frac_above_eps": float(above[i]) / (n * d_mlp),
                "dead": int((active[i] < cfg.dead_fraction * n).sum()),
                "topk": [
                    {"k": k, "frac": k / d_mlp, "cett": topk_cett(calib[L], w, b, k)} for k in ks
                ],
            }
        )
    return {
        "tokens": n,
        "d_mlp": d_mlp,
        "eps": cfg.eps,
        "dead_fraction": cfg.dead_fraction,
        "layers": out,
    }


# ---------------------------------------------------------------------------------------------
# PPL-p%
# ---------------------------------------------------------------------------------------------


def threshold_interventions(
    model,
    thresholds: dict[int, float] | list[float],
    counter: dict[int, torch.Tensor] | None = None,
) -> list[Intervention]:
    """Zero every neuron with |h_i| ||W_out[i]|| <= eps_L at ``blocks.L.mlp.hook_post``; with
    ``counter`` (layer -> [d_mlp + 1] float64), add the per-neuron kept counts and, last, the
    number of tokens."""
    items = thresholds.items() if isinstance(thresholds, dict) else enumerate(thresholds)
    ivs = []
    for L, eps in items:
        norms = neuron_norms(_w_out(model, int(L))[0])

        def fn(h: torch.Tensor, norms=norms, eps=float(eps), L=int(L)) -> torch.Tensor:
            keep = keep_mask(h, norms, eps)
            if counter is not None:
                k = keep.reshape(-1, keep.shape[-1])
                counter[L][:-1] += k.sum(0).double().cpu()
                counter[L][-1] += k.shape[0]
            return h * keep

        ivs.append(Intervention(mlp_hook(int(L)), apply(fn)))
    return ivs


class _Thresholds:
    """Per-layer thresholds for a CETT target, bracketed by the answers for nearby targets."""

    def __init__(self, model, calib: dict[int, torch.Tensor], rtol: float) -> None:
        self.rtol = rtol
        self.calib = {L: Calibration.of(h, *_w_out(model, L)) for L, h in calib.items()}
        self.known: dict[float, list[float]] = {}

    def __call__(self, c: float) -> list[float]:
        if c in self.known:
            return self.known[c]
        out = []
        for i, h in enumerate(self.calib.values()):
            lo = max([v[i] for k, v in self.known.items() if k <= c], default=0.0)
            hi = min([v[i] for k, v in self.known.items() if k >= c], default=math.inf)
            eps, _ = threshold_for_cett(h, None, None, c, self.rtol, bracket=(lo, hi))
            out.append(eps)
        self.known[c] = out
        return out


def _per_layer(model, layers, eps, counter, dead_fraction) -> list[dict[str, Any]]:
    out = []
    for i, L in enumerate(layers):
        kept, n = counter[L][:-1], float(counter[L][-1])
        out.append(
            {
                "layer": L,
                "threshold": eps[i],
                "activation_ratio": float(kept.sum()) / (n * model.cfg.d_mlp),
                "dead": int((kept < dead_fraction * n).sum()),
            }
        )
    return out


def _secant(c1: float, f1: float, c2: float, f2: float, p: float) -> float:
    """The root of the line through (c1, f1), (c2, f2), f = increase - p: in log(increase) vs
    log c when both c and both increases are positive (the increase grows roughly as a power of
    c), else in f vs c."""
    i1, i2 = f1 + p, f2 + p
    if min(c1, c2, i1, i2) > 0 and i1 != i2 and c1 != c2:
        t = (math.log(p) - math.log(i1)) / (math.log(i2) - math.log(i1))
        return math.exp(math.log(c1) + t * (math.log(c2) - math.log(c1)))
    if f1 == f2:
        return math.nan
    return (c1 * f2 - c2 * f1) / (f2 - f1)


def _next_cett(
    lo: float, f_lo: float, hi: float, f_hi: float, p: float, history: list[tuple[float, float]]
) -> float:
    """The next CETT inside the bracket (lo, hi), f(lo) < 0 < f(hi), f = increase - p:
    the secant between the bracket's ends (from lo = 0, where log(increase) is undefined, assume a
    quadratic rise, increase ~ c^2); when the last two steps landed on the same side, the secant
    through those two points instead (the far end is stale); after three on one side, or when the
    step lands within 1e-3 of the bracket's width of an end, bisection (geometric when lo > 0), so
    the bracket always shrinks. ``history``: the evaluated (c, f) after the bracket was found."""
    side = [f < 0 for _, f in history[-3:]]
    if len(side) == 3 and len(set(side)) == 1:
        c = math.sqrt(lo * hi) if lo > 0 else 0.5 * (lo + hi)
    elif len(side) >= 2 and side[-1] == side[-2]:
        c = _secant(*history[-2], *history[-1], p)
    elif lo == 0 and f_hi + p > 0:
        c = hi * math.sqrt(p / (f_hi + p))
    else:
        c = _secant(lo, f_lo, hi, f_hi, p)
    margin = 1e-3 * (hi - lo)
    if not lo + margin < c < hi - margin:  # also catches nan
        c = math.sqrt(lo * hi) if lo > 0 else 0.5 * (lo + hi)
    return c


def ppl_sparsity(
    model,
    cfg: MeasureConfig,
    tokens: torch.Tensor | None = None,
    progress: bool = True,
    heldout: torch.Tensor | None = None,
) -> dict[str, Any]:
    """PPL-p% sparsity of the model on cfg's tokens (or the given windows); see the module doc.
    ``heldout``: windows (disjoint from ``tokens``) on which the thresholds are measured again,
    reported under "heldout"; with ``tokens`` None both come from cfg (:func:`search_and_heldout`).

    The global search brackets the root of f(c) = PPL(c) / PPL(0) - 1 - p between the known point
    f(0) = -p (threshold 0 drops only exact zeros) and ``cett_start`` doubled until f > 0, then
    narrows the bracket by safeguarded secant steps (:func:`_next_cett`); it stops when
    |f| <= ppl_rtol * p. Every evaluated CETT is in "trace" with its perplexity increase and its
    activation ratio on the search tokens."""
    t0 = time.perf_counter()
    layers = mlp_layers(model)
    if tokens is None:
        tokens, heldout = search_and_heldout(model, cfg)
    n_win, ctx = tokens.shape
    calib_win = min(n_win, max(1, cfg.calib_tokens // ctx))
    search_win = (
        n_win if cfg.search_tokens is None else min(n_win, max(1, cfg.search_tokens // ctx))
    )
    calib = capture_hidden(model, tokens[:calib_win], layers, cfg.batch_size)
    thresholds = _Thresholds(model, calib, cfg.cett_rtol)
    del calib
    search = tokens[:search_win]
    base_w = token_losses(model, search, batch_size=cfg.batch_size, progress=progress)
    base = math.exp(float(base_w.mean()))
    trace: list[dict[str, float]] = []
    counters: dict[float, dict[int, torch.Tensor]] = {}
    losses: dict[float, torch.Tensor] = {}

    def f(c: float) -> float:
        eps = thresholds(c)
        counters[c] = _counter(model, layers)
        ivs = threshold_interventions(model, eps, counters[c])
        losses[c] = token_losses(model, search, ivs, cfg.batch_size, progress)
        p = math.exp(float(losses[c].mean()))
        ratio = _mean_ratio(model, layers, counters[c])
        trace.append({"cett": c, "ppl": p, "increase": p / base - 1, "activation_ratio": ratio})
        bar.update(1)
        return p / base - 1 - cfg.ppl_increase

    tol = cfg.ppl_rtol * cfg.ppl_increase
    bar = tqdm(total=cfg.max_search_steps, desc="PPL-p% search", disable=not progress)
    lo, f_lo = 0.0, -cfg.ppl_increase
    hi, f_hi = cfg.cett_start, None
    best = None
    while len(trace) < cfg.max_search_steps:  # bracket: double hi until the increase exceeds p
        f_hi = f(hi)
        if abs(f_hi) <= tol:
            best = hi
        if f_hi >= 0:
            break
        lo, f_lo, hi = hi, f_hi, hi * 2
        if hi > 64:
            raise RuntimeError(
                f"perplexity rose only {f_lo + cfg.ppl_increase:.3%} at CETT {lo}: "
                f"no threshold raises it by {cfg.ppl_increase:.2%}"
            )
    history: list[tuple[float, float]] = []
    while best is None and f_hi is not None and f_hi > 0 and len(trace) < cfg.max_search_steps:
        c = _next_cett(lo, f_lo, hi, f_hi, cfg.ppl_increase, history)
        fc = f(c)
        history.append((c, fc))
        if abs(fc) <= tol:
            best = c
        elif fc < 0:
            lo, f_lo = c, fc
        else:
            hi, f_hi = c, fc
    bar.close()
    converged = best is not None
    if best is None:  # out of steps: the closest evaluated point not above p + tol
        ok = [t for t in trace if t["increase"] <= cfg.ppl_increase + tol] or trace
        best = min(ok, key=lambda t: abs(t["increase"] - cfg.ppl_increase))["cett"]
    eps = thresholds(best)
    search_s = time.perf_counter() - t0
    at_best = next(t for t in trace if t["cett"] == best)
    if search_win == n_win:  # the search saw every token: its last pass is the measurement
        docs = document_ids(model, search)
        stats, counter = increase_stats(base_w, losses[best], docs), counters[best]
    else:
        stats, counter = _measure(model, layers, tokens, eps, cfg, progress)
    per_layer = _per_layer(model, layers, eps, counter, cfg.dead_fraction)
    out = {
        "config": cfg.model_dump(),
        "model": getattr(model.cfg, "model_name", "?"),
        "dtype": str(model.cfg.dtype).removeprefix("torch."),
        "d_mlp": model.cfg.d_mlp,
        "n_layers": len(layers),
        "tokens": int(tokens.numel()),
        "search_tokens": int(search.numel()),
        "calib_tokens": int(tokens[:calib_win].numel()),
        "cett": best,
        "converged": converged,
        "search_ppl_dense": base,
        "search_ppl_sparse": at_best["ppl"],
        **stats,
        "activation_ratio": sum(r["activation_ratio"] for r in per_layer) / len(per_layer),
        "thresholds": eps,
        "layers": per_layer,
        "trace": trace,
        "search_s": search_s,
    }
    if heldout is not None:
        h_stats, h_counter = _measure(model, layers, heldout, eps, cfg, progress)
        h_layers = _per_layer(model, layers, eps, h_counter, cfg.dead_fraction)
        out["heldout"] = {
            "tokens": int(heldout.numel()),
            **h_stats,
            "activation_ratio": sum(r["activation_ratio"] for r in h_layers) / len(h_layers),
            "layers": h_layers,
        }
    out["wall_s"] = time.perf_counter() - t0
    return out


def _counter(model, layers: list[int]) -> dict[int, torch.Tensor]:
    return {L: torch.zeros(model.cfg.d_mlp + 1, dtype=torch.float64) for L in layers}


def _mean_ratio(model, layers: list[int], counter: dict[int, torch.Tensor]) -> float:
    """The kept fraction averaged over tokens and layers from a threshold counter."""
    d = model.cfg.d_mlp
    return sum(float(counter[L][:-1].sum()) / (float(counter[L][-1]) * d) for L in layers) / len(
        layers
    )


def _measure(model, layers, tokens, eps, cfg: MeasureConfig, progress: bool):
    """Dense and thresholded losses on ``tokens``: (increase_stats clustered by document, kept
    counter)."""
    counter = _counter(model, layers)
    dense = token_losses(model, tokens, batch_size=cfg.batch_size, progress=progress)
    ivs = threshold_interventions(model, eps, counter)
    sparse = token_losses(model, tokens, ivs, cfg.batch_size, progress)
    return increase_stats(dense, sparse, document_ids(model, tokens)), counter
