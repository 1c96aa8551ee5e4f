"""Per-frame acoustic features at the video fps: loudness, spectral shape, voice activity.

Each video frame k is described by a short window centred on its mid-time (k + 0.5) / fps, so a
frame's features need audio only up to WINDOW / 2 after its centre (part of the motion lookahead).
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..types import SAMPLE_RATE

WINDOW = 0.04  # s, analysis window per frame
N_FFT = 1024  # bins of 15.6 Hz at 16 kHz
SILENCE_DB = -50.0  # dBFS, below this a frame is silent whatever the noise floor
EPS = 1e-10

_BANDS = {  # Hz. low ~ F1 region (open vowels), mid ~ F2 of front vowels, high ~ sibilants
    "low": (200.0, 1000.0),
    "mid": (1000.0, 3000.0),
    "high": (3500.0, 7800.0),
}


@dataclass
class FrameFeatures:
    """Features of a batch of frames, each field (n,) float32."""

    db: np.ndarray  # RMS level, dBFS
    low: np.ndarray  # band levels, dB
    mid: np.ndarray
    high: np.ndarray
    centroid: np.ndarray  # spectral centroid, Hz (0 when silent)
    f1: np.ndarray  # power centroid of the low band, Hz: a rough first-formant (jaw opening) cue
    f2: np.ndarray  # power centroid of 900–3000 Hz, Hz: a rough second formant (front/spread vs back/round)
    f0_strength: np.ndarray  # normalised autocorrelation peak in the 70–400 Hz range: voicing, 0..1


def _window_len() -> int:
    return int(round(WINDOW * SAMPLE_RATE))


def frame_windows(buffer: np.ndarray, buffer_start: int, centres: np.ndarray) -> np.ndarray:
    """(n, win) windows of `buffer` (whose first sample is absolute sample `buffer_start`) centred on
    absolute sample positions `centres`; samples outside the buffer read as zeros."""
    win = _window_len()
    starts = np.asarray(centres, dtype=np.int64) - win // 2 - buffer_start
    idx = starts[:, None] + np.arange(win)[None, :]
    valid = (idx >= 0) & (idx < len(buffer))
    out = np.zeros(idx.shape, dtype=np.float32)
    out[valid] = buffer[idx[valid]]
    return out


_hann = None


def compute(windows: np.ndarray) -> FrameFeatures:
    """Features of (n, win) float32 windows. Row-wise and order-independent: the same window always
    gives the same numbers, whatever batch it comes in (streaming == batch)."""
    global _hann
    win = windows.shape[1]
    if _hann is None or len(_hann) != win:
        _hann = np.hanning(win).astype(np.float32)
    rms = np.sqrt(np.mean(windows.astype(np.float64) ** 2, axis=1))
    db = 20 * np.log10(rms + EPS)
    spec = np.abs(np.fft.rfft(windows * _hann, n=N_FFT, axis=1)) ** 2
    freqs = np.fft.rfftfreq(N_FFT, 1 / SAMPLE_RATE)
    band = {}
    for name, (lo, hi) in _BANDS.items():
        sel = (freqs >= lo) & (freqs < hi)
        band[name] = 10 * np.log10(spec[:, sel].mean(axis=1) + EPS)
    low_sel = (freqs >= _BANDS["low"][0]) & (freqs < _BANDS["low"][1])
    low_pow = spec[:, low_sel]
    f1 = (low_pow * freqs[low_sel]).sum(axis=1) / (low_pow.sum(axis=1) + EPS)
    f2_sel = (freqs >= 900.0) & (freqs < 3000.0)
    f2_pow = spec[:, f2_sel]
    f2 = (f2_pow * freqs[f2_sel]).sum(axis=1) / (f2_pow.sum(axis=1) + EPS)
    total = spec.sum(axis=1)
    centroid = np.where(total > EPS, (spec * freqs).sum(axis=1) / (total + EPS), 0.0)
    # voicing: autocorrelation via the power spectrum, peak in the pitch range
    ac = np.fft.irfft(spec, n=N_FFT, axis=1)
    lag_lo, lag_hi = int(SAMPLE_RATE / 400), int(SAMPLE_RATE / 70)
    lag_hi = min(lag_hi, win - 1)
    f0s = ac[:, lag_lo:lag_hi].max(axis=1) / (ac[:, 0] + EPS)
    f32 = lambda a: np.asarray(a, dtype=np.float32)  # noqa: E731
    return FrameFeatures(f32(db), f32(band["low"]), f32(band["mid"]), f32(band["high"]), f32(centroid), f32(f1), f32(f2),
                         f32(np.clip(f0s, 0, 1)))


def frame_centres(first: int, count: int, fps: float) -> np.ndarray:
    """Absolute sample index of the mid-time of frames first .. first+count-1."""
    k = np.arange(first, first + count, dtype=np.float64)
    return np.round((k + 0.5) / fps * SAMPLE_RATE).astype(np.int64)


def n_frames(duration: float, fps: float) -> int:
    """Frames in a video of the audio's length: the duration matches to within half a frame."""
    return max(1, int(round(duration * fps)))


def voice_activity(samples: np.ndarray, fps: float = 25.0, margin_db: float = 15.0) -> np.ndarray:
    """Per-frame speech/silence (bool) for a whole waveform: louder than SILENCE_DB and than the
    clip's noise floor (10th percentile level) + margin_db."""
    n = n_frames(len(samples) / SAMPLE_RATE, fps)
    feats = compute(frame_windows(np.asarray(samples, dtype=np.float32), 0, frame_centres(0, n, fps)))
    floor = np.percentile(feats.db, 10)
    return (feats.db > SILENCE_DB) & (feats.db > floor + margin_db)
