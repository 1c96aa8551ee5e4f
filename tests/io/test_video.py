"""talkinghead.io.video: H.264/AAC mp4 writing, atomic output, and output-path checks."""
from __future__ import annotations

import os
from fractions import Fraction

import av
import numpy as np
import pytest

from talkinghead.errors import InputError
from talkinghead.io import VideoWriter, check_output_path, encode_frames, probe
from talkinghead.types import Speech


def frames(n, w=128, h=96):
    out = []
    for i in range(n):
        f = np.zeros((h, w, 3), np.uint8)
        f[..., 0] = (i * 5) % 256
        f[:, : w // 2, 1] = 180
        f[..., 2] = np.linspace(0, 255, w, dtype=np.uint8)[None, :]
        out.append(f)
    return out


def tone(seconds, rate=16000):
    t = np.arange(int(round(seconds * rate))) / rate
    return Speech(samples=(0.5 * np.sin(2 * np.pi * 440 * t)).astype(np.float32), sample_rate=rate)


def leftovers(folder):
    return sorted(n for n in os.listdir(folder) if n.endswith(".part.mp4") or n.startswith("."))


def test_video_with_audio(tmp_path):
    out = tmp_path / "talk.mp4"
    with VideoWriter(out, fps=25, size=(128, 96), audio=tone(2.0)) as w:
        for f in frames(50):
            w.write(f)
    info = probe(out)
    assert info["video_codec"] == "h264"
    assert info["pix_fmt"] == "yuv420p"
    assert info["audio_codec"] == "aac"
    assert info["n_frames"] == 50
    assert (info["width"], info["height"]) == (128, 96)
    assert info["fps"] == pytest.approx(25.0)
    assert info["video_duration"] == pytest.approx(2.0, abs=0.05)
    assert info["audio_duration"] == pytest.approx(2.0, abs=0.05)
    assert info["faststart"] is True
    assert leftovers(tmp_path) == []


def test_colours_survive(tmp_path):
    src = frames(10)
    out = encode_frames(src, tmp_path / "c.mp4", 25)
    with av.open(str(out)) as c:
        decoded = [f.to_ndarray(format="rgb24") for f in c.decode(video=0)]
    assert len(decoded) == 10
    err = np.abs(decoded[5][8:-8, 8:-8].astype(int) - src[5][8:-8, 8:-8].astype(int))
    assert err.mean() < 4

    colours = [(255, 0, 0), (0, 255, 0), (0, 0, 255), (255, 255, 0), (30, 200, 160), (250, 220, 200)]
    blocks = np.concatenate([np.full((64, 64, 3), c, np.uint8) for c in colours], axis=1)
    out = encode_frames([blocks] * 3, tmp_path / "blocks.mp4", 25)
    with av.open(str(out)) as c:
        rgb = next(c.decode(video=0)).to_ndarray(format="rgb24")
    for i, c in enumerate(colours):  # the stream's colour tags match the conversion we used
        assert np.abs(rgb[32, i * 64 + 32].astype(int) - c).max() <= 4, (c, rgb[32, i * 64 + 32])


def test_ntsc_fps_and_no_audio(tmp_path):
    out = encode_frames(frames(30), tmp_path / "ntsc.mp4", 29.97)
    info = probe(out)
    assert info["n_frames"] == 30
    assert info["fps"] == pytest.approx(30000 / 1001)
    assert info["audio_codec"] is None and info["audio_duration"] is None
    with av.open(str(out)) as c:
        assert c.streams.video[0].average_rate == Fraction(30000, 1001)


def test_exception_inside_with_leaves_nothing(tmp_path):
    out = tmp_path / "broken.mp4"
    with pytest.raises(RuntimeError, match="boom"):
        with VideoWriter(out, 25, (128, 96), audio=tone(1.0)) as w:
            for f in frames(5):
                w.write(f)
            raise RuntimeError("boom")
    assert os.listdir(tmp_path) == []


def test_failure_keeps_previous_output(tmp_path):
    out = tmp_path / "keep.mp4"
    out.write_bytes(b"previous render")
    with pytest.raises(ValueError):
        with VideoWriter(out, 25, (128, 96)) as w:
            w.write(frames(1)[0])
            w.write(np.zeros((10, 10, 3), np.uint8))  # wrong size
    assert out.read_bytes() == b"previous render"
    assert leftovers(tmp_path) == []


def test_temp_file_lives_next_to_target_until_close(tmp_path):
    out = tmp_path / "t.mp4"
    w = VideoWriter(out, 25, (64, 64))
    parts = leftovers(tmp_path)
    assert len(parts) == 1 and parts[0].startswith(".") and parts[0].endswith(".part.mp4")
    assert not out.exists()
    for f in frames(3, 64, 64):
        w.write(f)
    assert w.close() == out
    assert out.exists() and leftovers(tmp_path) == []
    w.close()  # idempotent
    with pytest.raises(RuntimeError):
        w.write(frames(1, 64, 64)[0])


def test_no_frames_is_an_error_and_leaves_nothing(tmp_path):
    with pytest.raises(ValueError, match="no frames"):
        with VideoWriter(tmp_path / "empty.mp4", 25, (64, 64)):
            pass
    assert os.listdir(tmp_path) == []
    with pytest.raises(ValueError, match="no frames"):
        encode_frames([], tmp_path / "empty.mp4", 25)
    assert os.listdir(tmp_path) == []


def test_odd_size_and_bad_settings(tmp_path):
    with pytest.raises(ValueError, match="even"):
        VideoWriter(tmp_path / "odd.mp4", 25, (127, 96))
    with pytest.raises(ValueError, match="preset"):
        VideoWriter(tmp_path / "p.mp4", 25, (64, 64), preset="warp")
    with pytest.raises(ValueError, match="fps"):
        VideoWriter(tmp_path / "f.mp4", 0, (64, 64))
    assert os.listdir(tmp_path) == []


def test_check_output_path(tmp_path):
    assert check_output_path(tmp_path / "ok.mp4") == tmp_path / "ok.mp4"
    assert check_output_path(tmp_path / "OK.MP4").name == "OK.MP4"
    with pytest.raises(InputError, match="does not exist"):
        check_output_path(tmp_path / "missing" / "out.mp4")
    with pytest.raises(InputError, match="directory"):
        check_output_path(tmp_path)
    (tmp_path / "dir.mp4").mkdir()
    with pytest.raises(InputError, match="directory"):
        check_output_path(tmp_path / "dir.mp4")
    with pytest.raises(InputError) as e:
        check_output_path(tmp_path / "out.avi")
    assert e.value.hint == "use a name ending in .mp4"
    with pytest.raises(InputError):
        check_output_path(tmp_path / "out")
    with pytest.raises(InputError):  # VideoWriter checks its path the same way
        VideoWriter(tmp_path / "out.mov", 25, (64, 64))


@pytest.mark.skipif(hasattr(os, "geteuid") and os.geteuid() == 0, reason="root can write anywhere")
def test_check_output_path_not_writable(tmp_path):
    ro = tmp_path / "ro"
    ro.mkdir()
    ro.chmod(0o500)
    try:
        with pytest.raises(InputError, match="not writable"):
            check_output_path(ro / "out.mp4")
    finally:
        ro.chmod(0o700)


def test_audio_at_another_rate_and_longer_than_video(tmp_path):
    out = encode_frames(frames(25), tmp_path / "a.mp4", 25, audio=tone(1.5, rate=44100))
    info = probe(out)
    assert info["n_frames"] == 25
    assert info["audio_duration"] == pytest.approx(1.5, abs=0.05)
