"""EMO2 §3 end effectors: MediaPipe Hands (21 points per hand, instead of MANO) and Pose (upper limbs, legs)."""
from __future__ import annotations

import os
import threading
from dataclasses import dataclass
from typing import Iterable

import numpy as np

from ..types import Portrait
from .landmarks import _quiet_native_stderr

HAND_POINTS = 21  # MediaPipe hand landmarks: wrist, then 4 per finger (thumb .. pinky)
N_HANDS = 2  # slot 0: the person's left hand, slot 1: their right hand
# The 21 MediaPipe hand connections (the same set as mp.solutions.hands.HAND_CONNECTIONS)
HAND_BONES: tuple[tuple[int, int], ...] = (
    (0, 1), (1, 2), (2, 3), (3, 4),  # thumb
    (0, 5), (5, 6), (6, 7), (7, 8),  # index
    (5, 9), (9, 10), (10, 11), (11, 12),  # middle
    (9, 13), (13, 14), (14, 15), (15, 16),  # ring
    (13, 17), (0, 17), (17, 18), (18, 19), (19, 20))  # pinky and palm
# MediaPipe Pose indices of the body keypoints EMO2 uses: upper limbs, then legs
UPPER_LIMB = (11, 12, 13, 14, 15, 16)  # left/right shoulder, elbow, wrist
LEGS = (23, 24, 25, 26, 27, 28)  # left/right hip, knee, ankle
BODY_POINTS = UPPER_LIMB + LEGS  # 12 keypoints; index into this tuple below
# limbs as pairs of indices into BODY_POINTS
UPPER_LIMB_BONES: tuple[tuple[int, int], ...] = ((0, 1), (0, 2), (2, 4), (1, 3), (3, 5))  # shoulders, arms
LEG_BONES: tuple[tuple[int, int], ...] = ((6, 7), (6, 8), (8, 10), (7, 9), (9, 11))  # hips, legs
MIN_VISIBILITY = 0.5  # Pose visibility below this counts as "not shown"

_lock = threading.Lock()
_hands = None
_pose = None


@dataclass
class BodyKeypoints:
    """Hands and body keypoints of one image, in its pixels. Missing points are NaN and flagged."""

    hands: np.ndarray  # (2, 21, 3) float32: x, y pixels; z (MediaPipe relative depth) x image width
    hand_mask: np.ndarray  # (2,) bool: hand slot present (0 = the person's left hand, 1 = right)
    hand_score: np.ndarray  # (2,) float32: handedness confidence, 0 where missing
    body: np.ndarray  # (12, 2) float32: BODY_POINTS (upper limbs then legs) in pixels
    body_visibility: np.ndarray  # (12,) float32 in [0, 1]
    image_size: tuple[int, int]  # (width, height)

    @property
    def body_mask(self) -> np.ndarray:  # (12,) bool
        return self.body_visibility >= MIN_VISIBILITY

    @property
    def shoulders_visible(self) -> bool:
        return bool(self.body_mask[:2].all())


def _solutions():
    os.environ.setdefault("GLOG_minloglevel", "2")
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    import mediapipe as mp

    return mp.solutions


def _hands_model():
    """One static-image Hands graph per process (the landmark model ships in the mediapipe wheel)."""
    global _hands
    if _hands is None:
        _hands = _solutions().hands.Hands(static_image_mode=True, max_num_hands=N_HANDS, model_complexity=1,
                                          min_detection_confidence=0.5)
    return _hands


def _pose_model():
    """One static-image Pose graph; model_complexity=1 is the only Pose model inside the wheel (0 and 2
    would be downloaded, which we never do)."""
    global _pose
    if _pose is None:
        _pose = _solutions().pose.Pose(static_image_mode=True, model_complexity=1, min_detection_confidence=0.5)
    return _pose


def hands_from_result(result, width: int, height: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """A MediaPipe Hands result -> (hands (2, 21, 3), mask (2,), score (2,)) in pixels.

    MediaPipe labels handedness as if the image were mirrored (a selfie camera): on an ordinary photo its
    "Left" is the person's right hand. We store the person's own left hand in slot 0. When two detections
    claim the same hand, the more confident one wins.
    """
    hands = np.full((N_HANDS, HAND_POINTS, 3), np.nan, np.float32)
    mask = np.zeros(N_HANDS, bool)
    score = np.zeros(N_HANDS, np.float32)
    for lm, handed in zip(result.multi_hand_landmarks or [], result.multi_handedness or []):
        label = handed.classification[0]
        slot = 0 if label.label == "Right" else 1
        if mask[slot] and score[slot] >= label.score:
            continue
        hands[slot] = [(p.x * width, p.y * height, p.z * width) for p in lm.landmark]
        mask[slot], score[slot] = True, label.score
    return hands, mask, score


def pose_from_result(result, width: int, height: int) -> tuple[np.ndarray, np.ndarray]:
    """A MediaPipe Pose result -> (body (12, 2) pixels, visibility (12,)); no person: NaN and 0."""
    body = np.full((len(BODY_POINTS), 2), np.nan, np.float32)
    visibility = np.zeros(len(BODY_POINTS), np.float32)
    if result.pose_landmarks is not None:
        lms = result.pose_landmarks.landmark
        for i, k in enumerate(BODY_POINTS):
            body[i] = (lms[k].x * width, lms[k].y * height)
            visibility[i] = lms[k].visibility
    return body, visibility


def analyze_body(image: np.ndarray | Portrait) -> BodyKeypoints:
    """Hands and body keypoints of one RGB uint8 image (the most prominent person)."""
    img = np.ascontiguousarray(image.image if isinstance(image, Portrait) else image)
    h, w = img.shape[:2]
    with _lock, _quiet_native_stderr():
        hand_result = _hands_model().process(img)
        pose_result = _pose_model().process(img)
    hands, mask, score = hands_from_result(hand_result, w, h)
    body, visibility = pose_from_result(pose_result, w, h)
    return BodyKeypoints(hands, mask, score, body, visibility, (w, h))


def track_body(frames: Iterable[np.ndarray]) -> dict[str, np.ndarray]:
    """Per-frame keypoints of a video (frames analysed independently; smoothing is the consumer's job):
    {"hands" (f, 2, 21, 3), "hand_mask" (f, 2), "hand_score" (f, 2), "body" (f, 12, 2), "body_visibility" (f, 12)}."""
    per_frame = [analyze_body(frame) for frame in frames]
    names = ("hands", "hand_mask", "hand_score", "body", "body_visibility")
    return {n: np.stack([getattr(k, n) for k in per_frame]) for n in names}
