"""Identity metric with the real dlib models on real faces: warp-engine frames of the astronaut."""
import cv2
import numpy as np
import pytest

import talkinghead
from talkinghead.config import AnimateConfig, MotionConfig, RenderConfig
from talkinghead.eval import identity as I
from talkinghead.eval.identity import (SAME_PERSON_THRESHOLD, describe, evenly_spaced, identity_available,
                                       identity_metrics)
from talkinghead.types import Speech

N_SCORED = 6  # frames scored per call: ~0.1 s of dlib each


@pytest.fixture(scope="module")
def talking_astronaut(astronaut, librivox):
    """1.2 s (30 frames, 256²) of the astronaut speaking real audio, from the warp engine."""
    speech = Speech(librivox[0].samples[: int(16000 * 1.2)])
    anim = talkinghead.Animator(astronaut, AnimateConfig(MotionConfig(seed=3), RenderConfig(size=256)))
    return list(anim.frames(speech))


@pytest.fixture(scope="module")
def same(talking_astronaut, astronaut):
    """The astronaut's frames scored against the astronaut portrait."""
    return identity_metrics(talking_astronaut, astronaut.image, max_frames=N_SCORED)


def test_dlib_and_models_are_available():
    assert identity_available() is None


def test_same_person_passes(same):
    m = same
    print(f"\nsame person: {m}")
    assert m["reason"] is None
    assert (m["frames_scored"], m["frames_without_face"]) == (N_SCORED, 0)
    assert m["threshold"] == SAME_PERSON_THRESHOLD == 0.6
    assert 0 <= m["distance_mean"] <= m["distance_max"] < 0.45
    assert 0 <= m["distance_std"] < 0.1
    assert m["same_person_rate"] == 1.0


def test_another_face_fails(talking_astronaut, grace, same):
    other = identity_metrics(talking_astronaut, grace.image, max_frames=N_SCORED)
    print(f"\nother person (grace_hopper as ref): {other}")
    assert other["reason"] is None and other["frames_scored"] == N_SCORED
    assert other["distance_mean"] > SAME_PERSON_THRESHOLD
    assert other["distance_mean"] > same["distance_mean"] + 0.2
    assert other["same_person_rate"] < 0.5 < same["same_person_rate"]


def test_hog_miss_falls_back_to_the_mediapipe_box(astronaut):
    """Tilted 50°, dlib's frontal HOG finds no face; FaceMesh's box still gives the same person."""
    img = astronaut.image
    tilt = cv2.getRotationMatrix2D((222, 123), 50, 1.0)  # about the face centre
    tilted = cv2.warpAffine(img, tilt, img.shape[1::-1], borderMode=cv2.BORDER_REFLECT)
    detector = I._load()[0]
    assert len(detector(tilted, 0)) == 0 and len(detector(tilted, 1)) == 0
    d = describe(tilted)
    assert d is not None and d.shape == (128,)
    assert np.linalg.norm(d - describe(img)) < SAME_PERSON_THRESHOLD


def test_describe_accepts_grayscale_and_rgba(grace):
    rgb = grace.image
    gray = cv2.cvtColor(rgb, cv2.COLOR_RGB2GRAY)
    rgba = np.dstack([rgb, np.full(rgb.shape[:2], 255, np.uint8)])
    d = describe(rgb)
    assert np.array_equal(describe(rgba), d)
    assert np.linalg.norm(describe(gray) - d) < SAME_PERSON_THRESHOLD
    with pytest.raises(ValueError):
        describe(rgb.astype(np.float32))


def test_no_reference_gives_none_and_a_reason(talking_astronaut):
    m = identity_metrics(talking_astronaut, None)
    assert m["reason"].startswith("no reference portrait given (ref)")
    assert all(m[k] is None for k in ("distance_mean", "distance_max", "distance_std", "same_person_rate",
                                      "frames_scored", "frames_without_face"))


def test_reference_without_a_face_gives_none_and_a_reason(talking_astronaut):
    gray = np.full((256, 256, 3), 128, np.uint8)
    m = identity_metrics(talking_astronaut, gray, max_frames=N_SCORED)
    assert m["reason"] == "no face found in the reference portrait"
    assert m["distance_mean"] is None and m["same_person_rate"] is None and m["frames_scored"] is None


def test_frames_without_faces_are_counted_not_scored(talking_astronaut, astronaut):
    flat = [np.full((256, 256, 3), v, np.uint8) for v in (40, 200)]
    none = identity_metrics(flat, astronaut.image)
    assert none["reason"] == "no face found in any of the 2 sampled frames"
    assert (none["frames_scored"], none["frames_without_face"]) == (0, 2)
    assert none["distance_mean"] is None and none["same_person_rate"] is None
    mixed = identity_metrics(flat + talking_astronaut[:2], astronaut.image)
    assert mixed["reason"] is None and (mixed["frames_scored"], mixed["frames_without_face"]) == (2, 2)
    assert mixed["same_person_rate"] == 1.0  # over frames with a face only


def test_empty_clip_gives_a_reason(astronaut):
    m = identity_metrics([], astronaut.image)
    assert m["reason"] == "no frames to score" and m["distance_mean"] is None


def test_missing_models_give_none_and_the_install_command(talking_astronaut, astronaut, tmp_path, monkeypatch):
    monkeypatch.setattr(I, "_models_dir", lambda: tmp_path)  # a models folder without the .dat files
    reason = identity_available()
    assert "shape_predictor_5_face_landmarks.dat" in reason and "pip install 'talkinghead[eval]'" in reason
    m = identity_metrics(talking_astronaut, astronaut.image)
    assert m["reason"] == reason and m["distance_mean"] is None and m["frames_scored"] is None


def test_evenly_spaced_keeps_first_and_last():
    assert evenly_spaced(list(range(10)), 4) == [0, 3, 6, 9]
    assert evenly_spaced((i for i in range(3)), 25) == [0, 1, 2]  # generators are read into a list
    with pytest.raises(ValueError):
        evenly_spaced([1], 0)
