"""MIDAS light diffusion head: per-token rectified flow conditioned on the transformer's output."""
from __future__ import annotations

import torch

from talkinghead.nn.diffusion_head import DiffusionHead, DiffusionHeadConfig
from talkinghead.train.losses import flow_head_loss


def _head() -> DiffusionHead:
    torch.manual_seed(0)
    return DiffusionHead(DiffusionHeadConfig(latent_channels=4, cond_dim=8, width=32, layers=2, sample_steps=8))


def test_shapes_and_identity_start():
    head = _head()
    x, z = torch.randn(5, 4), torch.randn(5, 8)
    v = head(x, torch.rand(5), z)
    assert v.shape == (5, 4) and not v.any()  # zero-initialised output layer
    assert head.sample(z, x).shape == (5, 4)


def test_sampling_is_a_function_of_noise_and_condition():
    head = _head()
    with torch.no_grad():
        for p in head.parameters():
            p.add_(0.05 * torch.randn(p.shape, generator=torch.Generator().manual_seed(p.numel())))
    z = torch.randn(6, 8, generator=torch.Generator().manual_seed(1))
    noise = torch.randn(6, 4, generator=torch.Generator().manual_seed(2))
    a, b = head.sample(z, noise), head.sample(z, noise.clone())
    assert torch.equal(a, b)
    assert not torch.allclose(head.sample(z, noise * 0.5), a)
    assert not torch.allclose(head.sample(z.flip(0), noise), a)


def test_training_learns_the_conditional_target():
    head = _head()
    # two conditions, each with its own clean token: the head must learn x0 from z
    z = torch.eye(8)[:2].repeat(32, 1)  # (64, 8)
    x0 = torch.tensor([[1.0, -1.0, 0.5, 0.0], [-1.0, 1.0, 0.0, 0.5]]).repeat(32, 1)
    opt = torch.optim.Adam(head.parameters(), lr=3e-3)
    gen = torch.Generator().manual_seed(0)
    losses = []
    for _ in range(150):
        loss = flow_head_loss(head, x0, z, gen)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert sum(losses[-10:]) < 0.5 * sum(losses[:10])
    noise = torch.randn(2, 4, generator=torch.Generator().manual_seed(3))
    out = head.sample(z[:2], noise, steps=20)
    assert (out - x0[:2]).abs().mean() < 0.35, out
