"""Hands in front of the face: MediaPipe Hands on the portrait, each hand's outline as a rigid region.

A bare hand has the face's own colour, so the colour model of face.occlusion cannot tell it from the
cheek it covers. MediaPipe Hands (its palm detector and 21-point landmark model ship in the mediapipe
wheel) finds it by shape instead. A hand's region is the convex hull of its 21 points grown by about
half a finger's width (the points run along the middle of the fingers and the palm), so the fingers'
edges and the gaps between them are inside. Only hands that reach the face's surroundings count: a
hand elsewhere in the picture does not touch the warp.
"""
from __future__ import annotations

import cv2
import numpy as np

from . import regions as R

FINGER_GROW = 0.22  # share of the palm width (index to pinky knuckle) the hull is grown by
MIN_GROW = 2.0  # px
NEAR_FACE = 1.6  # a hand counts when it reaches the face oval grown by this factor about its centre
INDEX_KNUCKLE, PINKY_KNUCKLE = 5, 17
WORK_SIDE = 256  # px, hands are looked for on the image at most this large
GREY = 6.0  # mean RGB spread (0..255) below which a photo is black-and-white
SKIN_TINT = np.array([1.1, 0.86, 0.73], np.float32)  # RGB gains that colour a grey photo like skin


def detect_hands(image: np.ndarray) -> list[np.ndarray]:
    """(21, 2) pixel points of every hand MediaPipe Hands finds in an RGB uint8 image.

    The image is looked at no larger than WORK_SIDE (the palm detector sees a small square anyway, and
    one size gives the same answer whatever the output size). A black-and-white photo is given a skin
    tint first: the detector was trained on colour photos and misses grey hands (on the corpus' grey
    hand it then finds it at 192 and 256 px, where it found none before)."""
    from .body import _hands_model, _lock, hands_from_result
    from .landmarks import _quiet_native_stderr

    h, w = image.shape[:2]
    s = min(1.0, WORK_SIDE / max(h, w))
    img = image if s == 1.0 else cv2.resize(image, (max(1, round(w * s)), max(1, round(h * s))),
                                                interpolation=cv2.INTER_AREA)
    sat = np.ptp(img[::4, ::4].astype(np.int16), axis=-1)
    if float(sat.mean()) < GREY:
        img = np.clip(img.astype(np.float32) * SKIN_TINT, 0, 255).astype(np.uint8)
    img = np.ascontiguousarray(img)
    with _lock, _quiet_native_stderr():
        result = _hands_model().process(img)
    hands, mask, _ = hands_from_result(result, img.shape[1], img.shape[0])
    return [hands[k, :, :2].astype(np.float64) / s for k in range(len(mask)) if mask[k]]


def hand_region(points: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    """uint8 (h, w) mask, 255 on one hand given its (21, 2) points: hull grown by half a finger."""
    palm = float(np.linalg.norm(points[INDEX_KNUCKLE] - points[PINKY_KNUCKLE]))
    grow = max(FINGER_GROW * palm, MIN_GROW)
    m = np.zeros(shape, np.uint8)
    hull = cv2.convexHull(points.astype(np.float32)).reshape(-1, 2)
    cv2.fillPoly(m, [np.round(hull).astype(np.int32)], 255)
    r = int(round(grow))
    return cv2.dilate(m, cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * r + 1, 2 * r + 1)))


def hands_on_face(image: np.ndarray, landmarks: np.ndarray) -> np.ndarray:
    """uint8 (h, w) mask, 255 where a hand near the face is (all zero when there is none)."""
    h, w = image.shape[:2]
    oval = np.asarray(landmarks, np.float64)[list(R.FACE_OVAL), :2]
    c = oval.mean(axis=0)
    near = np.zeros((h, w), np.uint8)
    cv2.fillPoly(near, [np.round(c + NEAR_FACE * (oval - c)).astype(np.int32)], 255)
    out = np.zeros((h, w), np.uint8)
    for points in detect_hands(image):
        m = hand_region(points, (h, w))
        if (m & near).any():
            out |= m
    return out
