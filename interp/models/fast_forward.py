"""Fast forward passes for TransformerLens ``HookedTransformer`` modules, installed per instance.

TransformerLens 3.9 computes attention by materialising the full ``[batch, head, query, key]`` score
matrix (then a causal ``where``, a softmax, a NaN clean-up and a second batched matmul), repeats K/V
for grouped-query attention, adds biases that are all zero for Llama-style models (``F.linear`` /
``addmm`` with a bias is markedly slower on CPU than without), and evaluates ``ln1`` three times per
block (once each for the query, key and value inputs). :func:`install_fast_forward` replaces the
``forward`` of each eligible module *instance* (the class is untouched) with a leaner one that:

* attention: Q, K and V from one GEMM (W_Q/W_K/W_V share one buffer, see :func:`_fuse_qkv`),
  no zero-bias adds, rotary embedding of q and k in one pass without the clone + slice
  assignments of ``rotate_every_two``, and ``F.scaled_dot_product_attention`` (fused, never builds
  the score matrix, handles GQA itself) instead of scores/mask/softmax/NaN-clean-up/matmul;
* gated MLP: gate and in projections from one GEMM (:func:`_fuse_gate_in`), activation and
  product in place when autograd is not recording; plain MLP: no zero-bias adds;
* LayerNorm / RMSNorm (and their folded ``*Pre`` variants): ``F.layer_norm``, or an RMS scale from
  one ``vector_norm`` reduction (``F.rms_norm`` when autograd records);
* transformer block: ``ln1`` is evaluated once and fed to Q, K and V (the original computes the
  same value three times);
* unembed: no zero ``b_U`` add over the ``[tokens, d_vocab]`` logits.

The fused GEMMs need the weights' gradients not to be requested (inference/no-grad, or frozen
weights); otherwise Q/K/V and gate/in are projected separately, as are they when a parameter no
longer lives in its shared buffer (replaced by ``param.data = ...``, ``.to(...)``; call
:func:`install_fast_forward` again to re-fuse). In-place updates (``load_state_dict``, optimizer
steps, ``.data`` edits) go to the shared buffers and are always seen.

Every TransformerLens hook point that the original forward fires still fires, in the same order,
with the same shapes and (up to float rounding, ~1e-6 relative in fp32) the same values, and a value
returned (or edited in place) by a hook replaces the activation exactly as before. Hooked tensors
are contiguous, as in TransformerLens (unhooked q/k/v are strided views of the fused output).
Whatever the fast forward cannot reproduce falls back to the original class forward *for that
call*:

* attention, when ``hook_attn_scores`` or ``hook_pattern`` has any hook attached (forward, pre or
  backward: checked at call time, so ``run_with_cache`` on patterns, head detectors, pattern
  patching keep working), with a KV cache, an attention mask that contains padding, an additive
  mask or position bias, or any non-standard configuration (local/sliding windows, soft-capping,
  ``use_attn_result``, split-QKV inputs, ungrouped GQA, ALiBi/shortformer/relative positions,
  attention sinks, logn/dynamic-NTK rotary, OLMo-style QK norm, 4-bit weights, ...);
* norms, when their ``hook_scale`` / ``hook_normalized`` is hooked (the original computes the scale
  separately and the hooks see exactly that);
* blocks, when ``ln1`` (or one of its hook points) is hooked, so hooks on ``ln1`` still run three
  times per block, and for post-norm, split-input, shortformer or multi-device configurations.

Zero biases are detected per call (``bias.any()``, a few microseconds on CPU), so reloading or
editing weights needs no refresh. A bias is always applied when autograd may need its gradient
(grad mode on and ``requires_grad``) and on non-CPU devices (where the check would synchronise and
a fused bias costs nothing).

``interp.models.load_model`` installs this by default (``fast=False`` turns it off);
:func:`uninstall_fast_forward` restores the original forwards.
"""

from __future__ import annotations

import functools
from typing import Any

import torch
import torch.nn.functional as F

__all__ = ["install_fast_forward", "is_fast_forward_installed", "uninstall_fast_forward"]

_OLMO_QK_NORM = ("OlmoeForCausalLM", "Olmo2ForCausalLM", "Olmo3ForCausalLM")
_FLOAT32_UP = (torch.float32, torch.float64)


