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

from ..errors import InputError, TooLongError

_VIDEO_HINT = "pass a video file with a picture track (mp4, mov, mkv, webm, avi...)"
MIN_FRAMES = 2  # a video shorter than this is a still image
TRUNCATED = 0.9  # fewer decoded frames than this share of the header's count: the file is cut short


@dataclass
class Frame:
    """One decoded source frame."""

    index: int  # decoding order, from 0
    time: float  # presentation time in seconds from the first frame
    image: np.ndarray  # (h, w, 3) uint8 RGB, upright


class VideoSource:
    """A checked video file. `frames()` decodes it from the start (may be called again)."""

    def __init__(self, path: str | os.PathLike, max_seconds: float | None = 600.0):
        p = Path(path).expanduser()
        self.path = p
        if not p.exists():
            raise InputError(f"video file not found: {p}", "check the path (and its spelling)")
        if p.is_dir():
            raise InputError(f"{p} is a directory, not a video", _VIDEO_HINT)
        if not os.access(p, os.R_OK):
            raise InputError(f"cannot read {p}: permission denied", "check the file's permissions")
        if p.stat().st_size == 0:
            raise InputError(f"{p} is empty (0 bytes)", _VIDEO_HINT)
        if max_seconds is not None and not max_seconds > 0:
            raise InputError(f"--max-seconds must be positive, got {max_seconds}", "e.g. --max-seconds 600")
        try:
            container = av.open(str(p), metadata_errors="ignore")
        except (av.FFmpegError, OSError, ValueError, UnicodeDecodeError):
            raise InputError(f"cannot read {p}: it is not a video file, or it is corrupt or truncated",
                             _VIDEO_HINT + "; re-export it if it was cut short") from None
        try:
            fmt = container.format.name or ""
            if not container.streams.video:
                if container.streams.audio:
                    raise InputError(f"{p} has sound but no picture (an audio-only file given as --video)",
                                     "pass the video to dub as --video and the new speech as --audio")
                raise InputError(f"{p} has no video stream", _VIDEO_HINT)
            vs = container.streams.video[0]
            if "image" in fmt or fmt.endswith("_pipe") or fmt in ("png", "mjpeg", "gif"):
                if not (vs.frames and vs.frames > 1):
                    raise InputError(f"{p} is a still image, not a video",
                                     "to animate a photo use `talkinghead animate IMAGE AUDIO`")
            rate = vs.average_rate or vs.guessed_rate or vs.base_rate
            if not rate or float(rate) <= 0 or float(rate) > 240:
                raise InputError(f"{p} has no usable frame rate", "re-export the video with a fixed frame rate")
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
            raise InputError(f"{p}: the picture is {self.width}x{self.height}, too small to dub", _VIDEO_HINT)
        if max_seconds is not None and self.duration is not None and self.duration > max_seconds:
            raise TooLongError(f"the video is {self.duration:.1f} s long, more than --max-seconds {max_seconds:g}",
                             "trim it or raise --max-seconds")
        self.max_seconds = max_seconds
        self.rotation = 0
        self.full_range = self.pix_fmt is not None and self.pix_fmt.startswith("yuvj")
        first = next(self.frames(), None)
        if first is None:
            raise InputError(f"cannot decode any picture in {p}: the file is corrupt or truncated",
                             "re-export the video")
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
        """Decode from the start. Raises InputError for a corrupt stream, a file cut short, or one
        longer than max_seconds (metadata can understate it)."""
        try:
            container = av.open(str(self.path), metadata_errors="ignore")
        except (av.FFmpegError, OSError) as e:
            raise InputError(f"cannot read {self.path}: {e}", "re-export the video") from None
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
                        raise TooLongError(f"the video is longer than --max-seconds {self.max_seconds:g}",
                                         "trim it or raise --max-seconds")
                    img = f.to_ndarray(format="rgb24")
                    rot = int(round(getattr(f, "rotation", 0) or 0)) % 360
                    self.rotation = rot
                    if rot:
                        img = np.ascontiguousarray(np.rot90(img, k=rot // 90))
                    yield Frame(n, t - t0, img)
                    n += 1
            except av.FFmpegError as e:
                raise InputError(f"cannot decode {self.path} past frame {n}: the file is corrupt or truncated ({e})",
                                 "re-export the video") from None
        finally:
            container.close()
        if self.header_frames > 10 and n < TRUNCATED * self.header_frames:
            raise InputError(f"{self.path} is truncated: {n} of its {self.header_frames} frames could be decoded",
                             "re-export or re-download the video")
