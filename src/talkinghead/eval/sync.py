"""Lip–audio sync measured on pixels: FaceMesh mouth aperture per frame against the audio envelope.

Offset sign convention: a positive offset means the mouth moves LATER than the audio (video lags),
in frames.
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
    """Keep syllable-rate modulation (0.5–8 Hz, capped below Nyquist); remove drift and frame noise."""
    x = np.nan_to_num(x - np.nanmean(x))
    hi = min(8.0, 0.45 * fps)
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
