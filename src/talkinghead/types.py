"""Data that flows between stages: io -> face/audio -> motion -> render -> io."""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

SAMPLE_RATE = 16000  # Hz, every Speech waveform is mono at this rate


@dataclass
class Portrait:
    """An RGB portrait image, (h, w, 3) uint8."""

    image: np.ndarray
    source: str | None = None

    @property
    def size(self) -> tuple[int, int]:  # (width, height)
        return self.image.shape[1], self.image.shape[0]


@dataclass(frozen=True)
class PhoneSegment:
    """One phone with its timing. `phone` is ARPAbet without stress digits ("AA", "P", ...);
    silence and pauses are "SIL"."""

    phone: str
    start: float  # seconds
    end: float  # seconds


@dataclass
class AudioTrack:
    """Audio as the user gave it (its own rate and channels), kept to be written into the video."""

    samples: np.ndarray  # (channels, n) float32 in [-1, 1], planar
    sample_rate: int  # Hz
    layout: str  # ffmpeg channel layout name: "mono", "stereo", "5.1", ...

    @property
    def channels(self) -> int:
        return self.samples.shape[0]

    @property
    def duration(self) -> float:
        return self.samples.shape[1] / self.sample_rate


@dataclass
class Speech:
    """Mono speech at SAMPLE_RATE, with an optional transcript and phone timings.

    Analysis (features, alignment, motion) reads `samples`. `original` is the same sound at the
    rate and channel count it came in (None when that is already 16 kHz mono); the video writer
    puts it in the output instead of `samples`.
    """

    samples: np.ndarray  # (n,) float32 in [-1, 1]
    sample_rate: int = SAMPLE_RATE
    transcript: str | None = None
    phones: list[PhoneSegment] | None = None
    source: str | None = None
    original: AudioTrack | None = field(default=None, repr=False, compare=False)

    @property
    def duration(self) -> float:
        return len(self.samples) / self.sample_rate


@dataclass
class FaceAnalysis:
    """Landmarks of one face in image pixel coordinates."""

    landmarks: np.ndarray  # (478, 3) float32: x, y in pixels; z in pixels (MediaPipe scale)
    box: tuple[float, float, float, float]  # x0, y0, x1, y1 of the landmarks, pixels
    image_size: tuple[int, int]  # (width, height) of the image the landmarks refer to
    n_faces: int = 1  # how many faces the detector saw
    source_landmarks: np.ndarray | None = None  # the same face in the source image, before crop and scale

    @property
    def face_width(self) -> float:
        return self.box[2] - self.box[0]


@dataclass
class MotionFrame:
    """The control surface for one video frame. Angles in degrees, mouth values unitless
    (fractions of face size), 0 = neutral."""

    jaw: float = 0.0  # jaw/mouth opening, 0 closed .. ~1 wide open
    width: float = 0.0  # lip stretch: >0 spread, <0 narrow
    round: float = 0.0  # lip rounding/protrusion, 0..1
    press: float = 0.0  # lip press (bilabial closure), 0..1
    smile: float = 0.0  # 0..1
    brows: float = 0.0  # brow lift, 0..1
    blink: float = 0.0  # eyelid closure, 0 open .. 1 closed
    gaze_x: float = 0.0  # iris offset as a fraction of eye width, + = image right
    gaze_y: float = 0.0  # iris offset as a fraction of eye height, + = down
    yaw: float = 0.0
    pitch: float = 0.0
    roll: float = 0.0
    tx: float = 0.0  # head translation, fraction of face width
    ty: float = 0.0
    # Optional end effectors (EMO2 stage 1, motion/body.py), None when no model drives them. Portrait pixels.
    hands: np.ndarray | None = field(default=None, compare=False)  # (2, 21, 3) MediaPipe hand points, slot 0 = left
    arms: np.ndarray | None = field(default=None, compare=False)  # (6, 2) shoulders, elbows, wrists (Pose 11-16)


@dataclass
class MotionTrack:
    """Per-frame motion parameters at a fixed fps."""

    fps: float
    frames: list[MotionFrame] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.frames)

    def as_array(self, name: str) -> np.ndarray:
        return np.array([getattr(f, name) for f in self.frames], dtype=np.float32)
