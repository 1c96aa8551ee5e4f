"""The MotionTrack generator: audio (pushed in chunks) -> per-frame MotionFrame.

Causal with a fixed lookahead (config.LOOKAHEAD): frame k is emitted as soon as audio up to its
mid-time + LOOKAHEAD has arrived. Batch mode is this same generator fed the whole file, so streamed
and batch output are identical by construction.
"""
from __future__ import annotations

from collections import deque

import numpy as np

from ..audio import features as F
from ..config import LOOKAHEAD, MotionConfig
from ..types import SAMPLE_RATE, MotionFrame, MotionTrack, PhoneSegment, Speech
from .blinks import BlinkGenerator
from .head import GazeGenerator, HeadGenerator
from .mouth import LevelTracker, acoustic_targets
from .visemes import PhoneTimeline

SMOOTH_SIGMA = 0.045  # s, symmetric mouth smoothing (fits inside the lookahead)
LOUD_SHARE = 0.3  # share of a phone's jaw opening that follows the loudness of the moment
PEAK_KEEP = 0.85  # smoothing never takes a frame's jaw below this share of its own target: a short
# open vowel keeps its opening (the jaw moves that fast in speech), as a closure keeps its press


def _smoothing_kernel(fps: float) -> np.ndarray:
    half = max(0, int((LOOKAHEAD - F.WINDOW / 2) * fps + 1e-9))
    half = min(half, max(1, int(round(2.5 * SMOOTH_SIGMA * fps))))
    x = np.arange(-half, half + 1) / fps
    k = np.exp(-0.5 * (x / SMOOTH_SIGMA) ** 2)
    return k / k.sum()


