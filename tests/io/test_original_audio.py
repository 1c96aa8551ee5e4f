"""The video carries the user's audio as given (its own rate and channels, AAC at a transparent
bit rate) while analysis runs on the 16 kHz mono copy; durations and start times stay exact.

Media are generated in tmp_path (PyAV / wave); the CLI test renders the bundled portrait for real.
"""
from __future__ import annotations

import dataclasses
import wave
from pathlib import Path

import av
import numpy as np
import pytest

from talkinghead.assets import portrait_path
from talkinghead.errors import InputError
from talkinghead.interfaces.cli import main
from talkinghead.io import VideoWriter, as_speech, check_audio_bitrate, encode_frames, load_audio, probe
from talkinghead.types import SAMPLE_RATE, AudioTrack, Speech

FPS = 25


def stereo_music(seconds: float, rate: int) -> np.ndarray:
    """(n, 2) float32: a different chord in each channel (so a channel swap or a shift shows)."""
    t = np.arange(int(round(seconds * rate))) / rate
    left = 0.3 * np.sin(2 * np.pi * 440 * t) + 0.2 * np.sin(2 * np.pi * 660 * t) * (1 + np.sin(2 * np.pi * 2 * t)) / 2
    right = (0.3 * np.sin(2 * np.pi * 523.25 * t + 1.0) + 0.15 * np.sin(2 * np.pi * 3100 * t)
             + 0.05 * np.sin(2 * np.pi * 12000 * t))  # "air" only a full-band track keeps
    return np.stack([left, right], axis=1).astype(np.float32)


def write_wav(path: Path, x: np.ndarray, rate: int) -> Path:
    x = x.reshape(len(x), -1)
    with wave.open(str(path), "wb") as w:
        w.setnchannels(x.shape[1])
        w.setsampwidth(2)
        w.setframerate(rate)
        w.writeframes(np.round(np.clip(x, -1, 1) * 32767).astype("<i2").tobytes())
    return path


def frames(n: int, size: int = 64) -> list[np.ndarray]:
    return [np.full((size, size, 3), (7 * i) % 256, np.uint8) for i in range(n)]


def decode_audio(path: Path) -> tuple[np.ndarray, int]:
    """The video's audio track as (channels, n) float32 at its own rate, leading/trailing codec
    padding removed by the container's edit list (as players do)."""
    sp = load_audio(path)
    if sp.original is None:
        return sp.samples[None], SAMPLE_RATE
    return np.asarray(sp.original.samples), sp.original.sample_rate


def band_level(x: np.ndarray, rate: int, lo: float, hi: float) -> float:
    """RMS of `x` within [lo, hi] Hz."""
    spec = np.abs(np.fft.rfft(x)) ** 2
    f = np.fft.rfftfreq(len(x), 1 / rate)
    return float(np.sqrt(spec[(f >= lo) & (f <= hi)].sum() / len(x) ** 2))


def corr(a: np.ndarray, b: np.ndarray) -> float:
    n = min(len(a), len(b))
    return float(np.corrcoef(a[:n], b[:n])[0, 1])


# ------------------------------------------------------------------------------------- io level
def test_48k_stereo_in_48k_stereo_out(tmp_path):
    x = stereo_music(2.0, 48000)
    wav = write_wav(tmp_path / "music.wav", x, 48000)
    sp = load_audio(wav)
    assert sp.sample_rate == SAMPLE_RATE and sp.samples.ndim == 1  # analysis copy: 16 kHz mono
    assert len(sp.samples) == 32000
    assert sp.original.sample_rate == 48000 and sp.original.layout == "stereo"
    assert sp.original.samples.shape == (2, 96000)

    out = encode_frames(frames(50), tmp_path / "out.mp4", FPS, audio=sp)
    info = probe(out)
    assert (info["audio_sample_rate"], info["audio_channels"], info["audio_layout"]) == (48000, 2, "stereo")
    assert info["audio_bit_rate"] >= 128000  # transparent for stereo music
    assert info["audio_duration"] == pytest.approx(2.0, abs=1e-3)  # the edit list trims the AAC padding
    assert info["video_duration"] == pytest.approx(2.0, abs=1e-6) and info["n_frames"] == 50
    with av.open(str(out)) as c:  # both streams start at 0 (the AAC priming is hidden by the edit list)
        assert [s.start_time for s in c.streams] == [0, 0]

    y, rate = decode_audio(out)
    assert rate == 48000 and y.shape[0] == 2
    assert abs(y.shape[1] - 96000) <= 1
    for c in range(2):  # same waveform, same channel, no shift: start times are exact
        assert corr(y[c], x[:, c]) > 0.99, c
    assert corr(y[0], x[:, 1]) < 0.2  # channels not swapped or mixed
    # the 12 kHz "air" in the right channel (gone in a 16 kHz copy) comes through
    assert band_level(y[1], 48000, 11500, 12500) > 0.5 * band_level(x[:, 1], 48000, 11500, 12500) > 0.01


