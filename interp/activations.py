"""Activation capture shared by every trainer and analysis.

One forward pass serves any number of TransformerLens hooks. Without gradients the model runs only
up to the deepest hooked block (``stop_at_layer``). With gradients it runs to the logits, computes the
next-token cross-entropy and does one backward that starts at the shallowest hooked activation (the
model's parameters get no gradient, and nothing before the first hook is differentiated).

Gradient convention: ``L = sum over positions t of CE(logits[t], token[t+1])`` (a sum, not a mean),
so the gradient at a position does not depend on the batch size or the window length.
"""

from __future__ import annotations

import functools
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from interp.hooks import hook_dim, hook_layer, hook_name, stop_at_layer_for, validate_hooks

STORAGE_DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


def storage_dtype(name: str | torch.dtype) -> torch.dtype:
    """Map 'float32' / 'bfloat16' (or a torch dtype) to a torch dtype, with a clear error."""
    if isinstance(name, torch.dtype):
        return name
    if name not in STORAGE_DTYPES:
        raise ValueError(f"unknown storage dtype {name!r}; valid: {sorted(STORAGE_DTYPES)}")
    return STORAGE_DTYPES[name]


@dataclass
class ActivationBatch:
    """Activations of the kept token positions: ``acts[hook]`` is [N, d] for every hook.

    ``grads[hook]`` (same shape) holds dL/d(activation) when gradients were captured.
    ``tokens`` [N] are the token ids at the kept positions (for feature stores and analyses).
    """

    acts: dict[str, torch.Tensor]
    grads: dict[str, torch.Tensor] | None = None
    tokens: torch.Tensor | None = None

    def __len__(self) -> int:
        return next(iter(self.acts.values())).shape[0]

    @property
    def hooks(self) -> list[str]:
        return list(self.acts)

    def select(self, index: torch.Tensor | slice) -> ActivationBatch:
        """Rows ``index`` of every tensor."""
        return ActivationBatch(
            acts={h: a[index] for h, a in self.acts.items()},
            grads=None if self.grads is None else {h: g[index] for h, g in self.grads.items()},
            tokens=None if self.tokens is None else self.tokens[index],
        )

    @staticmethod
    def concat(batches: Sequence[ActivationBatch]) -> ActivationBatch:
        first = batches[0]
        return ActivationBatch(
            acts={h: torch.cat([b.acts[h] for b in batches]) for h in first.acts},
            grads=None
            if first.grads is None
            else {h: torch.cat([b.grads[h] for b in batches]) for h in first.grads},  # type: ignore[index]
            tokens=None if first.tokens is None else torch.cat([b.tokens for b in batches]),  # type: ignore[misc]
        )


