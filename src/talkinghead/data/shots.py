"""MIDAS (arXiv 2508.19320) data preparation: split videos into shots (colour-histogram + frame-difference
cuts on decoded frames) and keep only shots where the visible face is the one speaking (our lip–audio sync
measure)."""
from __future__ import annotations

import os
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

import av
import cv2
import numpy as np

from ..errors import InputError
from ..eval.sync import aperture_series, sync_metrics
from ..types import SAMPLE_RATE

ANALYSIS_SIDE = 64  # px, frames are compared at this size
HUE_BINS, SAT_BINS = 16, 8


@dataclass
class ShotConfig:
    hist_threshold: float = 0.35  # Bhattacharyya distance of HSV histograms above which colours changed
    diff_threshold: float = 25.0  # mean absolute grey difference (0..255) above which pixels changed
    min_frames: int = 25  # shorter shots are dropped (1 s at 25 fps; also the sync measure's minimum)


@dataclass(frozen=True)
class Shot:
    start: int  # first frame
    end: int  # one past the last frame
    fps: float

    @property
    def frames(self) -> int:
        return self.end - self.start

    @property
    def seconds(self) -> tuple[float, float]:
        return self.start / self.fps, self.end / self.fps


@dataclass(frozen=True)
class SpeakerVerdict:
    shot: Shot
    passed: bool  # the visible mouth moves with this audio
    confidence: float | None
    offset_frames: int | None
    reason: str = ""


def decode_frames(path: str | os.PathLike) -> tuple[float, Iterator[np.ndarray]]:
    """(fps, iterator of (h, w, 3) uint8 RGB frames) of a video's first video stream, decoded with PyAV."""
    p = Path(path)
    try:
        container = av.open(str(p), metadata_errors="ignore")
    except (av.FFmpegError, OSError, ValueError) as e:
        raise InputError(f"cannot open video {p}: {e}", "pass a readable video file") from None
    if not container.streams.video:
        container.close()
        raise InputError(f"{p} has no video stream", "pass a video file")
    stream = container.streams.video[0]
    fps = float(stream.average_rate or stream.guessed_rate or 25)

    def frames() -> Iterator[np.ndarray]:
        try:
            for frame in container.decode(stream):
                yield frame.to_ndarray(format="rgb24")
        finally:
            container.close()

    return fps, frames()


class CutDetector:
    """Feeds frames one at a time; says whether each one starts a new shot. A cut needs both a colour change
    (HSV histogram) and a pixel change (grey difference), so camera or head motion alone does not cut."""

    def __init__(self, config: ShotConfig):
        self.config = config
        self._hist: np.ndarray | None = None
        self._grey: np.ndarray | None = None

    def __call__(self, rgb: np.ndarray) -> bool:
        small = cv2.resize(rgb, (ANALYSIS_SIDE, ANALYSIS_SIDE), interpolation=cv2.INTER_AREA)
        hsv = cv2.cvtColor(small, cv2.COLOR_RGB2HSV)
        hist = cv2.calcHist([hsv], [0, 1], None, [HUE_BINS, SAT_BINS], [0, 180, 0, 256])
        cv2.normalize(hist, hist, 1.0, 0.0, cv2.NORM_L1)
        grey = cv2.cvtColor(small, cv2.COLOR_RGB2GRAY).astype(np.float32)
        cut = False
        if self._hist is not None:
            colour = cv2.compareHist(self._hist, hist, cv2.HISTCMP_BHATTACHARYYA)
            pixels = float(np.abs(grey - self._grey).mean())
            cut = colour > self.config.hist_threshold and pixels > self.config.diff_threshold
        self._hist, self._grey = hist, grey
        return cut


def shot_boundaries(frames: Iterable[np.ndarray], config: ShotConfig | None = None) -> tuple[list[int], int]:
    """(indices of frames that start a new shot (0 excluded), number of frames)."""
    detect, cuts, n = CutDetector(config or ShotConfig()), [], 0
    for n, rgb in enumerate(frames, start=1):
        if detect(rgb):
            cuts.append(n - 1)
    return cuts, n


def shots_from_cuts(cuts: list[int], n_frames: int, fps: float, min_frames: int) -> list[Shot]:
    edges = [0, *cuts, n_frames]
    return [Shot(a, b, fps) for a, b in zip(edges, edges[1:]) if b - a >= min_frames]


def split_shots(path: str | os.PathLike, config: ShotConfig | None = None) -> list[Shot]:
    """The shots of a video that are at least `config.min_frames` long."""
    config = config or ShotConfig()
    fps, frames = decode_frames(path)
    cuts, n = shot_boundaries(frames, config)
    return shots_from_cuts(cuts, n, fps, config.min_frames)


def speaker_check(aperture: np.ndarray, samples: np.ndarray, fps: float, shot: Shot) -> SpeakerVerdict:
    """Is the face in `shot` the one speaking? `aperture` is the mouth-opening series of the whole video
    (eval.sync.aperture_series) and `samples` its 16 kHz audio; the shot passes our sync measure or not."""
    a0, a1 = (round(s * SAMPLE_RATE) for s in shot.seconds)
    values, reasons, _ = sync_metrics(aperture[shot.start:shot.end], samples[a0:a1], fps)
    reason = "; ".join(f"{k}: {v}" for k, v in reasons.items() if k in ("confidence", "offset_frames"))
    return SpeakerVerdict(shot, bool(values["passed"]), values["confidence"], values["offset_frames"], reason)


def speaking_shots(path: str | os.PathLike, config: ShotConfig | None = None) -> list[SpeakerVerdict]:
    """One decoding pass: cut detection and mouth aperture on every frame; then the speaker check per shot."""
    from ..io.audio import load_audio

    config = config or ShotConfig()
    fps, frames = decode_frames(path)
    detect, cuts, aperture = CutDetector(config), [], []
    for i, rgb in enumerate(frames):
        if detect(rgb):
            cuts.append(i)
        aperture.append(aperture_series([rgb])[0])
    samples = load_audio(path).samples
    shots = shots_from_cuts(cuts, len(aperture), fps, config.min_frames)
    return [speaker_check(np.asarray(aperture), samples, fps, s) for s in shots]