def test_16k_mono_in_16k_mono_out(tmp_path):
    t = np.arange(24000) / 16000
    x = (0.4 * np.sin(2 * np.pi * 300 * t) * np.sin(2 * np.pi * 1.5 * t)).astype(np.float32)
    sp = load_audio(write_wav(tmp_path / "speech.wav", x, 16000))
    assert sp.original is None  # already the analysis format: no second copy kept
    out = encode_frames(frames(38), tmp_path / "out.mp4", FPS, audio=sp)
    info = probe(out)
    assert (info["audio_sample_rate"], info["audio_channels"]) == (16000, 1)
    assert info["audio_duration"] == pytest.approx(1.5, abs=1e-3)
    y, rate = decode_audio(out)
    assert rate == 16000 and corr(y[0], x) > 0.99


def test_m4a_44k_stereo_keeps_rate_channels_and_exact_length(tmp_path):
    x = stereo_music(1.3, 44100)
    src = tmp_path / "in.m4a"
    with av.open(str(src), "w") as c:
        st = c.add_stream("aac", rate=44100)
        st.layout = "stereo"
        planar = np.ascontiguousarray(x.T)
        for pos in range(0, planar.shape[1], 1024):
            fr = av.AudioFrame.from_ndarray(np.ascontiguousarray(planar[:, pos:pos + 1024]), format="fltp", layout="stereo")
            fr.sample_rate, fr.pts = 44100, pos
            for pkt in st.encode(fr):
                c.mux(pkt)
        for pkt in st.encode(None):
            c.mux(pkt)
    sp = load_audio(src)
    assert sp.original.sample_rate == 44100 and sp.original.channels == 2
    assert sp.original.duration == pytest.approx(1.3, abs=1e-3)  # encoder padding trimmed
    assert sp.duration == pytest.approx(sp.original.duration, abs=1e-3)
    out = encode_frames(frames(33), tmp_path / "out.mp4", FPS, audio=sp)
    info = probe(out)
    assert (info["audio_sample_rate"], info["audio_channels"]) == (44100, 2)
    assert info["audio_duration"] == pytest.approx(1.3, abs=1e-3)
    y, _ = decode_audio(out)
    for c in range(2):  # AAC twice over
        assert corr(y[c], x[:, c]) > 0.98


@pytest.mark.parametrize("rate, expected", [(8000, 16000), (44056, 44100), (192000, 96000)])
def test_rates_aac_lacks_or_below_16k(tmp_path, rate, expected):
    t = np.arange(int(0.8 * rate)) / rate
    x = (0.5 * np.sin(2 * np.pi * 500 * t)).astype(np.float32)
    sp = as_speech(x, rate)
    assert sp.original.sample_rate == rate and sp.original.layout == "mono"
    with VideoWriter(tmp_path / "o.mp4", FPS, (64, 64), audio=sp) as w:
        for f in frames(20):
            w.write(f)
    assert w.audio_rate == expected
    info = probe(w.path)
    assert info["audio_sample_rate"] == expected and info["audio_duration"] == pytest.approx(0.8, abs=2e-3)
    y, _ = decode_audio(w.path)
    assert corr(y[0, :int(0.7 * expected)], np.sin(2 * np.pi * 500 * np.arange(int(0.7 * expected)) / expected)) > 0.99


