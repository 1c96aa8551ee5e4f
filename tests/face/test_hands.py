"""Hands in front of the face are found by their shape (MediaPipe Hands, and the parallel lines between fingers
for hands it misses) and stay still in the warp; bare faces have no hand found on them."""
from __future__ import annotations


import numpy as np
import pytest

from talkinghead.assets import portrait
from talkinghead.face import prepare
from talkinghead.face.hands import DENSE, detect_hands, finger_lines, finger_score, hands_on_face
from talkinghead.render import WarpRenderer
from talkinghead.types import MotionFrame, Portrait
from benchmarks import robustness as corpus


@pytest.fixture(scope="module")
def with_hand():
    """The corpus' bare hand (the portrait's own skin colour) on the astronaut, and where it was drawn."""
    plain = portrait("astronaut")
    img = corpus.bare_hand(plain)
    por, face = prepare(Portrait(img, "hand"), max(img.shape[:2]), crop="full")  # the image as it is
    assert por.image.shape == img.shape
    drawn = np.abs(img.astype(np.int16) - plain.astype(np.int16)).max(axis=-1) > 6
    assert drawn.sum() > 1500
    return por, face, drawn


def test_a_bare_hand_is_found_and_covered(with_hand):
    por, face, drawn = with_hand
    mask = hands_on_face(por.image, face.landmarks) > 0
    assert mask[drawn].mean() > 0.9  # the hand's pixels, fingers included
    assert mask.sum() < 1.8 * drawn.sum()  # grown by about half a finger, not a blob over the face


def test_no_hand_on_a_plain_portrait():
    por, face = prepare(Portrait(portrait("astronaut"), "plain"), 256)
    assert not (hands_on_face(por.image, face.landmarks) > 0).any()


def test_the_hand_stays_still_while_the_mouth_opens(with_hand):
    por, face, drawn = with_hand
    r = WarpRenderer(por, face)
    assert r.occlusion.hand
    frame = r.render(MotionFrame(jaw=1.0, smile=0.6, width=0.3))
    change = np.abs(frame.astype(np.float32) - por.image.astype(np.float32)).mean(axis=-1)
    assert change[drawn].mean() < 0.5  # grey levels: the hand is not bent with the cheek and mouth
    lips = face.landmarks[[13, 14, 61, 291], :2]
    x0, y0 = lips.min(0).astype(int)
    x1, y1 = lips.max(0).astype(int) + 1
    assert change[y0:y1, x0:x1].mean() > 20  # while the mouth beside it opens


@pytest.mark.parametrize("size", [192, 512])
def test_a_hand_in_a_black_and_white_photo_is_found(size):
    C = corpus
    por, face = prepare(Portrait(C.grayscale(C.bare_hand(portrait("grace_hopper"))), "grey"), size)
    assert (hands_on_face(por.image, face.landmarks) > 0).sum() > 0.02 * size * size
    plain, plain_face = prepare(Portrait(C.grayscale(portrait("grace_hopper")), "grey"), size)
    assert not (hands_on_face(plain.image, plain_face.landmarks) > 0).any()


# ----------------------------------------------------------------------------- hands MediaPipe Hands misses
MISSED = {"fingers_from_edge": corpus.fingers_from_edge, "hand_in_shadow": corpus.hand_in_shadow}


def _drawn_on(name: str):
    """The corpus hand on Grace Hopper at the image's own size, and the hand's pixels inside the face oval."""
    import cv2

    from talkinghead.face import regions as R

    plain = portrait("grace_hopper")
    img = MISSED[name](plain)
    plain = plain[:, plain.shape[1] - img.shape[1]:]  # the fingers' case is cut at the left
    img, plain = img[:, : img.shape[1] // 2 * 2], plain[:, : img.shape[1] // 2 * 2]
    por, face = prepare(Portrait(img, name), max(img.shape[:2]), crop="full")
    assert por.image.shape == img.shape
    oval = np.zeros(img.shape[:2], np.uint8)
    cv2.fillPoly(oval, [np.round(face.landmarks[list(R.FACE_OVAL), :2]).astype(np.int32)], 1)
    drawn = (np.abs(img.astype(np.int16) - plain.astype(np.int16)).max(axis=-1) > 6) & (oval > 0)
    assert drawn.sum() > 2000
    return por, face, drawn


@pytest.mark.parametrize("name", sorted(MISSED))
def test_fingers_mediapipe_misses_are_found_by_their_lines(name):
    por, face, drawn = _drawn_on(name)
    assert not detect_hands(por.image)  # the palm detector finds nothing ...
    lines = finger_lines(por.image, face.landmarks) > 0
    assert lines[drawn].mean() > 0.65  # ... the parallel finger lines cover most of the hand on the face
    assert (hands_on_face(por.image, face.landmarks) > 0)[drawn].mean() > 0.65


@pytest.mark.parametrize("name", ["astronaut", "grace_hopper", "grayscale", "jpeg_q15", "glasses", "sunglasses",
                                  "open_mouth", "own_teeth", "turned_20_looking_down", "cameraman", "beard"])
@pytest.mark.parametrize("size", [192, 512])
def test_finger_lines_stay_off_faces_without_a_hand(name, size):
    """Creases, wrinkles, glasses, a beard, an open mouth and a three-quarter face are not fingers."""
    if name == "beard":
        image = corpus.beard(portrait("grace_hopper"))
    else:
        image = next(c for c in corpus.cases() if c.name == name).build()
    por, face = prepare(Portrait(image, name), size)
    assert finger_score(por.image, face.landmarks) < DENSE
    assert not finger_lines(por.image, face.landmarks).any()


def test_fingers_found_by_their_lines_stay_still_while_the_mouth_opens():
    por, face, drawn = _drawn_on("fingers_from_edge")
    r = WarpRenderer(por, face)
    assert r.occlusion.hand
    frame = r.render(MotionFrame(jaw=1.0, smile=0.6, width=0.3))
    change = np.abs(frame.astype(np.float32) - por.image.astype(np.float32)).mean(axis=-1)
    assert change[drawn].mean() < 1.5  # grey levels (8 with the fingers left to bend with the cheek)
    lips = face.landmarks[[13, 14, 61, 291], :2]
    x0, y0 = lips.min(0).astype(int)
    x1, y1 = lips.max(0).astype(int) + 1
    assert change[y0:y1, x0:x1].mean() > 20  # while the mouth beside them opens
