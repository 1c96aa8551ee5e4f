"""How the mouth moves: with speech, during silence, on the phones that demand a shape.

`aperture` is the per-frame inner-lip opening in inter-ocular distances (eval.sync.aperture_series);
0 is closed, ~0.2–0.4 is a wide-open vowel for a real speaker.
"""
from __future__ import annotations

import cv2
import numpy as np

from ..audio.features import voice_activity
from ..face.regions import LIPS_OUTER_LOWER, LIPS_OUTER_UPPER
from ..types import PhoneSegment

BILABIALS = ("P", "B", "M")  # the lips must meet
OPEN_VOWELS = ("AA", "AE", "AH", "AO", "AW", "AY")  # the jaw drops
CLOSED_FRACTION = 0.25  # near-closed: within this fraction of the speaker's range above their closed level
OPEN_FRACTION = 0.5  # open: above this fraction of the range
EDGE_FRAMES = 2  # frames next to a speech/silence change count as neither
MIN_ARTICULATION = 0.02  # aperture std during speech (IOD) below which the mouth fails to articulate
MIN_FRAMES = 5  # fewer speech (or silence) frames than this: the related metric is None
SHARPNESS_WIDTH = 96  # px, mouth crops are resized to this width before measuring sharpness


def speech_frames(samples: np.ndarray, fps: float, n: int) -> tuple[np.ndarray, np.ndarray]:
    """(speech, silence) boolean masks over n video frames from an energy VAD, leaving out the
    EDGE_FRAMES around each change (onsets and releases belong to neither)."""
    vad = voice_activity(samples, fps)
    vad = np.pad(vad, (0, max(0, n - len(vad))))[:n]
    change = np.zeros(n, bool)
    for i in np.flatnonzero(np.diff(vad.astype(np.int8))):
        change[max(0, i - EDGE_FRAMES + 1):i + EDGE_FRAMES + 1] = True
    return vad & ~change, ~vad & ~change


def _levels(aperture: np.ndarray) -> tuple[float, float]:
    """(closed level, open level) of this speaker: 5th and 95th percentiles of the aperture."""
    a = aperture[np.isfinite(aperture)]
    return float(np.percentile(a, 5)), float(np.percentile(a, 95))


def motion_metrics(aperture: np.ndarray, samples: np.ndarray, fps: float) -> tuple[dict, dict]:
    """Articulation during speech and lip motion during silence. Returns (values, reasons)."""
    n = len(aperture)
    speech, silence = speech_frames(samples, fps, n)
    speed = np.abs(np.diff(aperture, prepend=aperture[:1])) * fps  # IOD per second
    ok = np.isfinite(speed)
    values = {"speech_frames": int(speech.sum()), "silence_frames": int(silence.sum()),
              "articulation": None, "articulates": None, "silence_motion": None, "articulation_ratio": None}
    reasons = {}
    if (speech & ok).sum() >= MIN_FRAMES:
        values["articulation"] = float(np.std(aperture[speech & ok]))
        values["articulates"] = values["articulation"] >= MIN_ARTICULATION
    else:
        reasons["articulation"] = reasons["articulates"] = "under 5 frames of speech with a visible face"
    if (silence & ok).sum() >= MIN_FRAMES:
        values["silence_motion"] = float(np.mean(speed[silence & ok]))
    else:
        reasons["silence_motion"] = "under 5 frames of silence with a visible face"
    if values["articulation"] is not None and values["silence_motion"] is not None:
        values["articulation_ratio"] = float(np.mean(speed[speech & ok]) / max(values["silence_motion"], 1e-3))
    else:
        reasons["articulation_ratio"] = "needs both speech and silence in the clip"
    return values, reasons


def phone_metrics(aperture: np.ndarray, phones: list[PhoneSegment] | None, fps: float) -> tuple[dict, dict]:
    """With phone timings: the share of bilabials (p, b, m) where the lips come near-closed, and of
    open vowels where the mouth opens, each judged within the phone's span +-1 frame against the
    speaker's own closed/open levels. Returns (values, reasons)."""
    keys = ("bilabial_closure", "bilabials", "open_vowel_rate", "open_vowels")
    if not phones:
        return dict.fromkeys(keys), dict.fromkeys(keys, "needs the transcript (text), the words spoken, aligned to the audio")
    closed, opened = _levels(aperture)
    span = max(opened - closed, 1e-6)
    hits: dict[str, list[bool]] = {"bilabial": [], "open": []}
    n = len(aperture)
    for p in phones:
        lo = max(0, int(np.floor(p.start * fps)) - 1)
        hi = min(n, int(np.ceil(p.end * fps)) + 1)
        window = aperture[lo:hi]
        window = window[np.isfinite(window)]
        if not len(window):
            continue
        if p.phone in BILABIALS:
            hits["bilabial"].append(window.min() <= closed + CLOSED_FRACTION * span)
        elif p.phone in OPEN_VOWELS:
            hits["open"].append(window.max() >= closed + OPEN_FRACTION * span)
    values = {"bilabial_closure": float(np.mean(hits["bilabial"])) if hits["bilabial"] else None,
              "bilabials": len(hits["bilabial"]),
              "open_vowel_rate": float(np.mean(hits["open"])) if hits["open"] else None,
              "open_vowels": len(hits["open"])}
    reasons = {}
    if values["bilabial_closure"] is None:
        reasons["bilabial_closure"] = "no p, b or m in the aligned transcript"
    if values["open_vowel_rate"] is None:
        reasons["open_vowel_rate"] = "no open vowel in the aligned transcript"
    return values, reasons


def mouth_box(pts: np.ndarray, shape: tuple[int, int], margin: float = 0.3) -> tuple[int, int, int, int] | None:
    """(x0, y0, x1, y1) around the outer lips, grown by `margin` of their width on each side."""
    lips = pts[list(LIPS_OUTER_UPPER + LIPS_OUTER_LOWER), :2]
    (x0, y0), (x1, y1) = lips.min(axis=0), lips.max(axis=0)
    m = margin * (x1 - x0)
    x0, y0 = max(0, int(x0 - m)), max(0, int(y0 - m))
    x1, y1 = min(shape[1], int(x1 + m)), min(shape[0], int(y1 + m))
    return (x0, y0, x1, y1) if x1 - x0 >= 8 and y1 - y0 >= 8 else None


def sharpness(image: np.ndarray, pts: np.ndarray) -> float | None:
    """Variance of the Laplacian of the mouth region resized to SHARPNESS_WIDTH px wide: detail
    independent of the video's resolution (blurry mouths score low)."""
    box = mouth_box(pts, image.shape[:2])
    if box is None:
        return None
    x0, y0, x1, y1 = box
    crop = cv2.cvtColor(np.ascontiguousarray(image[y0:y1, x0:x1]), cv2.COLOR_RGB2GRAY)
    h = max(8, int(round(crop.shape[0] * SHARPNESS_WIDTH / crop.shape[1])))
    crop = cv2.resize(crop, (SHARPNESS_WIDTH, h), interpolation=cv2.INTER_AREA)
    return float(cv2.Laplacian(crop.astype(np.float64), cv2.CV_64F).var())