# ----------------------------------------------------------------------------------------------
# helpers
# ----------------------------------------------------------------------------------------------


def _global_hooks() -> bool:
    """Whether any global ``nn.Module`` hook is registered (those fire for every module call)."""
    mm = torch.nn.modules.module
    return bool(
        getattr(mm, "_global_forward_hooks", None)
        or getattr(mm, "_global_forward_pre_hooks", None)
        or getattr(mm, "_global_backward_hooks", None)
        or getattr(mm, "_global_backward_pre_hooks", None)
    )


def _hooked(module: torch.nn.Module) -> bool:
    """Whether calling ``module`` would run any hook (forward, forward-pre, backward)."""
    return bool(
        module._forward_hooks
        or module._forward_pre_hooks
        or module._backward_hooks
        or module._backward_pre_hooks
    )


def _tree_hooked(module: torch.nn.Module) -> bool:
    """``_hooked`` for a module or any of its submodules (e.g. a norm and its hook points)."""
    return any(_hooked(m) for m in module.modules())


def _hook(hook_point: torch.nn.Module, x: torch.Tensor) -> torch.Tensor:
    """Pass ``x`` through ``hook_point``. ``x`` may be a strided view into a fused GEMM's output;
    when hooks are attached they get a contiguous tensor, as in TransformerLens (whose hook
    tensors are contiguous), and whatever the hook point returns is what flows on."""
    if _hooked(hook_point):
        return hook_point(x.contiguous())
    return hook_point(x)


def _bias(b: torch.Tensor | None) -> torch.Tensor | None:
    """``b``, or None when adding it would be a no-op that nothing needs (an all-zero CPU bias
    whose gradient autograd cannot ask for)."""
    if b is None or b.device.type != "cpu" or (b.requires_grad and torch.is_grad_enabled()):
        return b
    return b if bool(b.any()) else None


def _may_modify(*tensors: torch.Tensor) -> bool:
    """In-place updates of fresh intermediates are fine unless autograd records the op."""
    return not torch.is_grad_enabled() or not any(t.requires_grad for t in tensors)


