"""Dubbing, streamed frame by frame: decode -> track -> retarget the mouth -> warp -> encode.

The video keeps its resolution and frame rate (a variable rate is resampled to its average, each
output frame taking the source frame shown at its time); every pixel outside the lower face is the
source's. The speech drives the mouth through the warp engine's motion generator (lips only).
When the speech is shorter than the video the rest keeps a closed, still mouth (`fit="trim"` cuts
the video instead); when longer, the video is extended by playing it back and forth (`pingpong`),
from the start again (`loop`) or by holding the last frame (`freeze`).
"""
from __future__ import annotations

import os
import shutil
import tempfile
import threading
import warnings
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from ..audio.features import n_frames
from ..config import MotionConfig
from ..errors import InputError, NoFaceError
from ..io import check_audio_bitrate, check_output_path, load_audio
from ..motion import MotionGenerator
from ..types import SAMPLE_RATE, AudioTrack, MotionFrame, Speech
from ..utils import prefetch
from .compose import MouthCompositor, ShotMesh
from .retarget import retarget
from .source import VideoSource
from .track import FaceTracker, Tracked

FITS = ("pingpong", "loop", "freeze", "trim")
FACES = ("largest", "auto-speaker")
MIX_RANGE = (-60.0, 0.0)  # dB, --keep-original-audio
STORE_QUALITY = 95  # JPEG quality of frames kept on disk for playing the video backwards


@dataclass
class DubOptions:
    """Everything a dub needs besides its inputs."""

    fit: str = "pingpong"  # pingpong | loop | freeze | trim
    face: str = "largest"  # largest | auto-speaker
    face_index: int | None = None  # which face by size (0 = largest); not with face="auto-speaker"
    keep_original_audio: float | None = None  # dB: mix the source's own sound this far under the speech
    max_seconds: float = 600.0  # refuse a longer video or speech
    mouth_scale: float = 1.0  # 0 = closed .. 1 = natural .. 2 = exaggerated

    def validate(self) -> "DubOptions":
        if self.fit not in FITS:
            raise InputError(f"must be one of {', '.join(FITS)}, got {self.fit!r}",
                             "pingpong plays the video back and forth when the speech is longer", field="fit")
        if self.face not in FACES:
            raise InputError(f"must be one of {', '.join(FACES)}, got {self.face!r}",
                             "largest dubs the biggest face; auto-speaker the one whose lips move most", field="face")
        if self.face_index is not None:
            if isinstance(self.face_index, bool) or not isinstance(self.face_index, (int, np.integer)) or self.face_index < 0:
                raise InputError(f"must be a non-negative integer, got {self.face_index!r}", "0 is the largest face",
                                 field="face_index")
            if self.face == "auto-speaker":
                raise InputError("cannot be combined with face auto-speaker: both choose the face",
                                 "give only one of them", field="face_index")
        if self.keep_original_audio is not None:
            v = self.keep_original_audio
            if isinstance(v, bool) or not isinstance(v, (int, float)) or not MIX_RANGE[0] <= v <= MIX_RANGE[1]:
                raise InputError(f"must be a level in dB from {MIX_RANGE[0]:g} to {MIX_RANGE[1]:g}, got {v!r}",
                                 "e.g. -18 keeps the source's sound 18 dB under the speech", field="keep_original_audio")
        if isinstance(self.max_seconds, bool) or not isinstance(self.max_seconds, (int, float)) or not self.max_seconds > 0:
            raise InputError(f"must be a positive number, got {self.max_seconds!r}", "e.g. 600", field="max_seconds")
        if isinstance(self.mouth_scale, bool) or not isinstance(self.mouth_scale, (int, float)) or not 0 <= self.mouth_scale <= 2:
            raise InputError(f"must be between 0 and 2, got {self.mouth_scale!r}", "1 is natural", field="mouth_scale")
        return self


class _Store:
    """The last `capacity` tracked frames, JPEG-compressed on disk (memory stays flat)."""

    def __init__(self, capacity: int):
        self.capacity = max(int(capacity), 1)
        self.dir = Path(tempfile.mkdtemp(prefix="talkinghead-dub-"))
        self.items: list[tuple[int, float, np.ndarray | None, int]] = []  # (index, time, landmarks, shot)
        self.first = 0  # index of items[0] among everything added

    def add(self, t: Tracked) -> None:
        ok, buf = cv2.imencode(".jpg", cv2.cvtColor(t.image, cv2.COLOR_RGB2BGR), [cv2.IMWRITE_JPEG_QUALITY, STORE_QUALITY])
        (self.dir / f"{self.first + len(self.items)}.jpg").write_bytes(buf.tobytes())
        self.items.append((t.index, t.time, t.landmarks, t.shot))
        if len(self.items) > self.capacity:
            (self.dir / f"{self.first}.jpg").unlink(missing_ok=True)
            self.items.pop(0)
            self.first += 1

    def get(self, i: int) -> Tracked:
        index, time, lm, shot = self.items[i]
        img = cv2.imread(str(self.dir / f"{self.first + i}.jpg"), cv2.IMREAD_COLOR)
        return Tracked(index, time, cv2.cvtColor(img, cv2.COLOR_BGR2RGB), lm, shot)

    def __len__(self) -> int:
        return len(self.items)

    def close(self) -> None:
        shutil.rmtree(self.dir, ignore_errors=True)