class MotionGenerator:
    """Streams MotionFrames from audio chunks: `push(samples)` -> new frames, `finish()` -> the rest."""

    def __init__(self, config: MotionConfig, fps: float, phones: list[PhoneSegment] | None = None):
        self.cfg = config.validate()
        self.fps = float(fps)
        self.phones = PhoneTimeline(phones) if phones else None
        seeds = np.random.SeedSequence(config.seed).spawn(3)
        still = config.lips_only
        self.head = HeadGenerator(0.0 if still else config.head_motion, 0.0 if still else config.brows,
                                  self.fps, np.random.default_rng(seeds[0]))
        self.blinks = BlinkGenerator(0.0 if still else config.blink_rate, np.random.default_rng(seeds[1]))
        self.gaze = GazeGenerator("camera" if still else config.gaze, self.fps, np.random.default_rng(seeds[2]))
        self.levels = LevelTracker()
        self.kernel = _smoothing_kernel(self.fps)
        self.half = len(self.kernel) // 2
        self.win_half = int(round(F.WINDOW * SAMPLE_RATE)) // 2
        # audio buffer (only what future windows still need) and per-frame state
        self.buf = np.zeros(0, dtype=np.float32)
        self.buf_start = 0  # absolute index of buf[0]
        self.n_samples = 0
        self.n_feat = 0  # frames whose features/targets are known
        self.n_out = 0  # frames emitted
        self.targets: deque = deque()  # (k, jaw, width, round, press, loud), for frames n_out-half ..
        self.finished = False

    # -- stages -----------------------------------------------------------------------------------
    def _analyse(self, upto: int) -> None:
        """Features and raw mouth targets for frames n_feat .. upto-1."""
        count = upto - self.n_feat
        if count <= 0:
            return
        centres = F.frame_centres(self.n_feat, count, self.fps)
        feats = F.compute(F.frame_windows(self.buf, self.buf_start, centres))
        for i in range(count):
            k = self.n_feat + i
            loud, active = self.levels.update(float(feats.db[i]))
            if self.phones is not None:
                jaw, width, rnd, press = self.phones.frame_targets(k / self.fps, (k + 1) / self.fps)
                jaw *= 1.0 - LOUD_SHARE + LOUD_SHARE * loud if active else 1.0 - LOUD_SHARE
            else:
                jaw, width, rnd, press = acoustic_targets(feats, i, loud, active)
            self.targets.append((k, jaw, width, rnd, press, loud))
        self.n_feat = upto

    def _emit(self, upto: int) -> list[MotionFrame]:
        """Frames n_out .. upto-1 (their targets up to +half must be known)."""
        out = []
        cfg = self.cfg
        while self.n_out < upto:
            k = self.n_out
            near = [r for r in self.targets if abs(r[0] - k) <= self.half]
            rows = np.array([r[1:] for r in near], dtype=np.float64)
            ks = [r[0] for r in near]
            # symmetric smoothing, kernel renormalised at the clip's start (no frames before 0)
            w = self.kernel[np.array(ks) - k + self.half]
            jaw, width, rnd, _, loud = (w @ rows) / w.sum()
            own = ks.index(k)
            jaw = max(jaw, PEAK_KEEP * rows[own, 0])
            press = rows[own, 3]  # closures are never smoothed away
            # a closure shuts the jaw; a closure's approach or release (partial press) only narrows it,
            # so the vowel next to an m or p still opens
            jaw *= 1.0 - press if press >= 1.0 else 1.0 - press * press
            h = self.head.step(loud)
            gx, gy = self.gaze.step()
            s = cfg.mouth_scale
            out.append(MotionFrame(
                jaw=float(jaw * s), width=float(width * s), round=float(rnd * s), press=float(press),
                smile=float(cfg.smile), brows=h["brows"],
                blink=self.blinks.value(k / self.fps, (k + 1) / self.fps),
                gaze_x=gx, gaze_y=gy, yaw=h["yaw"], pitch=h["pitch"], roll=h["roll"], tx=h["tx"], ty=h["ty"],
            ))
            self.n_out += 1
            while self.targets and self.targets[0][0] < self.n_out - self.half:
                self.targets.popleft()
        return out

    def _trim(self) -> None:
        # never past the audio received: buf_start must stay the absolute index of buf[0]
        keep_from = min(F.frame_centres(self.n_feat, 1, self.fps)[0] - self.win_half, self.n_samples)
        drop = int(keep_from - self.buf_start)
        if drop > 0:
            self.buf = self.buf[drop:]
            self.buf_start += drop

    # -- public -----------------------------------------------------------------------------------
    def push(self, samples: np.ndarray) -> list[MotionFrame]:
        """Add 16 kHz mono float32 audio; return every frame that is now final."""
        if self.finished:
            raise RuntimeError("push() after finish()")
        samples = np.asarray(samples, dtype=np.float32).reshape(-1)
        self.buf = np.concatenate([self.buf, samples])
        self.n_samples += len(samples)
        # frame k's features need samples up to centre_k + win_half
        end = self.n_samples
        # (+1e-6: a product that lands just below a whole number must not hold a frame back a chunk)
        k_feat = int(np.floor(((end - self.win_half) / SAMPLE_RATE) * self.fps - 0.5 + 1e-6)) + 1
        while k_feat > 0 and F.frame_centres(k_feat - 1, 1, self.fps)[0] + self.win_half > end:
            k_feat -= 1
        self._analyse(max(self.n_feat, k_feat))
        frames = self._emit(max(self.n_out, self.n_feat - self.half))
        self._trim()
        return frames

    def finish(self) -> list[MotionFrame]:
        """The audio has ended: emit the remaining frames (the video is as long as the audio)."""
        self.finished = True
        total = F.n_frames(self.n_samples / SAMPLE_RATE, self.fps)
        self._analyse(max(self.n_feat, total + self.half))
        frames = self._emit(total)
        return frames

    @property
    def latency_frames(self) -> int:
        return self.half


def motion_track(speech: Speech, config: MotionConfig, fps: float) -> MotionTrack:
    """The whole MotionTrack of a clip (batch = the stream fed everything at once)."""
    gen = MotionGenerator(config, fps, speech.phones)
    frames = gen.push(speech.samples) + gen.finish()
    return MotionTrack(fps=fps, frames=frames)
