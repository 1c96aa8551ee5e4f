import cv2
import numpy as np
import pytest

from talkinghead.errors import InputError, NoFaceError
from talkinghead.face import analyze, prepare
from talkinghead.face.landmarks import N_LANDMARKS
from talkinghead.face import regions as R
from talkinghead.types import Portrait


def test_analyze_finds_478_landmarks_on_a_real_portrait(astronaut):
    face = analyze(astronaut)
    assert face.landmarks.shape == (N_LANDMARKS, 3)
    x0, y0, x1, y1 = face.box
    assert 150 < x0 < x1 < 350 and 50 < y0 < y1 < 300  # her face in the 512x512 photo
    # anatomy sanity: eyes above nose above mouth above chin
    el, er = R.eye_centres(face.landmarks)
    assert el[0] < er[0]
    assert max(el[1], er[1]) < face.landmarks[R.NOSE_TIP, 1] < face.landmarks[13, 1] < face.landmarks[R.CHIN, 1]


@pytest.mark.parametrize("size", [256, 512])
def test_face_crop_is_square_and_centred(grace, size):
    img, face = prepare(grace, size, "face")
    assert img.image.shape == (size, size, 3)
    cx = (face.box[0] + face.box[2]) / 2
    assert abs(cx - size / 2) < 0.1 * size
    assert 0.3 * size < face.face_width < 0.7 * size


def test_full_frame_keeps_aspect_with_even_sides(grace):
    img, face = prepare(grace, 500, "full")  # grace is 512x600
    h, w = img.image.shape[:2]
    assert h == 500 and w % 2 == 0 and h % 2 == 0
    assert abs(w / h - 512 / 600) < 0.01


def test_any_aspect_ratio_and_large_images(astronaut):
    wide = np.full((700, 2400, 3), 200, np.uint8)
    wide[100:612, 1500:2012] = astronaut.image
    img, face = prepare(Portrait(wide, "wide"), 512)
    assert img.image.shape == (512, 512, 3)
    huge = cv2.resize(astronaut.image, (3000, 3000), interpolation=cv2.INTER_CUBIC)
    img, face = prepare(Portrait(huge, "huge"), 512)
    assert img.image.shape == (512, 512, 3) and face.face_width > 150


def test_several_faces_pick_the_largest_and_warn(astronaut, grace):
    small = cv2.resize(grace.image, (256, 300))
    canvas = np.full((600, 1100, 3), 230, np.uint8)
    canvas[40:552, 20:532] = astronaut.image
    canvas[150:450, 700:956] = small
    both = Portrait(canvas, "group.jpg")
    with pytest.warns(UserWarning, match="--face-index"):
        face = analyze(both)
    assert face.n_faces == 2 and face.box[0] < 532  # the astronaut, the larger face
    other = analyze(both, face_index=1)
    assert other.box[0] > 700
    with pytest.raises(InputError, match="is 2, but group.jpg has 2 face") as e:
        analyze(both, face_index=2)
    assert e.value.field == "face_index"


def test_no_face_is_a_clear_error():
    gradient = np.tile(np.linspace(0, 255, 512, dtype=np.uint8)[None, :, None], (512, 1, 3))
    with pytest.raises(NoFaceError) as e:
        analyze(Portrait(gradient, "gradient.png"))
    assert e.value.field == "image" and e.value.message == "gradient.png: no face found"
    assert "how to fix" in str(e.value)
