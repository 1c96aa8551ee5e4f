"""SkyReels-A1 landmark guidance: MotionTrack-driven 3D landmarks, their rendering, and the causal guider."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from diffusers import AutoencoderKLCogVideoX

from talkinghead.face import prepare
from talkinghead.face import regions as R
from talkinghead.nn.landmark_guider import (CausalLandmarkGuider, FrameGroupNorm, LandmarkGuiderConfig,
                                            guidance_tensor, motion_landmarks, render_landmarks)
from talkinghead.types import MotionFrame, MotionTrack

TINY_VAE = dict(block_out_channels=(8, 16, 16), down_block_types=("CogVideoXDownBlock3D",) * 3,
                up_block_types=("CogVideoXUpBlock3D",) * 3, latent_channels=4, layers_per_block=1,
                norm_num_groups=4, scaling_factor=0.7)


@pytest.fixture(scope="module")
def face(grace):
    return prepare(grace, 256)[1]


def test_motion_track_drives_the_3d_landmarks(face):
    track = MotionTrack(25.0, [MotionFrame(), MotionFrame(jaw=0.8), MotionFrame(yaw=20.0)])
    pts = motion_landmarks(face, track)
    assert pts.shape == (3, 478, 3) and pts.dtype == np.float32
    np.testing.assert_allclose(pts[0, :, :2], face.landmarks[:, :2], atol=3.0)  # neutral ~ the portrait
    gap = lambda p: p[R.LIP_MID_LOWER_INNER, 1] - p[R.LIP_MID_UPPER_INNER, 1]  # noqa: E731
    assert gap(pts[1]) > gap(pts[0]) + 5.0  # the jaw opens the mouth (px)
    assert np.abs(pts[2, :, 2] - pts[0, :, 2]).max() > 5.0  # a head turn changes depth: 3D, not 2D
    assert np.abs(pts[1, R.FOREHEAD] - pts[0, R.FOREHEAD]).max() < 1.0  # the jaw leaves the forehead


def test_rendered_guidance_frames_show_the_expression(face):
    pts = motion_landmarks(face, [MotionFrame(), MotionFrame(jaw=0.8)])
    frames = render_landmarks(pts, (64, 48), face.box)
    assert frames.shape == (2, 48, 64, 3) and frames.dtype == np.uint8
    assert (frames > 0).mean() > 0.02  # contours are drawn
    diff = np.abs(frames[1].astype(int) - frames[0].astype(int)).sum(-1)
    rows = np.nonzero(diff.any(1))[0]
    assert rows.min() > 48 // 2  # only the lower face (mouth, chin) changes
    np.testing.assert_array_equal(frames, render_landmarks(pts, (64, 48), face.box))  # deterministic
    x = guidance_tensor(frames)
    assert x.shape == (1, 3, 2, 48, 64) and -1.0 <= x.min() and x.max() <= 1.0


def _guider(seed: int = 0) -> CausalLandmarkGuider:
    torch.manual_seed(seed)
    return CausalLandmarkGuider(LandmarkGuiderConfig.from_vae_config(TINY_VAE)).eval()


def test_guider_initialises_from_the_vae_encoder_key_for_key():
    torch.manual_seed(1)
    vae = AutoencoderKLCogVideoX(**TINY_VAE)
    guider = _guider(2)
    guider.load_vae_encoder(vae.state_dict())
    for k, v in guider.encoder.state_dict().items():
        assert torch.equal(v, vae.encoder.state_dict()[k])
    assert any(isinstance(m, FrameGroupNorm) for m in guider.modules())
    assert not any(type(m) is torch.nn.GroupNorm for m in guider.modules())
    # on a single frame per-frame statistics equal the clip statistics: the guider reproduces the VAE mean
    x = torch.rand(1, 3, 1, 16, 16) * 2 - 1
    with torch.no_grad():
        want = vae.encode(x).latent_dist.mean * TINY_VAE["scaling_factor"]
        got = guider(x)
    assert got.shape == (1, 1, 4, 4, 4)
    torch.testing.assert_close(got, want.transpose(1, 2), atol=1e-5, rtol=1e-4)
    # the stock VAE encoder (clip-wide GroupNorm) is not causal: the swap matters
    x = torch.rand(1, 3, 9, 16, 16) * 2 - 1
    y = x.clone()
    y[:, :, 8] = 0.0
    with torch.no_grad():
        va, vb = vae.encode(x).latent_dist.mean, vae.encode(y).latent_dist.mean
        ga, gb = guider(x), guider(y)
    assert not torch.allclose(va[:, :, 0], vb[:, :, 0])
    assert torch.equal(ga[:, 0], gb[:, 0])


@pytest.mark.parametrize("t", [0, 3, 4, 6])
def test_guider_is_causal_no_future_leakage(t):
    """Perturbing guidance frame t+1 leaves every latent frame that ends at or before t unchanged."""
    guider = _guider()
    g = torch.Generator().manual_seed(t)
    x = torch.rand(1, 3, 9, 16, 16, generator=g) * 2 - 1
    y = x.clone()
    y[:, :, t + 1] = torch.rand(3, 16, 16, generator=g) * 2 - 1
    with torch.no_grad():
        a, b = guider(x), guider(y)
    assert a.shape == (1, 3, 4, 4, 4)
    for j in range(a.shape[1]):
        if guider.last_input_frame(j) <= t:
            torch.testing.assert_close(a[:, j], b[:, j], atol=0, rtol=0)
        else:
            assert not torch.allclose(a[:, j], b[:, j])  # the perturbation does reach the future
