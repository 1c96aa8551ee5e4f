"""EMO2 tiny configs: both stages learn an overfit batch (stage 2 incl. the pose discriminator), sample
deterministically, round-trip through safetensors; the hand mask removes frames; stage configs load."""
from __future__ import annotations


import pytest
import torch
from diffusers import DDIMScheduler

from talkinghead.errors import InputError
from talkinghead.models.reference_video import TRAIN_SCHEDULER
from talkinghead.systems.emo2.model import EMO2Stage1Config, EMO2Stage1Net, EMO2Stage2Config, EMO2Stage2Net
from talkinghead.train.stages import load_stage_config
from talkinghead.train.trainer import TrainConfig
from talkinghead.models.unet3d import SD15_UNET
from talkinghead.nn.hand_motion import HandConditionConfig
from talkinghead.nn.pose_discriminator import PoseDiscriminatorConfig
from talkinghead.nn.temporal import TemporalConfig
from talkinghead.systems.emo2.train import hand_motion_loss, video_losses
from tests.support import CONFIGS


TINY_UNET = {**SD15_UNET, "block_out_channels": [32, 32, 32, 32], "layers_per_block": 1, "attention_head_dim": 2,
             "cross_attention_dim": 32, "sample_size": 8}
FRAMES, PREV = 8, 2


def tiny_stage1() -> EMO2Stage1Net:
    return EMO2Stage1Net(EMO2Stage1Config(condition=HandConditionConfig(num_styles=2, clip_dim=8), audio_dim=12,
                                          dim=32, depth=2, heads=2, frames=FRAMES, prev_frames=PREV, max_len=16,
                                          audio_dropout=0.0))


def tiny_stage2() -> EMO2Stage2Net:
    return EMO2Stage2Net(EMO2Stage2Config(unet=TINY_UNET, audio_dim=16, motion=TemporalConfig(num_attention_heads=2),
                                          guider_channels=(8, 16),
                                          discriminator=PoseDiscriminatorConfig(channels=(16,), norm_groups=8),
                                          pose_loss_weight=1.0))


def stage1_batch(net: EMO2Stage1Net) -> dict:
    g = torch.Generator().manual_seed(0)
    d, b = net.layout.dim, 2
    mask = torch.ones(b, FRAMES, 3, dtype=torch.bool)
    mask[0, 3:6, 1] = False  # right hand not detected in three frames
    return dict(motion=0.3 * torch.randn(b, FRAMES, d, generator=g), mask=mask,
                audio=torch.randn(b, FRAMES, 2, 6, generator=g), prev=torch.randn(b, PREV, d, generator=g),
                prev_mask=torch.ones(b, PREV, 3), style=torch.tensor([0, 1]), offset=torch.randn(b, 4, generator=g),
                clip=torch.randn(b, 8, generator=g))


def stage2_batch(net: EMO2Stage2Net) -> dict:
    g = torch.Generator().manual_seed(0)
    f = 4
    hands = torch.rand(1, f, 2, 21, 3, generator=g) * 0.4 + 0.3
    body = torch.rand(1, f, 12, 2, generator=g) * 0.8 + 0.1
    hand_mask, body_mask = torch.ones(1, f, 2, dtype=torch.bool), torch.ones(1, f, 12, dtype=torch.bool)
    return {"ref": torch.randn(1, 3, 4, 8, 8, generator=g), "audio": torch.randn(1, f, 2, 16, generator=g),
            "target": torch.randn(1, 4, f, 8, 8, generator=g),
            "pose_maps": net.guidance_maps(hands, hand_mask, body, body_mask, (16, 16)),
            "hand_confidence": torch.rand(1, f, 2, generator=g), "body": body, "body_mask": body_mask}


def _train(net, batch, steps: int, lr: float, losses_of) -> list[dict]:
    opt = torch.optim.AdamW(net.parameters(), lr=lr)
    history = []
    for _ in range(steps):
        losses = losses_of(batch)  # same noise and t every step: an overfit batch
        opt.zero_grad()
        losses["total"].backward()
        opt.step()
        history.append({k: v.item() for k, v in losses.items()})
    return history


def test_stage1_learns_samples_deterministically_and_round_trips(tmp_path):
    torch.manual_seed(0)
    net = tiny_stage1()
    batch = stage1_batch(net)
    scheduler = net.scheduler()
    hist = _train(net, batch, 20, 3e-3,
                  lambda b: {"total": hand_motion_loss(net, b, scheduler, torch.Generator().manual_seed(1))})
    assert hist[-1]["total"] < 0.3 * hist[0]["total"], hist
    net.eval()
    a = net.sample(batch, FRAMES, 3, torch.Generator().manual_seed(2), guidance_scale=2.0)
    b = net.sample(batch, FRAMES, 3, torch.Generator().manual_seed(2), guidance_scale=2.0)
    assert a.shape == (2, FRAMES, net.layout.dim) and torch.equal(a, b)
    net.save_pretrained(tmp_path / "stage1")
    assert {p.name for p in (tmp_path / "stage1").iterdir()} == {"config.json", "diffusion_pytorch_model.safetensors"}
    loaded = EMO2Stage1Net.from_pretrained(tmp_path / "stage1")
    assert loaded.config == net.config
    assert torch.equal(loaded.sample(batch, FRAMES, 3, torch.Generator().manual_seed(2), guidance_scale=2.0), a)


