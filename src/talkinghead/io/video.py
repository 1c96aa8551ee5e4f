"""Writing the result: RGB frames (+ the speech) -> an H.264/AAC mp4, atomically.

The sound is the user's audio as given (`Speech.original`: its own rate and channels) when the
Speech carries it, else its 16 kHz mono samples.

`VideoWriter` encodes into a hidden ``.<name>.<random>.part.mp4`` next to the target and moves it
onto the target only when everything succeeded, so a failed or interrupted render never leaves
a half-written video behind (nor clobbers an earlier good one).
"""
from __future__ import annotations

import math
import os
import secrets
from collections.abc import Iterable
from fractions import Fraction
from pathlib import Path

import av
import cv2
import numpy as np

from ..errors import InputError, UnreadableMediaError, UnsupportedFormatError
from ..types import AudioTrack, Speech

X264_PRESETS = ("ultrafast", "superfast", "veryfast", "faster", "fast", "medium", "slow", "slower", "veryslow", "placebo")
_AAC_RATES = (96000, 88200, 64000, 48000, 44100, 32000, 24000, 22050, 16000, 12000, 11025, 8000, 7350)
FAST_AAC_FROM = 64000  # bit/s per channel from which the AAC encoder uses its fast coder
_MIN_OUTPUT_RATE = 16000  # Hz: lower rates (telephone 8 kHz) are written at 16 kHz, never worse than the analysis copy
_AAC_MAX_BITS_PER_FRAME = 6144  # per channel per 1024-sample frame (the AAC bit reservoir limit)
MIN_AUDIO_BITRATE, MAX_AUDIO_BITRATE = 16, 1024  # kb/s accepted from the user
_TRACK_TOLERANCE = 0.02  # s: an original whose length differs more than this from the samples is stale
_MP4_HINT = "use a name ending in .mp4"
# With the default preset: diamond motion search, one sub-pixel refinement pass, and no 8x8 inter
# sub-partitions (a talking head's motion is smooth over whole macroblocks). On talking heads (still
# background, one moving face) the first two take ~30% less x264 CPU than plain veryfast for 9-14% more
# bytes and 0.1-0.2 dB less PSNR at CRF 18; the partitions another ~12% of the encoder's CPU for 4%
# more bytes and 0.03 dB (measured: bundled portraits, natural and lively heads, 512 px).
_X264_PARAMS = {"veryfast": "me=dia:subme=1:partitions=i8x8,i4x4"}

# cv2's RGB -> I420 conversion is BT.601 limited range (and ~10x faster than swscale); the stream
# is tagged accordingly so players decode the colours exactly. Primaries/transfer: sRGB ~ BT.709.
_COLORSPACE_SMPTE170M = 6
_PRIMARIES_BT709 = 1
_TRC_BT709 = 1
_RANGE_MPEG = 1


def check_output_path(path: str | os.PathLike) -> Path:
    """Check that an .mp4 can be written at `path`; return it as a Path (user ~ expanded).

    Raises InputError about the "output" field when the path is an existing directory or its parent
    folder does not exist or is not writable; UnsupportedFormatError when the extension is not .mp4.
    """
    if path is None or str(path).strip() == "":
        raise InputError("must be given (a path to an .mp4 file)", _MP4_HINT, field="output")
    p = Path(path).expanduser()
    if p.is_dir():
        raise InputError(f"{p} is a directory", f"give a file name inside it, e.g. {p / 'out.mp4'}", field="output")
    if p.suffix.lower() != ".mp4":
        raise UnsupportedFormatError(f"must be an .mp4 video, got {p.name!r}", _MP4_HINT, field="output")
    parent = p.absolute().parent
    if not parent.exists():
        raise InputError(f"{p} cannot be written: its folder {parent} does not exist",
                         "create it first, or choose another output path", field="output")
    if not parent.is_dir():
        raise InputError(f"{p} cannot be written: {parent} is not a folder", "choose another output path",
                         field="output")
    if not os.access(parent, os.W_OK | os.X_OK):
        raise InputError(f"{p} cannot be written: its folder {parent} is not writable",
                         "choose a folder you can write to", field="output")
    return p


