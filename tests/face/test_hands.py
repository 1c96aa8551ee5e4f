"""Hands in front of the face are found by their shape (MediaPipe Hands) and stay still in the warp."""
from __future__ import annotations


import numpy as np
import pytest

from talkinghead.assets import portrait
from talkinghead.face import prepare
from talkinghead.face.hands import hands_on_face
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
