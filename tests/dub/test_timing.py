"""Variable frame rate sources come out at their average rate, each output frame showing the source
frame on screen at its time."""
from __future__ import annotations

from fractions import Fraction

import av
import numpy as np

from talkinghead.dub import dub
from talkinghead.dub.pipeline import _slots
from talkinghead.dub.testsrc import decode_frames, source_frames
from talkinghead.dub.track import Tracked
from talkinghead.io import probe


def _tracked(times):
    return [Tracked(i, t, np.zeros((2, 2, 3), np.uint8), None, 0) for i, t in enumerate(times)]


def test_slots_resample_a_variable_rate_to_a_constant_one():
    times = [0.0, 0.03, 0.08, 0.11, 0.16, 0.19, 0.24]  # 30 / 50 ms steps, 25 fps on average
    got = [t.index for t in _slots(iter(_tracked(times)), 25.0)]
    # slot k at k * 40 ms shows the frame on screen then (nearest start)
    assert got == [0, 1, 2, 3, 4, 5, 6]
    times = [0.0, 0.04, 0.16, 0.20]  # a 120 ms gap: the frame before it is held
    assert [t.index for t in _slots(iter(_tracked(times)), 25.0)] == [0, 1, 1, 2, 2, 3]


def test_a_variable_frame_rate_file_is_dubbed_at_its_average_rate(tmp_path, short_speech):
    path = tmp_path / "vfr.mp4"
    frames = list(source_frames(short_speech, 320, 256, 192))[:50]
    steps = [30, 50] * 25  # ms between frames
    with av.open(str(path), "w") as c:
        s = c.add_stream("libx264", rate=25)
        s.width, s.height, s.pix_fmt = 320, 256, "yuv420p"
        s.codec_context.time_base = Fraction(1, 1000)
        t = 0
        for f, step in zip(frames, steps):
            vf = av.VideoFrame.from_ndarray(f, format="rgb24")
            vf.pts, vf.time_base = t, Fraction(1, 1000)
            for p in s.encode(vf):
                c.mux(p)
            t += step
        for p in s.encode(None):
            c.mux(p)
    out = dub(path, short_speech, tmp_path / "out.mp4", fit="trim")
    info = probe(out)
    assert abs(info["fps"] - 25.0) < 0.5
    assert abs(info["n_frames"] - 50) <= 1  # 2 s at 25 fps
    assert len(decode_frames(out)) == info["n_frames"]


def test_a_rotated_video_is_dubbed_upright(tmp_path, short_speech):
    """A phone-style file: the pictures stored sideways with a 90° display rotation. The dub is
    upright (the rotation applied to the pixels) and its face is found and dubbed."""
    path = tmp_path / "rotated.mp4"
    frames = list(source_frames(short_speech, 256, 192, 160))[:25]
    with av.open(str(path), "w") as c:
        s = c.add_stream("libx264", rate=25)
        s.width, s.height, s.pix_fmt = 192, 256, "yuv420p"
        s.set_display_rotation(90)  # shown turned 90° counter-clockwise
        for i, f in enumerate(frames):
            vf = av.VideoFrame.from_ndarray(np.ascontiguousarray(np.rot90(f, k=-1)), format="rgb24")
            vf.pts, vf.time_base = i, Fraction(1, 25)
            for p in s.encode(vf):
                c.mux(p)
        for p in s.encode(None):
            c.mux(p)
    out = dub(path, short_speech, tmp_path / "out.mp4", fit="trim")
    got = decode_frames(out)
    assert got[0].shape == (192, 256, 3)
    assert np.abs(got[0].astype(int) - frames[0]).mean() < 6  # upright: the stored picture turned back
