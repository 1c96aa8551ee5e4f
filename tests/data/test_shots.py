"""MIDAS data preparation: shot cuts found on decoded frames; the speaker check keeps only shots whose visible
face speaks the audio (warp-engine renders of real speech, one of them dubbed with other speech)."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from talkinghead.api import animate
from talkinghead.assets import speech_path
from talkinghead.config import AnimateConfig, RenderConfig
from talkinghead.errors import InputError
from talkinghead.io import encode_frames, load_audio
from talkinghead.data.shots import (
                                    ShotConfig,
                                    decode_frames,
                                    shots_from_cuts,
                                    speaking_shots,
                                    split_shots,
                                    )
from talkinghead.types import SAMPLE_RATE, Speech

FPS = 25
SIZE = 128  # px


def _samples_for(samples: np.ndarray, frames: int) -> np.ndarray:
    n = round(frames * SAMPLE_RATE / FPS)
    return np.pad(samples, (0, max(0, n - len(samples))))[:n]


@pytest.fixture(scope="module")
def videos(tmp_path_factory, astronaut, grace) -> dict:
    """Two renders of the same 7 s of speech (two portraits) and a video cutting from one to the other whose
    second shot is dubbed with the speech shifted by half its length."""
    folder = tmp_path_factory.mktemp("shots")
    wav, _ = speech_path("librivox_0870")
    config = AnimateConfig(render=RenderConfig(size=SIZE, fps=FPS))
    paths = {name: animate(p, wav, folder / f"{name}.mp4", config=config)
             for name, p in (("astronaut", astronaut.image), ("grace", grace.image))}
    frames = {name: list(decode_frames(p)[1]) for name, p in paths.items()}
    samples = load_audio(wav).samples
    first = _samples_for(samples, len(frames["astronaut"]))
    second = _samples_for(np.roll(samples, len(samples) // 2), len(frames["grace"]))
    paths["cut"] = encode_frames(frames["astronaut"] + frames["grace"], folder / "cut.mp4", FPS,
                                 audio=Speech(np.concatenate([first, second]).astype(np.float32)))
    return {"paths": paths, "lengths": {k: len(v) for k, v in frames.items()}}


def test_the_cut_is_found_and_head_motion_does_not_cut(videos):
    n_a, n_b = videos["lengths"]["astronaut"], videos["lengths"]["grace"]
    shots = split_shots(videos["paths"]["cut"])
    assert [(s.start, s.end) for s in shots] == [(0, n_a), (n_a, n_a + n_b)]
    assert shots[0].fps == FPS and shots[1].seconds == pytest.approx((n_a / FPS, (n_a + n_b) / FPS))
    single = split_shots(videos["paths"]["astronaut"])
    assert [(s.start, s.end) for s in single] == [(0, n_a)]


def test_only_the_shot_whose_face_speaks_is_kept(videos):
    verdicts = speaking_shots(videos["paths"]["cut"])
    assert [v.passed for v in verdicts] == [True, False], verdicts
    assert abs(verdicts[0].offset_frames) <= 3 and verdicts[0].confidence >= 0.2  # in sync, clearly
    assert verdicts[1].shot.start == videos["lengths"]["astronaut"]


def test_short_shots_are_dropped_and_unreadable_files_refused(tmp_path):
    shots = shots_from_cuts([10, 50], 100, 25.0, min_frames=25)
    assert [(s.start, s.end) for s in shots] == [(10, 50), (50, 100)]
    assert shots_from_cuts([], 20, 25.0, ShotConfig().min_frames) == []
    bad = Path(tmp_path / "not_a_video.mp4")
    bad.write_bytes(b"nothing here")
    with pytest.raises(InputError):
        decode_frames(bad)
