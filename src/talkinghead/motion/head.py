"""Head, brows and gaze: slow seeded noise whose amplitude follows speech activity, nods and brow
lifts on emphasised onsets, saccades for a wandering gaze. All causal and smooth (no jitter)."""
from __future__ import annotations

import numpy as np

# Standard deviations at head_motion = 1 while speaking (degrees / fraction of face width).
HEAD_STD = {"yaw": 3.0, "pitch": 2.0, "roll": 1.4, "tx": 0.010, "ty": 0.007}
IDLE_SHARE = 0.4  # fraction of the speaking amplitude kept in silence
NOISE_TAU = 0.9  # s, time constant of the Ornstein–Uhlenbeck drive
SMOOTH_TAU = 0.25  # s, second low-pass on top: removes any remaining jerk
ACTIVITY_TAU = 0.8  # s, speech activity envelope
NOD_DEG = 2.2  # pitch of one nod at head_motion = 1
NOD_TAU = 0.14  # s, rise time of a nod / brow lift (alpha function)
BROW_TAU = 0.25  # s
ONSET_RISE = 0.35  # loudness rise within ONSET_WINDOW that counts as an emphasised onset
ONSET_WINDOW = 3  # frames
REFRACTORY = 0.6  # s between nods


class _Alpha:
    """Sum of alpha functions a * (t/tau) * exp(1 - t/tau) triggered by impulses (two leaky stages)."""

    def __init__(self, tau: float, dt: float):
        self.d = np.exp(-dt / tau)
        self.k = np.e * dt / tau
        self.x = 0.0
        self.y = 0.0

    def step(self, impulse: float) -> float:
        self.x = self.x * self.d + impulse
        self.y = self.y * self.d + self.k * self.x * self.d
        return self.y


class HeadGenerator:
    def __init__(self, amount: float, brows: float, fps: float, rng: np.random.Generator):
        self.amount, self.brows, self.dt, self.rng = amount, brows, 1.0 / fps, rng
        self.ou = {k: 0.0 for k in HEAD_STD}
        self.smooth = {k: 0.0 for k in HEAD_STD}
        self.activity = 0.0
        self.recent: list[float] = []
        self.last_onset = -np.inf
        self.nod = _Alpha(NOD_TAU, self.dt)
        self.brow = _Alpha(BROW_TAU, self.dt)
        self.t = 0.0

    def step(self, loud: float) -> dict[str, float]:
        dt = self.dt
        a_ou, a_sm = dt / NOISE_TAU, dt / SMOOTH_TAU
        self.activity += (loud - self.activity) * dt / ACTIVITY_TAU
        amp = self.amount * (IDLE_SHARE + (1 - IDLE_SHARE) * min(1.0, 1.6 * self.activity))
        out = {}
        noise = self.rng.standard_normal(len(HEAD_STD))
        for (k, std), n in zip(HEAD_STD.items(), noise):
            # OU with unit stationary variance, then a low-pass (which shrinks variance: compensate)
            self.ou[k] += -self.ou[k] * a_ou + np.sqrt(2 * a_ou) * n
            self.smooth[k] += (self.ou[k] - self.smooth[k]) * a_sm
            gain = np.sqrt((NOISE_TAU + SMOOTH_TAU) / NOISE_TAU)
            out[k] = float(self.smooth[k] * gain * std * amp)
        # emphasised onsets: loudness jumps -> a small nod and a brow lift
        self.recent = (self.recent + [loud])[-ONSET_WINDOW - 1:]
        onset = len(self.recent) > ONSET_WINDOW and loud - min(self.recent[:-1]) > ONSET_RISE
        impulse = 0.0
        if onset and self.t - self.last_onset > REFRACTORY:
            self.last_onset = self.t
            impulse = 0.7 + 0.6 * loud
        out["pitch"] += NOD_DEG * self.amount * self.nod.step(impulse)
        out["brows"] = float(np.clip(self.brows * (0.55 * self.brow.step(impulse) + 0.12 * self.activity), 0, 1))
        self.t += dt
        return out


class GazeGenerator:
    """'camera': steady. 'wander': saccades to nearby points, held 1–3 s, mostly back to camera."""

    HOLD_MEAN = 1.8  # s
    RANGE = (0.22, 0.12)  # x, y as fractions of eye width / height

    def __init__(self, mode: str, fps: float, rng: np.random.Generator):
        self.mode, self.dt, self.rng = mode, 1.0 / fps, rng
        self.pos = np.zeros(2)
        self.target = np.zeros(2)
        self.until = self._hold()

    def _hold(self) -> float:
        return float(self.rng.gamma(2.0, self.HOLD_MEAN / 2.0))

    def step(self) -> tuple[float, float]:
        if self.mode != "wander":
            return 0.0, 0.0
        self.until -= self.dt
        if self.until <= 0:
            self.until = self._hold()
            away = self.rng.random() < 0.55 and not self.target.any()
            angle, size = self.rng.uniform(0, 2 * np.pi), self.rng.uniform(0.5, 1.0)
            self.target = size * np.array([np.cos(angle), np.sin(angle)]) * self.RANGE if away else np.zeros(2)
        self.pos += (self.target - self.pos) * 0.65  # a saccade lands within ~2 frames
        return float(self.pos[0]), float(self.pos[1])