class ActivationCapture:
    """Capture several hooks (and optionally their loss gradients) in one forward pass.

    Positions are flattened to rows. Which are kept is a stated choice:

    * ``drop_bos`` (default): the window's BOS position (and, given an attention mask, padding);
    * ``skip_positions``: also the first n positions after it (SmolLM2's first token after BOS has
      a residual norm 10-100x the median in the middle layers, an attention sink);
    * ``max_norm_ratio``: also any row whose norm, at any captured hook, exceeds this multiple of
      that hook's median row norm in the batch.

    Activations are stored in ``dtype`` (fp32, bf16 or fp16).
    """

    def __init__(
        self,
        model,
        hooks: Sequence[str],
        with_grads: bool = False,
        drop_bos: bool = True,
        dtype: str | torch.dtype = "float32",
        skip_positions: int = 0,
        max_norm_ratio: float | None = None,
    ) -> None:
        if skip_positions < 0:
            raise ValueError(f"skip_positions must be >= 0, got {skip_positions}")
        if max_norm_ratio is not None and max_norm_ratio <= 1:
            raise ValueError(
                f"max_norm_ratio must be > 1 (a multiple of the median), got {max_norm_ratio}"
            )
        self.model = model
        self.hooks = validate_hooks(model, hooks)
        self.with_grads = with_grads
        self.drop_bos = drop_bos
        self.skip_positions = skip_positions
        self.max_norm_ratio = max_norm_ratio
        self.dtype = storage_dtype(dtype)
        stop = stop_at_layer_for(self.hooks)
        self.stop_at_layer: int | None = (
            None if stop is None or stop >= model.cfg.n_layers else stop
        )
        # With gradients, the residual stream is made a leaf at its start (or at each requested
        # embedding hook): every hooked activation lies downstream of it, whatever the hook order,
        # and autograd.grad prunes everything before it.
        embed_hooks = [h for h in self.hooks if hook_layer(h) == -1]
        self.grad_roots: list[str] = embed_hooks or [hook_name(0, "resid_pre")]
        tok = getattr(model, "tokenizer", None)
        self.bos_id: int | None = getattr(tok, "bos_token_id", None) if tok is not None else None

    @property
    def dims(self) -> dict[str, int]:
        return {h: hook_dim(self.model, h) for h in self.hooks}

    def keep_mask(self, tokens: torch.Tensor, attention_mask: torch.Tensor | None) -> torch.Tensor:
        """Boolean [B, T] of positions whose activations are kept."""
        keep = torch.ones_like(tokens, dtype=torch.bool)
        has_bos = (
            tokens[:, 0] == self.bos_id
            if self.bos_id is not None
            else torch.zeros_like(tokens[:, 0], dtype=torch.bool)
        )
        if self.drop_bos:
            keep[:, 0] &= ~has_bos  # the window's own BOS, not EOS separators
        if self.skip_positions:
            n = self.skip_positions
            keep[has_bos, 1 : 1 + n] = False  # the first n after the window's BOS
            keep[~has_bos, :n] = False  # (no BOS: the window's first n)
        if attention_mask is not None:
            keep &= attention_mask.bool()
        return keep

    def __call__(
        self, tokens: torch.Tensor, attention_mask: torch.Tensor | None = None
    ) -> ActivationBatch:
        """Run one forward (plus one backward with gradients) on ``tokens`` [B, T]."""
        if tokens.dim() != 2:
            raise ValueError(f"tokens must be [batch, positions], got shape {tuple(tokens.shape)}")
        device = next(self.model.parameters()).device
        tokens = tokens.to(device)
        stored: dict[str, torch.Tensor] = {}

        def save(act: torch.Tensor, hook) -> torch.Tensor | None:
            out = None
            if self.with_grads and hook.name in self.grad_roots:
                act = out = act.detach().requires_grad_(True)
            if hook.name in self.hooks:
                stored[hook.name] = act if self.with_grads else act.detach()
            return out

        if self.with_grads:
            with torch.enable_grad():
                logits = self._run(tokens, save)
                loss = self._next_token_loss(logits, tokens, attention_mask)
                grads_list = torch.autograd.grad(loss, [stored[h] for h in self.hooks])
            grads = dict(zip(self.hooks, grads_list))
        else:
            with torch.inference_mode():
                # nothing reads the logits: skip the unembedding unless one of its hooks is wanted
                skip_unembed = self.stop_at_layer is None and not any(
                    h.startswith("unembed.") for h in self.hooks
                )
                self._run(
                    tokens,
                    save,
                    stop_at_layer=self.stop_at_layer,
                    return_type=None if skip_unembed else "logits",
                )
            grads = None
        keep = self.keep_mask(
            tokens, attention_mask.to(device) if attention_mask is not None else None
        )
        B, T = tokens.shape
        if self.max_norm_ratio is not None:
            keep = keep & self._typical_norm(stored, keep)
        flat_keep = keep.reshape(-1)

        def rows(t: torch.Tensor) -> torch.Tensor:
            return t.detach().reshape(B * T, -1)[flat_keep].to(self.dtype)

        return ActivationBatch(
            acts={h: rows(stored[h]) for h in self.hooks},
            grads=None if grads is None else {h: rows(grads[h]) for h in self.hooks},
            tokens=tokens.reshape(-1)[flat_keep].cpu(),
        )

    def _typical_norm(self, stored: dict[str, torch.Tensor], keep: torch.Tensor) -> torch.Tensor:
        """[B, T]: rows whose norm is within ``max_norm_ratio`` x the median at every hook."""
        ok = torch.ones_like(keep)
        for h in self.hooks:
            a = stored[h].detach()
            norms = a.reshape(*keep.shape, -1).float().norm(dim=-1)
            median = norms[keep].median() if keep.any() else norms.median()
            ok &= norms <= self.max_norm_ratio * median
        return ok

    def _run(self, tokens: torch.Tensor, save, **kwargs):
        """Forward with ``save`` on each hooked HookPoint. The hooks go straight onto the hook points
        and come off again afterwards: ``run_with_hooks`` would sweep all of the model's hook points
        (~800 for SmolLM2, several ms) on every call."""
        handles = []
        try:
            names = list(dict.fromkeys(self.hooks + (self.grad_roots if self.with_grads else [])))
            for h in names:
                handles.append(
                    self.model.hook_dict[h].register_forward_hook(
                        functools.partial(_as_tl_hook, save)
                    )
                )
            return self.model(tokens, **kwargs)
        finally:
            for handle in handles:
                handle.remove()

    @staticmethod
    def _next_token_loss(
        logits: torch.Tensor, tokens: torch.Tensor, attention_mask: torch.Tensor | None
    ) -> torch.Tensor:
        per_tok = F.cross_entropy(
            logits[:, :-1].reshape(-1, logits.shape[-1]).float(),
            tokens[:, 1:].reshape(-1),
            reduction="none",
        )
        if attention_mask is not None:
            per_tok = per_tok * attention_mask[:, 1:].reshape(-1).to(per_tok.dtype)
        return per_tok.sum()


