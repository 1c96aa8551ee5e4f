"""MediaPipe Hands + Pose on real images, and the conversion of detector results (handedness, duplicates)."""
from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import skimage.data

from talkinghead.face.body import (BODY_POINTS, HAND_POINTS, analyze_body, hands_from_result, pose_from_result,
                                   track_body)


def test_astronaut_shows_no_hands_but_shoulders():
    """skimage's astronaut: a head-and-shoulders photo with no hand in view."""
    image = skimage.data.astronaut()
    kp = analyze_body(image)
    assert kp.image_size == (image.shape[1], image.shape[0])
    assert kp.hand_mask.tolist() == [False, False]  # missing hands are marked, not guessed
    assert np.isnan(kp.hands).all() and kp.hand_score.tolist() == [0.0, 0.0]
    assert kp.shoulders_visible
    left, right = kp.body[0], kp.body[1]
    assert left[0] > right[0]  # facing the camera: her left shoulder is on the image's right
    assert 0.15 * image.shape[1] < left[0] - right[0] < 0.8 * image.shape[1]
    assert 0.3 * image.shape[0] < (left[1] + right[1]) / 2 < 0.7 * image.shape[0]  # below the face


def test_no_person_no_keypoints_and_video_tracks_stack():
    blank = np.full((128, 128, 3), 127, np.uint8)
    kp = analyze_body(blank)
    assert not kp.hand_mask.any() and not kp.body_mask.any() and not kp.shoulders_visible
    tracks = track_body([skimage.data.astronaut(), np.full((512, 512, 3), 127, np.uint8)])
    assert tracks["hands"].shape == (2, 2, HAND_POINTS, 3) and tracks["body"].shape == (2, len(BODY_POINTS), 2)
    assert tracks["body_visibility"][0, :2].min() > 0.5 and tracks["body_visibility"][1].max() == 0
    assert not tracks["hand_mask"].any()


def _landmarks(x0: float) -> SimpleNamespace:
    return SimpleNamespace(landmark=[SimpleNamespace(x=x0 + 0.01 * i, y=0.5, z=-0.01) for i in range(HAND_POINTS)])


def _handed(label: str, score: float) -> SimpleNamespace:
    return SimpleNamespace(classification=[SimpleNamespace(label=label, score=score)])


def test_hand_results_are_unmirrored_and_deduplicated():
    """A synthetic MediaPipe result: its "Right" (mirrored convention) is the person's left hand, slot 0;
    of two detections claiming the same hand the more confident one is kept."""
    result = SimpleNamespace(multi_hand_landmarks=[_landmarks(0.6), _landmarks(0.1), _landmarks(0.2)],
                             multi_handedness=[_handed("Right", 0.9), _handed("Left", 0.6), _handed("Left", 0.8)])
    hands, mask, score = hands_from_result(result, 200, 100)
    assert hands.shape == (2, HAND_POINTS, 3) and mask.tolist() == [True, True]
    assert np.isclose(hands[0, 0, 0], 120.0) and np.isclose(hands[0, 0, 1], 50.0)  # x, y in pixels
    assert np.isclose(hands[1, 0, 0], 40.0) and np.isclose(score[1], 0.8)  # the 0.8 detection won
    assert np.isclose(hands[0, 0, 2], -2.0)  # z scaled by the image width
    empty = SimpleNamespace(multi_hand_landmarks=None, multi_handedness=None)
    hands, mask, _ = hands_from_result(empty, 200, 100)
    assert not mask.any() and np.isnan(hands).all()


def test_pose_result_picks_the_body_points():
    lms = [SimpleNamespace(x=i / 33, y=0.5, visibility=0.9 if i < 20 else 0.1) for i in range(33)]
    body, vis = pose_from_result(SimpleNamespace(pose_landmarks=SimpleNamespace(landmark=lms)), 330, 100)
    assert np.allclose(body[:, 0], [10 * k for k in BODY_POINTS])
    assert np.allclose(vis[:6], 0.9) and np.allclose(vis[6:], 0.1)  # upper limbs seen, legs (23-28) not
