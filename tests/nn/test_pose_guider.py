"""EMO2 stage-2 guidance: bone drawing, keypoint heatmaps, the temporal median filter, confidence, the guider."""
from __future__ import annotations

import torch

from talkinghead.face.body import HAND_BONES
from talkinghead.nn.pose_guider import (GUIDE_CHANNELS, HandConfidenceEmbedding, PoseGuider, draw_bones,
                                        hand_confidence, keypoint_heatmaps, median_filter, render_guidance)


def test_hand_topology_is_mediapipes():
    import mediapipe as mp

    assert {tuple(sorted(b)) for b in HAND_BONES} == {tuple(sorted(c)) for c in mp.solutions.hands.HAND_CONNECTIONS}
    assert len(HAND_BONES) == len(mp.solutions.hands.HAND_CONNECTIONS)


def test_median_filter_removes_a_wrist_spike():
    """A wrist track moving smoothly with a one-frame detector glitch: the large-kernel median drops it."""
    f = 30
    track = torch.zeros(f, 21, 2)
    track[..., 0] = torch.linspace(0.3, 0.6, f)[:, None]  # steady drift right
    track[..., 1] = 0.5
    spiky = track.clone()
    spiky[12, 0] = torch.tensor([0.95, 0.05])  # the wrist jumps across the image for one frame
    out = median_filter(spiky, kernel=9)
    assert out.shape == spiky.shape
    assert (out[12, 0] - track[12, 0]).abs().max() < 0.015  # spike gone: at most one ramp step off
    assert torch.allclose(out[4:-4, 1:], track[4:-4, 1:], atol=1e-6)  # a ramp passes unchanged away from the edges
    assert (median_filter(spiky, kernel=1)[12, 0] - track[12, 0]).abs().max() > 0.4  # kernel 1: no filtering


def test_median_filter_ignores_masked_frames():
    track = torch.full((11, 1, 2), 0.5)
    track[3:6] = 9.0  # hand missing in frames 3-5: garbage values there
    mask = torch.ones(11, 1, dtype=torch.bool)
    mask[3:6] = False
    out = median_filter(track, kernel=7, mask=mask)
    assert torch.allclose(out, torch.full_like(out, 0.5))
    assert torch.allclose(median_filter(track, kernel=3)[4], torch.full((1, 2), 9.0))  # unmasked: garbage wins


def test_draw_bones_draws_only_visible_bones():
    pts = torch.tensor([[[0.2, 0.5], [0.8, 0.5], [0.5, 0.9]]])  # (1, 3, 2)
    vis = torch.tensor([[True, True, False]])
    img = draw_bones(pts, vis, ((0, 1), (1, 2)), (32, 32), sigma=0.03)  # (1, 32, 32)
    assert img.shape == (1, 32, 32)
    assert img[0, 15:17, 8:24].min() > 0.5  # on the visible horizontal bone (pixel centres 0.5 px off)
    assert img[0, 26:, 10:20].max() < 1e-3  # the bone to the invisible point is not drawn
    assert img[0, :6].max() < 1e-3


def test_keypoint_heatmaps_peak_at_the_point():
    pts = torch.tensor([[[0.25, 0.75], [0.5, 0.5]]])
    maps = keypoint_heatmaps(pts, torch.tensor([[True, False]]), (16, 16))
    assert maps.shape == (1, 2, 16, 16)
    peak = maps[0, 0].flatten().argmax().item()
    assert (peak // 16, peak % 16) in {(11, 3), (11, 4), (12, 3), (12, 4)}  # y=0.75, x=0.25 of 16 px
    assert maps[0, 1].max() == 0


def test_render_guidance_and_confidence():
    g = torch.Generator().manual_seed(0)
    hands = torch.rand(3, 2, 21, 3, generator=g) * 0.5 + 0.25
    hands[:, 1, :, 0] += 2.0  # the right hand is outside the image
    hand_mask = torch.tensor([[True, True], [False, True], [True, True]])
    body = torch.rand(3, 12, 2, generator=g) * 0.8 + 0.1
    maps = render_guidance(hands, hand_mask, body, torch.ones(3, 12, dtype=torch.bool), (24, 24))
    assert maps.shape == (GUIDE_CHANNELS, 3, 24, 24)
    assert maps[0, 1].max() == 0 and maps[0, 0].max() > 0.5  # left hand missing in frame 1
    assert maps[1].max() < 1e-3  # right hand outside the image draws nothing inside it
    assert maps[2].max() > 0.5 and maps[3].max() > 0.5  # arms and legs
    conf = hand_confidence(hands, hand_mask)
    assert torch.allclose(conf[:, 0], torch.tensor([1.0, 0.0, 1.0])) and conf[:, 1].max() == 0


def test_confidence_embedding_and_guider_shapes():
    torch.manual_seed(0)
    emb = HandConfidenceEmbedding(32)
    assert torch.equal(emb(torch.rand(2, 4, 2)), torch.zeros(2, 4, 32))  # zero-initialised: a no-op at first
    guider = PoseGuider(16, block_out_channels=(8, 8, 16, 16))
    out = guider(torch.rand(1, GUIDE_CHANNELS, 3, 64, 64))
    assert out.shape == (1, 16, 3, 8, 8)


def test_large_guidance_is_drawn_small_and_upsampled_faithfully():
    g = torch.Generator().manual_seed(3)
    hands = torch.rand(1, 2, 21, 3, generator=g) * 0.5 + 0.25
    body = torch.rand(1, 12, 2, generator=g) * 0.8 + 0.1
    maps = render_guidance(hands, torch.ones(1, 2, dtype=torch.bool), body, torch.ones(1, 12, dtype=torch.bool),
                           (256, 256))
    exact = draw_bones(hands[:, 0, :, :2], torch.ones(1, 21, dtype=torch.bool), HAND_BONES, (256, 256))
    assert maps.shape == (GUIDE_CHANNELS, 1, 256, 256)
    assert (maps[0] - exact).abs().mean() < 0.01 and (maps[0] - exact).abs().max() < 0.3