def test_stage1_loss_ignores_masked_hand_frames():
    """The model's own loss: rewriting the undetected right hand's target frames changes nothing."""
    torch.manual_seed(0)
    net = tiny_stage1()
    batch = stage1_batch(net)
    for p in net.parameters():  # make the output depend on the input (zero-initialised heads otherwise)
        torch.nn.init.normal_(p, std=0.05)
    scheduler = net.scheduler()
    # speed/amplitude are measured from the target: fix them so only the loss sees the rewritten frames
    cond = net.measured_condition(batch["motion"], batch["mask"])
    base = hand_motion_loss(net, {**batch, **cond}, scheduler, torch.Generator().manual_seed(3))
    hands, body = net.layout.unpack(batch["motion"].clone())
    hands[0, 3:6, 1] = 50.0
    moved = hand_motion_loss(net, {**batch, **cond, "motion": net.layout.pack(hands, body)}, scheduler,
                     torch.Generator().manual_seed(3))
    assert torch.allclose(moved, base)
    hands[0, 3:6, 0] = 50.0  # the left hand was detected: now the loss sees it
    seen = hand_motion_loss(net, {**batch, **cond, "motion": net.layout.pack(hands, body)}, scheduler,
                    torch.Generator().manual_seed(3))
    assert seen > 10 * base


def test_stage2_learns_with_pose_discriminator_and_round_trips(tmp_path):
    torch.manual_seed(0)
    net = tiny_stage2()
    batch = stage2_batch(net)
    scheduler = DDIMScheduler(**TRAIN_SCHEDULER)
    hist = _train(net, batch, 5, 2e-3, lambda b: video_losses(net, b, scheduler, torch.Generator().manual_seed(1)))
    for key in ("total", "diffusion", "discriminator"):
        assert hist[-1][key] < 0.8 * hist[0][key], (key, hist)
    assert hist[-1]["pose"] < hist[0]["pose"]
    net.eval()
    a = net.sample(batch, 4, 2, torch.Generator().manual_seed(5))
    assert a.shape == (1, 4, 4, 8, 8) and torch.equal(a, net.sample(batch, 4, 2, torch.Generator().manual_seed(5)))
    net.save_pretrained(tmp_path / "stage2")
    loaded = EMO2Stage2Net.from_pretrained(tmp_path / "stage2")
    assert loaded.config == net.config
    assert torch.equal(loaded.sample(batch, 4, 2, torch.Generator().manual_seed(5)), a)


def test_stage2_pose_loss_trains_the_denoiser_not_the_discriminator():
    torch.manual_seed(0)
    net = tiny_stage2()
    batch = stage2_batch(net)
    losses = video_losses(net, batch, DDIMScheduler(**TRAIN_SCHEDULER), torch.Generator().manual_seed(1))
    losses["pose"].backward()
    assert all(p.grad is None or p.grad.abs().sum() == 0 for p in net.pose_discriminator.parameters())
    assert net.denoising_unet.conv_out.weight.grad.abs().sum() > 0
    # the guidance maps steer the denoiser: different hands, different prediction (after the zero-init guider moves)
    torch.nn.init.normal_(net.pose_guider.conv_out.weight, std=0.1)
    t = torch.tensor([500])
    noisy = torch.randn(1, 4, 4, 8, 8, generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        p1 = net.predict(noisy, t, batch)
        p2 = net.predict(noisy, t, {**batch, "pose_maps": batch["pose_maps"].flip(-1)})
    assert not torch.allclose(p1, p2)


def test_stage_configs_load_from_yaml():
    s1 = load_stage_config(CONFIGS / "emo2_stage1.yaml", "emo2")
    s2 = load_stage_config(CONFIGS / "emo2_stage2.yaml", "emo2")
    assert (s1.stage, s2.stage) == ("1", "2")
    m1 = EMO2Stage1Config.from_dict({**s1.system.model, "frames": s1.clip_frames,
                                     "prev_frames": s1.system.options["prev_frames"]})
    assert (m1.frames, m1.prev_frames) == (50, 10) and s1.system.options["body_weight"] == 0.1
    assert m1.prev_frames + m1.frames <= m1.max_len
    m2 = EMO2Stage2Config.from_dict(s2.system.model)
    assert m2.guider_channels == (16, 32, 96, 256) and m2.discriminator.channels == (128, 256)
    assert EMO2Stage2Config.from_dict(m2.to_dict()) == m2 and EMO2Stage1Config.from_dict(m1.to_dict()) == m1
    with pytest.raises(InputError, match="unknown emo2 option"):
        TrainConfig.from_dict({"stage": "1", "dataset": "d",
                               "system": {"name": "emo2", "options": {"prev": 1}}}).validate()
    with pytest.raises(InputError, match="stages 1"):
        TrainConfig.from_dict({"stage": 3, "dataset": "d", "system": "emo2"}).validate()
    with pytest.raises(InputError, match="no dataset"):
        TrainConfig.from_dict({"stage": "2", "system": "emo2"}).validate()