def default_audio_bitrate(rate: int, channels: int) -> int:
    """AAC bit rate (bit/s) that is transparent for speech and music with ffmpeg's encoder:
    96 kb/s per channel for the first two (64 kb/s at 24 kHz and below), 64 kb/s for each further one."""
    per = 64000 if rate <= 24000 else 96000
    return per * min(channels, 2) + 64000 * max(channels - 2, 0)


def check_audio_bitrate(kbps) -> int | None:
    """A user's --audio-bitrate in kb/s ("192", "192k" or a number) -> bit/s; None stays None."""
    if kbps is None:
        return None
    text = str(kbps).strip().lower().removesuffix("bps").removesuffix("b/s").removesuffix("k")
    try:
        value = float(text)
    except ValueError:
        value = float("nan")
    if not (MIN_AUDIO_BITRATE <= value <= MAX_AUDIO_BITRATE):
        raise InputError(f"must be {MIN_AUDIO_BITRATE}..{MAX_AUDIO_BITRATE} kb/s, got {kbps!r}",
                         "e.g. 192 (stereo music) or 96 (mono speech); leave it out for a transparent default",
                         field="audio_bitrate")
    return int(round(value * 1000))


def _encodable_layout(layout: str) -> bool:
    """Whether ffmpeg's AAC encoder opens with this channel layout."""
    try:
        cc = av.CodecContext.create("aac", "w")
        cc.sample_rate, cc.layout, cc.format, cc.bit_rate = 48000, layout, "fltp", 128000
        cc.open()
        return True
    except (av.FFmpegError, ValueError, TypeError):
        return False


def _output_audio(audio: Speech) -> tuple[np.ndarray, int, str]:
    """(channels, n) float32 samples, rate and layout to encode: the original when it matches the
    samples' length, converted where AAC needs it (rates below 16 kHz go up to 16 kHz, rates AAC
    lacks to the next one it has, at most 96 kHz; a layout the encoder refuses becomes stereo)."""
    track = audio.original
    if track is not None and not isinstance(track, AudioTrack):
        raise TypeError(f"Speech.original must be an AudioTrack, got {type(track).__name__}")
    if track is not None and track.samples.size and abs(track.duration - audio.duration) <= _TRACK_TOLERANCE:
        planar, rate, layout = np.asarray(track.samples, np.float32), int(track.sample_rate), track.layout
    else:
        samples = np.asarray(audio.samples, dtype=np.float32).reshape(-1)
        rate = audio.sample_rate
        if samples.size and int(rate) != rate:  # a fractional rate: through the analysis resampler
            from .audio import as_speech

            samples, rate = as_speech(samples, rate).samples, 16000
        planar, rate, layout = samples[None], int(rate), "mono"
    if not planar.size:
        return planar, rate, layout
    out_rate = min((r for r in _AAC_RATES if r >= max(rate, _MIN_OUTPUT_RATE)), default=max(_AAC_RATES))
    out_layout = layout if planar.shape[0] <= 2 or _encodable_layout(layout) else "stereo"
    if (out_rate, out_layout) != (rate, layout):
        planar = _convert(planar, rate, layout, out_rate, out_layout)
    lo, hi = float(planar.min()), float(planar.max())  # NaN/inf propagate; no track-sized temporaries
    if not (-1.0 <= lo and hi <= 1.0):
        planar = np.clip(np.nan_to_num(planar), -1.0, 1.0)  # copy only when needed
    return planar, out_rate, out_layout


