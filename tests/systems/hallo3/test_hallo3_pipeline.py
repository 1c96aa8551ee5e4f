"""DiT sampling (Hallo3) at a tiny config with a tiny CogVideoX 3D VAE: long audio -> clips with
motion frames, every frame yielded once in order, deterministic with a seed; local folders only, with a
clear error listing missing weights."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from diffusers import AutoencoderKLCogVideoX

from talkinghead.errors import InputError
from talkinghead.systems.hallo3.model import HALLO3_TINY, TINY_VAE, Hallo3Model
from talkinghead.systems.hallo3.pipeline import DiTSamplingConfig, Hallo3Pipeline

FRAMES = 10  # clip 9 frames + motion 5: two clips (9 + 1 new frames)


@pytest.fixture(scope="module")
def parts():
    torch.manual_seed(0)
    return Hallo3Model(**HALLO3_TINY), AutoencoderKLCogVideoX(**TINY_VAE)


@pytest.fixture(scope="module")
def inputs():
    g = torch.Generator().manual_seed(0)
    return {"reference": torch.rand(1, 3, 32, 32, generator=g) * 2 - 1, "face": torch.randn(1, 8, generator=g),
            "audio": torch.randn(1, FRAMES, 3, 2, 8, generator=g), "text": torch.randn(1, 4, 16, generator=g)}


def _cfg(seed=1):
    return DiTSamplingConfig(steps=2, clip_frames=9, motion_frames=5, seed=seed, progress=False)


def test_hallo3_long_video_in_clips_deterministic_with_a_seed(parts, inputs):
    pipe = Hallo3Pipeline(parts[0], parts[1])
    run = lambda seed: list(pipe(inputs["reference"], inputs["face"], inputs["audio"], inputs["text"],  # noqa: E731
                                 _cfg(seed)))
    chunks = run(1)
    assert [c.shape for c in chunks] == [(9, 32, 32, 3), (1, 32, 32, 3)]
    assert all(c.dtype == np.uint8 for c in chunks)
    again = run(1)
    assert all(np.array_equal(a, b) for a, b in zip(chunks, again))
    other = run(2)
    assert any(not np.array_equal(a, b) for a, b in zip(chunks, other))


def test_sampling_config_is_validated():
    for bad in (dict(clip_frames=8), dict(motion_frames=9, clip_frames=9), dict(motion_frames=4), dict(steps=0)):
        with pytest.raises(InputError):
            DiTSamplingConfig(**bad).validate()


def test_from_pretrained_reads_a_local_folder_and_lists_missing_files(parts, tmp_path):
    with pytest.raises(InputError) as err:
        Hallo3Pipeline.from_pretrained(tmp_path)
    message = str(err.value)
    for name in ("transformer/config.json", "transformer/diffusion_pytorch_model.safetensors", "vae/config.json",
                 "vae/diffusion_pytorch_model.safetensors"):
        assert name in message
    parts[0].save_pretrained(tmp_path / "transformer")
    with pytest.raises(InputError) as err:
        Hallo3Pipeline.from_pretrained(tmp_path)
    assert "vae/config.json" in str(err.value) and "transformer/config.json" not in str(err.value)
    parts[1].save_pretrained(tmp_path / "vae")
    pipe = Hallo3Pipeline.from_pretrained(tmp_path)
    a, b = parts[0].state_dict(), pipe.model.state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a)
