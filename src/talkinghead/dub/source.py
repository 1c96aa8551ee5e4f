"""Reading the video to dub: checks with one clear message per bad input, then decoded RGB frames
with their presentation times, upright (rotation metadata applied), one at a time."""
from __future__ import annotations

import os
from collections.abc import Iterator
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path

import av
import numpy as np

from ..errors import InputError, TooLongError, UnreadableMediaError, UnsupportedFormatError

_VIDEO_HINT = "pass a video file with a picture track (mp4, mov, mkv, webm, avi...)"
_TOO_LONG_HINT = "pass a shorter clip, or raise the max-seconds limit"
# suffixes of video containers: such a file that will not open is corrupt, not foreign
_VIDEO_SUFFIXES = (".mp4", ".mov", ".mkv", ".webm", ".avi", ".m4v", ".mpg", ".mpeg", ".ts", ".flv", ".wmv", ".3gp")
MIN_FRAMES = 2  # a video shorter than this is a still image
TRUNCATED = 0.9  # fewer decoded frames than this share of the header's count: the file is cut short


@dataclass
class Frame:
    """One decoded source frame."""

    index: int  # decoding order, from 0
    time: float  # presentation time in seconds from the first frame
    image: np.ndarray  # (h, w, 3) uint8 RGB, upright


class VideoSource:
    """A checked video file. `frames()` decodes it from the start (may be called again). Errors name
    `field`, the input the file was given as."""

    def __init__(self, path: str | os.PathLike, max_seconds: float | None = 600.0, field: str = "video"):
        p = Path(path).expanduser()
        self.path = p
        self.field = field
        if not p.exists():
            raise InputError(f"{p} not found (no such file)", "check the path (and its spelling)", field=field)
        if p.is_dir():
            raise InputError(f"{p} is a directory, not a video", _VIDEO_HINT, field=field)
        if not os.access(p, os.R_OK):
            raise InputError(f"{p} cannot be read: permission denied", "check the file's permissions", field=field)
        if p.stat().st_size == 0:
            raise UnreadableMediaError(f"{p} is empty (0 bytes)", _VIDEO_HINT, field=field)
        if max_seconds is not None and not max_seconds > 0:
            raise InputError(f"must be positive, got {max_seconds}", "e.g. 600", field="max_seconds")
        try:
            container = av.open(str(p), metadata_errors="ignore")
        except (av.FFmpegError, OSError, ValueError, UnicodeDecodeError):
            if p.suffix.lower() in _VIDEO_SUFFIXES:
                raise UnreadableMediaError(f"{p} cannot be read: the video is corrupt or truncated",
                                           "re-export it if it was cut short", field=field) from None
            raise UnsupportedFormatError(f"{p} is not a video file that can be read", _VIDEO_HINT,
                                         field=field) from None
        try:
            fmt = container.format.name or ""
            if not container.streams.video:
                if container.streams.audio:
                    raise UnsupportedFormatError(f"{p} has sound but no picture (an audio file, not a video)",
                                                 "pass the video to dub as the video and the new speech as the audio",
                                                 field=field)
                raise UnsupportedFormatError(f"{p} has no video stream", _VIDEO_HINT, field=field)
            vs = container.streams.video[0]
            if "image" in fmt or fmt.endswith("_pipe") or fmt in ("png", "mjpeg", "gif"):
                if not (vs.frames and vs.frames > 1):
                    raise UnsupportedFormatError(f"{p} is a still image, not a video",
                                                 "to animate a photo, animate it instead of dubbing it", field=field)
            rate = vs.average_rate or vs.guessed_rate or vs.base_rate
            if not rate or float(rate) <= 0 or float(rate) > 240:
                raise UnreadableMediaError(f"{p} has no usable frame rate", "re-export the video with a fixed frame rate",
                                           field=field)
            self.fps = Fraction(rate).limit_denominator(1001)
            self.time_base = vs.time_base
            self.width, self.height = vs.codec_context.width, vs.codec_context.height
            self.has_audio = bool(container.streams.audio)
            self.header_frames = int(vs.frames or 0)
            duration = None
            if vs.duration is not None and vs.time_base is not None and vs.duration > 0:
                duration = float(vs.duration * vs.time_base)
            elif container.duration:
                duration = container.duration / av.time_base
            self.duration = duration
            self.pix_fmt = vs.codec_context.pix_fmt
        finally:
            container.close()
        if self.width < 16 or self.height < 16:
            raise InputError(f"{p}: the picture is {self.width}x{self.height}, too small to dub", _VIDEO_HINT,
                             field=field)
        if max_seconds is not None and self.duration is not None and self.duration > max_seconds:
            raise TooLongError(f"{p} is {self.duration:.1f} s long, more than the limit of {max_seconds:g} s",
                               _TOO_LONG_HINT, field=field)
        self.max_seconds = max_seconds
        self.rotation = 0
        self.full_range = self.pix_fmt is not None and self.pix_fmt.startswith("yuvj")
        first = next(self.frames(), None)
        if first is None:
            raise UnreadableMediaError(f"{p} cannot be decoded: no picture in it decodes (corrupt or truncated)",
                                       "re-export the video", field=field)
        self.size = (first.image.shape[1], first.image.shape[0])  # (width, height), upright

    @property
    def n_frames_estimate(self) -> int:
        """Frames expected from the header (count or duration x rate); 0 when unknown."""
        if self.header_frames:
            return self.header_frames
        if self.duration:
            return int(round(self.duration * float(self.fps)))
        return 0

    def frames(self) -> Iterator[Frame]:
        """Decode from the start. Raises UnreadableMediaError for a corrupt stream or a file cut short,
        TooLongError for one longer than max_seconds (metadata can understate it)."""
        try:
            container = av.open(str(self.path), metadata_errors="ignore")
        except (av.FFmpegError, OSError) as e:
            raise UnreadableMediaError(f"{self.path} cannot be read: {e}", "re-export the video",
                                       field=self.field) from None
        n = 0
        try:
            vs = container.streams.video[0]
            vs.thread_type = "AUTO"
            t0 = None
            try:
                for f in container.decode(vs):
                    t = float(f.time) if f.time is not None else n / float(self.fps)
                    t0 = t if t0 is None else t0
                    if self.max_seconds is not None and t - t0 > self.max_seconds:
                        raise TooLongError(f"{self.path} is longer than the limit of {self.max_seconds:g} s",
                                           _TOO_LONG_HINT, field=self.field)
                    img = f.to_ndarray(format="rgb24")
                    rot = int(round(getattr(f, "rotation", 0) or 0)) % 360
                    self.rotation = rot
                    if rot:
                        img = np.ascontiguousarray(np.rot90(img, k=rot // 90))
                    yield Frame(n, t - t0, img)
                    n += 1
            except av.FFmpegError as e:
                raise UnreadableMediaError(f"{self.path} cannot be decoded past frame {n}: the file is corrupt or "
                                           f"truncated ({e})", "re-export the video", field=self.field) from None
        finally:
            container.close()
        if self.header_frames > 10 and n < TRUNCATED * self.header_frames:
            raise UnreadableMediaError(f"{self.path} is truncated: {n} of its {self.header_frames} frames could be "
                                       "decoded", "re-export or re-download the video", field=self.field)
