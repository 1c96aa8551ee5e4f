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
    tilt = float(f.mid[i] - f.low[i])  # dB: high for front vowels (i, e), low for back/rounded (u, o)
    sib = float(np.clip((f.high[i] - f.low[i] + 5.0) / 15.0, 0.0, 1.0))  # s, sh, f, t bursts
    f1 = float(f.f1[i])
    openness = float(np.clip((f1 - 300.0) / 400.0, 0.2, 1.0))  # open vowels have a high F1
    voiced = float(f.f0_strength[i])
    jaw = loud ** 0.8 * openness * (1.0 - 0.7 * sib)
    width = float(np.clip((tilt + 14.0) / 14.0, -1.0, 1.0)) * 0.4 * voiced + 0.25 * sib
    rnd = float(np.clip((-tilt - 16.0) / 10.0, 0.0, 1.0)) * voiced * (1.0 - sib)
    # nasal murmur (m, n): strong low band, little else, low F1 -> lips near closed
    nasal = float(np.clip((-tilt - 22.0) / 8.0, 0.0, 1.0)) * float(f1 < 350.0) * voiced
    return jaw * (1.0 - 0.8 * nasal), width, rnd, 0.5 * nasal
