"""Attention-output SAEs (SAEs on ``blocks.L.attn.hook_z``): heads, direct feature attribution,
logit effects.

An attention SAE reads the concatenated per-head outputs z = [z_0 | z_1 | ... | z_{H-1}]
(``d_in = n_heads * d_head``, head-major, the layout SAELens's ``reshape_activations="hook_z"``
uses). With grouped-query attention the H query heads share n_kv value heads: query head h reads
value head ``h // (H / n_kv)`` (TransformerLens repeats K/V with ``repeat_interleave``).

* :func:`load_head_layout`: an SAE's head layout (``interp.hooks.head_layout`` /
  ``interp.hooks.layout_for_spec``); :func:`encode_z` / :func:`reconstruct_z` on
  [..., n_heads, d_head] activations.
* :func:`head_attribution`: share of each feature's decoder norm in each head's block,
  ||W_dec[f, h]|| / sum_h ||W_dec[f, h]||, with per-head summaries; :func:`dfa_head_attribution`:
  the same from data (activation-weighted share of positive DFA per head).
* :func:`attention_inputs`: pattern, v and z of one layer for a batch of prompts.
* :func:`direct_feature_attribution`: DFA_f(t, s, h) = A_h[t, s] * (v_{kv(h)}[s] . W_enc[h block, f])
  (input scale folded in); exact: sum_{s,h} DFA + (b_enc - b_dec . W_enc) = pre-activation.
* :func:`direct_logit_effect`: W_dec[f] -> W_O -> (final norm gain) -> W_U, top/bottom tokens
  (through ``interp.logit_lens``).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch

from interp.hooks import HeadLayout, head_layout, hook_name, layout_for_spec
from interp.logit_lens import residual_direction, unembed_direction

# ---------------------------------------------------------------------------------------------
# head layout
# ---------------------------------------------------------------------------------------------


def load_head_layout(sae, model=None) -> HeadLayout:
    """The layout of an attention SAE: from the model if given, else from the SAE's model spec."""
    hook = sae.cfg.hook_name
    layout = (
        head_layout(model, hook) if model is not None else layout_for_spec(sae.cfg.model_name, hook)
    )
    if layout is None:
        raise ValueError(
            f"cannot tell the head layout of {sae.cfg.model_name!r}: pass the loaded model"
        )
    if layout.d_in != sae.cfg.d_in:
        raise ValueError(f"SAE d_in={sae.cfg.d_in} but {hook} has n_heads*d_head={layout.d_in}")
    return layout


def encode_z(sae, z: torch.Tensor) -> torch.Tensor:
    """Dense codes of hook_z activations [..., n_heads, d_head] (SAELens's hook_z reshaping)."""
    return sae.encode(z.reshape(*z.shape[:-2], -1))


def reconstruct_z(sae, z: torch.Tensor) -> torch.Tensor:
    """SAE reconstruction of hook_z activations [..., n_heads, d_head], in the same shape."""
    return sae(z.reshape(*z.shape[:-2], -1))[0].reshape(z.shape)


def raw_encoder(sae) -> tuple[torch.Tensor, torch.Tensor]:
    """(W [d_in, d_sae], c [d_sae]) with pre-activation = x @ W + c for raw inputs x."""
    W = sae.W_enc.detach().float()
    s = sae.cfg.input_scale or 1.0
    return W * s, sae.b_enc.detach().float() - sae.b_dec.detach().float() @ W


def raw_decoder(sae) -> torch.Tensor:
    """Decoder rows [d_sae, d_in] in raw output units (x_hat = z @ W_dec_raw + b; a transcoder's
    rows are in its output hook's units)."""
    scale = sae.cfg.output_scale if sae.cfg.is_transcoder else sae.cfg.input_scale
    return sae.W_dec.detach().float() / (scale or 1.0)


# ---------------------------------------------------------------------------------------------
# head attribution (weights only)
# ---------------------------------------------------------------------------------------------