def _slots(tracked: Iterator[Tracked], fps: float) -> Iterator[Tracked]:
    """Constant-rate output: slot k (time k / fps) shows the source frame on screen at that time."""
    prev: Tracked | None = None
    k = 0
    for t in tracked:
        if prev is not None:
            change = (prev.time + t.time) / 2  # a slot before this instant shows prev
            while k / fps < change - 1e-9:
                yield prev
                k += 1
        prev = t
    if prev is not None:
        while k / fps < prev.time + 0.5 / fps - 1e-9:
            yield prev
            k += 1


def _motion(speech: Speech, fps: float, phones, config: MotionConfig) -> Iterator[MotionFrame]:
    """The new speech's mouth per frame, then a closed, still mouth forever."""
    gen = MotionGenerator(config, fps, phones)
    step = SAMPLE_RATE
    for i in range(0, len(speech.samples), step):
        yield from gen.push(speech.samples[i:i + step])
    yield from gen.finish()
    while True:
        yield MotionFrame()


class Dubber:
    """One dub: `frames()` yields (source slot, output frame) in order; `write(path)` encodes them."""

    def __init__(self, video, speech: Speech, options: DubOptions | None = None):
        self.options = (options or DubOptions()).validate()
        o = self.options
        self.source = video if isinstance(video, VideoSource) else VideoSource(video, o.max_seconds)
        self.speech = speech
        self.fps = self.source.fps
        self.size = self.source.size
        self.n_speech = n_frames(speech.duration, float(self.fps))
        est = self.source.n_frames_estimate
        self.n_source_estimate = est
        if o.fit == "trim":
            self.n_estimate = min(est, self.n_speech) if est else self.n_speech
        else:
            self.n_estimate = max(est, self.n_speech)
        self.tracker = FaceTracker(o.face_index, auto_speaker=o.face == "auto-speaker")
        self.compositor = MouthCompositor()
        self.frames_with_face = 0
        self.meshes: dict = {}

    def _tracked(self, pass_no: int) -> Iterator[Tracked]:
        for t in _slots(self.tracker.track(self.source.frames()), float(self.fps)):
            yield Tracked(t.index, t.time, t.image, t.landmarks, t.shot + 1_000_000 * pass_no)

    def _sequence(self) -> Iterator[Tracked]:
        """Source slots for the whole output: the video once, then extended or cut to the speech."""
        o = self.options
        n = 0
        need_more = o.fit == "pingpong" and self.n_speech > self.n_source_estimate - int(self.fps)
        capacity = max(self.n_speech - self.n_source_estimate, 0) + 2 * int(self.fps)
        # only the tail that will be played backwards is kept (all of it when the length is unknown)
        keep_from = self.n_source_estimate - capacity if self.n_source_estimate else 0
        store = _Store(capacity if need_more else 1)
        last = None
        try:
            for t in self._tracked(0):
                if o.fit == "trim" and n >= self.n_speech:
                    return
                yield t
                n += 1
                last = t
                if need_more and n > keep_from:
                    store.add(t)
            if last is None or o.fit == "trim" or n >= self.n_speech:
                return
            if o.fit == "freeze" or (o.fit == "pingpong" and len(store) == 0):  # (the header's length was off)
                while n < self.n_speech:
                    yield last
                    n += 1
            elif o.fit == "loop":
                p = 1
                while n < self.n_speech:
                    for t in self._tracked(p):
                        if n >= self.n_speech:
                            break
                        yield t
                        n += 1
                    p += 1
            else:  # pingpong over the stored tail
                m = len(store)
                i, step = m - 1, -1
                while n < self.n_speech:
                    if m == 1:
                        yield store.get(0)
                    else:
                        i += step
                        if not 0 <= i < m:
                            step = -step
                            i += 2 * step
                        yield store.get(i)
                    n += 1
        finally:
            store.close()

    def frames(self) -> Iterator[tuple[Tracked, np.ndarray]]:
        motion = _motion(self.speech, float(self.fps), self.speech.phones,
                         MotionConfig(lips_only=True, mouth_scale=self.options.mouth_scale))
        for slot in prefetch(self._sequence(), depth=6):  # decode + track overlap warp + encode
            m = next(motion)
            if slot.landmarks is None:
                yield slot, slot.image
                continue
            self.frames_with_face += 1
            mesh = self.meshes.get(slot.shot)
            if mesh is None:
                self.meshes.clear()
                mesh = self.meshes[slot.shot] = ShotMesh(slot.landmarks)
            rt = retarget(slot.landmarks, m)
            yield slot, self.compositor.render(slot.image, slot.landmarks, rt, m, mesh)
        if self.frames_with_face == 0:
            raise NoFaceError(f"{self.source.path}: no face found in any frame",
                              "dub a video that shows a face: roughly frontal, eyes and mouth visible",
                              field=self.source.field)


