"""EMO2 pipeline: clear errors for missing local weights; a tiny release folder runs end to end, clip by clip."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from diffusers import AutoencoderKL

from talkinghead.errors import InputError
from talkinghead.face.body import BodyKeypoints
from talkinghead.systems.emo2.model import EMO2Stage1Config, EMO2Stage1Net, EMO2Stage2Config, EMO2Stage2Net
from talkinghead.models.unet3d import SD15_UNET
from talkinghead.nn.hand_motion import HandConditionConfig
from talkinghead.nn.pose_discriminator import PoseDiscriminatorConfig
from talkinghead.nn.temporal import TemporalConfig
from talkinghead.systems.emo2.pipeline import RELEASE_FILES, EMO2Pipeline, EMO2SamplingConfig, missing_files


TINY_UNET = {**SD15_UNET, "block_out_channels": [32, 32, 32, 32], "layers_per_block": 1, "attention_head_dim": 2,
             "cross_attention_dim": 32, "sample_size": 8}
SIDE = 8  # px: the tiny VAE does not downsample, and the tiny UNet wants 8x8 latents


def _release(folder) -> None:
    torch.manual_seed(0)
    s1 = EMO2Stage1Net(EMO2Stage1Config(condition=HandConditionConfig(num_styles=2), audio_dim=32, dim=32, depth=1,
                                        heads=2, frames=4, prev_frames=2, max_len=8))
    s2 = EMO2Stage2Net(EMO2Stage2Config(unet=TINY_UNET, audio_dim=16, motion=TemporalConfig(num_attention_heads=2),
                                        guider_channels=(8, 16),
                                        discriminator=PoseDiscriminatorConfig(channels=(8,), norm_groups=8)))
    for net in (s1, s2.pose_guider, s2.hand_confidence):  # untrained but live: guidance reaches the output
        for p in net.parameters():
            torch.nn.init.normal_(p, std=0.05)
    s1.save_pretrained(folder / "stage1")
    s2.save_pretrained(folder / "stage2")
    vae = AutoencoderKL(block_out_channels=(8,), down_block_types=("DownEncoderBlock2D",),
                        up_block_types=("UpDecoderBlock2D",), latent_channels=4, norm_num_groups=8, layers_per_block=1)
    vae.save_pretrained(folder / "sd-vae-ft-mse")


def _body(shoulders: bool = True) -> BodyKeypoints:
    body = np.array([[6, 4], [2, 4], [6.5, 5.5], [1.5, 5.5], [6.4, 7], [1.6, 7]] + [[4, 7.9]] * 6, np.float32)
    vis = np.array([0.99 if shoulders else 0.1] * 6 + [0.0] * 6, np.float32)
    return BodyKeypoints(np.full((2, 21, 3), np.nan, np.float32), np.zeros(2, bool), np.zeros(2, np.float32), body,
                         vis, (SIDE, SIDE))


def test_missing_weights_are_listed(tmp_path):
    with pytest.raises(InputError, match="does not exist"):
        EMO2Pipeline.from_pretrained(tmp_path / "nowhere")
    with pytest.raises(InputError) as err:
        EMO2Pipeline.from_pretrained(tmp_path)
    assert all(label in str(err.value) for label in RELEASE_FILES) and "how to fix" in str(err.value)
    _release(tmp_path)
    (tmp_path / "stage2" / "diffusion_pytorch_model.safetensors").unlink()
    assert missing_files(tmp_path) == ["stage-2 weights: stage2/diffusion_pytorch_model.safetensors"]
    with pytest.raises(InputError, match="stage2/diffusion_pytorch_model.safetensors") as err:
        EMO2Pipeline.from_pretrained(tmp_path)
    assert "stage-1" not in err.value.message  # only what is missing is listed


def test_tiny_release_generates_frames_deterministically(tmp_path):
    _release(tmp_path)
    sampling = EMO2SamplingConfig(motion_steps=2, video_steps=2, clip_frames=4, motion_frames=2, median_kernel=3)
    pipe = EMO2Pipeline.from_pretrained(tmp_path, sampling)
    image = (np.random.default_rng(0).uniform(0, 255, (SIDE, SIDE, 3))).astype(np.uint8)
    audio = torch.randn(7, 2, 16, generator=torch.Generator().manual_seed(0))  # 7 frames: 2 clips, one partial
    frames = list(pipe.frames(image, audio, _body()))
    assert len(frames) == 7 and all(f.shape == (SIDE, SIDE, 3) and f.dtype == np.uint8 for f in frames)
    again = list(pipe.frames(image, audio, _body()))
    assert all(np.array_equal(a, b) for a, b in zip(frames, again))
    # guidance: stage-1 hands are drawn when shoulders anchor them; otherwise hands are missing
    maps, conf = pipe.guidance(pipe.motion(audio, _body()), _body(), 7, (16, 16))
    assert maps.shape == (1, 4, 7, 16, 16) and conf.shape == (1, 7, 2)
    bare_maps, bare_conf = pipe.guidance(pipe.motion(audio, _body(False)), _body(False), 7, (16, 16))
    assert bare_maps[:, :2].max() == 0 and bare_conf.max() == 0 and bare_maps[:, 2].max() == 0
    assert maps[:, 2].max() > 0.5  # arms from stage 1