def _as_tl_hook(fn, module: torch.nn.Module, inputs, output):
    """A torch forward hook that calls a TransformerLens-style ``fn(activation, hook=hook_point)``."""
    return fn(output, module)


def capture_stream(
    capture: ActivationCapture,
    token_batches: Iterable[torch.Tensor],
    max_tokens: int | None = None,
) -> Iterator[ActivationBatch]:
    """Activations for a stream of token batches, stopping after ``max_tokens`` kept rows."""
    seen = 0
    for tokens in token_batches:
        batch = capture(tokens)
        if max_tokens is not None and seen + len(batch) > max_tokens:
            batch = batch.select(slice(0, max_tokens - seen))
        seen += len(batch)
        if len(batch):
            yield batch
        if max_tokens is not None and seen >= max_tokens:
            return


def shuffled_batches(
    blocks: Iterable[ActivationBatch],
    batch_tokens: int,
    seed: int = 0,
    start_block: int = 0,
    skip_batches: int = 0,
) -> Iterator[tuple[int, int, ActivationBatch]]:
    """The shuffling buffer: shuffle each block of activations, serve fixed-size batches.

    ``blocks`` yields buffer-sized blocks (block ``start_block`` first). Each block is permuted by a
    generator seeded with (seed, block index) and cut into batches of exactly ``batch_tokens`` rows
    (the remainder, under one batch, is dropped). Because the order depends only on the block index,
    a run resumes at (block, batch) by re-reading one block, without replaying the stream.
    Yields (block index, batch index within block, batch).
    """
    if batch_tokens < 1:
        raise ValueError(f"batch_tokens must be >= 1, got {batch_tokens}")
    for b, block in enumerate(blocks, start=start_block):
        n = len(block)
        if n < batch_tokens:
            raise ValueError(
                f"buffer block of {n} rows is smaller than one batch ({batch_tokens}); "
                "raise the buffer size"
            )
        gen = torch.Generator().manual_seed(seed * 1_000_003 + b)
        perm = torch.randperm(n, generator=gen)
        first = skip_batches if b == start_block else 0
        for i in range(first, n // batch_tokens):
            yield b, i, block.select(perm[i * batch_tokens : (i + 1) * batch_tokens])


def capture_blocks(
    capture: ActivationCapture,
    windows: Iterable[torch.Tensor],
    windows_per_block: int,
    batch_windows: int,
    start_block: int = 0,
) -> Iterator[ActivationBatch]:
    """Buffer blocks from live capture: block b holds windows [b*W, (b+1)*W) of the stream.

    Windows before ``start_block`` are skipped without running the model.
    """
    it = iter(windows)
    for _ in range(start_block * windows_per_block):
        if next(it, None) is None:
            return
    while True:
        block_windows = [w for _, w in zip(range(windows_per_block), it)]
        if not block_windows:
            return
        parts = [
            capture(torch.stack(block_windows[i : i + batch_windows]))
            for i in range(0, len(block_windows), batch_windows)
        ]
        yield ActivationBatch.concat(parts)
