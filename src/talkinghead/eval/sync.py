"""Lip–audio sync measured on pixels: FaceMesh mouth aperture per frame against the audio envelope.

Offset sign convention: a positive offset means the mouth moves LATER than the audio (video lags),
in frames. Delaying the audio track by k frames therefore lowers the measured offset by k.

Confidence follows SyncNet's idea (best match against the typical match over all lags): the peak
correlation minus the median correlation over lags -15..15. Matched speech scores clearly above
another utterance's audio; a still mouth scores 0.
"""
from __future__ import annotations

from collections.abc import Iterable

import numpy as np
from scipy import signal

from ..audio import features as F
from ..face.landmarks import detect_all
from ..face.regions import mouth_aperture
from ..types import SAMPLE_RATE

ENVELOPE_FLOOR_DB = -60.0  # dBFS


def aperture_series(frames: Iterable[np.ndarray]) -> np.ndarray:
    """Inner-lip opening / inter-ocular distance per frame (NaN where no face is found)."""
    out = []
    for f in frames:
        faces = detect_all(np.ascontiguousarray(f))
        out.append(mouth_aperture(faces[0]) if faces else np.nan)
    return np.array(out, dtype=np.float64)


def audio_envelope(samples: np.ndarray, fps: float, n: int | None = None) -> np.ndarray:
    """RMS level (dB above the clip's floor, >= 0) per video frame."""
    n = n or F.n_frames(len(samples) / SAMPLE_RATE, fps)
    db = F.compute(F.frame_windows(np.asarray(samples, np.float32), 0, F.frame_centres(0, n, fps))).db
    db = np.maximum(db, ENVELOPE_FLOOR_DB)  # digital silence would otherwise dominate the scale
    floor = np.percentile(db, 5)
    return np.maximum(db - floor, 0.0)


def _bandpass(x: np.ndarray, fps: float) -> np.ndarray:
    """Keep slow syllable-rate modulation (0.5–4 Hz, capped below Nyquist); remove drift and frame noise."""
    x = np.nan_to_num(x - np.nanmean(x))
    hi = min(4.0, 0.45 * fps)
    sos = signal.butter(2, [0.5, hi], btype="bandpass", fs=fps, output="sos")
    return signal.sosfiltfilt(sos, x) if len(x) > 15 else x


def av_offset(aperture: np.ndarray, envelope: np.ndarray, fps: float, max_lag: int = 15
              ) -> tuple[int, float, np.ndarray]:
    """(offset_frames, peak_correlation, correlation per lag -max_lag..max_lag)."""
    a, e = _bandpass(aperture, fps), _bandpass(envelope, fps)
    lags = np.arange(-max_lag, max_lag + 1)
    corr = np.zeros(len(lags))
    for i, lag in enumerate(lags):  # mouth at t + lag vs audio at t
        if lag >= 0:
            x, y = a[lag:], e[: len(e) - lag]
        else:
            x, y = a[: len(a) + lag], e[-lag:]
        if len(x) > 3 and x.std() > 0 and y.std() > 0:
            corr[i] = float(np.corrcoef(x, y)[0, 1])
    best = int(np.argmax(corr))
    return int(lags[best]), float(corr[best]), corr


MIN_SYNC_FRAMES = 25  # frames with a face and audio needed to measure sync at all
STILL_MOUTH = 0.005  # aperture std (inter-ocular distances) below which the mouth is not moving
SYNC_PASS_CONFIDENCE = 0.2  # a lip-synced clip: confidence at least this ...
SYNC_PASS_OFFSET = 3  # ... and |offset| at most this many frames


def sync_metrics(aperture: np.ndarray, samples: np.ndarray, fps: float, max_lag: int = 15
                 ) -> tuple[dict, dict, np.ndarray | None]:
    """Offset, peak correlation, confidence and a pass/fail verdict. Returns (values, reasons for
    None values, correlation per lag or None)."""
    keys = ("offset_frames", "offset_ms", "peak_correlation", "confidence", "passed")
    n = min(len(aperture), F.n_frames(len(samples) / SAMPLE_RATE, fps))
    a = aperture[:n]
    if np.isfinite(a).sum() < MIN_SYNC_FRAMES:
        return dict.fromkeys(keys), dict.fromkeys(keys, f"under {MIN_SYNC_FRAMES} frames with both a face and audio"), None
    if np.nanstd(a) < STILL_MOUTH:
        values = {"offset_frames": None, "offset_ms": None, "peak_correlation": 0.0, "confidence": 0.0,
                  "passed": False}
        reason = "the mouth does not move, so there is no offset to measure"
        return values, {"offset_frames": reason, "offset_ms": reason}, np.zeros(2 * max_lag + 1)
    env = audio_envelope(samples, fps, F.n_frames(len(samples) / SAMPLE_RATE, fps))[:n]
    offset, peak, corr = av_offset(a, env, fps, max_lag)
    confidence = float(peak - np.median(corr))
    values = {"offset_frames": offset, "offset_ms": 1000.0 * offset / fps, "peak_correlation": peak,
              "confidence": confidence,
              "passed": bool(confidence >= SYNC_PASS_CONFIDENCE and abs(offset) <= SYNC_PASS_OFFSET)}
    return values, {}, corr