@dataclass
class HeadAttribution:
    """Decoder-norm shares per feature and head, and per-head summaries."""

    shares: torch.Tensor  # [d_sae, n_heads], rows sum to 1
    dominant_head: torch.Tensor  # [d_sae]
    max_share: torch.Tensor  # [d_sae]
    effective_heads: torch.Tensor  # [d_sae]: exp(entropy of the shares), 1 = one head only
    features_dominated: list[int]  # per head: features whose largest share is that head's
    mean_max_share: list[float]  # per head: mean max_share of the features it dominates
    alive: torch.Tensor | None = None  # [d_sae] bool mask the summaries were restricted to

    def top_features(self, head: int, n: int = 10, min_share: float = 0.0) -> torch.Tensor:
        """Up to n features with the largest share in ``head``, at least ``min_share`` (alive ones
        only when a mask was given)."""
        s = self.shares[:, head].clone()
        if self.alive is not None:
            s[~self.alive] = -1.0
        s[s < min_share] = -1.0
        return s.topk(min(n, int((s >= 0).sum()))).indices

    def summary(self) -> dict[str, Any]:
        return {
            "features_dominated": self.features_dominated,
            "mean_max_share": self.mean_max_share,
            "max_share_hist": torch.histogram(
                self._sel(self.max_share), bins=20, range=(0.0, 1.0)
            ).hist.tolist(),
            "fraction_single_head_0.9": float((self._sel(self.max_share) >= 0.9).float().mean()),
            "mean_effective_heads": float(self._sel(self.effective_heads).mean()),
        }

    def _sel(self, t: torch.Tensor) -> torch.Tensor:
        return (t if self.alive is None else t[self.alive]).float()


def head_attribution(sae, layout: HeadLayout, alive: torch.Tensor | None = None) -> HeadAttribution:
    """Weight-based head attribution: ||W_dec[f, head h]|| / sum_h ||W_dec[f, head h]||."""
    if sae.cfg.d_in != layout.d_in:
        raise ValueError(
            f"SAE d_in={sae.cfg.d_in} does not match the layout's n_heads*d_head={layout.d_in}"
        )
    norms = layout.split(raw_decoder(sae)).norm(dim=-1)  # [d_sae, H]
    return attribution_from_shares(
        norms / norms.sum(-1, keepdim=True).clamp_min(1e-30), layout, alive
    )


# ---------------------------------------------------------------------------------------------
# attention inputs and direct feature attribution
# ---------------------------------------------------------------------------------------------


@dataclass
class AttentionInputs:
    """One layer's attention on a batch: pattern [B, H, T, S], v [B, S, n_kv, d_head], z [B, T, H, d_head]."""

    tokens: torch.Tensor
    pattern: torch.Tensor
    v: torch.Tensor
    z: torch.Tensor


@torch.no_grad()
def attention_inputs(model, tokens: torch.Tensor, layer: int) -> AttentionInputs:
    """Pattern, v and z of ``layer`` (the model runs only up to that block). Hooking the pattern
    makes the fast forward fall back to TransformerLens's attention for that layer, so pattern, v
    and z come from one and the same computation."""
    if tokens.dim() == 1:
        tokens = tokens[None]
    if tokens.dim() != 2:
        raise ValueError(
            f"tokens must be [positions] or [batch, positions], got {tuple(tokens.shape)}"
        )
    if not 0 <= layer < model.cfg.n_layers:
        raise ValueError(f"layer {layer} does not exist: the model has {model.cfg.n_layers} layers")
    names = [
        hook_name(layer, "attn.pattern"),
        hook_name(layer, "attn.v"),
        hook_name(layer, "attn.z"),
    ]
    device = next(model.parameters()).device
    stop = layer + 1 if layer + 1 < model.cfg.n_layers else None
    _, cache = model.run_with_cache(
        tokens.to(device),
        names_filter=names,
        stop_at_layer=stop,
        return_type=None if stop is None else "logits",
    )
    return AttentionInputs(
        tokens.cpu(),
        cache[names[0]].float().cpu(),
        cache[names[1]].float().cpu(),
        cache[names[2]].float().cpu(),
    )


