"""SAEAdam: Adam over latent-major W_enc through a contiguous alias, identical to plain Adam."""

from __future__ import annotations

import torch
from torch import nn

from saes.config import SAEConfig
from saes.sae import SAE
from saes.training.optim import SAEAdam


def _grads(shape, n, seed=0):
    g = torch.Generator().manual_seed(seed)
    return [torch.randn(*shape, generator=g) for _ in range(n)]


def test_sae_encoder_is_latent_major_and_stepped_in_place():
    sae = SAE(SAEConfig(d_in=8, d_sae=32, k=4))
    assert (
        sae.W_enc.shape == (8, 32)
        and sae.W_enc.t().is_contiguous()
        and not sae.W_enc.is_contiguous()
    )
    opt = SAEAdam(sae.named_parameters(), lr=1e-2)
    leaf = opt.leaves["W_enc"]
    assert (
        leaf is not sae.W_enc and leaf.is_contiguous() and leaf.data_ptr() == sae.W_enc.data_ptr()
    )
    assert opt.leaves["W_dec"] is sae.W_dec  # contiguous parameters are stepped directly
    before = sae.W_enc.detach().clone()
    sae.W_enc.grad = torch.ones(8, 32)
    opt.step()
    assert not torch.equal(
        before, sae.W_enc.detach()
    )  # the alias step moved the module's parameter


def test_alias_updates_equal_plain_adam_bit_for_bit():
    W0 = torch.randn(6, 40)
    plain = nn.Parameter(W0.clone())
    ref = torch.optim.Adam([plain], lr=1e-2, fused=True)
    latent_major = nn.Parameter(W0.t().contiguous().t())
    opt = SAEAdam([("W_enc", latent_major)], lr=1e-2)
    for g in _grads((6, 40), 5):
        plain.grad = g.clone()
        ref.step()
        opt.zero_grad()
        latent_major.grad = g.t().contiguous().t()
        opt.step()
    assert torch.equal(plain.detach(), latent_major.detach())
    # the moments come back in the parameter's own shape, equal to plain Adam's
    state = opt.state_tensors()
    assert torch.equal(state["W_enc.exp_avg"], ref.state[plain]["exp_avg"])
    assert torch.equal(state["W_enc.exp_avg_sq"], ref.state[plain]["exp_avg_sq"])


def test_state_round_trip_continues_identically():
    def run(split: bool):
        p = nn.Parameter(torch.arange(24.0).view(4, 6).t().contiguous().t() / 10)
        b = nn.Parameter(torch.zeros(4))
        opt = SAEAdam([("W", p), ("b", b)], lr=1e-2)
        grads = _grads((4, 6), 6, seed=1)
        for i, g in enumerate(grads):
            if split and i == 3:  # a fresh optimizer restored from the saved state
                state = {k: v.clone().contiguous() for k, v in opt.state_tensors().items()}
                p2 = nn.Parameter(torch.empty(6, 4).t())
                p2.data.copy_(p.detach())
                b2 = nn.Parameter(b.detach().clone())
                p, b = p2, b2
                opt = SAEAdam([("W", p), ("b", b)], lr=1e-2)
                opt.load_state_tensors(state)
            opt.zero_grad()
            p.grad, b.grad = g.clone(), g.sum(1)
            opt.step()
        return p.detach(), b.detach()

    (p1, b1), (p2, b2) = run(False), run(True)
    assert torch.equal(p1, p2) and torch.equal(b1, b2)
