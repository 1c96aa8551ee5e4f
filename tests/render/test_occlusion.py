"""Rigid things stay rigid, open mouths close, turned faces do not tear: the warp on hard portraits
made by the robustness corpus (benchmarks/robustness.py) from the bundled ones."""
from __future__ import annotations


import cv2
import numpy as np
import pytest

from talkinghead.errors import InputError
from talkinghead.face import detect_all, prepare
from talkinghead.face import regions as R
from talkinghead.face.occlusion import analyze_occlusion
from talkinghead.render import WarpRenderer
from talkinghead.types import MotionFrame, Portrait
from benchmarks import robustness as C

SIZE = 384


def _renderer(image: np.ndarray, **kw) -> tuple[Portrait, WarpRenderer]:
    portrait, face = prepare(Portrait(image, "test"), SIZE)
    return portrait, WarpRenderer(portrait, face, **kw)


def _diff(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return np.abs(a.astype(np.float32) - b.astype(np.float32)).mean(axis=2)


def _eye_openings(r: WarpRenderer) -> np.ndarray:
    m = np.zeros(r.image.shape[:2], np.uint8)
    P = r.rig.P
    for up, lo in ((R.RIGHT_EYE_UPPER, R.RIGHT_EYE_LOWER), (R.LEFT_EYE_UPPER, R.LEFT_EYE_LOWER)):
        cv2.fillPoly(m, [np.round(np.concatenate([P[list(up), :2], P[list(lo[::-1]), :2]])).astype(np.int32)], 1)
    return m > 0


def _aperture(frame: np.ndarray) -> float:
    faces = detect_all(frame)
    assert faces, "FaceMesh lost the face"
    return R.mouth_aperture(faces[0])


@pytest.fixture(scope="module")
def astronaut_image():
    return C.bundled("astronaut")


@pytest.fixture(scope="module")
def grace_image():
    return C.bundled("grace_hopper")


def test_plain_face_has_nothing_rigid_on_the_mouth_or_eyes(astronaut_image):
    portrait, face = prepare(Portrait(astronaut_image), SIZE)
    occ = analyze_occlusion(portrait.image, face.landmarks)
    assert not occ.glasses and not occ.eyes_hidden
    P = face.landmarks
    moving = list(R.LIPS_OUTER_UPPER + R.LIPS_OUTER_LOWER + R.RIGHT_EYE_UPPER + R.LEFT_EYE_UPPER) + [R.CHIN]
    assert occ.mask[np.round(P[moving, 1]).astype(int), np.round(P[moving, 0]).astype(int)].max() == 0


def test_glasses_rims_stay_put_while_the_eyes_blink(grace_image):
    portrait, r = _renderer(C.glasses(grace_image))
    assert r.occlusion.glasses and not r.occlusion.eyes_hidden
    frame = r.render(MotionFrame(blink=1.0, brows=1.0))
    change = _diff(frame, portrait.image)
    rims = (r.occlusion.mask >= 0.999) & (cv2.cvtColor(portrait.image, cv2.COLOR_RGB2GRAY) < 70)
    assert rims.sum() > 200
    assert change[rims].mean() < 2.0  # the rims do not bend ...
    assert change[_eye_openings(r)].mean() > 12.0  # ... while the lids come down behind them


def test_sunglasses_hide_the_eyes_and_stay_rigid(astronaut_image):
    portrait, r = _renderer(C.glasses(astronaut_image, dark=True))
    assert r.occlusion.eyes_hidden
    frame = r.render(MotionFrame(blink=1.0, brows=1.0, gaze_x=0.3))
    lens = r.occlusion.mask >= 0.999
    assert _diff(frame, portrait.image)[lens].mean() < 1.0


def test_a_gloved_hand_does_not_bend_with_the_jaw(astronaut_image):
    portrait, r = _renderer(C.hand(astronaut_image))
    frame = r.render(MotionFrame(jaw=1.0))
    red = portrait.image.astype(int)
    glove = (red[..., 0] > 130) & (red[..., 1] < 80) & (r.occlusion.mask >= 0.999)
    assert glove.sum() > 300
    assert _diff(frame, portrait.image)[glove].mean() < 3.0
    # the mouth still opens (less than without the glove: the chin it holds moves only as far as the
    # skin between them allows)
    assert _aperture(frame) > _aperture(portrait.image) + 0.06


def test_an_open_mouth_is_closed_for_the_neutral_face(astronaut_image):
    open_mouth = C.warped(astronaut_image, jaw=0.9)
    portrait, r = _renderer(open_mouth)
    rest = _aperture(portrait.image)
    assert rest > 0.2
    # FaceMesh still reads a little opening on the closed mouth (it puts an open mouth's inner-lip
    # points inside the visible lip edges, so the teeth edge stays in view): at most half the portrait's
    assert _aperture(r.render(MotionFrame())) < 0.5 * rest
    assert _aperture(r.render(MotionFrame(jaw=1.0))) > 0.8 * rest


@pytest.mark.parametrize("size", [192, 256, 384, 512])
def test_a_wide_open_mouth_is_refused_with_a_clear_message_at_every_size(astronaut_image, size):
    from talkinghead.config import AnimateConfig, RenderConfig
    from talkinghead.systems.warp.engine import Animator

    with pytest.raises(InputError) as e:
        Animator(Portrait(C.warped(astronaut_image, jaw=2.4), "wide"), AnimateConfig(render=RenderConfig(size=size)))
    assert e.value.field == "image" and "wide open" in e.value.message and e.value.hint


def test_the_rig_judges_the_mouth_opening_on_the_source_photo(astronaut_image):
    """Lips drawn apart further than the rig can close are refused whatever the crop's landmarks show: the
    opening is measured on the source photo's landmarks, found once, not on the crop's, found again per size."""
    from dataclasses import replace

    from talkinghead.render.rig import MAX_REST_GAP, FaceRig, face_frame

    _, face = prepare(Portrait(astronaut_image, "test"), SIZE)
    FaceRig(face)  # a closed mouth passes
    source = face.source_landmarks.astype(np.float64)
    _, _, down, unit = face_frame(source)  # the face's downward axis and its pixels per face unit
    lower = list(R.LIPS_INNER_LOWER[1:-1])
    source[lower, :2] += (MAX_REST_GAP + 0.1) * unit[1] * down
    with pytest.raises(InputError) as e:
        FaceRig(replace(face, source_landmarks=source))
    assert e.value.field == "image" and "wide open" in e.value.message


@pytest.mark.parametrize("motion", [dict(yaw=6, pitch=5, jaw=0.8), dict(yaw=-6, jaw=1.0), dict(yaw=25, pitch=12)])
def test_a_turned_face_looking_down_never_folds_its_outline(motion):
    _, r = _renderer(C.cameraman())
    disp, expr = r._unfolded(*r.rig.displace_parts(MotionFrame(**motion)))
    assert not r._folds(disp)
    frame = r.render(MotionFrame(**motion))
    assert frame.shape == r.image.shape


def test_black_and_white_photo_gets_a_colourless_mouth(grace_image):
    portrait, r = _renderer(C.grayscale(grace_image))
    frame = r.render(MotionFrame(jaw=0.9)).astype(int)
    spread = frame.max(axis=2) - frame.min(axis=2)
    assert spread.max() <= 3


def test_teeth_shown_in_the_portrait_are_reused(astronaut_image, grace_image):
    assert _renderer(astronaut_image)[1].mouth.teeth is None  # off unless asked for
    portrait, r = _renderer(astronaut_image, own_teeth=True)  # she smiles with her upper teeth showing
    assert r.mouth.teeth is not None
    _, closed = _renderer(grace_image, own_teeth=True)
    assert closed.mouth.teeth is None  # closed lips: the drawn teeth
    m = MotionFrame(jaw=0.6)
    own = r.render(m).astype(np.float32)
    r.mouth.teeth, saved = None, r.mouth.teeth
    drawn = r.render(m).astype(np.float32)
    r.mouth.teeth = saved
    # the band under the upper lip: the portrait's own teeth colour, not the drawn one
    matte = saved.matte > 0.5
    real = saved.patch[matte].mean(axis=0)
    lm = r.rig.P[:, :2] + r.rig.displace(m)[: r.rig.P.shape[0]]
    up = lm[list(R.LIPS_INNER_UPPER[3:8])]
    lo = lm[list(R.LIPS_INNER_LOWER[3:8])]
    ys = np.round(up[:, 1] + 0.25 * (lo[:, 1] - up[:, 1])).astype(int)
    xs = np.round(up[:, 0]).astype(int)
    assert np.abs(own[ys, xs] - real).mean() < np.abs(drawn[ys, xs] - real).mean()
    assert np.abs(own[ys, xs].mean(axis=0) - real).max() < 40
