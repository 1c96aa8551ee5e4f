"""Reading the user's speech: any audio container/codec (or the sound of a video) -> a `Speech`,
mono float32 at SAMPLE_RATE (16 kHz) for analysis, plus the audio as given (its own rate and
channels, `Speech.original`) for the output video.

Every bad input gets an `InputError` that says what is wrong and how to fix it. Silence is valid.
"""
from __future__ import annotations

import os
from fractions import Fraction
from pathlib import Path

import av
import numpy as np

from ..errors import InputError, TooLongError, UnreadableMediaError, UnsupportedFormatError
from ..types import SAMPLE_RATE, AudioTrack, Speech

SUPPORTED_AUDIO_FORMATS = ("wav", "mp3", "flac", "ogg", "opus", "m4a", "aac")
MIN_AUDIO_SECONDS = 0.05  # shorter audio is refused as empty
_DECODE_TOLERANCE = 0.25  # s past --max-seconds tolerated while decoding (codec padding)
_PREALLOCATE_MAX_S = 600.0  # the kept original is preallocated from the header's duration, up to this
_FORMATS_HINT = "use a " + ", ".join(SUPPORTED_AUDIO_FORMATS[:-1]) + f" or {SUPPORTED_AUDIO_FORMATS[-1]} file (or a video with sound)"
_TOO_LONG_HINT = "trim it, or raise the max-seconds limit"
# suffixes of media ffmpeg reads audio from: such a file that will not open is corrupt, not foreign
_MEDIA_SUFFIXES = tuple(f".{s}" for s in SUPPORTED_AUDIO_FORMATS) + (".mp4", ".mov", ".mkv", ".webm", ".avi", ".m4v")
# Stereo/5.1 -> mono: normalise the downmix so that it is a mean, not a sum (no clipping).
_RESAMPLER_OPTIONS = {"rematrix_maxval": "1.0"}
# ffmpeg's usual layout for a channel count, for arrays (which carry no layout) and for files whose
# layout is only "N channels"
DEFAULT_LAYOUTS = {1: "mono", 2: "stereo", 3: "3.0", 4: "4.0", 5: "5.0", 6: "5.1", 7: "6.1", 8: "7.1"}


def _resampler() -> av.AudioResampler:
    return av.AudioResampler(format="flt", layout="mono", rate=SAMPLE_RATE, options=_RESAMPLER_OPTIONS)


def _layout_name(layout) -> str | None:
    """A channel layout ffmpeg can name and rebuild ("stereo", "5.1", ...), None if it cannot."""
    name = getattr(layout, "name", None) or ""
    try:
        if name and "channels" not in name and av.AudioLayout(name).nb_channels == layout.nb_channels:
            return name
    except (ValueError, TypeError, av.FFmpegError):
        pass
    return DEFAULT_LAYOUTS.get(getattr(layout, "nb_channels", 0))


class _Interleaved:
    """A growing (n, channels) float32 buffer, sized up front from the container's duration so a
    long recording is not held twice while its pieces are joined; trimmed in place at the end."""

    def __init__(self, channels: int, capacity: int):
        self.buf = np.empty((max(capacity, 4096), channels), np.float32)
        self.n = 0

    def add(self, a: np.ndarray) -> None:  # (k, channels)
        k = len(a)
        if self.n + k > len(self.buf):
            self.buf.resize((max(2 * len(self.buf), self.n + k), self.buf.shape[1]), refcheck=False)
        self.buf[self.n:self.n + k] = a
        self.n += k

    def take(self, n: int | None = None) -> np.ndarray:
        n = self.n if n is None else min(n, self.n)
        self.buf.resize((n, self.buf.shape[1]), refcheck=False)  # gives back the unused tail
        return self.buf


def _too_long(source: str, seconds: float | None, max_seconds: float, field: str) -> TooLongError:
    """`source` is over the limit: `seconds` long when the header says so, else found out while decoding."""
    length = f"is {seconds:.1f} s long, more than" if seconds is not None else "is longer than"
    return TooLongError(f"{source} {length} the limit of {max_seconds:g} s", _TOO_LONG_HINT, field=field)


class _DecodedTooLong(Exception):
    """Decoding passed the limit (the header understated the length); load_audio words the error."""


def _metadata_duration(container, stream) -> float | None:
    """Duration in seconds from the container headers, without decoding; None if unknown."""
    try:
        if stream.duration is not None and stream.time_base is not None and stream.duration > 0:
            return float(stream.duration * stream.time_base)
    except Exception:  # noqa: BLE001
        pass
    try:
        if container.duration is not None and container.duration > 0:
            return container.duration / av.time_base
    except Exception:  # noqa: BLE001
        pass
    return None


