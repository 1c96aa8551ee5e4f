"""Hallo4's temporal motion modulation: keypoint heatmaps, the skeleton encoder, token folding shapes, the
identity start, a hand-computed single-key case and locality to each latent frame's own video frames."""
from __future__ import annotations

import math

import torch

from talkinghead.nn.dit import DiTConditions
from talkinghead.nn.temporal_modulation import SkeletonMotionEncoder, TemporalMotionModulation, keypoint_heatmaps


def _randomize(module: torch.nn.Module, seed: int = 0) -> None:
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in module.parameters():
            p.copy_(torch.randn(p.shape, generator=g) * 0.2)


def test_heatmaps_peak_at_the_keypoint_and_skip_missing_points():
    kp = torch.tensor([[[0.0, 0.0], [1.0, 0.5], [float("nan"), 0.2]]])  # (1, K=3, 2)
    maps = keypoint_heatmaps(kp, (9, 17), sigma=1.0)
    assert maps.shape == (1, 3, 9, 17)
    assert maps[0, 0, 0, 0] == 1.0 and maps[0, 0].argmax() == 0
    y, x = divmod(maps[0, 1].argmax().item(), 17)
    assert (y, x) == (4, 16)
    assert abs(maps[0, 1, 4, 15].item() - math.exp(-0.5)) < 1e-6  # one pixel = one sigma away
    assert maps[0, 2].abs().sum() == 0


def test_skeleton_encoder_gives_tokens_per_frame():
    enc = SkeletonMotionEncoder(keypoints=5, channels=(8, 12), heatmap_size=16, grid=2)
    out = enc(torch.rand(2, 7, 5, 2))
    assert out.shape == (2, 7, 4, 12) and enc.out_dim == 12


def test_modulation_folds_frames_into_tokens_and_starts_as_identity():
    mod = TemporalMotionModulation(dim=32, audio_dim=6, motion_dim=10, heads=2, head_dim=16)
    audio, motion = torch.randn(2, 9, 3, 6), torch.randn(2, 9, 4, 10)  # T = 9 frames -> T' = 3, ρ = 4
    tokens = mod.motion_tokens(audio, motion, 3)
    assert tokens.shape == (2, 3, 4 * 3 + 4 * 4, 32)
    assert mod.motion_tokens(None, None, 3) is None
    x = torch.randn(2, 3 * 5, 32)
    cond = DiTConditions(3, {"audio": audio, "motion": motion})
    torch.testing.assert_close(mod(x, cond), x)  # zero-initialised output
    torch.testing.assert_close(mod(x, None), x)
    _randomize(mod)
    y = mod(x, cond)
    assert y.shape == x.shape and (y - x).abs().max() > 1e-3


def test_single_key_hand_case():
    """ρ = 1 and both streams projecting to the same token c: every softmax weight lands on copies of c,
    so y = x + W_o (W_v c + b_v) + b_o for every video token, whatever the query."""
    mod = TemporalMotionModulation(dim=8, audio_dim=4, motion_dim=4, heads=2, head_dim=4)
    _randomize(mod, seed=3)
    with torch.no_grad():
        mod.motion_in.weight.copy_(mod.audio_in.weight)
        mod.motion_in.bias.copy_(mod.audio_in.bias)
    feats = torch.randn(1, 2, 1, 4)  # T = T' = 2 frames, one token each
    x = torch.randn(1, 2 * 3, 8)
    y = mod(x, DiTConditions(2, {"audio": feats, "motion": feats}))
    attn = mod.attn
    for f in range(2):
        c = feats[0, f, 0] @ mod.audio_in.weight.T + mod.audio_in.bias
        v = c @ attn.to_v.weight.T + attn.to_v.bias
        expected = x[0, 3 * f:3 * f + 3] + v @ attn.to_out[0].weight.T + attn.to_out[0].bias
        torch.testing.assert_close(y[0, 3 * f:3 * f + 3], expected, atol=1e-5, rtol=1e-5)


def test_latent_frame_reads_only_its_own_video_frames():
    mod = TemporalMotionModulation(dim=16, audio_dim=4, motion_dim=4, heads=2, head_dim=8)
    _randomize(mod, seed=1)
    audio, motion = torch.randn(1, 5, 2, 4), torch.randn(1, 5, 2, 4)  # 5 frames -> 2 latent frames
    x = torch.randn(1, 2 * 4, 16)
    base = mod(x, DiTConditions(2, {"audio": audio, "motion": motion}))
    for frame, changed_latent in ((0, 0), (3, 1)):
        a = audio.clone()
        a[:, frame] += 1.0
        moved = (mod(x, DiTConditions(2, {"audio": a, "motion": motion})) - base).abs().view(2, 4, 16).amax(dim=(1, 2))
        assert moved[changed_latent] > 1e-4 and moved[1 - changed_latent] == 0