def _convert(planar: np.ndarray, rate: int, layout: str, out_rate: int, out_layout: str) -> np.ndarray:
    """Resample / remix (channels, n) float32 with ffmpeg's resampler, one second at a time."""
    resampler = av.AudioResampler(format="fltp", layout=out_layout, rate=out_rate)
    pieces = []
    for i in range(0, planar.shape[1], rate):
        frame = av.AudioFrame.from_ndarray(np.ascontiguousarray(planar[:, i:i + rate]), format="fltp", layout=layout)
        frame.sample_rate = rate
        pieces += [f.to_ndarray() for f in resampler.resample(frame)]
    pieces += [f.to_ndarray() for f in resampler.resample(None)]
    out = np.concatenate(pieces, axis=1).astype(np.float32, copy=False)
    n = int(round(planar.shape[1] * out_rate / rate))
    return out[:, :n]


def _fps_fraction(fps) -> Fraction:
    """25 -> 25/1, 29.97 -> 30000/1001 (and the other NTSC rates), 12.5 -> 25/2."""
    if isinstance(fps, Fraction):
        rate = fps
    else:
        try:
            f = float(fps)
        except (TypeError, ValueError):
            raise ValueError(f"fps must be a number, got {fps!r}") from None
        if not math.isfinite(f) or f <= 0:
            raise ValueError(f"fps must be positive, got {fps!r}")
        rate = None
        for base in (24, 30, 48, 60, 120, 240):
            if abs(f - base * 1000 / 1001) < 5e-3:
                rate = Fraction(base * 1000, 1001)
                break
        if rate is None:
            rate = Fraction(f).limit_denominator(1001)
    if rate <= 0:
        raise ValueError(f"fps must be positive, got {fps!r}")
    return rate