def load_audio(path: str | os.PathLike, max_seconds: float | None = 600.0, keep_original: bool = True,
               field: str = "audio") -> Speech:
    """Decode any audio file (or a video's audio track) to 16 kHz mono float32.

    With `keep_original` (the default) the audio is also kept as given, at its own rate and
    channel layout, in `Speech.original` (None when it already is 16 kHz mono), for the output
    video; callers that only analyse the sound pass False and skip that copy.

    The duration is checked from the container metadata before decoding when it is known, and
    decoding stops as soon as more than `max_seconds` (None = no limit) has been decoded.
    Errors name `field`, the input the file was given as: InputError for a missing file or empty audio,
    UnsupportedFormatError for a file that holds no audio (text, an image), UnreadableMediaError for a
    media file that is empty, corrupt or truncated, TooLongError past `max_seconds`.
    """
    p = Path(path).expanduser()
    if not p.exists():
        raise InputError(f"{p} not found (no such file)", "check the path (and its spelling)", field=field)
    if p.is_dir():
        raise InputError(f"{p} is a directory, not an audio file", _FORMATS_HINT, field=field)
    if not os.access(p, os.R_OK):
        raise InputError(f"{p} cannot be read: permission denied", "check the file's permissions", field=field)
    if p.stat().st_size == 0:
        raise UnreadableMediaError(f"{p} is empty (0 bytes), not an audio file", _FORMATS_HINT, field=field)
    if max_seconds is not None and not (max_seconds > 0):
        raise InputError(f"must be positive, got {max_seconds}", "e.g. 600", field="max_seconds")

    try:
        container = av.open(str(p), mode="r", metadata_errors="ignore")
    except (av.FFmpegError, OSError, ValueError, UnicodeDecodeError):
        error = UnreadableMediaError if p.suffix.lower() in _MEDIA_SUFFIXES else UnsupportedFormatError
        raise error(f"{p} is not an audio file (ffmpeg cannot read it)", _FORMATS_HINT, field=field) from None

    try:
        stream = None
        try:
            stream = container.streams.best("audio")
        except Exception:  # noqa: BLE001
            pass
        if stream is None and container.streams.audio:
            stream = container.streams.audio[0]
        if stream is None:
            fmt = container.format.name or ""
            error = UnsupportedFormatError
            if fmt == "tty":  # ffmpeg's ANSI-art demuxer takes any text file
                why = "it is a text file"
            elif "image" in fmt or fmt.endswith("_pipe"):
                why = "it is an image"
            elif container.streams.video:
                why, error = "it is a video without an audio track", InputError
            else:
                why, error = "ffmpeg finds no audio in it", UnreadableMediaError
            raise error(f"{p} is not an audio file ({why})", _FORMATS_HINT, field=field)

        meta = _metadata_duration(container, stream)
        if max_seconds is not None and meta is not None and meta > max_seconds:
            raise _too_long(str(p), meta, max_seconds, field)

        try:
            samples, original, n_errors = _decode(container, stream, max_seconds, meta, keep_original)
        except _DecodedTooLong:
            raise _too_long(str(p), None, max_seconds, field) from None
        samples = _trim_padding(samples, container, meta, SAMPLE_RATE)
        if original is not None:
            original.samples = _trim_padding(original.samples.T, container, meta, original.sample_rate).T
    finally:
        container.close()

    if samples.size == 0 and n_errors:
        raise UnreadableMediaError(f"{p} cannot be decoded: the file is corrupt or truncated", "re-export it, e.g. as wav",
                                   field=field)
    _check_not_empty(samples, str(p), field)
    return Speech(samples=_clean(samples), sample_rate=SAMPLE_RATE, source=str(p), original=_clean_track(original))


def _trim_padding(samples: np.ndarray, container, meta: float | None, rate: int) -> np.ndarray:
    """mp4/m4a/mov: the decoder returns the encoder's padding of the last frame (up to ~0.1 s
    of silence); the track duration (from the edit list) is exact, so cut back to it."""
    if meta is None or "mp4" not in (container.format.name or ""):
        return samples
    n = int(round(meta * rate))
    if 0 < n < len(samples) <= n + int(0.25 * rate):
        return samples[:n]
    return samples


