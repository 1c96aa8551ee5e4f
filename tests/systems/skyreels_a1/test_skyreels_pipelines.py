"""SkyReels-A1/A2 pipelines on tiny models: MotionTrack-driven chunks, seeded frames, local-weights errors."""
from __future__ import annotations

from itertools import islice

import numpy as np
import pytest
import torch
from diffusers import AutoencoderKLCogVideoX, AutoencoderKLWan
from transformers import SiglipVisionConfig, SiglipVisionModel

from talkinghead.errors import InputError
from talkinghead.face import prepare
from talkinghead.systems.skyreels_a1 import model as A1
from talkinghead.systems.skyreels_a2 import model as A2
from talkinghead.systems.skyreels_a1.pipeline import SkyReelsA1Pipeline, chunk_lengths, face_crop
from talkinghead.systems.skyreels_a2.pipeline import SkyReelsA2Pipeline
from talkinghead.types import Speech

SIZE = 32  # px (A1; FaceMesh needs a real face); tiny VAEs compress 4x
A2_SIZE = 16  # px: 4 x 4 latents


@pytest.fixture(scope="module")
def a1(grace):
    torch.manual_seed(0)
    siglip = SiglipVisionModel(SiglipVisionConfig(hidden_size=A1.TINY.identity_dim, intermediate_size=24,
                                                  num_hidden_layers=1, num_attention_heads=2, image_size=32,
                                                  patch_size=16))
    pipe = SkyReelsA1Pipeline(A1.SkyReelsA1(A1.TINY), AutoencoderKLCogVideoX(**A1.TINY.vae), siglip, steps=2,
                              chunk_frames=9, progress=False)
    portrait, face = prepare(grace, SIZE)
    return pipe, portrait, face


def test_chunks_cover_the_clip():
    assert chunk_lengths(15, 9, overlap=1) == [9, 9]
    assert chunk_lengths(9, 9, overlap=1) == [9]
    assert chunk_lengths(3, 49, overlap=0) == [5]
    assert sum(n - 1 for n in chunk_lengths(100, 49, 1)) + 1 >= 100
    with pytest.raises(InputError, match="1 \\+ 4k"):
        chunk_lengths(10, 8, 0)


def test_a1_motion_track_drives_seeded_chunked_frames(a1, librivox):
    pipe, portrait, face = a1
    speech = Speech(librivox[0].samples[: int(0.6 * 16000)])
    track = pipe.motion(speech, fps=25.0)
    assert len(track) == 15
    calls = []
    sample = pipe.model.sample
    pipe.model.sample = lambda *a, **k: calls.append(1) or sample(*a, **k)
    try:
        it = pipe.frames(portrait, face, track, seed=3)
        first = next(it)
        assert len(calls) == 1  # frames stream out per chunk: the second chunk is not computed yet
        frames = [first, *it]
    finally:
        pipe.model.sample = sample
    assert len(calls) == 2 and len(frames) == len(track)
    assert all(f.shape == (SIZE, SIZE, 3) and f.dtype == np.uint8 for f in frames)
    again = list(islice(pipe.frames(portrait, face, track, seed=3), 9))  # the first chunk only
    assert len(again) == 9 and all(np.array_equal(a, b) for a, b in zip(frames, again))
    with pytest.raises(InputError, match="multiple of 8"):
        bad = type(portrait)(portrait.image[:30, :30], "cut")
        next(pipe.frames(bad, face, track))


def test_a2_composes_subjects_and_background_into_seeded_frames():
    torch.manual_seed(0)
    vae = AutoencoderKLWan(**A2.TINY.vae)
    pipe = SkyReelsA2Pipeline(A2.SkyReelsA2(A2.TINY), vae, steps=2, guidance_scale=3.0, chunk_frames=13, progress=False)
    rng = np.random.default_rng(0)
    person = rng.integers(0, 255, (40, 40, 3), dtype=np.uint8)
    mask = np.zeros((40, 40), bool)
    mask[8:32, 10:30] = True
    hat, background = (rng.integers(0, 255, (24, 24, 3), dtype=np.uint8) for _ in range(2))
    frames = list(pipe.frames([(person, mask), hat], background, num_frames=15, size=(A2_SIZE, A2_SIZE), seed=1))
    assert len(frames) == 15 and all(f.shape == (A2_SIZE, A2_SIZE, 3) and f.dtype == np.uint8 for f in frames)
    again = list(islice(pipe.frames([(person, mask), hat], background, 15, (A2_SIZE, A2_SIZE), seed=1), 13))
    assert len(again) == 13 and all(np.array_equal(a, b) for a, b in zip(frames, again))
    with pytest.raises(InputError, match="at least one subject"):
        next(pipe.frames([], background, 5, (A2_SIZE, A2_SIZE)))
    pipe.chunk_frames = 9  # 3 latent frames: 3 references but no room for the continuation slot
    with pytest.raises(InputError, match="cannot hold 3 references and a continuation frame"):
        next(pipe.frames([(person, mask), hat], background, 15, (A2_SIZE, A2_SIZE)))


def test_face_crop_is_square_with_a_margin_and_clipped():
    assert face_crop(np.zeros((100, 100, 3)), (40, 40, 60, 50)).shape == (30, 30, 3)  # square, 25% margin
    assert face_crop(np.zeros((100, 100, 3)), (0, 0, 20, 20)).shape == (25, 25, 3)  # clipped at the border


@pytest.mark.parametrize("pipeline, files", [
    (SkyReelsA1Pipeline, ["model/diffusion_pytorch_model.safetensors", "vae/config.json",
                          "siglip/model.safetensors"]),
    (SkyReelsA2Pipeline, ["model/config.json", "model/diffusion_pytorch_model.safetensors",
                          "vae/diffusion_pytorch_model.safetensors"]),
])
def test_missing_local_weights_are_listed(tmp_path, pipeline, files):
    (tmp_path / "model").mkdir()
    (tmp_path / "model" / "config.json").write_text("{}")
    (tmp_path / "vae").mkdir()
    if pipeline is SkyReelsA2Pipeline:
        (tmp_path / "model" / "config.json").unlink()
        (tmp_path / "vae" / "config.json").write_text("{}")
    with pytest.raises(InputError) as err:
        pipeline.from_pretrained(tmp_path)
    for f in files:
        assert f in str(err.value)
