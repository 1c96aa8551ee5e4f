"""Hand/arm motion for the MotionTrack: body anchor maths, no-model/no-shoulder fallbacks, a tiny stage-1
model filling the optional MotionFrame fields over clips."""
from __future__ import annotations

import math

import numpy as np
import torch

from talkinghead.face.body import BodyKeypoints
from talkinghead.systems.emo2.model import EMO2Stage1Config, EMO2Stage1Net
from talkinghead.motion.body import BodyAnchor, add_body_motion, anchor_of, body_motion, motion_of
from talkinghead.nn.hand_motion import HandConditionConfig, MotionLayout
from talkinghead.types import MotionFrame, MotionTrack


def portrait_body(shoulders: bool = True, hands: bool = False) -> BodyKeypoints:
    body = np.array([[300, 400], [100, 400], [330, 550], [70, 550], [320, 700], [80, 700]] + [[200, 800]] * 6,
                    np.float32)
    vis = np.array([0.99] * 6 + [0.1] * 6, np.float32)
    if not shoulders:
        vis[:2] = 0.2
    h = np.full((2, 21, 3), np.nan, np.float32)
    if hands:
        h[0] = np.c_[np.linspace(300, 340, 21), np.linspace(600, 650, 21), np.zeros(21)]
    return BodyKeypoints(h, np.array([hands, False]), np.array([0.9 if hands else 0.0, 0.0], np.float32), body, vis,
                         (400, 800))


def tiny_model(frames: int = 6, prev: int = 2) -> EMO2Stage1Net:
    torch.manual_seed(0)
    net = EMO2Stage1Net(EMO2Stage1Config(condition=HandConditionConfig(num_styles=2), audio_dim=12, dim=32, depth=1,
                                         heads=2, frames=frames, prev_frames=prev, max_len=16))
    for p in net.parameters():  # untrained but not zero-initialised: the output depends on audio and time
        torch.nn.init.normal_(p, std=0.05)
    return net.eval()


def test_anchor_round_trip_and_offset():
    kp = portrait_body()
    anchor = anchor_of(kp)
    assert anchor.width == 200 and anchor.center == (200, 400) and anchor.roll == 0
    assert np.allclose(anchor.offset(), [0.5, 0.5, 0.5, 0.0])
    assert np.allclose(anchor.to_body(kp.body[:2]), [[0.5, 0], [-0.5, 0]])
    tilted = BodyAnchor((50.0, 60.0), 80.0, math.radians(20), (400, 800))
    pts = np.random.default_rng(0).uniform(0, 400, (5, 21, 3)).astype(np.float32)
    assert np.allclose(tilted.to_image(tilted.to_body(pts)), pts, atol=1e-3)
    # the rotated shoulder line maps onto the body x axis
    right = np.array([50 - 40 * math.cos(math.radians(20)), 60 - 40 * math.sin(math.radians(20))], np.float32)
    assert np.allclose(tilted.to_body(right[None]), [[-0.5, 0.0]], atol=1e-5)


def test_portrait_motion_vector_marks_missing_hands():
    layout = MotionLayout()
    motion, mask = motion_of(portrait_body(hands=True), anchor_of(portrait_body()), layout)
    assert motion.shape == (layout.dim,) and mask.tolist() == [True, False, True]
    hands, _ = layout.unpack(torch.from_numpy(motion))
    assert hands[1].abs().max() == 0 and hands[0].abs().max() > 0


def test_no_model_or_no_shoulders_gives_none():
    audio = torch.randn(10, 2, 6)
    assert body_motion(None, audio, portrait_body()) is None
    assert body_motion(tiny_model(), audio, portrait_body(shoulders=False)) is None
    track = MotionTrack(25.0, [MotionFrame() for _ in range(10)])
    assert add_body_motion(track, None, audio, portrait_body()) is None
    assert track.frames[0].hands is None and track.frames[0].arms is None


def test_model_fills_hands_and_arms_over_several_clips():
    n = 15  # 3 clips of 6 frames, the last one partial
    audio = torch.randn(n, 2, 6, generator=torch.Generator().manual_seed(1))
    track = MotionTrack(25.0, [MotionFrame(jaw=0.1 * i) for i in range(n + 2)])  # 2 frames longer than audio
    model = tiny_model()
    out = add_body_motion(track, model, audio, portrait_body(hands=True), steps=3, seed=4)
    assert len(out) == len(track) and out.fps == track.fps
    assert np.allclose(out.as_array("jaw"), track.as_array("jaw"))  # the rest of the track is untouched
    assert out.frames[0] == track.frames[0]  # hands/arms do not take part in comparisons
    filled = out.frames[:n]
    assert all(f.hands.shape == (2, 21, 3) and f.arms.shape == (6, 2) for f in filled)
    assert out.frames[n].hands is None and out.frames[n + 1].arms is None
    hands = np.stack([f.hands for f in filled])
    assert np.isfinite(hands).all() and not np.allclose(hands[0], hands[7])  # moves from clip to clip
    again = add_body_motion(track, model, audio, portrait_body(hands=True), steps=3, seed=4)
    assert np.array_equal(np.stack([f.hands for f in again.frames[:n]]), hands)  # seeded: reproducible
    other = add_body_motion(track, model, audio, portrait_body(hands=True), steps=3, seed=5)
    assert not np.array_equal(np.stack([f.hands for f in other.frames[:n]]), hands)