def _decode(container, stream, max_seconds: float | None, meta: float | None, keep_original: bool = True
            ) -> tuple[np.ndarray, AudioTrack | None, int]:
    """Decode the stream twice over in one pass: 16 kHz mono for analysis, and, unless the first
    frame already is 16 kHz mono, float samples at the stream's own rate and layout (the first
    frame's, should the stream change mid-way) for the output video."""
    limit = None if max_seconds is None else int((max_seconds + _DECODE_TOLERANCE) * SAMPLE_RATE)
    chunks: list[np.ndarray] = []
    total = 0
    n_errors = 0
    resampler = None
    setup = None
    keep = keeper = None  # the original: its buffer and its resampler (format conversion only)
    keep_rate = keep_layout = None

    def take(frames) -> None:
        nonlocal total
        for f in frames:
            a = f.to_ndarray().reshape(-1)
            if a.size:
                chunks.append(a)
                total += a.size

    def take_original(frames) -> None:
        for f in frames:
            if f.samples:
                keep.add(f.to_ndarray().reshape(f.samples, -1))

    try:
        for packet in container.demux(stream):
            try:
                frames = packet.decode()
            except av.FFmpegError:
                n_errors += 1  # skip a damaged packet, like ffmpeg does
                continue
            for frame in frames:
                key = (frame.format.name, frame.layout.name, frame.sample_rate)
                if key != setup:  # the stream changed its rate/layout mid-way: start a new resampler
                    if resampler is not None:
                        take(resampler.resample(None))
                        if keeper is not None:
                            take_original(keeper.resample(None))
                    elif keep_original and not (frame.sample_rate == SAMPLE_RATE and frame.layout.nb_channels == 1):
                        keep_layout = _layout_name(frame.layout)
                        if keep_layout is not None:  # unnamed layouts of > 8 channels: the mono copy only
                            keep_rate = frame.sample_rate
                            n_channels = av.AudioLayout(keep_layout).nb_channels
                            expected = min(meta or 0.0, _PREALLOCATE_MAX_S)  # a header may lie; it grows if short
                            keep = _Interleaved(n_channels, int(expected * keep_rate) + keep_rate // 4)
                    resampler, setup = _resampler(), key
                    if keep is not None:
                        keeper = av.AudioResampler(format="flt", layout=keep_layout, rate=keep_rate)
                take(resampler.resample(frame))
                if keeper is not None:
                    take_original(keeper.resample(frame))
            if limit is not None and total > limit:
                break  # stop decoding: it is too long whatever follows
        if resampler is not None:
            take(resampler.resample(None))
        if keeper is not None:
            take_original(keeper.resample(None))
    except av.FFmpegError:
        n_errors += 1  # a broken tail: keep what was decoded
    if limit is not None and total > limit:
        raise _DecodedTooLong
    samples = np.concatenate(chunks).astype(np.float32, copy=False) if chunks else np.zeros(0, np.float32)
    original = None
    if keep is not None and keep.n:
        original = AudioTrack(samples=keep.take().T, sample_rate=keep_rate, layout=keep_layout)
    return samples, original, n_errors


def as_speech(samples, sample_rate: float = SAMPLE_RATE, *, transcript: str | None = None, source: str | None = None) -> Speech:
    """Accept a waveform array (or a Speech) and return a 16 kHz mono float32 `Speech`.

    Shapes: (n,), (n, channels) or (channels, n) with up to 16 channels (averaged to mono).
    Integer dtypes are scaled to [-1, 1] (int16 / 32768, ...). Other rates are resampled with
    scipy.signal.resample_poly. Audio that is not 16 kHz mono is also kept as given (up to 8
    channels) in `Speech.original`, for the output video.
    """
    if isinstance(samples, Speech):
        transcript = transcript if transcript is not None else samples.transcript
        source = source if source is not None else samples.source
        sp = as_speech(samples.samples, samples.sample_rate, transcript=transcript, source=source)
        if samples.sample_rate == SAMPLE_RATE:
            sp.phones = samples.phones
        if samples.original is not None:
            sp.original = samples.original
        return sp
    try:
        x = np.asarray(samples)
    except Exception:  # noqa: BLE001
        x = None
    if x is None or x.dtype == object or not (np.issubdtype(x.dtype, np.number) or x.dtype == np.bool_):
        raise InputError(f"expected an audio waveform array, got {type(samples).__name__}", "pass a 1-D numpy array of samples")
    if isinstance(sample_rate, bool) or not isinstance(sample_rate, (int, float, Fraction, np.integer, np.floating)) or not (
        np.isfinite(float(sample_rate)) and float(sample_rate) > 0
    ):
        raise InputError(f"sample rate must be a positive number, got {sample_rate!r}", "e.g. sample_rate=16000")

    x = _to_float(x)
    planar = None  # (channels, n) as given
    if x.ndim == 2:
        if x.shape[1] <= 16 and x.shape[0] >= x.shape[1]:
            planar, x = x.T, x.mean(axis=1)
        elif x.shape[0] <= 16:
            planar, x = x, x.mean(axis=0)
    if x.ndim != 1:
        raise InputError(
            f"expected a mono (n,) or multi-channel (n, channels) waveform, got shape {tuple(np.shape(samples))}",
            "pass a 1-D array of samples",
        )
    if not np.all(np.isfinite(x)):
        raise InputError("the audio samples contain NaN or infinite values", "check how the waveform was produced")

    x = x.astype(np.float64, copy=False)
    sr = Fraction(sample_rate).limit_denominator(1000) if not isinstance(sample_rate, Fraction) else sample_rate
    original = None
    if planar is None and sr.denominator == 1 and sr != SAMPLE_RATE:
        planar = x[None]
    if planar is not None and sr.denominator == 1 and planar.shape[0] in DEFAULT_LAYOUTS and x.size:
        # a copy: the caller may reuse its buffer (a live stream's ring buffer) once we return
        original = AudioTrack(np.array(planar, np.float32), int(sr), DEFAULT_LAYOUTS[planar.shape[0]])
    if sr != SAMPLE_RATE and x.size:
        from scipy.signal import resample_poly  # imported here: scipy.signal costs ~0.6 s at start-up

        ratio = (Fraction(SAMPLE_RATE) / sr).limit_denominator(4000)
        x = resample_poly(x, ratio.numerator, ratio.denominator)
    x = x.astype(np.float32)
    _check_not_empty(x, source)
    return Speech(samples=_clean(x), sample_rate=SAMPLE_RATE, transcript=transcript, source=source,
                  original=_clean_track(original))


def _to_float(x: np.ndarray) -> np.ndarray:
    if x.dtype == np.bool_:
        return x.astype(np.float32)
    if np.issubdtype(x.dtype, np.floating):
        return x.astype(np.float32, copy=False)
    if x.dtype == np.uint8:  # 8-bit PCM is unsigned, centred on 128
        return (x.astype(np.float32) - 128.0) / 128.0
    if np.issubdtype(x.dtype, np.signedinteger):
        return (x.astype(np.float64) / float(2 ** (8 * x.dtype.itemsize - 1))).astype(np.float32)
    if np.issubdtype(x.dtype, np.unsignedinteger):
        half = float(2 ** (8 * x.dtype.itemsize - 1))
        return ((x.astype(np.float64) - half) / half).astype(np.float32)
    if np.issubdtype(x.dtype, np.complexfloating):
        raise InputError("the audio samples are complex numbers", "pass real-valued samples")
    return x.astype(np.float32)


def _check_not_empty(x: np.ndarray, source: str | None, field: str = "audio") -> None:
    seconds = x.size / SAMPLE_RATE
    if seconds < MIN_AUDIO_SECONDS:
        what = f"{source} contains" if source else "contains"
        detail = "no audio samples" if x.size == 0 else f"only {seconds:.3f} s of audio"
        raise InputError(f"{what} {detail} (empty audio)", f"use a recording at least {MIN_AUDIO_SECONDS:g} s long",
                         field=field)


def _clean_track(track: AudioTrack | None) -> AudioTrack | None:
    """The kept original, finite and within [-1, 1] like `_clean` makes the analysis copy."""
    if track is None:
        return None
    x = track.samples
    if not x.size:
        return track
    lo, hi = float(x.min()), float(x.max())  # no temporaries the size of the track (NaN/inf propagate)
    if not (np.isfinite(lo) and np.isfinite(hi)):
        x = np.nan_to_num(x, nan=0.0, posinf=0.0, neginf=0.0)
        lo, hi = float(x.min()), float(x.max())
    peak = max(-lo, hi)
    if peak > 1.0:
        x = x / np.float32(peak)
    track.samples = x
    return track


def _clean(x: np.ndarray) -> np.ndarray:
    """float32, contiguous, finite, within [-1, 1] (scaled down if a float source ran hotter)."""
    x = np.ascontiguousarray(x, dtype=np.float32)
    if not np.all(np.isfinite(x)):
        x = np.nan_to_num(x, nan=0.0, posinf=0.0, neginf=0.0)
    peak = float(np.max(np.abs(x))) if x.size else 0.0
    if peak > 1.0:
        x = x / np.float32(peak)
    return x
