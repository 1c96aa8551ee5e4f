"""talkinghead.io.audio: every container/codec -> 16 kHz mono float32, and a clear error otherwise.

All test media are generated with PyAV itself in tmp_path.
"""
from __future__ import annotations

import wave

import av
import numpy as np
import pytest

from talkinghead.errors import InputError, TooLongError, UnreadableMediaError, UnsupportedFormatError
from talkinghead.io import as_speech, encode_frames, load_audio
from talkinghead.io import audio as audio_mod
from talkinghead.types import SAMPLE_RATE, Speech

FREQ = 1000.0  # Hz, the test tone


def write_tone(path, codec, rate, seconds=1.0, channels=2, container_format=None, options=None, amp=0.5, freq=FREQ):
    """Encode a sine tone with PyAV; returns the path."""
    layout = "stereo" if channels == 2 else "mono"
    n = int(round(seconds * rate))
    t = np.arange(n) / rate
    tone = (amp * np.sin(2 * np.pi * freq * t)).astype(np.float32)
    data = np.repeat(tone[None], channels, axis=0)
    with av.open(str(path), "w", format=container_format) as c:
        st = c.add_stream(codec, rate=rate, options=options or {})
        st.layout = layout
        for pos in range(0, n, 1024):  # PyAV re-frames to the codec's frame size
            fr = av.AudioFrame.from_ndarray(np.ascontiguousarray(data[:, pos : pos + 1024]), format="fltp", layout=layout)
            fr.sample_rate = rate
            fr.pts = pos
            for pkt in st.encode(fr):
                c.mux(pkt)
        for pkt in st.encode(None):
            c.mux(pkt)
    return path


def write_wav(path, samples_int16: np.ndarray, rate=16000, channels=1):
    with wave.open(str(path), "wb") as w:
        w.setnchannels(channels)
        w.setsampwidth(2)
        w.setframerate(rate)
        w.writeframes(np.asarray(samples_int16, dtype="<i2").tobytes())
    return path


def peak_frequency(x: np.ndarray, rate: int = SAMPLE_RATE) -> float:
    spec = np.abs(np.fft.rfft(x * np.hanning(len(x))))
    return float(np.fft.rfftfreq(len(x), 1.0 / rate)[np.argmax(spec)])


@pytest.mark.parametrize(
    "name, codec, rate, fmt, options",
    [
        ("tone.wav", "pcm_s16le", 44100, None, None),
        ("tone.mp3", "libmp3lame", 44100, None, None),
        ("tone.flac", "flac", 48000, None, None),
        ("tone.ogg", "vorbis", 48000, None, {"strict": "experimental"}),
        ("tone.opus", "libopus", 48000, None, None),
        ("tone.m4a", "aac", 44100, None, None),
        ("tone_48k.m4a", "aac", 48000, None, None),
    ],
)
def test_formats_load_as_16k_mono(tmp_path, name, codec, rate, fmt, options):
    path = write_tone(tmp_path / name, codec, rate, seconds=1.5, options=options)
    sp = load_audio(path)
    assert isinstance(sp, Speech)
    assert sp.sample_rate == SAMPLE_RATE == 16000
    assert sp.samples.dtype == np.float32 and sp.samples.ndim == 1
    assert abs(sp.duration - 1.5) <= 0.020, sp.duration
    assert abs(peak_frequency(sp.samples) - FREQ) <= 2.0
    # stereo L = R: the downmix is a mean (same level), not a sum
    mid = sp.samples[4000:-4000]
    assert 0.4 < np.abs(mid).max() < 0.6
    assert sp.source == str(path)
    assert np.abs(sp.samples).max() <= 1.0


def test_wav_is_sample_exact_and_mono_is_mean(tmp_path):
    n = 16000
    left = (np.sin(2 * np.pi * 440 * np.arange(n) / 16000) * 16000).astype(np.int16)
    right = np.zeros(n, np.int16)
    path = write_wav(tmp_path / "lr.wav", np.stack([left, right], axis=1).reshape(-1), rate=16000, channels=2)
    sp = load_audio(path)
    assert len(sp.samples) == n
    np.testing.assert_allclose(sp.samples, left / 32768.0 / 2, atol=1e-3)


def test_audio_track_of_a_video(tmp_path):
    rate = 48000
    t = np.arange(2 * rate) / rate
    speech = as_speech((0.5 * np.sin(2 * np.pi * FREQ * t)).astype(np.float32), rate)
    frames = [np.zeros((64, 64, 3), np.uint8)] * 50
    path = encode_frames(frames, tmp_path / "talk.mp4", 25, audio=speech)
    sp = load_audio(path)
    assert abs(sp.duration - 2.0) <= 0.020
    assert abs(peak_frequency(sp.samples) - FREQ) <= 2.0


def test_silence_is_valid(tmp_path):
    sp = load_audio(write_wav(tmp_path / "silence.wav", np.zeros(8000, np.int16)))
    assert sp.duration == pytest.approx(0.5)
    assert not np.any(sp.samples)


