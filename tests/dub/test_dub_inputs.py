"""Bad input gets one clear message, exit code 2 and no output file; the fit modes and audio options
give the lengths and sound they promise."""
from __future__ import annotations

import numpy as np
import pytest

from talkinghead.dub import DubOptions, dub
from talkinghead.dub.testsrc import cutaway_frame, decode_frames
from talkinghead.errors import InputError
from talkinghead.eval.sync import aperture_series
from talkinghead.interfaces.cli import main
from talkinghead.io import VideoWriter, load_audio, probe
from talkinghead.types import Speech


def _cli(args, capsys) -> tuple[int, str]:
    with pytest.raises(SystemExit) as e:
        main(["dub", "--quiet", *args])
    return e.value.code, capsys.readouterr().err


def _left(folder) -> list[str]:
    return sorted(p.name for p in folder.iterdir())


@pytest.fixture(scope="module")
def faceless_video(tmp_path_factory):
    p = tmp_path_factory.mktemp("bad") / "no_face.mp4"
    with VideoWriter(p, 25, (320, 240)) as w:
        for i in range(20):
            w.write(cutaway_frame(320, 240, i))
    return p


@pytest.fixture(scope="module")
def speech_wav():
    from talkinghead.assets import speech_path

    return str(speech_path("librivox_0880")[0])


def test_bad_videos_exit_2_with_one_message_and_no_file(tmp_path, capsys, short_video, faceless_video, speech_wav):
    data = short_video.read_bytes()
    cases = {
        "audio only": (speech_wav, "no picture"),
        "no face": (faceless_video, "no face found"),
        "corrupt": ("garbage", "corrupt"),
        "truncated": ("truncated", "truncated"),
        "missing": (tmp_path / "nothere.mp4", "not found"),
    }
    (tmp_path / "garbage.mp4").write_bytes(np.random.default_rng(0).integers(0, 256, 50_000, np.uint8).tobytes())
    (tmp_path / "truncated.mp4").write_bytes(data[: len(data) // 2])
    out_dir = tmp_path / "out"
    out_dir.mkdir()
    for name, (video, words) in cases.items():
        if video in ("garbage", "truncated"):
            video = tmp_path / f"{video}.mp4"
        code, err = _cli(["--video", str(video), "--audio", speech_wav, "-o", str(out_dir / "o.mp4")], capsys)
        assert code == 2, (name, err)
        assert err.startswith("error: ") and words in err.lower(), (name, err)
        assert "Traceback" not in err and "how to fix" in err, (name, err)
        assert _left(out_dir) == [], (name, _left(out_dir))


def test_too_long_video_and_bad_options(tmp_path, capsys, short_video, speech_wav):
    out = tmp_path / "o.mp4"
    code, err = _cli(["--video", str(short_video), "--audio", speech_wav, "-o", str(out), "--max-seconds", "1"], capsys)
    assert code == 2 and "error: --video" in err and "more than the limit of 1 s" in err
    code, err = _cli(["--video", str(short_video), "--audio", speech_wav, "-o", str(out), "--face-index", "0",
                      "--face", "auto-speaker"], capsys)
    assert code == 2 and "only one" in err
    code, err = _cli(["--video", str(short_video), "--audio", speech_wav, "-o", str(out),
                      "--keep-original-audio", "6"], capsys)
    assert code == 2 and "dB" in err
    assert _left(tmp_path) == []


def test_silence_keeps_the_mouth_closed(tmp_path, capsys, short_video):
    import wave

    wav = tmp_path / "silence.wav"
    with wave.open(str(wav), "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(16000)
        w.writeframes(np.zeros(16000 * 2, np.int16).tobytes())
    out = tmp_path / "silent.mp4"
    code, err = _cli(["--video", str(short_video), "--audio", str(wav), "-o", str(out)], capsys)
    assert code == 0, err
    src, dubbed = aperture_series(decode_frames(short_video)), aperture_series(decode_frames(out))
    # the source talks; the dub keeps the lips together (FaceMesh reads up to ~0.1 on closed, smiling lips)
    assert np.nanmedian(dubbed) < 0.45 * np.nanmedian(src), (dubbed, src)
    assert np.nanpercentile(dubbed, 90) < 0.5 * np.nanpercentile(src, 90), (dubbed, src)


@pytest.mark.parametrize("fit", ["pingpong", "loop", "freeze", "trim"])
def test_fit_modes(tmp_path, short_video, short_speech, fit):
    """The 1.6 s video with 3 s of speech: extended to the speech, or (trim) cut at the video's end."""
    out = dub(short_video, short_speech, tmp_path / f"{fit}.mp4", fit=fit)
    info = probe(out)
    n_video, n_speech = 40, 75
    assert info["n_frames"] == (n_video if fit == "trim" else n_speech)
    assert abs(info["audio_duration"] - info["n_frames"] / 25) < 0.1
    frames = decode_frames(out)
    src = decode_frames(short_video)
    if fit == "freeze":
        d = np.abs(frames[-1].astype(int) - frames[-2]).mean()
        assert d < 2.0  # the last frame is held (only the mouth may move)
    if fit == "pingpong":  # frame 40 + k shows about source frame 39 - k (played backwards)
        for k in (3, 10, 20):
            back = [np.abs(frames[40 + k].astype(int) - s).mean() for s in src]
            assert abs(int(np.argmin(back)) - (39 - k)) <= 2
    if fit == "loop":
        again = [np.abs(frames[40 + 5].astype(int) - s).mean() for s in src]
        assert abs(int(np.argmin(again)) - 5) <= 2


def test_short_speech_leaves_a_closed_still_mouth(tmp_path, short_video):
    out = dub(short_video, Speech(load_audio(str(short_video)).samples[:8000]), tmp_path / "o.mp4")
    ap = aperture_series(decode_frames(out))
    assert len(ap) == 40
    tail, source_tail = ap[20:], aperture_series(decode_frames(short_video))[20:]
    # closed: the inner-lip gap in inter-ocular distances (FaceMesh reads up to ~0.1 on closed,
    # smiling lips) far under the source's, which keeps talking
    assert np.nanmedian(tail) < 0.06 and np.nanpercentile(tail, 90) < 0.11, tail
    assert np.nanmedian(tail) < 0.45 * np.nanmedian(source_tail)


def test_keep_original_audio_mixes_the_source_under_the_speech(tmp_path, short_video):
    quiet = Speech(np.zeros(16000 * 1, np.float32))
    out = dub(short_video, quiet, tmp_path / "mixed.mp4", fit="trim", options=None, keep_original_audio=-6)
    sound = load_audio(out).samples
    src = load_audio(short_video).samples[: len(sound)]
    level = 20 * np.log10(np.sqrt(np.mean(sound ** 2)) / np.sqrt(np.mean(src ** 2)))
    assert -8.0 < level < -4.0, level


def test_options_are_checked_before_any_work(tmp_path, short_video):
    with pytest.raises(InputError, match="must be one of") as e:
        DubOptions(fit="stretch").validate()
    assert e.value.field == "fit"
    with pytest.raises(InputError, match="mp4"):
        dub(short_video, Speech(np.zeros(16000, np.float32)), tmp_path / "o.avi")
