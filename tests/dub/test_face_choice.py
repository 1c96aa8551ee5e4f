"""Which face is dubbed: the largest by default, the N-th by --face-index, or the one whose lips move
most with --face auto-speaker. The scene: a large silent face beside a smaller speaking one."""
from __future__ import annotations

import numpy as np
import pytest

from talkinghead.assets import portrait
from talkinghead.config import AnimateConfig, MotionConfig, RenderConfig
from talkinghead.dub import Dubber, DubOptions, VideoSource
from talkinghead.io import VideoWriter
from talkinghead.systems.warp.engine import Animator
from talkinghead.types import Portrait, Speech

W, H = 480, 288


@pytest.fixture(scope="module")
def two_faces(tmp_path_factory, short_speech):
    """Left: astronaut (180 px) speaking; right: Grace Hopper (256 px), silent and still."""
    speech = Speech(short_speech.samples[:16000 * 2])
    still = MotionConfig(lips_only=True)
    talker = Animator(Portrait(portrait("astronaut")), AnimateConfig(render=RenderConfig(size=180)), warn=False)
    silent = Animator(Portrait(portrait("grace_hopper")), AnimateConfig(motion=still, render=RenderConfig(size=256)),
                      warn=False)
    quiet = Speech(np.zeros_like(speech.samples))
    path = tmp_path_factory.mktemp("faces") / "two.mp4"
    with VideoWriter(path, 25, (W, H), audio=speech) as w:
        for a, b in zip(talker.frames(speech), silent.frames(quiet)):
            canvas = np.full((H, W, 3), 90, np.uint8)
            canvas[60:240, 10:190] = a
            canvas[16:272, 214:470] = b
            w.write(canvas)
    return path


def _dubbed_side(path, speech, **options) -> str:
    dubber = Dubber(VideoSource(path), speech, DubOptions(**options))
    xs = []
    for i, (slot, _) in enumerate(dubber.frames()):
        if slot.landmarks is not None:
            xs.append(float(slot.landmarks[:, 0].mean()))
        if i >= 30:
            break
    assert len(xs) > 25
    return "left" if np.median(xs) < W / 2 else "right"


def test_largest_face_by_default(two_faces, short_speech):
    assert _dubbed_side(two_faces, short_speech) == "right"


def test_face_index_picks_the_next_largest(two_faces, short_speech):
    assert _dubbed_side(two_faces, short_speech, face_index=1) == "left"


def test_auto_speaker_picks_the_moving_lips(two_faces, short_speech):
    assert _dubbed_side(two_faces, short_speech, face="auto-speaker") == "left"