class VideoWriter:
    """H.264 (libx264, yuv420p) + AAC mp4 writer.

        with VideoWriter("out.mp4", fps=25, size=(512, 512), audio=speech) as w:
            for frame in frames:      # (h, w, 3) uint8 RGB
                w.write(frame)

    The file appears at `path` only after a successful close(); an exception inside the
    with-block (or a failing close) deletes the temporary file and leaves no output.

    Audio: `audio` is a Speech or None (no audio track). When `audio.original` (an AudioTrack:
    the user's audio at its own rate and channel layout) is set and as long as `audio.samples`,
    the track is that audio at that rate and layout; otherwise it is the 16 kHz mono samples.
    Rates below 16 kHz are written at 16 kHz and rates AAC lacks at the next one it has (at most
    96 kHz). Both streams start at 0; the audio is written whole, whatever the number of frames.
    `audio_bitrate` is the AAC bit rate in bit/s (None: `default_audio_bitrate`, transparent for
    speech and music: 96 kb/s mono, 192 kb/s stereo at 32 kHz and up). After construction,
    `audio_rate`, `audio_layout` and `audio_bitrate` say what is written (None without audio).

    Video: libx264 at `crf` and `preset` (or losslessly with `lossless`); the default `veryfast` is tuned for talking heads
    (`_X264_PARAMS`: ~30% less encoder CPU for ~10% more bytes at the same CRF).
    """

    def __init__(
        self,
        path: str | os.PathLike,
        fps: float,
        size: tuple[int, int],
        audio: Speech | None = None,
        crf: int = 18,
        preset: str = "veryfast",
        audio_bitrate: int | None = None,
        lossless: bool = False,
    ):
        self._container = None
        self._tmp: Path | None = None
        self._done = False
        self.path = check_output_path(path)
        w, h = (int(v) for v in size)
        if w <= 0 or h <= 0 or w % 2 or h % 2:
            raise ValueError(f"video size must be positive and even (yuv420p), got {w}x{h}")
        if preset not in X264_PRESETS:
            raise ValueError(f"unknown x264 preset {preset!r}; use one of {', '.join(X264_PRESETS)}")
        if isinstance(crf, bool) or not isinstance(crf, (int, np.integer)) or not 0 <= crf <= 51:
            raise ValueError(f"crf must be an integer in 0..51, got {crf!r}")
        self.fps = _fps_fraction(fps)
        self.size = (w, h)
        self._shape = (h, w, 3)
        self._time_base = 1 / self.fps
        self.frames_written = 0

        if audio_bitrate is not None and (isinstance(audio_bitrate, bool) or not isinstance(audio_bitrate, (int, np.integer))
                                          or not 1000 * MIN_AUDIO_BITRATE <= audio_bitrate <= 1000 * MAX_AUDIO_BITRATE):
            raise ValueError(f"audio_bitrate must be an integer in bit/s, {1000 * MIN_AUDIO_BITRATE}.."
                             f"{1000 * MAX_AUDIO_BITRATE}, got {audio_bitrate!r}")

        self._audio: np.ndarray | None = None  # (channels, n) float32
        self._audio_pos = 0
        self.audio_rate = self.audio_layout = self.audio_bitrate = None
        if audio is not None:
            if not isinstance(audio, Speech):
                raise TypeError(f"audio must be a Speech, got {type(audio).__name__}")
            planar, sr, layout = _output_audio(audio)
            if planar.size:  # no samples: no audio track
                self._audio, self._sr, self._layout = planar, sr, layout
                ch = planar.shape[0]
                rate = audio_bitrate or default_audio_bitrate(sr, ch)
                self.audio_rate, self.audio_layout = sr, layout
                self.audio_bitrate = int(min(rate, _AAC_MAX_BITS_PER_FRAME * sr / 1024 * ch))

        self._tmp = self._make_temp()
        try:
            self._open(crf, preset, lossless)
        except BaseException:
            self.abort()
            raise

    # ---------------------------------------------------------------------------------------
    def _make_temp(self) -> Path:
        parent = self.path.absolute().parent
        for _ in range(100):
            tmp = parent / f".{self.path.stem}.{secrets.token_hex(4)}.part.mp4"
            try:  # O_EXCL: never reuse someone else's file; mode 0o666 & umask like any new file
                fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
            except FileExistsError:
                continue
            except OSError as e:
                raise InputError(f"cannot be written: no file can be created in {parent} ({e.strerror})",
                                 "choose a folder you can write to", field="output") from None
            os.close(fd)
            return tmp
        raise InputError(f"cannot be written: no temporary file can be created in {parent}",
                         "choose another output folder", field="output")

    def _open(self, crf: int, preset: str, lossless: bool) -> None:
        self._container = av.open(str(self._tmp), mode="w", format="mp4", options={"movflags": "+faststart"})
        # quantiser 0 is lossless: the decoder gives back exactly the yuv420p frames written, whatever choices
        # the encoder's threads make (they vary from run to run, so lossy encodes of the same frames can differ)
        options = {"qp": "0", "preset": preset} if lossless else {"crf": str(int(crf)), "preset": preset}
        if preset in _X264_PARAMS:
            options["x264-params"] = _X264_PARAMS[preset]
        vs = self._container.add_stream("libx264", rate=self.fps, options=options)
        vs.width, vs.height = self.size
        vs.pix_fmt = "yuv420p"
        cc = vs.codec_context
        cc.time_base = self._time_base
        cc.thread_count = 0  # auto
        cc.thread_type = "FRAME"  # x264 frame threads: ~1.4x the throughput of sliced threads
        cc.colorspace = _COLORSPACE_SMPTE170M
        cc.color_primaries = _PRIMARIES_BT709
        cc.color_trc = _TRC_BT709
        cc.color_range = _RANGE_MPEG
        self._vstream = vs
        self._astream = None
        if self._audio is not None:
            per_channel = self.audio_bitrate / self._audio.shape[0]
            # ffmpeg's constant-quantiser AAC coder: a third of the default two-loop search's CPU and, from
            # 64 kb/s a channel up, the better of the two (16 kHz speech at 96 kb/s: 43 vs 40 dB SNR); below
            # that the two-loop search spends the few bits better
            coder = "fast" if per_channel >= FAST_AAC_FROM else "twoloop"
            st = self._container.add_stream("aac", rate=self._sr, options={"aac_coder": coder})
            st.layout = self._layout
            st.bit_rate = self.audio_bitrate
            st.codec_context.time_base = Fraction(1, self._sr)
            self._astream = st
            self._frame_size = 1024  # replaced by the codec's own frame_size once it is open

    # ---------------------------------------------------------------------------------------
    def write(self, frame: np.ndarray) -> None:
        """Encode one (h, w, 3) uint8 RGB frame."""
        if self._done or self._container is None:
            raise RuntimeError("VideoWriter is closed")
        if frame.shape != self._shape or frame.dtype != np.uint8:
            raise ValueError(f"frame must be {self._shape} uint8, got {frame.shape} {frame.dtype}")
        if not frame.flags.c_contiguous:
            frame = np.ascontiguousarray(frame)
        vf = av.VideoFrame.from_ndarray(cv2.cvtColor(frame, cv2.COLOR_RGB2YUV_I420), format="yuv420p")
        vf.pts = self.frames_written
        vf.time_base = self._time_base
        mux = self._container.mux
        for packet in self._vstream.encode(vf):
            mux(packet)
        self.frames_written += 1
        if self._audio is not None:  # keep the audio interleaved with the video
            self._write_audio(int(self.frames_written * self._sr / self.fps))

    def _write_audio(self, until: int | None) -> None:
        """Encode audio up to sample `until` in whole codec frames (None: all of it + flush)."""
        a, st = self._audio, self._astream
        n = a.shape[1]
        end = n if until is None else min(n, until)
        while self._audio_pos < end:
            fs = st.codec_context.frame_size or self._frame_size
            if self._audio_pos + fs > end and until is not None:
                break  # wait for a whole frame
            chunk = np.ascontiguousarray(a[:, self._audio_pos : self._audio_pos + fs])
            af = av.AudioFrame.from_ndarray(chunk, format="fltp", layout=self._layout)
            af.sample_rate = self._sr
            af.pts = self._audio_pos
            af.time_base = Fraction(1, self._sr)
            for packet in st.encode(af):
                self._container.mux(packet)
            self._audio_pos += chunk.shape[1]
        if until is None:
            for packet in st.encode(None):
                self._container.mux(packet)

    # ---------------------------------------------------------------------------------------
    def close(self) -> Path:
        """Flush the encoders, finish the file and move it onto `path`. Returns `path`."""
        if self._done:
            return self.path
        if self._container is None:
            raise RuntimeError("VideoWriter was aborted")
        try:
            if self.frames_written == 0:
                raise ValueError("no frames were written; refusing to create an empty video")
            for packet in self._vstream.encode(None):
                self._container.mux(packet)
            if self._audio is not None:
                self._write_audio(None)
            container, self._container = self._container, None
            container.close()
            os.replace(self._tmp, self.path)
            self._tmp = None
        except BaseException:
            self.abort()
            raise
        self._done = True
        return self.path

    def abort(self) -> None:
        """Stop without output: close the encoder quietly and delete the temporary file."""
        container, self._container = self._container, None
        if container is not None:
            try:
                container.close()
            except Exception:  # noqa: BLE001 - we are discarding the file anyway
                pass
        tmp, self._tmp = self._tmp, None
        if tmp is not None:
            try:
                os.unlink(tmp)
            except FileNotFoundError:
                pass
        self._done = True

    def __enter__(self) -> "VideoWriter":
        return self

    def __exit__(self, exc_type, exc, tb) -> bool:
        if exc_type is not None:
            self.abort()
        else:
            self.close()
        return False

    def __del__(self):  # a writer dropped without close() leaves nothing behind
        try:
            if not getattr(self, "_done", True) and getattr(self, "_tmp", None) is not None:
                self.abort()
        except Exception:  # noqa: BLE001
            pass


