"""Language-agnostic mouth shape from acoustics: loudness -> opening, spectral shape -> width and
rounding, sibilance -> teeth together. Causal: each frame uses only its own window and the past."""
from __future__ import annotations

import numpy as np

from ..audio.features import SILENCE_DB, FrameFeatures

DB_MIN = -100.0  # dBFS, levels are clamped here (digital silence would be -200)
VAD_MARGIN = 12.0  # dB above the tracked noise floor that counts as speech


class LevelTracker:
    """Causal noise-floor and speech-peak tracker, giving loudness in 0..1 and voice activity."""

    def __init__(self) -> None:
        self.floor = -65.0  # dBFS
        self.peak = -22.0  # dBFS, typical speech level before anything is heard

    def update(self, db: float) -> tuple[float, bool]:
        db = max(db, DB_MIN)
        # floor: follows drops quickly, rises slowly (~3 dB/s at 25 fps)
        self.floor = db if db < self.floor else self.floor + min(0.12, 0.05 * (db - self.floor))
        # peak: fast attack, slow release (~1 dB/s)
        self.peak = 0.6 * self.peak + 0.4 * db if db > self.peak else self.peak - 0.04
        self.peak = max(self.peak, self.floor + 25.0)
        active = db > SILENCE_DB and db > self.floor + VAD_MARGIN
        loud = (db - self.floor - VAD_MARGIN * 0.5) / (self.peak - self.floor - VAD_MARGIN * 0.5)
        return (float(np.clip(loud, 0.0, 1.0)) if active else 0.0), active


def acoustic_targets(f: FrameFeatures, i: int, loud: float, active: bool) -> tuple[float, float, float, float]:
    """(jaw, width, round, press) for frame i of `f` from its spectrum alone."""
    if not active:
        return 0.0, 0.0, 0.0, 0.0
    sib = float(np.clip((f.high[i] - f.low[i] + 5.0) / 15.0, 0.0, 1.0))  # s, sh, f, t bursts
    f1, f2, centroid = float(f.f1[i]), float(f.f2[i]), float(f.centroid[i])
    openness = float(np.clip((f1 - 250.0) / 350.0, 0.25, 1.0))  # open vowels have a high F1
    voiced = float(np.clip(f.f0_strength[i] * 2.0, 0.0, 1.0))
    front = float(np.clip((f2 - 1700.0) / 600.0, -1.0, 1.0))  # i, e: spread lips; o, u: back
    jaw = loud ** 0.8 * openness * (1.0 - 0.7 * sib)
    width = (0.45 * max(front, 0.0) - 0.2 * max(-front, 0.0)) * voiced + 0.25 * sib
    rnd = float(np.clip((800.0 - centroid) / 300.0, 0, 1) * np.clip((1900.0 - f2) / 500.0, 0, 1)) * voiced * (1 - sib)
    # nasal murmur (m, n): energy almost only below 500 Hz, low F1 -> lips near closed
    nasal = float(np.clip((450.0 - centroid) / 150.0, 0.0, 1.0)) * float(f1 < 350.0) * voiced
    return jaw * (1.0 - 0.8 * nasal), width, rnd, 0.5 * nasal
