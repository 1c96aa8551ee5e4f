"""Blinks at natural, seeded intervals (gamma distributed), each ~150 ms: fast close, slower open."""
from __future__ import annotations

import numpy as np

CLOSE = 0.05  # s, lid travel down
HOLD = 0.025  # s, fully closed
OPEN = 0.08  # s, lid travel up
SHAPE = 3.0  # gamma shape of inter-blink intervals (regular but not metronomic)
MIN_GAP = 0.8  # s


def blink_profile(t: np.ndarray) -> np.ndarray:
    """Lid closure 0..1 at times t (s) since the blink began."""
    out = np.zeros_like(t)
    c = (t >= 0) & (t < CLOSE)
    out[c] = np.sin(0.5 * np.pi * t[c] / CLOSE) ** 2
    out[(t >= CLOSE) & (t < CLOSE + HOLD)] = 1.0
    o = (t >= CLOSE + HOLD) & (t < CLOSE + HOLD + OPEN)
    out[o] = np.cos(0.5 * np.pi * (t[o] - CLOSE - HOLD) / OPEN) ** 2
    return out


class BlinkGenerator:
    """Causal blink schedule. `rate` in blinks/minute; 0 never blinks."""

    def __init__(self, rate: float, rng: np.random.Generator):
        self.rate = rate
        self.rng = rng
        self.starts: list[float] = []
        self.next_start = self._interval() * 0.6 if rate > 0 else np.inf

    def _interval(self) -> float:
        mean = 60.0 / self.rate
        return max(MIN_GAP, float(self.rng.gamma(SHAPE, mean / SHAPE)))

    def value(self, t0: float, t1: float) -> float:
        """Peak closure during the frame [t0, t1): a blink's closed instant is never skipped."""
        while self.next_start < t1:
            self.starts.append(self.next_start)
            self.next_start += self._interval()
        self.starts = [s for s in self.starts if s > t0 - 1.0]
        if not self.starts:
            return 0.0
        ts = np.linspace(t0, t1, 6)
        return float(max(blink_profile(ts - s).max() for s in self.starts))
