"""Hallo2's long-speech padding: the default plan keeps the official rule (the shared Hallo2 data's README,
long-video quirk 10), and `whole_clips` pads the total to whole clips so the video covers every audio frame
without a silent extra clip. Checked on the plan, on the real tiny wav2vec, and on the engine's frame count."""
from __future__ import annotations

import numpy as np
import pytest

from talkinghead.config import AnimateConfig
from talkinghead.systems.hallo2.engine import hallo2_audio_embeddings, hallo2_audio_plan
from talkinghead.types import Speech

RATE, FPS, CLIP = 16000, 25, 16
SAMPLES_PER_FRAME = RATE // FPS
# speech lengths in video frames: one segment, just over one and two 60 s segments, each padding case of quirk 10
FRAME_COUNTS = [1, 15, 16, 23, 1499, 1500, 1501, 1504, 1516, 1517, 1750, 3000, 3007, 3016, 3024]


def official_rule(segment_frames: list[int]) -> tuple[int, int]:
    """(zero frames padded, frames in the video), in the words of the fixture README's quirk 10: pad only the last
    segment, only if its own count is not a multiple of 16, by 16 - total % 16; then `times = len // 16` clips,
    trimmed to the unpadded total."""
    total = sum(segment_frames)
    pad = CLIP - total % CLIP if segment_frames[-1] % CLIP else 0
    return pad, min(total, (total + pad) // CLIP * CLIP)


@pytest.mark.parametrize("frames", FRAME_COUNTS)
def test_default_plan_is_the_official_rule_and_the_fix_covers_every_frame(frames):
    n = frames * SAMPLES_PER_FRAME
    lengths, pad = hallo2_audio_plan(n, RATE, FPS, CLIP)
    total = sum(lengths)  # = frames, or one more where a segment's float frame count rounds up (as officially)
    assert total in (frames, frames + 1)
    assert len(lengths) == -(-n // (60 * RATE))  # one segment per started minute
    want_pad, want_video = official_rule(lengths)
    assert pad == want_pad

    fixed_lengths, fixed_pad = hallo2_audio_plan(n, RATE, FPS, CLIP, whole_clips=True)
    assert fixed_lengths == lengths
    assert (total + fixed_pad) % CLIP == 0 and 0 <= fixed_pad < CLIP  # whole clips, none of them all padding
    covered = min(total, (total + fixed_pad) // CLIP * CLIP)
    assert covered == total  # every audio frame gets a video frame
    if len(lengths) == 1:
        assert (fixed_pad, covered) == (pad, want_video)  # under a minute the official rule is already right


def test_the_fix_changes_the_two_buggy_cases():
    # 60.64 s: the last segment is 16 frames (whole), the total 1516 is not: officially no padding, 12 frames lost
    lengths, pad = hallo2_audio_plan(1516 * SAMPLES_PER_FRAME, RATE, FPS, CLIP)
    assert (lengths, pad, official_rule(lengths)[1]) == ([1500, 16], 0, 1504)
    assert hallo2_audio_plan(1516 * SAMPLES_PER_FRAME, RATE, FPS, CLIP, whole_clips=True)[1] == 4
    # 60.16 s: the total 1504 is whole clips, the last segment (4) is not: officially a whole clip of zeros
    lengths, pad = hallo2_audio_plan(1504 * SAMPLES_PER_FRAME, RATE, FPS, CLIP)
    assert (lengths, pad) == ([1500, 4], 16)
    assert hallo2_audio_plan(1504 * SAMPLES_PER_FRAME, RATE, FPS, CLIP, whole_clips=True)[1] == 0


@pytest.fixture(scope="module")
def speech_60_64(librivox) -> Speech:
    """60.64 s of real speech (the bundled clip tiled): 1516 video frames in segments of 1500 and 16."""
    speech, _ = librivox
    n = 1516 * SAMPLES_PER_FRAME
    samples = np.resize(speech.samples.astype(np.float32), n)
    return Speech(samples=samples, sample_rate=RATE)


def test_embeddings_cover_the_speech_with_whole_clips(hallo_dir, speech_60_64):
    from talkinghead.audio.wav2vec import load_wav2vec

    model, extractor = load_wav2vec(hallo_dir / "hallo_audio_tiny")
    official, n_official = hallo2_audio_embeddings(model, extractor, speech_60_64.samples, FPS, CLIP)
    fixed, n_fixed = hallo2_audio_embeddings(model, extractor, speech_60_64.samples, FPS, CLIP, whole_clips=True)
    assert n_official == n_fixed == 1516
    assert official.shape[0] == 1516  # not padded: only 1504 frames are whole clips
    assert fixed.shape[0] == 1520 and fixed.shape[0] % CLIP == 0
    # the first segment is encoded on its own either way; only the padded last segment differs
    assert np.array_equal(fixed[:1500].numpy(), official[:1500].numpy())


def test_engine_frame_count_follows_the_control(hallo_release, face_embedding_file, speech_60_64):
    from talkinghead.assets import portrait_path
    from talkinghead.io.image import load_image
    from talkinghead.systems import make_animator

    counts = {}
    for whole in (False, True):
        config = AnimateConfig()
        config.render.size = 128
        config.diffusion.checkpoint_dir = str(hallo_release)
        config.diffusion.face_embedding = str(face_embedding_file)
        config.diffusion.whole_clips = whole
        animator = make_animator("hallo2", load_image(portrait_path("astronaut")), config, warn=False)
        counts[whole] = animator.n_frames(speech_60_64)
    assert counts == {False: 1504, True: 1516}  # the official video ends 0.48 s before the speech


def test_only_hallo2_honours_the_control():
    from talkinghead.errors import InputError
    from talkinghead.systems import SYSTEMS, check_controls

    config = AnimateConfig()
    config.diffusion.whole_clips = True
    check_controls(SYSTEMS["hallo2"], config)
    with pytest.raises(InputError) as exc:
        check_controls(SYSTEMS["hallo"], config)
    assert exc.value.field == "whole_clips" and "hallo2" in str(exc.value)