def _track(speech: Speech) -> AudioTrack:
    """The sound to write: the speech as the user gave it (own rate and channels) or its 16 kHz copy."""
    if speech.original is not None and abs(speech.original.duration - speech.duration) <= 0.02:
        return speech.original
    return AudioTrack(np.asarray(speech.samples, np.float32)[None], SAMPLE_RATE, "mono")


def _trim(speech: Speech, seconds: float) -> Speech:
    """The first `seconds` of the speech, its native-rate track cut to match."""
    t = _track(speech)
    return Speech(speech.samples[: int(round(seconds * SAMPLE_RATE))], SAMPLE_RATE, speech.transcript, speech.phones,
                  speech.source, original=AudioTrack(t.samples[:, : int(round(seconds * t.sample_rate))],
                                                     t.sample_rate, t.layout))


def _mix(speech: Speech, source: VideoSource, db: float, seconds: float) -> Speech:
    """The speech with the source video's own sound `db` under it (at the speech's rate and channels),
    over at most `seconds` (the output's length)."""
    if not source.has_audio:
        warnings.warn(f"{source.path} has no sound, so there is no original audio to keep under the speech",
                      stacklevel=3)
        return speech
    from scipy.signal import resample_poly

    gain = np.float32(10 ** (db / 20))
    own = _track(speech)
    bed = _track(load_audio(source.path, max_seconds=None))
    planar = bed.samples.mean(0) if bed.channels != own.channels else bed.samples
    if bed.sample_rate != own.sample_rate:
        planar = resample_poly(planar, own.sample_rate, bed.sample_rate, axis=-1).astype(np.float32)
    planar = np.broadcast_to(planar, (own.channels, planar.shape[-1])) * gain
    n = max(own.samples.shape[1], min(planar.shape[1], int(round(seconds * own.sample_rate))))
    mixed = np.zeros((own.channels, n), np.float32)
    mixed[:, : own.samples.shape[1]] += own.samples
    k = min(planar.shape[1], n)
    mixed[:, :k] += planar[:, :k]
    mixed = np.clip(mixed, -1.0, 1.0)
    mono = mixed.mean(0)
    if own.sample_rate != SAMPLE_RATE:
        mono = resample_poly(mono, SAMPLE_RATE, own.sample_rate).astype(np.float32)
    mono = mono[: int(round(n / own.sample_rate * SAMPLE_RATE))]
    return Speech(np.clip(mono, -1.0, 1.0), SAMPLE_RATE, speech.transcript, speech.phones, speech.source,
                  original=AudioTrack(mixed, own.sample_rate, own.layout))


def dub(video, audio, output: str | os.PathLike, text: str | None = None, options: DubOptions | None = None,
        preview: str | os.PathLike | None = None, progress: bool = False, audio_bitrate: int | str | None = None,
        cancel: threading.Event | None = None, on_progress: Callable[[float], None] | None = None, **kw) -> Path:
    """Re-sync the lips of the face in `video` to `audio` (a path, a 16 kHz array or a Speech) and
    write `output` (mp4). With `text` (the words spoken) the mouth follows aligned phones; without,
    the sound (any language). Options come as a DubOptions or keywords (fit="loop", face_index=1,
    keep_original_audio=-18, ...). The speech is written at its own rate and channels (AAC at
    `audio_bitrate` kb/s, None: transparent default). `cancel`, when set, stops between frames (raising
    service.Cancelled); `on_progress` gets the fraction of frames written. Returns the output path; a
    failure leaves no file behind."""
    from ..service import check_preview, load_speech, read_transcript, render_to_file, with_transcript

    if options is None:
        options = DubOptions(**kw)
    elif kw:
        raise TypeError("pass either options or keywords, not both")
    options.validate()
    bitrate = check_audio_bitrate(audio_bitrate)
    out = check_output_path(output)
    preview_path = check_preview(preview)
    transcript = read_transcript(text)
    source = VideoSource(video, options.max_seconds)
    speech = with_transcript(load_speech(audio, options.max_seconds), transcript)
    dubber = Dubber(source, speech, options)
    fps = float(dubber.fps)
    track_audio = speech
    if options.fit == "trim" and dubber.n_source_estimate and dubber.n_estimate < dubber.n_speech:
        track_audio = _trim(speech, dubber.n_estimate / fps)
    if options.keep_original_audio is not None:
        track_audio = _mix(track_audio, source, options.keep_original_audio, dubber.n_estimate / fps)
    return render_to_file(_DubbedFrames(dubber), track_audio, out, preview_path, progress, bitrate, cancel,
                          on_progress)


class _DubbedFrames:
    """The dubber as the render service sees an engine: frame rate, size, a frame count and the frames."""

    def __init__(self, dubber: "Dubber"):
        self.dubber = dubber
        self.fps, self.frame_size = dubber.fps, dubber.size

    def n_frames(self, speech: Speech) -> int:
        return max(self.dubber.n_estimate, 1)

    def frames(self, speech: Speech) -> Iterator[np.ndarray]:
        return (frame for _, frame in self.dubber.frames())
