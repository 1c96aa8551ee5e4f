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


def detect_hands(image: np.ndarray) -> list[np.ndarray]:
    """(21, 2) pixel points of every hand MediaPipe Hands finds in an RGB uint8 image."""
    from .body import _hands_model, _lock, hands_from_result
    from .landmarks import _quiet_native_stderr

    img = np.ascontiguousarray(image)
    h, w = img.shape[:2]
    with _lock, _quiet_native_stderr():
        result = _hands_model().process(img)
    hands, mask, _ = hands_from_result(result, w, h)
    return [hands[k, :, :2].astype(np.float64) for k in range(len(mask)) if mask[k]]


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