def encode_frames(
    frames: Iterable[np.ndarray],
    path: str | os.PathLike,
    fps: float,
    audio: Speech | None = None,
    crf: int = 18,
    preset: str = "veryfast",
    audio_bitrate: int | None = None,
) -> Path:
    """Write an iterable of (h, w, 3) uint8 RGB frames (size taken from the first) to `path`
    (audio and `audio_bitrate` as in `VideoWriter`)."""
    it = iter(frames)
    try:
        first = next(it)
    except StopIteration:
        raise ValueError("no frames to encode") from None
    first = np.asarray(first)
    if first.ndim != 3 or first.shape[2] != 3:
        raise ValueError(f"frames must be (h, w, 3) uint8 RGB, got shape {first.shape}")
    h, w = first.shape[:2]
    with VideoWriter(path, fps, (w, h), audio=audio, crf=crf, preset=preset, audio_bitrate=audio_bitrate) as writer:
        writer.write(first)
        for frame in it:
            writer.write(np.asarray(frame))
    return writer.path


def probe(path: str | os.PathLike, decode: bool = True) -> dict:
    """Describe a video file. Frames and audio samples are counted by decoding.

    Keys: fps, n_frames, width, height, video_codec, pix_fmt, video_duration, audio_codec,
    audio_sample_rate, audio_channels, audio_layout, audio_bit_rate, audio_duration, audio_samples
    (None without audio), faststart. Durations come from the container (edit lists applied);
    frames and samples are decoded, or with `decode=False` read from the headers (n_frames from
    the stream's frame count, audio_samples None): milliseconds instead of a full decode.
    """
    p = Path(path)
    try:
        container = av.open(str(p))
    except (av.FFmpegError, OSError) as e:
        raise UnreadableMediaError(f"{p} cannot be read as a video: {e}", "check that it is a complete video file",
                                   field="video") from None
    info: dict = dict.fromkeys(
        ("fps", "n_frames", "width", "height", "video_codec", "pix_fmt", "video_duration", "audio_codec",
         "audio_sample_rate", "audio_channels", "audio_layout", "audio_bit_rate", "audio_duration", "audio_samples")
    )
    try:
        if container.streams.video:
            vs = container.streams.video[0]
            rate = vs.average_rate or vs.guessed_rate or vs.base_rate
            info.update(
                fps=float(rate) if rate else None,
                width=vs.codec_context.width,
                height=vs.codec_context.height,
                video_codec=vs.codec_context.name,
                pix_fmt=vs.codec_context.pix_fmt,
            )
            if decode:
                vs.thread_type = "AUTO"
                n = 0
                for _ in container.decode(vs):
                    n += 1
            else:
                n = vs.frames
            info["n_frames"] = n
            if vs.duration is not None and vs.time_base is not None:
                info["video_duration"] = float(vs.duration * vs.time_base)
            elif info["fps"]:
                info["video_duration"] = n / info["fps"]
    finally:
        container.close()
    container = av.open(str(p))  # a fresh pass for the audio (no seeking back)
    try:
        if container.streams.audio:
            st = container.streams.audio[0]
            info.update(
                audio_codec=st.codec_context.name,
                audio_sample_rate=st.codec_context.sample_rate,
                audio_channels=st.codec_context.channels,
                audio_layout=st.codec_context.layout.name,
                audio_bit_rate=st.codec_context.bit_rate or None,
            )
            n = 0
            if decode:
                for frame in container.decode(st):
                    n += frame.samples
                info["audio_samples"] = n  # decoded, including the codec's padding of the last frame
            if st.duration is not None and st.time_base is not None:
                info["audio_duration"] = float(st.duration * st.time_base)  # edit list applied
            elif decode and st.codec_context.sample_rate:
                info["audio_duration"] = n / st.codec_context.sample_rate
    finally:
        container.close()
    with open(p, "rb") as f:
        head = f.read(1 << 16)
    moov, mdat = head.find(b"moov"), head.find(b"mdat")
    info["faststart"] = moov != -1 and (mdat == -1 or moov < mdat)
    return info