def projected_values(inputs: AttentionInputs, layout: HeadLayout, W: torch.Tensor) -> torch.Tensor:
    """v_{kv(h)}[s] . W[h block, f] for every head: [B, H, S, F] (W [d_in, F] raw-input encoder columns)."""
    v = inputs.v[:, :, layout.kv_index]  # [B, S, H, d_head]: each query head's value vectors
    Wh = W.reshape(layout.n_heads, layout.d_head, -1)  # [H, d_head, F]
    return torch.einsum("bshd,hdf->bhsf", v, Wh)


@torch.no_grad()
def dfa_by_source(
    sae, inputs: AttentionInputs, layout: HeadLayout, features: Sequence[int] | torch.Tensor
) -> torch.Tensor:
    """DFA summed over heads, [B, T(dest), F, S(source)], without the per-head tensor."""
    W, _ = raw_encoder(sae)
    proj = projected_values(inputs, layout, W[:, torch.as_tensor(features, dtype=torch.long)].cpu())
    return torch.einsum("bhts,bhsf->btfs", inputs.pattern, proj)


@dataclass
class FeatureDFA:
    """DFA of some features on one batch of prompts."""

    features: torch.Tensor  # [F]
    dfa: torch.Tensor  # [B, T(dest), F, H, S(source)]
    bias: torch.Tensor  # [F]: b_enc - b_dec . W_enc (raw units)
    pre_acts: torch.Tensor  # [B, T, F]: the SAE's encoder pre-activations on z
    acts: torch.Tensor  # [B, T, F]: the SAE's feature activations on z

    @property
    def by_source(self) -> torch.Tensor:
        """[B, T, F, S]: summed over heads."""
        return self.dfa.sum(3)

    @property
    def by_head(self) -> torch.Tensor:
        """[B, T, F, H]: summed over source positions."""
        return self.dfa.sum(4)


@torch.no_grad()
def direct_feature_attribution(
    sae, inputs: AttentionInputs, layout: HeadLayout, features: Sequence[int] | torch.Tensor
) -> FeatureDFA:
    """DFA_f(t, s, h) = A_h[t, s] * (v_{kv(h)}[s] . W_enc[h block, f]) for the given features.

    Because z_h[t] = sum_s A_h[t, s] v_{kv(h)}[s] is linear in v, the sum over s and h plus
    ``bias`` is exactly the feature's encoder pre-activation at t."""
    feats = torch.as_tensor(features, dtype=torch.long).reshape(-1)
    if feats.numel() and (feats.min() < 0 or feats.max() >= sae.cfg.d_sae):
        raise ValueError(
            f"feature indices must be in [0, {sae.cfg.d_sae}), got {feats.tolist()[:10]}"
        )
    W, c = raw_encoder(sae)
    W, c = W[:, feats].cpu(), c[feats].cpu()
    proj = projected_values(inputs, layout, W)  # [B, H, S, F]
    dfa = torch.einsum("bhts,bhsf->btfhs", inputs.pattern, proj)
    z = inputs.z.reshape(*inputs.z.shape[:2], -1)
    acts = sae.encode(z.to(sae.device)).float().cpu()[..., feats]
    return FeatureDFA(feats, dfa, c, z @ W + c, acts)


def attribution_from_shares(
    shares: torch.Tensor, layout: HeadLayout, alive: torch.Tensor | None
) -> HeadAttribution:
    max_share, dominant = shares.max(-1)
    p = shares.clamp_min(1e-30)
    effective = torch.exp(-(shares * p.log()).sum(-1))
    keep = torch.ones_like(dominant, dtype=torch.bool) if alive is None else alive.bool()
    dominated = [int(((dominant == h) & keep).sum()) for h in range(layout.n_heads)]
    mean_max = [
        float(max_share[(dominant == h) & keep].mean()) if dominated[h] else float("nan")
        for h in range(layout.n_heads)
    ]
    return HeadAttribution(
        shares, dominant, max_share, effective, dominated, mean_max, None if alive is None else keep
    )