def test_arrays_keep_their_channels_and_stale_originals_are_ignored(tmp_path):
    x = stereo_music(1.0, 32000)
    sp = as_speech(x, 32000)  # (n, channels) as given
    assert sp.original.layout == "stereo" and sp.original.samples.shape == (2, 32000)
    assert as_speech(x.T, 32000).original.samples.shape == (2, 32000)  # (channels, n) too
    assert as_speech(sp).original is sp.original  # a Speech passes through with its original

    short = dataclasses.replace(sp, samples=sp.samples[: SAMPLE_RATE // 2])  # edited: half of it
    with VideoWriter(tmp_path / "o.mp4", FPS, (64, 64), audio=short) as w:
        for f in frames(13):
            w.write(f)
    assert (w.audio_rate, w.audio_layout) == (16000, "mono")  # the samples it carries, not the stale original
    assert probe(w.path)["audio_duration"] == pytest.approx(0.5, abs=1e-3)


def test_surround_layout_is_kept(tmp_path):
    t = np.arange(48000) / 48000
    planar = np.stack([0.2 * np.sin(2 * np.pi * (200 + 100 * c) * t) for c in range(6)]).astype(np.float32)
    sp = Speech(planar.mean(0)[::3].copy(), original=AudioTrack(planar, 48000, "5.1"))
    out = encode_frames(frames(25), tmp_path / "o.mp4", FPS, audio=sp)
    info = probe(out)
    assert (info["audio_channels"], info["audio_sample_rate"]) == (6, 48000)


def test_audio_bitrate_checks():
    assert check_audio_bitrate(None) is None
    assert check_audio_bitrate("192k") == 192000 and check_audio_bitrate(96) == 96000
    for bad in ("loud", 0, 5000, "-3"):
        with pytest.raises(InputError, match="kb/s") as e:
            check_audio_bitrate(bad)
        assert e.value.field == "audio_bitrate"
    with pytest.raises(ValueError, match="audio_bitrate"):
        VideoWriter("/tmp/never.mp4", FPS, (64, 64), audio_bitrate=10)


def test_say_keeps_the_synthesizer_rate(tmp_path):
    from talkinghead.audio.tts import synthesize

    sp = synthesize("hello there", voice="en-us")
    assert sp.original is not None and sp.original.sample_rate != SAMPLE_RATE
    assert sp.original.duration == pytest.approx(sp.duration, abs=1e-3)
    out = encode_frames(frames(3), tmp_path / "o.mp4", FPS, audio=sp)
    assert probe(out)["audio_sample_rate"] == sp.original.sample_rate


# ------------------------------------------------------------------------------------ end to end
def test_cli_animate_48k_stereo_with_bitrate(tmp_path, capsys):
    x = stereo_music(1.2, 48000)
    speech = np.asarray(load_audio(Path(__file__).resolve().parents[2] / "src/talkinghead/assets/librivox_0880.wav")
                        .samples[:19200])  # 1.2 s of real speech in the left channel, music in the right
    from scipy.signal import resample_poly

    x[:, 0] = np.clip(resample_poly(speech, 3, 1)[: len(x)] * 0.9, -1, 1)
    wav = write_wav(tmp_path / "in.wav", x, 48000)
    out = tmp_path / "talk.mp4"
    with pytest.raises(SystemExit) as e:
        main(["animate", "--image", str(portrait_path("astronaut")), "--audio", str(wav), "-o", str(out),
              "--size", "128", "--quiet", "--audio-bitrate", "256k"])
    assert e.value.code == 0, capsys.readouterr().err
    info = probe(out)
    assert (info["audio_sample_rate"], info["audio_channels"]) == (48000, 2)
    assert info["audio_bit_rate"] > 200000  # asked for 256 kb/s (the default would be 192)
    assert info["n_frames"] == 30 and info["audio_duration"] == pytest.approx(1.2, abs=1e-3)
    y, _ = decode_audio(out)
    for c in range(2):
        assert corr(y[c], x[:, c]) > 0.99


def test_cli_refuses_a_bad_bitrate(tmp_path, capsys):
    wav = write_wav(tmp_path / "in.wav", stereo_music(0.5, 48000), 48000)
    with pytest.raises(SystemExit) as e:
        main(["animate", "--image", str(portrait_path("astronaut")), "--audio", str(wav), "-o",
              str(tmp_path / "x.mp4"), "--audio-bitrate", "lots"])
    err = capsys.readouterr().err
    assert e.value.code == 2 and "--audio-bitrate" in err and "how to fix" in err and "Traceback" not in err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["in.wav"]


def test_analysis_only_callers_can_skip_the_original(tmp_path):
    wav = write_wav(tmp_path / "music.wav", stereo_music(0.5, 48000), 48000)
    sp = load_audio(wav, keep_original=False)
    assert sp.original is None and len(sp.samples) == 8000
    np.testing.assert_array_equal(sp.samples, load_audio(wav).samples)  # the same analysis copy either way
