"""Landmark regions drawn as uint8 masks with OpenCV: filled polygons, masks grown by a radius, and the
face parts that move when the face talks (eyes, brows, lips, nostrils), which occluder searches leave out."""
from __future__ import annotations

import cv2
import numpy as np

from . import regions as R

NOSTRILS = (98, 327, 2, 326, 97, 240, 460, 79, 309, 64, 294, 102, 331)


def fill(mask: np.ndarray, pts: np.ndarray, value: int = 255) -> None:
    """Fill the polygon `pts` (n, 2) pixels into `mask` in place."""
    cv2.fillPoly(mask, [np.round(pts).astype(np.int32)], value)


def grow(mask: np.ndarray, px: float) -> np.ndarray:
    """`mask` dilated by a disc of radius `px` (the mask itself below half a pixel)."""
    r = int(round(px))
    if r < 1:
        return mask
    return cv2.dilate(mask, cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * r + 1, 2 * r + 1)))


def moving_features(shape: tuple[int, int], pts: np.ndarray, iod: float, with_eyes: bool) -> np.ndarray:
    """uint8 mask of the parts that move and are not skin: eyes, brows, lips and mouth, nostrils."""
    m = np.zeros(shape, np.uint8)
    if with_eyes:
        for up, lo in ((R.RIGHT_EYE_UPPER, R.RIGHT_EYE_LOWER), (R.LEFT_EYE_UPPER, R.LEFT_EYE_LOWER)):
            eye = np.zeros(shape, np.uint8)
            fill(eye, np.concatenate([pts[list(up), :2], pts[list(lo[::-1]), :2]]))
            m |= grow(eye, 0.07 * iod)  # lashes and the lid margin
    for brow in (R.RIGHT_BROW, R.LEFT_BROW):
        b = np.zeros(shape, np.uint8)
        fill(b, cv2.convexHull(pts[list(brow), :2].astype(np.float32)).reshape(-1, 2))
        m |= grow(b, 0.03 * iod)
    lips = np.zeros(shape, np.uint8)
    fill(lips, np.concatenate([pts[list(R.LIPS_OUTER_UPPER), :2], pts[list(R.LIPS_OUTER_LOWER[::-1]), :2]]))
    m |= grow(lips, 0.05 * iod)
    nose = np.zeros(shape, np.uint8)
    fill(nose, cv2.convexHull(pts[list(NOSTRILS), :2].astype(np.float32)).reshape(-1, 2))
    m |= grow(nose, 0.02 * iod)
    return m

