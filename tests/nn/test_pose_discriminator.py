"""EMO2 pose discriminator: heatmap targets from keypoints, a small ResNet that learns them, frozen use."""
from __future__ import annotations

import torch

from talkinghead.nn.pose_discriminator import LIMB_BONES, PoseDiscriminator, PoseDiscriminatorConfig, pose_targets
from talkinghead.systems.emo2.train import heatmap_loss


def _keypoints(n: int, g: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    body = torch.rand(n, 12, 2, generator=g) * 0.7 + 0.15
    mask = torch.ones(n, 12, dtype=torch.bool)
    mask[0, 8:] = False  # legs partly out of frame
    return body, mask


def test_targets_and_weights_follow_visibility():
    body, mask = _keypoints(2, torch.Generator().manual_seed(0))
    maps, weight = pose_targets(body, mask, (8, 8))
    assert maps.shape == (2, 12 + len(LIMB_BONES), 8, 8) and weight.shape == (2, 12 + len(LIMB_BONES))
    assert weight[0, :12].tolist() == mask[0].float().tolist()
    assert maps[0, 8:12].max() == 0 and maps[1].flatten(1).amax(1).min() > 0.1
    limb_weight = dict(zip(LIMB_BONES, weight[0, 12:].tolist()))
    assert limb_weight[(8, 10)] == 0 and limb_weight[(0, 2)] == 1


def test_discriminator_learns_heatmaps_and_frozen_use_spares_its_weights():
    torch.manual_seed(0)
    disc = PoseDiscriminator(PoseDiscriminatorConfig(channels=(16, 16), norm_groups=8))
    g = torch.Generator().manual_seed(1)
    latents = torch.randn(2, 4, 8, 8, generator=g)
    maps, weight = pose_targets(*_keypoints(2, g), (8, 8))
    pred = disc(latents)
    assert pred.shape == maps.shape and pred.min() >= 0 and pred.max() <= 1
    opt = torch.optim.Adam(disc.parameters(), lr=3e-3)
    losses = []
    for _ in range(15):
        loss = heatmap_loss(disc(latents), maps, weight)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert losses[-1] < 0.5 * losses[0], losses
    opt.zero_grad()
    x = latents.clone().requires_grad_(True)
    heatmap_loss(disc.frozen(x), maps, weight).backward()
    assert x.grad.abs().sum() > 0
    assert all(p.grad is None or p.grad.abs().sum() == 0 for p in disc.parameters())
    assert torch.allclose(disc.frozen(latents), disc(latents))