def test_video_without_audio_is_not_audio(tmp_path):
    path = encode_frames([np.zeros((64, 64, 3), np.uint8)] * 5, tmp_path / "silent_video.mp4", 25)
    with pytest.raises(InputError) as e:
        load_audio(path)
    assert "is not an audio file" in e.value.message
    assert "wav" in e.value.hint and "mp3" in e.value.hint


@pytest.mark.parametrize("name, content, why, error", [
    ("notes.txt", b"hello, this is not audio\n" * 50, "it is a text file", UnsupportedFormatError),
    ("speech.wav", b"\x00\x01garbage" * 300, "ffmpeg cannot read it", UnreadableMediaError)])
def test_non_audio_files(tmp_path, name, content, why, error):
    path = tmp_path / name
    path.write_bytes(content)
    with pytest.raises(error) as e:  # a text file is foreign; a .wav that will not decode is corrupt
        load_audio(path)
    assert e.value.field == "audio"
    assert e.value.message == f"{path} is not an audio file ({why})"
    assert e.value.hint


def test_image_is_not_audio(tmp_path):
    from PIL import Image

    path = tmp_path / "face.png"
    Image.new("RGB", (80, 80), (200, 100, 50)).save(path)
    with pytest.raises(InputError, match="not an audio file"):
        load_audio(path)


def test_missing_and_directory(tmp_path):
    with pytest.raises(InputError, match="not found"):
        load_audio(tmp_path / "nope.wav")
    with pytest.raises(InputError, match="directory"):
        load_audio(tmp_path)
    (tmp_path / "zero.wav").write_bytes(b"")
    with pytest.raises(InputError, match="empty"):
        load_audio(tmp_path / "zero.wav")


@pytest.mark.parametrize("n_samples", [0, 400])  # 0 s and 0.025 s
def test_empty_audio(tmp_path, n_samples):
    path = write_wav(tmp_path / "empty.wav", np.zeros(n_samples, np.int16))
    with pytest.raises(InputError) as e:
        load_audio(path)
    assert "empty" in e.value.message
    assert "0.05" in e.value.hint


def test_too_long_from_metadata(tmp_path):
    path = write_wav(tmp_path / "long.wav", np.zeros(3 * 16000, np.int16))
    with pytest.raises(TooLongError) as e:  # an InputError interfaces tell apart by its type
        load_audio(path, max_seconds=1)
    assert e.value.field == "audio"
    assert e.value.message == f"{path} is 3.0 s long, more than the limit of 1 s"
    assert e.value.hint == "trim it, or raise the max-seconds limit"
    assert load_audio(path, max_seconds=None).duration == pytest.approx(3.0)


def test_too_long_stops_decoding_without_metadata(tmp_path, monkeypatch):
    path = write_tone(tmp_path / "long.mp3", "libmp3lame", 44100, seconds=3.0)
    monkeypatch.setattr(audio_mod, "_metadata_duration", lambda container, stream: None)
    with pytest.raises(TooLongError) as e:
        load_audio(path, max_seconds=1.0)
    assert e.value.message == f"{path} is longer than the limit of 1 s"
    assert e.value.hint == "trim it, or raise the max-seconds limit"


def test_as_speech_resamples_and_downmixes():
    rate = 44100
    t = np.arange(rate) / rate
    tone = 0.5 * np.sin(2 * np.pi * FREQ * t)
    sp = as_speech(np.stack([tone, tone], axis=1), rate)  # (n, 2)
    assert sp.sample_rate == 16000 and sp.samples.dtype == np.float32
    assert len(sp.samples) == 16000
    assert abs(peak_frequency(sp.samples) - FREQ) <= 2.0
    assert np.abs(sp.samples[1000:-1000]).max() == pytest.approx(0.5, abs=0.02)

    pcm = (tone * 32767).astype(np.int16)
    sp16 = as_speech(pcm, rate)
    assert np.abs(sp16.samples[1000:-1000]).max() == pytest.approx(0.5, abs=0.02)

    same = as_speech(np.zeros(16000, np.float32), 16000)  # silence is fine
    assert len(same.samples) == 16000

    channels_first = as_speech(np.stack([tone, tone]), rate)  # (2, n)
    assert len(channels_first.samples) == 16000


def test_as_speech_errors():
    with pytest.raises(InputError, match="empty"):
        as_speech(np.zeros(100, np.float32), 16000)
    with pytest.raises(InputError, match="NaN"):
        as_speech(np.full(16000, np.nan, np.float32), 16000)
    with pytest.raises(InputError, match="sample rate"):
        as_speech(np.zeros(16000, np.float32), 0)
    with pytest.raises(InputError):
        as_speech(np.zeros((10, 10, 10), np.float32), 16000)
    with pytest.raises(InputError):
        as_speech("not an array", 16000)
