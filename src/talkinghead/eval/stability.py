"""Temporal stability of a talking-head video from per-frame FaceMesh landmarks.

Every function takes `landmarks`: (n_frames, 478, 3) float, pixels, NaN rows where no face was found.

- jitter: frame-to-frame noise of rigid facial points that smooth motion would not produce.
- head pose: rotation of the rigid points against the video's own median face (Kabsch), in degrees.
- blinks: eye-aspect-ratio dips.
- background: PSNR/SSIM outside the head against the reference portrait.
"""
from __future__ import annotations

import cv2
import numpy as np
from scipy.signal import savgol_filter

from ..face.pose import RIGID, head_pose
from ..face.regions import FACE_OVAL, eye_centres

# Eye opening per eye: mid upper lid, mid lower lid, outer and inner corner.
EYE_RIGHT = (159, 145, 33, 133)
EYE_LEFT = (386, 374, 362, 263)
BLINK_DROP = 0.15  # a blink: a dip of the eye opening of at least this fraction of its running median
BLINK_MAX_S = 0.2  # ... at most this wide at half depth (slower, wider dips are squints or looking down)


def interocular(landmarks: np.ndarray) -> np.ndarray:
    """Iris-centre distance per frame, pixels (NaN without a face)."""
    out = np.full(len(landmarks), np.nan)
    for i, pts in enumerate(landmarks):
        if np.isfinite(pts[0, 0]):
            a, b = eye_centres(pts)
            out[i] = float(np.linalg.norm(a - b))
    return out


def jitter(landmarks: np.ndarray) -> float | None:
    """Median over frames of the rigid points' second-difference residual |x_t - (x_{t-1}+x_{t+1})/2|,
    in inter-ocular distances. Smooth head motion leaves ~0; tracking noise and shaky frames raise it."""
    pts = landmarks[:, RIGID, :2].astype(np.float64)
    iod = interocular(landmarks)
    resid = np.linalg.norm(pts[1:-1] - 0.5 * (pts[:-2] + pts[2:]), axis=-1).mean(axis=1) / iod[1:-1]
    resid = resid[np.isfinite(resid)]
    return float(np.median(resid)) if len(resid) >= 3 else None


def pose_metrics(landmarks: np.ndarray, fps: float) -> dict:
    """Head-pose spread (std, degrees, per axis) and speed (mean angular speed of the smoothed pose,
    degrees/s)."""
    pose = head_pose(landmarks)
    ok = np.isfinite(pose[:, 0])
    keys = ("pose_std_pitch_deg", "pose_std_yaw_deg", "pose_std_roll_deg")
    if ok.sum() < 3:
        return {**dict.fromkeys(keys), "pose_speed_deg_s": None}
    std = np.nanstd(pose, axis=0)
    # speed of the smoothed pose (~0.25 s window): landmark noise differentiated would dominate otherwise
    filled = np.array([np.interp(np.arange(len(pose)), np.flatnonzero(ok), pose[ok, j]) for j in range(3)]).T
    win = max(5, int(round(0.25 * fps)) | 1)
    smooth = savgol_filter(filled, win, 2, axis=0) if len(filled) > win else filled
    speed = np.linalg.norm(np.diff(smooth, axis=0), axis=1) * fps
    return {**{k: float(v) for k, v in zip(keys, std)}, "pose_speed_deg_s": float(np.nanmean(speed))}


def eye_aspect_ratio(landmarks: np.ndarray) -> np.ndarray:
    """Mean of both eyes' lid opening (mid upper to mid lower lid) over eye width, per frame: ~0.25–0.35
    for an open eye with FaceMesh, which under-reports closure (a full blink reads as a 10–40 % dip)."""
    def ear(up, lo, a, b):
        p = landmarks[:, [up, lo, a, b], :2].astype(np.float64)
        return np.linalg.norm(p[:, 0] - p[:, 1], axis=-1) / np.linalg.norm(p[:, 2] - p[:, 3], axis=-1)
    return 0.5 * (ear(*EYE_RIGHT) + ear(*EYE_LEFT))


def blinks(ear: np.ndarray, fps: float) -> list[tuple[int, int]]:
    """(start, end) frame spans of blinks: dips of the eye opening, relative to its running median over
    +-1 s, with a prominence of at least BLINK_DROP and at most BLINK_MAX_S wide at half depth."""
    from scipy.ndimage import median_filter
    from scipy.signal import find_peaks

    filled = np.where(np.isfinite(ear), ear, np.nanmedian(ear))
    base = median_filter(filled, size=2 * max(2, int(round(fps))) + 1, mode="nearest")
    rel = filled / np.maximum(base, 1e-6)
    peaks, props = find_peaks(-rel, prominence=BLINK_DROP, width=(None, BLINK_MAX_S * fps), rel_height=0.5)
    return [(int(np.floor(lo)), int(np.ceil(hi)) + 1) for lo, hi in zip(props["left_ips"], props["right_ips"])]


def blink_metrics(landmarks: np.ndarray, fps: float) -> dict:
    """Blinks per minute over the frames with a face."""
    ear = eye_aspect_ratio(landmarks)
    seen = np.isfinite(ear)
    if seen.sum() < fps:  # under a second of face
        return {"blinks": None, "blinks_per_min": None}
    spans = blinks(ear, fps)
    return {"blinks": len(spans), "blinks_per_min": 60.0 * len(spans) / (seen.sum() / fps)}


