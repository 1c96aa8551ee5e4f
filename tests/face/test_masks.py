import numpy as np
import pytest
import torch
import torch.nn.functional as F

from talkinghead.face import analyze
from talkinghead.face import masks as M
from talkinghead.face.regions import FACE_OVAL, LIP_MID_LOWER_INNER, LIP_MID_UPPER_INNER
from talkinghead.types import FaceAnalysis


def synthetic_face(oval_box, lip_box, image_size=(256, 256)) -> FaceAnalysis:
    """Landmarks whose face oval spans `oval_box` and outer lips span `lip_box` (x0, y0, x1, y1)."""
    pts = np.zeros((478, 3), np.float32)
    pts[:, 0], pts[:, 1] = np.mean(oval_box[::2]), np.mean(oval_box[1::2])
    x0, y0, x1, y1 = oval_box
    pts[list(FACE_OVAL[:4]), :2] = [(x0, y0), (x1, y0), (x0, y1), (x1, y1)]
    lx0, ly0, lx1, ly1 = lip_box
    pts[list(M.LIP_POINTS), :2] = (lx0 + lx1) / 2, (ly0 + ly1) / 2
    pts[[61, 291, 0, 17], :2] = [(lx0, ly0), (lx1, ly1), (lx0, ly1), (lx1, ly0)]  # outer-lip points
    box = (float(pts[:, 0].min()), float(pts[:, 1].min()), float(pts[:, 0].max()), float(pts[:, 1].max()))
    return FaceAnalysis(landmarks=pts, box=box, image_size=image_size)


def expected_rect(size, x0, y0, x1, y1):
    out = np.zeros((size, size), np.float32)
    out[y0:y1, x0:x1] = 1
    return out


@pytest.fixture(scope="module")
def astro_face(astronaut):
    return analyze(astronaut)


def test_face_region_is_the_grown_oval_box():
    face = synthetic_face((60, 40, 140, 160), (90, 125, 110, 135))
    # centre (100, 100); half sides floor(80 * 1.2 / 2) = 48 and floor(120 * 1.2 / 2) = 72
    mask = M.face_region_mask(face, 256)
    assert mask.dtype == np.float32 and mask.shape == (256, 256)
    np.testing.assert_array_equal(mask, expected_rect(256, 52, 28, 148, 172))
    assert M.face_box(face, 256, expand=1.0) == (60, 40, 140, 160)
    # lip box grown 2x about (100, 130): half sides 20 and 10
    assert M.lip_box(face, 256) == (80, 120, 120, 140)


def test_face_region_scales_to_the_resized_square():
    # the same face found on a 512 x 1024 (w x h) original that will be resized to 256 x 256
    face = synthetic_face((120, 160, 280, 640), (180, 500, 220, 540), image_size=(512, 1024))
    np.testing.assert_array_equal(M.face_region_mask(face, 256), expected_rect(256, 52, 28, 148, 172))


def test_a_box_over_the_edge_slides_back_inside():
    face = synthetic_face((-10, 100, 30, 200), (5, 170, 15, 180))
    # x: centre 10, half 24 -> [-14, 34) slid right to [0, 48); y: centre 150, half 60
    assert M.face_box(face, 256) == (0, 90, 48, 210)
    big = synthetic_face((-50, -50, 300, 300), (100, 150, 140, 170))  # larger than the image: cut
    assert M.face_box(big, 256) == (0, 0, 256, 256)
    masks = M.region_masks(big, 256)  # a box covering everything stays 1, not min-max stretched to 0
    assert masks["full"].max() == 0 and masks["face"].max() > 0.5


def test_pyramid_shapes_and_bilinear_values_by_hand():
    mask = np.zeros((16, 16), np.float32)
    mask[:8] = 1  # top half
    levels = M.mask_pyramid(mask, n_frames=3, levels=(2, 4, 8, 16))
    assert [t.shape for t in levels] == [(3, 64), (3, 16), (3, 4), (3, 1)]
    assert all(t.dtype == torch.float32 for t in levels)
    for t in levels:
        assert torch.equal(t, t[:1].expand_as(t))  # the same mask for every frame
    # 2x down with PIL's antialiased bilinear: weights 1/8 3/8 3/8 1/8, so output row 3 sees
    # 7/8 of the ones and row 4 sees 1/8; stored in 8 bits like upstream's PNGs
    rows = levels[0][0].reshape(8, 8)  # flattened row-major
    want_rows = torch.tensor([1, 1, 1, 223 / 255, 32 / 255, 0, 0, 0])
    torch.testing.assert_close(rows, want_rows[:, None].expand(8, 8), atol=1e-6, rtol=0)
    assert levels[3][0].item() == pytest.approx(128 / 255)  # one pixel: the mean, 127.5 -> 128


