"""EMO2 stage-1 pieces: motion layout, the mask of missing hands in the loss, hand speed/amplitude, conditions."""
from __future__ import annotations

import torch

from talkinghead.nn.hand_motion import (AdaLNBlock, HandConditionConfig, HandConditionEmbedding, MotionLayout,
                                        hand_amplitude, hand_speed)
from talkinghead.systems.emo2.train import masked_motion_loss


def test_layout_pack_unpack_round_trip():
    layout = MotionLayout()
    g = torch.Generator().manual_seed(0)
    hands, body = torch.randn(2, 5, 2, 21, 3, generator=g), torch.randn(2, 5, 6, 2, generator=g)
    motion = layout.pack(hands, body)
    assert motion.shape == (2, 5, layout.dim) and layout.dim == 2 * 63 + 12
    h, b = layout.unpack(motion)
    assert torch.equal(h, hands) and torch.equal(b, body)


def test_mask_removes_missing_hand_frames_from_the_loss():
    """A left hand missing in frames 2-3: whatever the target says there changes neither loss nor gradient."""
    layout = MotionLayout()
    g = torch.Generator().manual_seed(1)
    pred = torch.randn(1, 6, layout.dim, generator=g, requires_grad=True)
    hands, body = torch.randn(1, 6, 2, 21, 3, generator=g), torch.randn(1, 6, 6, 2, generator=g)
    mask = torch.ones(1, 6, 3, dtype=torch.bool)
    mask[0, 2:4, 0] = False
    loss = masked_motion_loss(pred, layout.pack(hands, body), mask, layout)
    garbage = hands.clone()
    garbage[0, 2:4, 0] = 1e3  # a failed detection: wild values in the missing hand
    assert torch.allclose(masked_motion_loss(pred, layout.pack(garbage, body), mask, layout), loss)
    loss.backward()
    grad_hands, grad_body = layout.unpack(pred.grad)
    assert grad_hands[0, 2:4, 0].abs().max() == 0  # masked: no gradient at all
    assert grad_hands[0, 2:4, 1].abs().min() > 0 and grad_hands[0, :2, 0].abs().min() > 0
    # without the mask the same garbage dominates the loss
    assert masked_motion_loss(pred, layout.pack(garbage, body), torch.ones_like(mask), layout) > 100 * loss


def test_body_keypoints_are_weakly_weighted():
    layout = MotionLayout(body_weight=0.1)
    target = torch.zeros(1, 2, layout.dim)
    hands_err, body_err = target.clone(), target.clone()
    hands_err[..., :10] = 1.0
    body_err[..., -10:] = 1.0
    mask = torch.ones(1, 2, 3)
    assert torch.isclose(masked_motion_loss(body_err, target, mask, layout),
                         0.1 * masked_motion_loss(hands_err, target, mask, layout))


def test_hand_speed_and_amplitude():
    f = 10
    t = torch.arange(f, dtype=torch.float32)
    hands = torch.zeros(1, f, 2, 21, 3)
    hands[:, :, 0, :, 0] = 0.05 * t[:, None]  # left hand drifts right at 0.05 per frame
    hands[:, :, 1, :, 1] = torch.where(t % 2 == 0, 0.0, 0.2)[:, None]  # right hand jumps 0.2 every frame
    both = torch.ones(1, f, 2, dtype=torch.bool)
    assert torch.allclose(hand_speed(hands, both), torch.full((1, f), (0.05 + 0.2) / 2))
    left_only = both.clone()
    left_only[..., 1] = False
    assert torch.allclose(hand_speed(hands, left_only), torch.full((1, f), 0.05))
    assert torch.equal(hand_speed(hands, torch.zeros_like(both)), torch.zeros(1, f))
    still = torch.zeros(1, f, 2, 21, 3)
    assert hand_amplitude(still, both).item() == 0
    amp = hand_amplitude(hands, left_only).item()
    assert abs(amp - torch.var(0.05 * t).item()) < 1e-6  # unbiased variance of the centroid's x


def test_condition_embedding_adds_only_what_is_given():
    torch.manual_seed(0)
    emb = HandConditionEmbedding(HandConditionConfig(num_styles=3, clip_dim=5), dim=16)
    temb = torch.randn(2, 16)
    plain = emb(temb, 4)
    assert plain.shape == (2, 4, 16) and torch.equal(plain[:, 0], plain[:, 3])  # no per-frame input: same
    speed = torch.tensor([[0.0, 0.01, 0.05, 0.2]] * 2)
    per_frame = emb(temb, 4, speed=speed)
    assert not torch.allclose(per_frame[:, 0], per_frame[:, 3])
    styled = emb(temb, 4, style=torch.tensor([0, 1]))
    assert not torch.allclose(styled, plain)
    full = emb(temb, 4, style=torch.tensor([0, 1]), offset=torch.randn(2, 4), amplitude=torch.rand(2),
               clip=torch.randn(2, 5), speed=speed)
    assert full.shape == (2, 4, 16) and torch.isfinite(full).all()


def test_adaln_block_starts_as_identity():
    torch.manual_seed(0)
    block = AdaLNBlock(16, heads=2, dim_head=8)
    x, cond = torch.randn(2, 5, 16), torch.randn(2, 5, 16)
    assert torch.equal(block(x, cond), x)