def head_mask(pts: np.ndarray, shape: tuple[int, int], grow: float = 1.5) -> np.ndarray:
    """uint8 mask (255 = head) of the face oval grown about its centre (hair, ears), raised by half a
    face height (hair, hats) and extended down to the bottom edge (neck and shoulders follow the head
    in most engines)."""
    oval = pts[list(FACE_OVAL), :2].astype(np.float64)
    c = oval.mean(axis=0)
    grown = c + grow * (oval - c)
    raised = grown - [0.0, 0.5 * np.ptp(oval[:, 1])]
    mask = np.zeros(shape, np.uint8)
    for poly in (grown, raised):
        cv2.fillPoly(mask, [np.round(poly).astype(np.int32)], 255)
    x0, x1 = grown[:, 0].min(), grown[:, 0].max()
    cv2.rectangle(mask, (int(x0), int(raised[:, 1].min() + 0.5 * np.ptp(oval[:, 1]))), (int(x1), shape[0] - 1), 255, -1)
    return mask


def align_reference(ref: np.ndarray, ref_pts: np.ndarray, frame: np.ndarray, frame_pts: np.ndarray,
                    background: np.ndarray) -> np.ndarray:
    """The reference portrait warped into the video's frame: a similarity transform from the rigid
    landmarks (reference -> video median face), refined by ECC on the background pixels."""
    m, _ = cv2.estimateAffinePartial2D(ref_pts[list(RIGID), :2].astype(np.float32),
                                       frame_pts[list(RIGID), :2].astype(np.float32))
    h, w = frame.shape[:2]
    scale = float(np.sqrt(abs(np.linalg.det(m[:, :2]))))
    if scale < 1.0:  # shrink with area averaging first, as a renderer would, so edges do not alias
        ref = cv2.resize(ref, (max(1, round(ref.shape[1] * scale)), max(1, round(ref.shape[0] * scale))),
                         interpolation=cv2.INTER_AREA)
        m = m.copy()
        m[:, :2] /= scale
    coarse = cv2.warpAffine(ref, m, (w, h), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)
    target = cv2.cvtColor(frame, cv2.COLOR_RGB2GRAY).astype(np.float32)
    try:  # W maps frame pixels to `coarse` pixels where the backgrounds agree best
        criteria = (cv2.TERM_CRITERIA_EPS | cv2.TERM_CRITERIA_COUNT, 100, 1e-5)
        _, warp = cv2.findTransformECC(target, cv2.cvtColor(coarse, cv2.COLOR_RGB2GRAY).astype(np.float32),
                                       np.eye(2, 3, dtype=np.float32), cv2.MOTION_AFFINE, criteria,
                                       background.astype(np.uint8), 5)
    except cv2.error:
        return coarse  # no convergence: keep the landmark estimate
    # one resampling: frame pixel x reads reference pixel m^-1(W x)
    full = lambda a: np.vstack([a, [0.0, 0.0, 1.0]])  # noqa: E731
    inverse = (np.linalg.inv(full(m)) @ full(warp.astype(np.float64)))[:2]
    return cv2.warpAffine(ref, inverse, (w, h), flags=cv2.INTER_LINEAR | cv2.WARP_INVERSE_MAP,
                          borderMode=cv2.BORDER_REPLICATE)


def background_metrics(frames: dict[int, np.ndarray], landmarks: np.ndarray, ref: np.ndarray | None,
                       ref_pts: np.ndarray | None) -> tuple[dict, dict]:
    """PSNR (dB) and SSIM (0..1) outside the head between sampled frames and the aligned reference.
    Returns (values, reasons for the ones that are None)."""
    from skimage.metrics import structural_similarity

    none = {"background_psnr_db": None, "background_ssim": None}
    if ref is None:
        return none, dict.fromkeys(none, "needs the reference portrait (ref), the one the video was made from")
    if ref_pts is None:
        return none, dict.fromkeys(none, "no face found in the reference image")
    ok = np.isfinite(landmarks[:, 0, 0])
    if not ok.any() or not frames:
        return none, dict.fromkeys(none, "no face found in the video")
    median_pts = np.median(landmarks[ok], axis=0)
    first = next(iter(frames.values()))
    h, w = first.shape[:2]
    aligned = align_reference(ref, ref_pts, first, median_pts, head_mask(median_pts, (h, w)) == 0)
    psnrs, ssims = [], []
    for i, frame in frames.items():
        pts = landmarks[i] if np.isfinite(landmarks[i, 0, 0]) else median_pts
        keep = (head_mask(pts, (h, w)) == 0) & (head_mask(median_pts, (h, w)) == 0)
        if keep.sum() < 0.05 * h * w:
            continue
        diff = (frame.astype(np.float64) - aligned.astype(np.float64))[keep]
        mse = float(np.mean(diff ** 2))
        psnrs.append(99.0 if mse == 0 else 10 * np.log10(255.0 ** 2 / mse))
        _, smap = structural_similarity(frame, aligned, channel_axis=2, data_range=255, full=True)
        ssims.append(float(smap.mean(axis=2)[keep].mean()))
    if not psnrs:
        return none, dict.fromkeys(none, "the head covers nearly the whole frame: no background to compare")
    return {"background_psnr_db": float(np.mean(psnrs)), "background_ssim": float(np.mean(ssims))}, {}