def test_pyramid_matches_an_antialiased_resize():
    mask = np.random.default_rng(0).random((64, 64)).astype(np.float32)
    for t, level in zip(M.mask_pyramid(mask, 1, size=512), M.LEVELS):
        side = 512 // level
        ref = F.interpolate(torch.from_numpy(np.round(mask * 255) / 255)[None, None], size=(side, side),
                            mode="bilinear", antialias=True, align_corners=False)
        torch.testing.assert_close(t[0], ref.reshape(-1).float(), atol=1 / 255, rtol=0)


def test_pyramid_rejects_bad_shapes():
    with pytest.raises(ValueError, match="square"):
        M.mask_pyramid(np.zeros((16, 8)), 1)
    with pytest.raises(ValueError, match="multiple"):
        M.mask_pyramid(np.zeros((64, 64)), 1, size=500)


def test_region_masks_on_a_real_portrait(astronaut, astro_face):
    masks = M.region_masks(astro_face, 512)
    full, face, lip = masks["full"], masks["face"], masks["lip"]
    assert all(m.shape == (M.MASK_SIDE, M.MASK_SIDE) and m.dtype == np.float32 for m in masks.values())
    assert all(m.min() >= 0 and m.max() <= 1 for m in masks.values())
    # the lip mask peaks at her mouth and its core lies inside the face box (its min-max stretched
    # blur has a wide halo: at 0.5 it pokes a pixel past the box's chin edge, as upstream's does)
    mouth = astro_face.landmarks[[LIP_MID_UPPER_INNER, LIP_MID_LOWER_INNER], :2].mean(0) / 8  # 64-px grid
    peak_y, peak_x = np.unravel_index(lip.argmax(), lip.shape)
    assert abs(peak_x - mouth[0]) < 3 and abs(peak_y - mouth[1]) < 3
    x0, y0, x1, y1 = (v / 8 for v in M.face_box(astro_face, 512))
    ys, xs = np.nonzero(lip >= 0.6) + np.float32(0.5)  # pixel centres
    assert x0 <= xs.min() and xs.max() < x1 and y0 <= ys.min() and ys.max() < y1
    # expression mask: the face around the lips, not the background
    inside = np.zeros_like(face, bool)
    inside[int(y0):int(np.ceil(y1)), int(x0):int(np.ceil(x1))] = True
    assert face[inside].mean() > 3 * face[~inside].mean()
    # sensible areas in the 512 x 512 photo: face box ~5%, lips a few %, background most of it
    assert 0.02 < M.face_region_mask(astro_face, 512).mean() < 0.2
    assert 0.005 < (lip >= 0.5).mean() < 0.08
    assert (full >= 0.5).mean() > 0.7
    # full = 1 - blurred face and face = blurred face - lip: the three add to 1 (8-bit rounding)
    # wherever the lip mask does not reach past the blurred face
    total = full + face + lip
    assert total.min() >= 1 - 2 / 255
    covered = lip <= 1 - full + 1 / 255
    assert covered.mean() > 0.9 and np.abs(total[covered] - 1).max() <= 2 / 255


def test_hallo_masks_bundle(astro_face):
    out = M.hallo_masks(astro_face, 512, n_frames=16)
    assert out.face_region.shape == (1, 3, 512, 512) and out.face_region.dtype == torch.float32
    region = torch.from_numpy(M.face_region_mask(astro_face, 512))
    assert all(torch.equal(out.face_region[0, c], region) for c in range(3))
    masks = M.region_masks(astro_face, 512)
    for name in ("full", "face", "lip"):
        pyramid = getattr(out, name)
        assert [t.shape for t in pyramid] == [(16, 64 * 64), (16, 32 * 32), (16, 16 * 16), (16, 8 * 8)]
        # at 512 px the first level is the 64 x 64 mask itself
        torch.testing.assert_close(pyramid[0][5], torch.from_numpy(masks[name]).reshape(-1), atol=1e-6, rtol=0)
