"""Phones -> visemes -> mouth targets, with Cohen–Massaro dominance coarticulation.

Visemes are the 15 Oculus/MPEG-4-style classes. Each has a target for (jaw, width, round, press)
and a dominance: how strongly it holds its shape against its neighbours. Bilabials dominate and
always reach closure, however short.
"""
from __future__ import annotations

import numpy as np

from ..types import PhoneSegment

# viseme: (jaw, width, round, press, dominance, reach s) — reach = how far (s) its influence
# spreads before/after the phone (anticipatory and carry-over coarticulation).
VISEMES: dict[str, tuple[float, float, float, float, float, float]] = {
    "sil": (0.00, 0.00, 0.00, 0.00, 2.0, 0.10),
    "PP": (0.00, 0.00, 0.00, 1.00, 4.0, 0.04),
    "FF": (0.10, 0.10, 0.00, 0.35, 2.0, 0.05),
    "TH": (0.22, 0.05, 0.00, 0.00, 1.0, 0.05),
    "DD": (0.20, 0.10, 0.00, 0.00, 0.5, 0.06),
    "kk": (0.28, 0.05, 0.00, 0.00, 0.4, 0.06),
    "CH": (0.16, -0.15, 0.55, 0.00, 1.5, 0.06),
    "SS": (0.10, 0.30, 0.00, 0.00, 1.2, 0.05),
    "nn": (0.18, 0.05, 0.00, 0.00, 0.5, 0.06),
    "RR": (0.22, -0.15, 0.45, 0.00, 1.0, 0.07),
    "aa": (0.80, 0.10, 0.00, 0.00, 1.0, 0.09),
    "E": (0.55, 0.35, 0.00, 0.00, 1.0, 0.08),
    "ih": (0.32, 0.45, 0.00, 0.00, 1.0, 0.08),
    "oh": (0.58, -0.30, 0.65, 0.00, 1.2, 0.09),
    "ou": (0.26, -0.40, 0.95, 0.00, 1.5, 0.09),
}

PHONE_TO_VISEME: dict[str, str] = {
    "SIL": "sil",
    "P": "PP", "B": "PP", "M": "PP",
    "F": "FF", "V": "FF",
    "TH": "TH", "DH": "TH",
    "T": "DD", "D": "DD",
    "K": "kk", "G": "kk", "NG": "kk", "HH": "kk",
    "CH": "CH", "JH": "CH", "SH": "CH", "ZH": "CH",
    "S": "SS", "Z": "SS",
    "N": "nn", "L": "nn",
    "R": "RR", "ER": "RR",
    "AA": "aa", "AE": "aa", "AH": "aa", "AY": "aa", "AW": "aa",
    "EH": "E", "EY": "E",
    "IH": "ih", "IY": "ih", "Y": "ih",
    "AO": "oh", "OW": "oh", "OY": "oh",
    "UW": "ou", "UH": "ou", "W": "ou",
}

CUTOFF = 2.5  # reaches: beyond this a phone has no influence at all
OWN_SPAN = 3.0  # dominance multiplier inside a phone's own interval: while a phone sounds its shape
# leads, so a short open vowel between consonants still opens the mouth (coarticulation shapes the
# transitions, not the phone's own frames)
SUBSTEPS = 5  # dominance is evaluated this many times per frame interval
_TABLE = np.array([VISEMES[PHONE_TO_VISEME.get(p, "sil")] for p in PHONE_TO_VISEME], dtype=np.float64)
_INDEX = {p: i for i, p in enumerate(PHONE_TO_VISEME)}


def viseme_of(phone: str) -> str:
    return PHONE_TO_VISEME.get(phone.upper().rstrip("012"), "sil")


class PhoneTimeline:
    """Mouth targets from timed phones. Evaluating a frame needs only phones near it, so the same
    code serves batch and streaming (the timeline is known up front, e.g. from TTS or alignment)."""

    def __init__(self, phones: list[PhoneSegment]):
        self.starts = np.array([p.start for p in phones], dtype=np.float64)
        self.ends = np.array([max(p.end, p.start + 1e-3) for p in phones], dtype=np.float64)
        self.rows = _TABLE[[_INDEX.get(p.phone.upper().rstrip("012"), 0) for p in phones]]  # unknown -> SIL
        self.bilabial = np.array([viseme_of(p.phone) == "PP" for p in phones])

    def frame_targets(self, t0: float, t1: float) -> tuple[float, float, float, float]:
        """(jaw, width, round, press) for the frame shown during [t0, t1)."""
        if len(self.starts) == 0:
            return 0.0, 0.0, 0.0, 0.0
        lo = np.searchsorted(self.ends, t0 - 0.3)
        hi = np.searchsorted(self.starts, t1 + 0.3)
        if hi <= lo:
            return 0.0, 0.0, 0.0, 0.0
        s, e, rows = self.starts[lo:hi], self.ends[lo:hi], self.rows[lo:hi]
        ts = t0 + (np.arange(SUBSTEPS) + 0.5) / SUBSTEPS * (t1 - t0)  # (k,)
        # distance from each sub-step to each phone's interval (0 inside)
        dist = np.maximum(0.0, np.maximum(s[None, :] - ts[:, None], ts[:, None] - e[None, :]))  # (k, p)
        rel = dist / rows[None, :, 5]
        dom = rows[None, :, 4] * np.exp(-(rel ** 1.5)) * (rel < CUTOFF) * np.where(dist == 0, OWN_SPAN, 1.0)
        w = dom / (dom.sum(axis=1, keepdims=True) + 1e-9)
        vals = w @ rows[:, :4]  # (k, 4)
        width, rnd = vals[:, 1:3].mean(axis=0)
        # the jaw takes the frame's peak, not its mean: a short open vowel (an unstressed "a") still
        # opens the mouth visibly within its frame
        jaw = vals[:, 0].max()
        # a bilabial overlapping this frame closes the lips on it, even if it lasts one frame
        overlap = np.minimum(e, t1) - np.maximum(s, t0)
        covered = self.bilabial[lo:hi] & ((overlap >= 0.4 * (t1 - t0)) | (overlap >= 0.5 * (e - s)))
        press = 1.0 if covered.any() else float(vals[:, 3].max())
        return float(jaw), float(width), float(rnd), press
