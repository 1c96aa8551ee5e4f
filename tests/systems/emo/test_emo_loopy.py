"""EMO and Loopy tiny configs: a few optimiser steps on one batch lower the loss; sampling is deterministic."""
from __future__ import annotations

import pytest
import torch
from diffusers import DDIMScheduler

from talkinghead.models.reference_video import TRAIN_SCHEDULER
from talkinghead.systems.emo.model import EMOConfig, EMONet
from talkinghead.models.unet3d import SD15_UNET
from talkinghead.systems.loopy.model import LoopyConfig, LoopyNet
from talkinghead.nn.loopy import AudioToLatentsConfig
from talkinghead.nn.speed import SpeedConfig
from talkinghead.nn.temporal import TemporalConfig
from talkinghead.train.losses import reference_video_loss

TINY_UNET = {**SD15_UNET, "block_out_channels": [32, 32, 32, 32], "layers_per_block": 1, "attention_head_dim": 2,
             "cross_attention_dim": 32, "sample_size": 8}
TIME_DIM = 128  # 4 x block_out_channels[0]
AUDIO_TOKENS, AUDIO_DIM, FRAMES = 2, 16, 4


def _emo() -> EMONet:
    return EMONet(EMOConfig(unet=TINY_UNET, audio_dim=AUDIO_DIM, motion=TemporalConfig(num_attention_heads=2),
                            speed=SpeedConfig(dim=TIME_DIM)))


def _loopy() -> LoopyNet:
    return LoopyNet(LoopyConfig(unet=TINY_UNET, audio_dim=AUDIO_DIM, motion=TemporalConfig(num_attention_heads=2),
                                audio_to_latents=AudioToLatentsConfig(audio_dim=AUDIO_TOKENS * AUDIO_DIM, dim=32,
                                                                      heads=2, num_latents=8, time_embed_dim=TIME_DIM)))


def _batch(kind: str) -> dict:
    g = torch.Generator().manual_seed(0)
    batch = {"ref": torch.randn(1, 3 if kind == "emo" else 1, 4, 8, 8, generator=g),
             "audio": torch.randn(1, FRAMES, AUDIO_TOKENS, AUDIO_DIM, generator=g),
             "target": torch.randn(1, 4, FRAMES, 8, 8, generator=g)}
    if kind == "emo":
        batch["speed"] = torch.rand(1, FRAMES, generator=g)
    else:
        batch["history"] = torch.randn(1, 6, 4, 8, 8, generator=g)
        batch["head_motion"] = torch.rand(1, FRAMES, 1, generator=g)
        batch["expression"] = torch.rand(1, FRAMES, 1, generator=g)
        batch["generator"] = torch.Generator().manual_seed(3)
    return batch


@pytest.mark.parametrize("kind, build", [("emo", _emo), ("loopy", _loopy)])
def test_training_lowers_loss_and_sampling_is_deterministic(kind, build):
    torch.manual_seed(0)
    net = build()
    batch = _batch(kind)
    scheduler = DDIMScheduler(**TRAIN_SCHEDULER)
    opt = torch.optim.AdamW(net.parameters(), lr=2e-3)
    losses = []
    for _ in range(4):
        if kind == "loopy":
            batch["generator"] = torch.Generator().manual_seed(3)
        loss = reference_video_loss(net, batch, scheduler, torch.Generator().manual_seed(1))  # same noise and t: an overfit batch
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert losses[-1] < 0.8 * losses[0], losses
    net.eval()
    a = net.sample(batch, FRAMES, 2, torch.Generator().manual_seed(5))
    b = net.sample(batch, FRAMES, 2, torch.Generator().manual_seed(5))
    assert a.shape == (1, 4, FRAMES, 8, 8) and torch.equal(a, b)


def _randomized(net: torch.nn.Module) -> torch.nn.Module:
    """Random weights in the zero-initialised layers (reference attention outputs, temporal and audio modules),
    so every path, the reference features included, changes the output."""
    g = torch.Generator().manual_seed(7)
    with torch.no_grad():
        for p in net.parameters():
            if not p.any():
                p.copy_(0.05 * torch.randn(p.shape, generator=g))
    return net.eval()


@pytest.mark.parametrize("kind, build", [("emo", _emo), ("loopy", _loopy)])
def test_the_reference_net_runs_once_per_clip_with_the_same_latents(kind, build):
    """Sampling records the reference bank once and reuses it at every step: the same latents as running the
    reference net at each step, as a training forward does."""
    from talkinghead.sampling import denoise

    torch.manual_seed(0)
    net = _randomized(build())
    batch = _batch(kind)
    if kind == "emo":  # the face locator's features (step-independent too) join each step's UNet input
        batch["face_region"] = torch.rand(1, 1, FRAMES, 64, 64, generator=torch.Generator().manual_seed(2))
    calls = []
    net.reference_unet.register_forward_hook(lambda *_: calls.append(1))

    def per_step(seed: int) -> torch.Tensor:  # the reference net at every step, as training runs it
        scheduler = DDIMScheduler(**TRAIN_SCHEDULER)
        scheduler.set_timesteps(3)
        if kind == "loopy":
            batch["generator"] = torch.Generator().manual_seed(3)
        x = torch.randn((1, 4, FRAMES, 8, 8), generator=torch.Generator().manual_seed(seed))
        return denoise(lambda z, t: net.predict(z, t, batch), scheduler, x)

    def once(seed: int, reference: dict | None = None) -> torch.Tensor:
        if kind == "loopy":
            batch["generator"] = torch.Generator().manual_seed(3)
        return net.sample({**batch, **(reference or {})}, FRAMES, 3, torch.Generator().manual_seed(seed))

    with torch.no_grad():
        expected = per_step(5)
        assert len(calls) == 3
        calls.clear()
        got = once(5)
        assert len(calls) == 1
        assert torch.equal(got, expected)
        other = {"ref": batch["ref"].flip(-1)} if kind == "emo" else {"history": batch["history"].flip(-1)}
        assert not torch.allclose(once(5, other), got)  # the recorded features do steer the result
