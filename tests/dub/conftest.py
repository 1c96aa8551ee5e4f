"""Dubbing sources made with our own warp engine: the astronaut speaking utterance A in a larger,
slowly panning frame, with a cut-away (no face) inserted; they are dubbed with utterance B.

The sync check needs several seconds of speech and we ship two real clips (7.1 s and 3 s), so
utterance A is the 7.1 s LibriVox clip played backwards (same voice and level, another rhythm)
and B is the clip itself.
"""
from __future__ import annotations

from pathlib import Path

import pytest

from talkinghead.assets import speech_path
from talkinghead.dub.testsrc import make_source
from talkinghead.io import load_audio
from talkinghead.types import Speech

WIDTH, HEIGHT, FACE = 400, 288, 224
CUTAWAY = (60, 12)  # frames [60, 72) show another shot


@pytest.fixture(scope="session")
def cutaway() -> tuple[int, int]:
    return CUTAWAY


@pytest.fixture(scope="session")
def utterance_b() -> Speech:
    return load_audio(speech_path("librivox_0870")[0])


@pytest.fixture(scope="session")
def utterance_a(utterance_b) -> Speech:
    return Speech(utterance_b.samples[::-1].copy())


@pytest.fixture(scope="session")
def short_speech() -> Speech:
    """3 s of real speech."""
    return load_audio(speech_path("librivox_0880")[0])


@pytest.fixture(scope="session")
def source_video(tmp_path_factory, utterance_a) -> Path:
    """7.1 s, 25 fps, 400x288: the portrait speaking A, a cut-away at frames 60-71."""
    return make_source(tmp_path_factory.mktemp("dub") / "source.mp4", utterance_a, WIDTH, HEIGHT, FACE,
                       cutaway=CUTAWAY)


@pytest.fixture(scope="session")
def short_video(tmp_path_factory, short_speech) -> Path:
    """1.6 s (40 frames) of the portrait speaking, no cut: for the length and fit checks."""
    return make_source(tmp_path_factory.mktemp("dub") / "short.mp4", Speech(short_speech.samples[:25600]),
                       320, 256, 192)
