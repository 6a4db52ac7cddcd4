"""Adam over an SAE's parameters in their storage order.

torch's fused Adam copies a parameter whose memory is not contiguous to a contiguous buffer and
back on every step (W_enc [d_in, d_sae] is a transposed view of latent-major storage: that costs
~4x the update itself on CPU). :class:`SAEAdam` steps a contiguous alias of such a parameter
instead (``p.t()``, the same memory) whose gradient is ``p.grad.t()``: the update is the same,
bit for bit, and the module keeps its [d_in, d_sae] parameter.

Checkpoints name the moments by parameter (``{name}.exp_avg`` ...) in the parameter's own shape,
whatever the storage order.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import torch
from torch import nn


def _storage_alias(p: nn.Parameter) -> nn.Parameter:
    """``p`` itself when contiguous; a contiguous alias ``p.t()`` (same memory) when transposed."""
    if p.dim() == 2 and not p.is_contiguous() and p.t().is_contiguous():
        return nn.Parameter(p.detach().t())
    return p


class SAEAdam:
    """Adam (fused where available) over named parameters; ``param_groups`` and ``state`` as torch's.

    Call :meth:`zero_grad` before the backward and :meth:`step` after it (which hands each alias
    its parameter's gradient).
    """

    def __init__(
        self,
        named_parameters: Iterable[tuple[str, nn.Parameter]],
        lr: float,
        betas: tuple[float, float] = (0.9, 0.999),
        eps: float = 1e-8,
    ) -> None:
        self.params = dict(named_parameters)
        self.leaves = {name: _storage_alias(p) for name, p in self.params.items()}
        kwargs: dict[str, Any] = {"lr": lr, "betas": betas, "eps": eps}
        leaves = list(self.leaves.values())
        try:
            self.optimizer = torch.optim.Adam(leaves, fused=True, **kwargs)
        except (RuntimeError, TypeError):
            self.optimizer = torch.optim.Adam(leaves, foreach=True, **kwargs)

    @property
    def param_groups(self) -> list[dict[str, Any]]:
        return self.optimizer.param_groups

    @property
    def state(self):
        return self.optimizer.state

    def zero_grad(self) -> None:
        for p in self.params.values():
            p.grad = None
        self.optimizer.zero_grad(set_to_none=True)

    def step(self) -> None:
        for name, p in self.params.items():
            leaf = self.leaves[name]
            if leaf is not p:
                leaf.grad = None if p.grad is None else p.grad.t().contiguous()
        self.optimizer.step()

    def state_tensors(self) -> dict[str, torch.Tensor]:
        """``{"{name}.{key}": tensor}`` with moments in each parameter's own shape."""
        out = {}
        for name, p in self.params.items():
            leaf = self.leaves[name]
            for key, value in self.optimizer.state.get(leaf, {}).items():
                if not torch.is_tensor(value):
                    value = torch.tensor(value)
                elif leaf is not p and value.shape == leaf.shape:
                    value = value.t()
                out[f"{name}.{key}"] = value
        return out

    def load_state_tensors(self, tensors: dict[str, torch.Tensor]) -> None:
        """Inverse of :meth:`state_tensors` (moments take the storage order of the step's leaf)."""
        for name, p in self.params.items():
            leaf = self.leaves[name]
            state = {}
            for key, value in tensors.items():
                if not key.startswith(f"{name}.") or "." in key[len(name) + 1 :]:
                    continue
                if value.shape == p.shape:
                    value = torch.empty_like(leaf).copy_(value.t() if leaf is not p else value)
                else:
                    value = value.clone().to(p.device)
                state[key[len(name) + 1 :]] = value
            if state:
                self.optimizer.state[leaf] = state