@torch.no_grad()
def dfa_head_attribution(
    model, sae, windows: torch.Tensor, layout: HeadLayout | None = None, batch_size: int = 8
) -> HeadAttribution:
    """Data-based head attribution: each feature's activation-weighted share of positive DFA per
    head over ``windows`` (BOS positions skipped). Unlike the decoder-norm shares it ignores
    weight directions the heads never write, so it is informative for SAEs whose decoder rows
    still carry their random initialisation. Features that never fire are not alive."""
    layout = layout or load_head_layout(sae, model)
    W, _ = raw_encoder(sae)
    mass = torch.zeros(sae.cfg.d_sae, layout.n_heads)
    for inp in batched_inputs(model, windows, layout.layer, batch_size):
        z = inp.z.reshape(inp.z.shape[0], inp.z.shape[1], -1)
        acts = sae.encode(z.to(sae.device)).float().cpu()[:, 1:]  # [B, T-1, d_sae]
        for f0 in range(0, sae.cfg.d_sae, 1024):  # feature chunks bound the [B, T, F, H] tensor
            sl = slice(f0, f0 + 1024)
            proj = projected_values(inp, layout, W[:, sl].cpu())  # [B, H, S, F]
            by_head = torch.einsum("bhts,bhsf->btfh", inp.pattern, proj)[:, 1:].clamp_min(0)
            share = by_head / by_head.sum(-1, keepdim=True).clamp_min(1e-12)
            mass[sl] += torch.einsum("btf,btfh->fh", acts[..., sl], share)
    alive = mass.sum(-1) > 0
    shares = torch.where(
        alive[:, None],
        mass / mass.sum(-1, keepdim=True).clamp_min(1e-30),
        torch.full_like(mass, 1.0 / layout.n_heads),
    )
    return attribution_from_shares(shares, layout, alive)


def batched_inputs(model, tokens: torch.Tensor, layer: int, batch_size: int):
    """:func:`attention_inputs` of ``tokens`` [N, T], ``batch_size`` rows at a time."""
    for start in range(0, tokens.shape[0], batch_size):
        yield attention_inputs(model, tokens[start : start + batch_size], layer)


def bos_token_id(model) -> int | None:
    """The tokenizer's BOS id, or None (no tokenizer or no BOS)."""
    tok = getattr(model, "tokenizer", None)
    return getattr(tok, "bos_token_id", None) if tok is not None else None


# ---------------------------------------------------------------------------------------------
# direct logit effect
# ---------------------------------------------------------------------------------------------


@dataclass
class LogitEffect:
    feature: int
    effect: torch.Tensor  # [d_vocab]: logit change per unit of feature activation (direct path)
    top_ids: list[int]
    top_values: list[float]
    top_tokens: list[str]
    bottom_ids: list[int]
    bottom_values: list[float]
    bottom_tokens: list[str]


@torch.no_grad()
def feature_output_directions(sae, model, layout: HeadLayout) -> torch.Tensor:
    """What each feature writes to the residual stream: W_dec[f] (per head) @ W_O [d_sae, d_model]."""
    return residual_direction(model, layout.hook, raw_decoder(sae)).cpu()


@torch.no_grad()
def direct_logit_effect(sae, model, layout: HeadLayout, feature: int, n: int = 10) -> LogitEffect:
    """The feature's direct effect on the logits through W_O, the final norm's gain and W_U (the
    norm's scale is left out, as in direct logit attribution): top and bottom ``n`` tokens."""
    if not 0 <= feature < sae.cfg.d_sae:
        raise ValueError(f"feature {feature} out of range [0, {sae.cfg.d_sae})")
    effect = unembed_direction(model, layout.hook, raw_decoder(sae)[feature]).cpu()
    n = min(n, effect.numel())
    top, bottom = effect.topk(n), (-effect).topk(n)
    tok = getattr(model, "tokenizer", None)

    def names(ids: torch.Tensor) -> list[str]:
        return [tok.decode([i]) if tok is not None else str(i) for i in ids.tolist()]

    return LogitEffect(
        feature,
        effect,
        top.indices.tolist(),
        top.values.tolist(),
        names(top.indices),
        bottom.indices.tolist(),
        (-bottom.values).tolist(),
        names(bottom.indices),
    )