def _linear_heads(x: torch.Tensor, W: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """``x [batch, pos, d_model] @ W [heads, d_model, d_head] + b`` -> ``[batch, pos, heads, d_head]``
    in one GEMM (``W.permute(0, 2, 1)`` is a contiguous view with interp's weight layout)."""
    n, d_model, d_head = W.shape
    w = W.permute(0, 2, 1).reshape(n * d_head, d_model)
    out = F.linear(x, w, _bias(b.reshape(n * d_head)))
    return out.view(*x.shape[:-1], n, d_head)


# ----------------------------------------------------------------------------------------------
# attention
# ----------------------------------------------------------------------------------------------


def _attention_supported(attn: Any) -> bool:
    """Static (config) conditions under which the SDPA path reproduces TL's attention."""
    cfg = attn.cfg
    pos = cfg.positional_embedding_type
    cap = cfg.attn_scores_soft_cap
    return (
        pos in ("standard", "rotary")
        and not cfg.load_in_4bit
        and not cfg.use_attn_result
        and not cfg.use_split_qkv_input
        and not cfg.use_attn_in
        and not cfg.ungroup_grouped_query_attention
        and cfg.clip_qkv is None
        and not cfg.use_attention_sinks
        and not (cfg.use_logn_attn and not attn.training)
        and not (cap is not None and cap > 0)
        and cfg.original_architecture not in _OLMO_QK_NORM
        and attn.attn_type == "global"
        and (attn._attention_dir_override or cfg.attention_dir) in ("causal", "bidirectional")
        and (pos != "rotary" or not cfg.use_dynamic_ntk_rope)
    )


def _rotary(attn: Any, x: torch.Tensor) -> torch.Tensor:
    """TL's ``apply_rotary(x, 0, None)`` (same arithmetic) without its clone/slice-assign rotate."""
    cfg = attn.cfg
    pos = x.size(1)
    cos_table = attn.rotary_cos
    if pos > cos_table.shape[0] or x.device != cos_table.device:
        return attn.apply_rotary(x, 0, None)  # extends the table / moves x, as TL does
    rdim = cfg.rotary_dim
    x_rot = x if rdim == x.size(-1) else x[..., :rdim]
    cos = cos_table[None, :pos, None, :]
    sin = attn.rotary_sin[None, :pos, None, :]
    rotated = x_rot * cos
    if _may_modify(rotated) and not cfg.rotary_adjacent_pairs:
        # rotate_half(x) * sin added in place, one half at a time: no neg/cat temporaries
        half = rdim // 2
        rotated[..., :half].addcmul_(x_rot[..., half:], sin[..., :half], value=-1)
        rotated[..., half:].addcmul_(x_rot[..., :half], sin[..., half:])
    else:
        if cfg.rotary_adjacent_pairs:
            x_flip = attn.rotate_every_two(x_rot)
        else:
            half = rdim // 2
            x_flip = torch.cat((-x_rot[..., half:], x_rot[..., :half]), dim=-1)
        rotated = rotated + x_flip * sin
    if rdim == x.size(-1):
        return rotated
    return torch.cat([rotated, x[..., rdim:]], dim=-1)


_QKV = "_interp_qkv"


def _qkv_params(attn: Any) -> list[torch.Tensor]:
    """[W_Q, W_K, W_V, b_Q, b_K, b_V] as stored (per KV head for grouped-query attention)."""
    if hasattr(attn, "_W_K"):  # GroupedQueryAttention: W_K/W_V/b_K/b_V are repeated views
        return [attn.W_Q, attn._W_K, attn._W_V, attn.b_Q, attn._b_K, attn._b_V]
    return [attn.W_Q, attn.W_K, attn.W_V, attn.b_Q, attn.b_K, attn.b_V]


def _fuse_qkv(attn: Any) -> None:
    """Store W_Q, W_K, W_V as row blocks of one ``[(n_q + 2 n_kv) * d_head, d_model]`` buffer and
    b_Q, b_K, b_V as blocks of one bias vector, so Q, K and V take one GEMM.

    The parameters become views with the same shapes, values and strides as
    ``interp.models.hooked.fast_layout`` gives them; in-place updates go to the buffers. If a
    parameter is later replaced, :func:`_qkv_buffers` notices and the forward projects separately.
    """
    params = _qkv_params(attn)
    weights, biases = params[:3], params[3:]
    if not all(isinstance(p, torch.nn.Parameter) for p in params) or _qkv_buffers(attn) is not None:
        return
    W_Q = weights[0]
    d_model, d_head = W_Q.shape[1], W_Q.shape[2]
    if (
        not all(
            w.dim() == 3
            and w.shape[1:] == (d_model, d_head)
            and w.dtype == W_Q.dtype
            and w.device == W_Q.device
            and b.shape == (w.shape[0], d_head)
            and b.dtype == W_Q.dtype
            and b.device == W_Q.device
            for w, b in zip(weights, biases)
        )
        or not W_Q.dtype.is_floating_point
    ):
        return
    rows = [w.shape[0] * d_head for w in weights]
    w_buf = torch.empty(sum(rows), d_model, dtype=W_Q.dtype, device=W_Q.device)
    b_buf = torch.empty(sum(rows), dtype=W_Q.dtype, device=W_Q.device)
    with torch.no_grad():
        start = 0
        for w, b, n in zip(weights, biases, rows):
            w_buf[start : start + n].copy_(w.permute(0, 2, 1).reshape(n, d_model))
            b_buf[start : start + n].copy_(b.reshape(n))
            w.data = w_buf[start : start + n].view(w.shape[0], d_head, d_model).transpose(1, 2)
            b.data = b_buf[start : start + n].view(w.shape[0], d_head)
            start += n
    attn.__dict__[_QKV] = (w_buf, b_buf)


def _qkv_buffers(attn: Any) -> tuple[torch.Tensor, torch.Tensor] | None:
    """The fused (weight, bias) buffers if all six parameters still live in them, else None."""
    bufs = attn.__dict__.get(_QKV)
    if bufs is None:
        return None
    w_buf, b_buf = bufs
    params = _qkv_params(attn)
    d_model = w_buf.shape[1]
    start = 0
    for w, b in zip(params[:3], params[3:]):
        n = w.shape[0] * w.shape[2]
        if (
            w.data_ptr() != w_buf[start].data_ptr()
            or b.data_ptr() != b_buf[start].data_ptr()
            or w.stride() != (w.shape[2] * d_model, 1, d_model)
            or not b.is_contiguous()
            or w.dtype != w_buf.dtype
            or b.dtype != b_buf.dtype
        ):
            return None
        start += n
    return bufs if start == w_buf.shape[0] else None


def _qkv(
    attn: Any, query_input: torch.Tensor, key_input: torch.Tensor, value_input: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """q, k, v after hook_q/k/v, QK norm and rotary (hook_rot_q/k), as TL computes them."""
    cfg = attn.cfg
    params = _qkv_params(attn)
    bufs = _qkv_buffers(attn) if _may_modify(*params) else None
    rotary = cfg.positional_embedding_type == "rotary"
    if bufs is not None and query_input is key_input and key_input is value_input:
        # one GEMM; q, k, v are head slices of its output
        w_buf, b_buf = bufs
        d_head = params[0].shape[2]
        n_q, n_kv = params[0].shape[0], params[1].shape[0]
        out = F.linear(query_input, w_buf, _bias(b_buf))
        out = out.view(*out.shape[:-1], n_q + 2 * n_kv, d_head)
        q0, k0 = out[:, :, :n_q], out[:, :, n_q : n_q + n_kv]
        q, k = _hook(attn.hook_q, q0), _hook(attn.hook_k, k0)
        v = _hook(attn.hook_v, out[:, :, n_q + n_kv :])
        if rotary and not cfg.use_qk_norm and q is q0 and k is k0:
            qk = _rotary(attn, out[:, :, : n_q + n_kv])  # both in one pass
            return _hook(attn.hook_rot_q, qk[:, :, :n_q]), _hook(attn.hook_rot_k, qk[:, :, n_q:]), v
    else:
        q = attn.hook_q(_linear_heads(query_input, params[0], params[3]))
        k = attn.hook_k(_linear_heads(key_input, params[1], params[4]))
        v = attn.hook_v(_linear_heads(value_input, params[2], params[5]))
    if cfg.use_qk_norm:
        q = attn._apply_qk_norm(q, attn.q_norm)
        k = attn._apply_qk_norm(k, attn.k_norm)
    if rotary:
        q = attn.hook_rot_q(_rotary(attn, q))
        k = attn.hook_rot_k(_rotary(attn, k))
    return q, k, v


def _attention_forward(
    self: Any,
    query_input: torch.Tensor,
    key_input: torch.Tensor,
    value_input: torch.Tensor,
    past_kv_cache_entry: Any = None,
    additive_attention_mask: torch.Tensor | None = None,
    attention_mask: torch.Tensor | None = None,
    position_bias: torch.Tensor | None = None,
) -> torch.Tensor:
    if (
        past_kv_cache_entry is not None
        or additive_attention_mask is not None
        or position_bias is not None
        or query_input.dim() != 3
        or key_input.dim() != 3
        or value_input.dim() != 3
        or query_input.device != self.W_Q.device
        or not _attention_supported(self)
        or _hooked(self.hook_attn_scores)
        or _hooked(self.hook_pattern)
        or _global_hooks()
        or (attention_mask is not None and not bool(attention_mask.all()))
    ):
        return type(self).forward(
            self,
            query_input,
            key_input,
            value_input,
            past_kv_cache_entry=past_kv_cache_entry,
            additive_attention_mask=additive_attention_mask,
            attention_mask=attention_mask,
            position_bias=position_bias,
        )
    cfg = self.cfg
    q, k, v = _qkv(self, query_input, key_input, value_input)
    causal = (self._attention_dir_override or cfg.attention_dir) == "causal"
    z = F.scaled_dot_product_attention(
        q.transpose(1, 2),
        k.transpose(1, 2),
        v.transpose(1, 2),
        is_causal=causal and q.size(1) > 1,
        scale=1.0 / self.attn_scale,
        enable_gqa=k.size(2) != q.size(2),
    ).transpose(1, 2)  # [batch, pos, head_index, d_head]; contiguous for the CPU flash kernel
    z = self.hook_z(z)
    n_heads, d_head, d_model = self.W_O.shape
    w_o = self.W_O.permute(2, 0, 1).reshape(d_model, n_heads * d_head)
    z = z.reshape(z.shape[0], z.shape[1], n_heads * d_head)
    if z.dtype != w_o.dtype:
        z = z.to(w_o.dtype)
    return F.linear(z, w_o, _bias(self.b_O))


# ----------------------------------------------------------------------------------------------
# MLPs
# ----------------------------------------------------------------------------------------------


_GATE_IN = "_interp_gate_in"


def _fuse_gate_in(mlp: Any) -> None:
    """Store ``W_gate`` and ``W_in`` as two halves of one ``[2 * d_mlp, d_model]`` buffer, so the
    fast forward can compute both projections with one GEMM.

    The parameters become views of the buffer with the same shapes, values and strides as
    ``interp.models.hooked.fast_layout`` gives them (``W.T`` contiguous), so every in-place update
    (``load_state_dict``, optimizers, ``.data`` edits) goes to the buffer. If a parameter is later
    replaced (``param.data = ...``, ``.to(device)``), the forward notices and uses two GEMMs.
    """
    W_gate, W_in = mlp.W_gate, mlp.W_in
    if not (
        isinstance(W_gate, torch.nn.Parameter)
        and isinstance(W_in, torch.nn.Parameter)
        and W_gate.dim() == 2
        and W_gate.shape == W_in.shape
        and W_gate.dtype == W_in.dtype
        and W_gate.dtype.is_floating_point
        and W_gate.device == W_in.device
    ):
        return
    if _gate_in_buffer(mlp) is not None:
        return
    d_model, d_mlp = W_gate.shape
    with torch.no_grad():
        fused = torch.empty(2 * d_mlp, d_model, dtype=W_gate.dtype, device=W_gate.device)
        fused[:d_mlp].copy_(W_gate.t())
        fused[d_mlp:].copy_(W_in.t())
        W_gate.data = fused[:d_mlp].t()
        W_in.data = fused[d_mlp:].t()
    mlp.__dict__[_GATE_IN] = fused


def _gate_in_buffer(mlp: Any) -> torch.Tensor | None:
    """The fused ``[W_gate.T; W_in.T]`` buffer if both parameters still live in it, else None."""
    fused = mlp.__dict__.get(_GATE_IN)
    if fused is None:
        return None
    W_gate, W_in = mlp.W_gate, mlp.W_in
    d_mlp = fused.shape[0] // 2
    if (
        W_gate.data_ptr() == fused.data_ptr()
        and W_in.data_ptr() == fused[d_mlp:].data_ptr()
        and W_gate.shape == W_in.shape == (fused.shape[1], d_mlp)
        and W_gate.stride() == W_in.stride() == (1, fused.shape[1])
        and W_gate.dtype == fused.dtype
    ):
        return fused
    return None


def _gated_mlp_forward(self: Any, x: torch.Tensor) -> torch.Tensor:
    if (
        self.cfg.is_layer_norm_activation()
        or self.cfg.load_in_4bit
        or x.device != self.W_gate.device
    ):
        return type(self).forward(self, x)
    fused = _gate_in_buffer(self) if _may_modify(self.W_gate, self.W_in) else None
    if fused is not None:  # one GEMM for both projections; the hooks see column slices of it
        pre, pre_linear = F.linear(x, fused).split(fused.shape[0] // 2, dim=-1)
        pre = _hook(self.hook_pre, pre)  # [batch, pos, d_mlp]
        pre_linear = _hook(self.hook_pre_linear, pre_linear)
    else:
        pre = self.hook_pre(F.linear(x, self.W_gate.t()))
        pre_linear = self.hook_pre_linear(F.linear(x, self.W_in.t()))
    act = self.act_fn(pre)
    b_in = _bias(self.b_in)
    fresh = act is not pre and act is not pre_linear and act.data_ptr() != pre.data_ptr()
    if fresh and act.is_contiguous() and _may_modify(act, pre_linear):
        post = act.mul_(pre_linear)
        if b_in is not None:
            post.add_(b_in)
    else:
        post = act * pre_linear
        if b_in is not None:
            post = post + b_in
    post = self.hook_post(post)
    return F.linear(post, self.W_out.t(), _bias(self.b_out))


def _mlp_forward(self: Any, x: torch.Tensor) -> torch.Tensor:
    if self.cfg.is_layer_norm_activation() or x.device != self.W_in.device:
        return type(self).forward(self, x)
    pre = self.hook_pre(F.linear(x, self.W_in.t(), _bias(self.b_in)))
    post = self.hook_post(self.act_fn(pre))
    return F.linear(post, self.W_out.t(), _bias(self.b_out))


# ----------------------------------------------------------------------------------------------
# norms
# ----------------------------------------------------------------------------------------------


def _norm_hooked(self: Any) -> bool:
    return _hooked(self.hook_scale) or _hooked(self.hook_normalized) or _global_hooks()


def _to_compute(self: Any, x: torch.Tensor) -> torch.Tensor:
    return x if self.cfg.dtype in _FLOAT32_UP else x.to(torch.float32)


def _rms_scale(x: torch.Tensor, eps: float) -> torch.Tensor:
    """``sqrt(mean(x**2, -1) + eps)`` (TL's ``hook_scale``) from one reduction over ``x``, without
    materialising ``x**2``. Only used when autograd is off (the norm's gradient at 0 differs)."""
    norm = torch.linalg.vector_norm(x, dim=-1, keepdim=True)
    return norm.square_().div_(x.shape[-1]).add_(eps).sqrt_()


def _rms_norm_pre_forward(self: Any, x: torch.Tensor) -> torch.Tensor:
    if _norm_hooked(self):
        return type(self).forward(self, x)
    x = _to_compute(self, x)
    if _may_modify(x):
        return (x / _rms_scale(x, self.eps)).to(self.cfg.dtype)
    return F.rms_norm(x, (x.shape[-1],), eps=self.eps).to(self.cfg.dtype)


def _rms_norm_forward(self: Any, x: torch.Tensor) -> torch.Tensor:
    if _norm_hooked(self) or x.device != self.w.device or self.cfg.dtype not in _FLOAT32_UP:
        return type(self).forward(self, x)
    if _may_modify(x, self.w):
        out = x / _rms_scale(x, self.eps)
        return out.mul_(self.w)
    return F.rms_norm(x, (x.shape[-1],), weight=self.w, eps=self.eps)


def _layer_norm_pre_forward(self: Any, x: torch.Tensor) -> torch.Tensor:
    if _norm_hooked(self):
        return type(self).forward(self, x)
    x = _to_compute(self, x)
    return F.layer_norm(x, (x.shape[-1],), eps=self.eps).to(self.cfg.dtype)


def _layer_norm_forward(self: Any, x: torch.Tensor) -> torch.Tensor:
    if _norm_hooked(self) or x.device != self.w.device or self.cfg.dtype not in _FLOAT32_UP:
        return type(self).forward(self, x)
    return F.layer_norm(x, (x.shape[-1],), weight=self.w, bias=self.b, eps=self.eps)


# ----------------------------------------------------------------------------------------------
# block and unembed
# ----------------------------------------------------------------------------------------------


def _block_forward(
    self: Any,
    resid_pre: torch.Tensor,
    shortformer_pos_embed: torch.Tensor | None = None,
    past_kv_cache_entry: Any = None,
    attention_mask: torch.Tensor | None = None,
) -> torch.Tensor:
    from transformer_lens.utilities.architectures import POST_NORM_ARCHITECTURES

    cfg = self.cfg
    if (
        shortformer_pos_embed is not None
        or cfg.use_attn_in
        or cfg.use_split_qkv_input
        or cfg.n_devices > 1
        or cfg.original_architecture in POST_NORM_ARCHITECTURES
        or _tree_hooked(self.ln1)
        or _global_hooks()
    ):
        return type(self).forward(
            self,
            resid_pre,
            shortformer_pos_embed=shortformer_pos_embed,
            past_kv_cache_entry=past_kv_cache_entry,
            attention_mask=attention_mask,
        )
    resid_pre = self.hook_resid_pre(resid_pre)
    attn_in = self.ln1(resid_pre)  # the original computes this three times (q, k, v inputs)
    attn_out = self.attn(
        query_input=attn_in,
        key_input=attn_in,
        value_input=attn_in,
        past_kv_cache_entry=past_kv_cache_entry,
        attention_mask=attention_mask,
    )
    if cfg.use_normalization_before_and_after:
        attn_out = self.ln1_post(attn_out)
    attn_out = self.hook_attn_out(attn_out)
    if not cfg.attn_only and not cfg.parallel_attn_mlp:
        resid_mid = self.hook_resid_mid(resid_pre + attn_out)
        mlp_in = resid_mid if not cfg.use_hook_mlp_in else self.hook_mlp_in(resid_mid.clone())
        mlp_out = self.apply_mlp(self.ln2(mlp_in))
        return self.hook_resid_post(resid_mid + mlp_out)
    if cfg.parallel_attn_mlp:
        normalized = self.ln2(
            resid_pre if not cfg.use_hook_mlp_in else self.hook_mlp_in(resid_pre.clone())
        )
        mlp_out = self.apply_mlp(normalized)
        return self.hook_resid_post(resid_pre + attn_out + mlp_out)
    return self.hook_resid_post(resid_pre + attn_out)


def _unembed_forward(self: Any, residual: torch.Tensor) -> torch.Tensor:
    residual = self.hook_in(residual)
    return self.hook_out(F.linear(residual, self.W_U.t(), _bias(self.b_U)))


# ----------------------------------------------------------------------------------------------
# install / uninstall
# ----------------------------------------------------------------------------------------------

_FAST_FORWARDS = frozenset(
    {
        _attention_forward,
        _gated_mlp_forward,
        _mlp_forward,
        _rms_norm_pre_forward,
        _rms_norm_forward,
        _layer_norm_pre_forward,
        _layer_norm_forward,
        _block_forward,
        _unembed_forward,
    }
)


def _fast_forward_for(module: torch.nn.Module) -> Any:
    """The fast forward for ``module``'s exact class, or None. Only exact TransformerLens classes
    are patched: a subclass may override ``forward`` with behaviour we do not reproduce."""
    from transformer_lens.components import (
        Attention,
        GroupedQueryAttention,
        LayerNorm,
        LayerNormPre,
        RMSNorm,
        RMSNormPre,
        TransformerBlock,
        Unembed,
    )
    from transformer_lens.components.mlps.gated_mlp import GatedMLP
    from transformer_lens.components.mlps.mlp import MLP

    table = {
        Attention: _attention_forward,
        GroupedQueryAttention: _attention_forward,
        GatedMLP: _gated_mlp_forward,
        MLP: _mlp_forward,
        RMSNormPre: _rms_norm_pre_forward,
        RMSNorm: _rms_norm_forward,
        LayerNormPre: _layer_norm_pre_forward,
        LayerNorm: _layer_norm_forward,
        TransformerBlock: _block_forward,
        Unembed: _unembed_forward,
    }
    return table.get(type(module))


def _installed(module: torch.nn.Module) -> bool:
    fwd = module.__dict__.get("forward")
    return isinstance(fwd, functools.partial) and fwd.func in _FAST_FORWARDS


def install_fast_forward(model: torch.nn.Module, fuse: bool = True) -> torch.nn.Module:
    """Give every eligible module of ``model`` its fast forward (idempotent); returns ``model``.

    The forward is set on the instance (a ``functools.partial`` of a module-level function, so the
    model still deep-copies and pickles); classes and other models are untouched. With ``fuse``,
    each attention's W_Q/W_K/W_V (and b_Q/b_K/b_V) and each gated MLP's W_gate/W_in are moved
    into shared buffers (:func:`_fuse_qkv`, :func:`_fuse_gate_in`; values, shapes, strides and the
    state dict are unchanged) so that they take one GEMM each when autograd does not need the
    weights' gradients.
    """
    for module in model.modules():
        fast = _fast_forward_for(module)
        if fast is None:
            continue
        if not _installed(module):
            module.forward = functools.partial(fast, module)
        if fast is _gated_mlp_forward and fuse:
            _fuse_gate_in(module)
        if fast is _attention_forward and fuse and not module.cfg.load_in_4bit:
            _fuse_qkv(module)
    return model


def uninstall_fast_forward(model: torch.nn.Module) -> torch.nn.Module:
    """Restore the original TransformerLens forwards on every module of ``model``; returns it."""
    for module in model.modules():
        if _installed(module):
            del module.__dict__["forward"]
    return model


def is_fast_forward_installed(model: torch.nn.Module) -> bool:
    """Whether any module of ``model`` currently uses a fast forward."""
    return any(_installed(m) for m in model.modules())
