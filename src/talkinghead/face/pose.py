"""Head pose from FaceMesh landmarks: the rotation of the points that move with the skull against the video's
own median face (Kabsch), in degrees. Used by the eval card's stability metrics and by training-data
preprocessing (EMO's head speed)."""
from __future__ import annotations

import numpy as np

# Points that move with the skull, not with the jaw, lips, brows or eyelids.
RIGID = (33, 133, 362, 263, 1, 4, 5, 6, 168, 197, 195, 10, 151, 9, 8, 234, 454, 127, 356, 93, 323)


def kabsch(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Rotation R (3x3) minimising |R a_i - b_i| for centred point sets (n, 3)."""
    u, _, vt = np.linalg.svd(a.T @ b)
    d = np.sign(np.linalg.det(vt.T @ u.T))
    return vt.T @ np.diag([1.0, 1.0, d]) @ u.T


def head_pose(landmarks: np.ndarray) -> np.ndarray:
    """(n, 3) pitch, yaw, roll in degrees of each frame's rigid points relative to the video's median
    face (NaN rows without a face). FaceMesh depth is in the same pixel scale as x and y."""
    pts = landmarks[:, RIGID, :].astype(np.float64)
    ok = np.isfinite(pts[:, 0, 0])
    out = np.full((len(pts), 3), np.nan)
    if not ok.any():
        return out
    centred = pts[ok] - pts[ok].mean(axis=1, keepdims=True)
    centred /= np.linalg.norm(centred, axis=(1, 2), keepdims=True)
    template = np.median(centred, axis=0)
    angles = []
    for p in centred:
        r = kabsch(template, p)
        pitch = np.degrees(np.arctan2(r[2, 1], r[2, 2]))
        yaw = np.degrees(np.arcsin(np.clip(-r[2, 0], -1, 1)))
        roll = np.degrees(np.arctan2(r[1, 0], r[0, 0]))
        angles.append((pitch, yaw, roll))
    out[ok] = angles
    return out
