"""Hands in front of the face: MediaPipe Hands on the portrait, each hand's outline as a rigid region, and
the parallel gaps between fingers for the hands it misses.

A bare hand has the face's own colour, so the colour model of face.occlusion cannot tell it from the
cheek it covers. MediaPipe Hands (its palm detector and 21-point landmark model ship in the mediapipe
wheel) finds it by shape instead. A hand's region is the convex hull of its 21 points grown by about
half a finger's width (the points run along the middle of the fingers and the palm), so the fingers'
edges and the gaps between them are inside. Only hands that reach the face's surroundings count: a
hand elsewhere in the picture does not touch the warp.

MediaPipe starts from a palm detector: fingers whose palm is outside the picture, or a hand darker or
more shaded than the hands it learnt, are not found. Fingers lying side by side leave a mark no bare
face has in its lower half: several long, thin, dark lines (the gaps between them and their shaded
edges) running parallel a finger's width apart. `finger_lines` looks for it below the eyes, away from
the lips, nostrils and eyes: a valley (dark line) filter at the scale of a finger gap, the valleys
binned by direction, and the density of each direction's valleys in a neighbourhood that spans a few
fingers. A cheek's creases and wrinkles run in several directions or stand alone; only side-by-side
fingers (or a glove's) make one direction dense over an area.
"""
from __future__ import annotations

import cv2
import numpy as np

from . import regions as R
from .shapes import fill, grow, moving_features  # the moving features are not searched for fingers

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


LINES_IOD = 64.0  # px: the face is looked at with this inter-ocular distance
GAP_SIGMA = 0.03  # IOD, scale of the valley filter (a finger gap and the shading beside it)
VALLEY = 0.06  # valley strength (curvature of log intensity, scale-normalised) that counts as a line
DIRECTIONS = 12  # valley directions told apart (15 degrees each)
SPAN, LENGTH = 0.25, 0.18  # IOD, the neighbourhood the line density is taken over: across the lines (a few
# fingers side by side) and along them
MARGIN = 1.15  # the face oval grown by this about its centre: the picture the lines are filtered on
EDGE = 0.1  # IOD, lines this close to the face's outline are not counted (jaw, hair and background edges)
FEATURES_GROW = 0.08  # IOD, nor lines this close to the eyes, brows, lips and nostrils
BELOW_EYES = 0.25  # IOD: fingers are looked for this far below the line through the eyes and lower
DENSE = 0.15  # line density (share of the neighbourhood on lines of one direction) that means fingers ...
MIN_DENSE_AREA = 0.03  # IOD^2 ... over at least this area
PALM = 0.5  # IOD, how far past the fingers' base the back of the hand is held too
FINGERS_GROW = 0.12  # IOD, the dense area grown by about a finger's half-width and the gaps' ends


def _line_density(image: np.ndarray, landmarks: np.ndarray):
    """The face around `landmarks` at LINES_IOD: (box (x0, y0, x1, y1) in the image, local landmarks, valley
    pixels, their direction, the line density per direction (DIRECTIONS, h, w), where fingers are looked
    for, where the region may reach); None when the face is too small to look at."""
    h, w = image.shape[:2]
    pts = np.asarray(landmarks, np.float64)
    el, er = R.eye_centres(pts)
    iod = float(max(np.linalg.norm(er - el), 1.0))
    oval = pts[list(R.FACE_OVAL), :2]
    c = oval.mean(axis=0)
    margin = c + MARGIN * (oval - c)  # filtered with some picture around the face, not a mirrored border
    x0, y0 = np.maximum(np.floor(margin.min(axis=0)).astype(int), 0)
    x1, y1 = np.minimum(np.ceil(margin.max(axis=0)).astype(int) + 1, [w, h])
    if x1 - x0 < 8 or y1 - y0 < 8:
        return None
    s = LINES_IOD / iod
    crop = cv2.resize(image[y0:y1, x0:x1], None, fx=s, fy=s, interpolation=cv2.INTER_AREA if s < 1 else cv2.INTER_CUBIC)
    local = (pts[:, :2] - [x0, y0]) * s
    shape = crop.shape[:2]
    # dark lines: the Hessian of log intensity (lighting-independent) at the gap scale, line-like only
    grey = np.log(cv2.cvtColor(crop, cv2.COLOR_RGB2GRAY).astype(np.float32) + 10.0)
    sg = GAP_SIGMA * LINES_IOD
    g = cv2.GaussianBlur(grey, (0, 0), sg)
    dxx = cv2.Sobel(g, cv2.CV_32F, 2, 0, ksize=3)
    dyy = cv2.Sobel(g, cv2.CV_32F, 0, 2, ksize=3)
    dxy = cv2.Sobel(g, cv2.CV_32F, 1, 1, ksize=3)
    half = np.sqrt(((dxx - dyy) / 2) ** 2 + dxy ** 2)
    across_curv, along_curv = (dxx + dyy) / 2 + half, (dxx + dyy) / 2 - half
    strength = np.maximum(across_curv - np.abs(along_curv), 0) * sg * sg
    direction = (0.5 * np.arctan2(2 * dxy, dxx - dyy) + np.pi / 2) % np.pi  # along the line
    # where to look: inside the face (off its outline), below the eyes, off the lips, nostrils and eyes
    face = np.zeros(shape, np.uint8)
    fill(face, local[list(R.FACE_OVAL)])
    r = int(EDGE * LINES_IOD)
    face = cv2.erode(face, cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * r + 1, 2 * r + 1)))
    moving = grow(moving_features(shape, local, LINES_IOD, True), FEATURES_GROW * LINES_IOD)
    ex = (local[R.LEFT_IRIS[0]] - local[R.RIGHT_IRIS[0]]) / LINES_IOD
    mid = (local[R.LEFT_IRIS[0]] + local[R.RIGHT_IRIS[0]]) / 2
    yy, xx = np.mgrid[0:shape[0], 0:shape[1]]
    below = (xx - mid[0]) * -ex[1] + (yy - mid[1]) * ex[0] > BELOW_EYES * LINES_IOD
    search = (face > 0) & (moving == 0)
    valleys = (strength > VALLEY) & search
    dense = np.zeros((DIRECTIONS,) + shape, np.float32)
    k = int(3 * SPAN * LINES_IOD) | 1
    for b in range(DIRECTIONS):
        theta = np.pi * b / DIRECTIONS
        off = np.abs((direction - theta + np.pi / 2) % np.pi - np.pi / 2)
        lines = (valleys & (off < np.pi / DIRECTIONS)).astype(np.float32)
        # a Gaussian LENGTH long along theta and SPAN wide across it (a Gabor kernel with no wave)
        kernel = cv2.getGaborKernel((k, k), LENGTH * LINES_IOD, theta, 1e9, LENGTH / SPAN, 0)
        dense[b] = cv2.filter2D(lines, -1, kernel / kernel.sum())
    return (x0, y0, x1, y1), local, valleys, direction, dense, search & below


def finger_score(image: np.ndarray, landmarks: np.ndarray) -> float:
    """The line density reached over MIN_DENSE_AREA where fingers are looked for: fingers when over DENSE."""
    found = _line_density(image, landmarks)
    if found is None:
        return 0.0
    *_, dense, look = found
    values = dense.max(axis=0)[look]
    n = int(MIN_DENSE_AREA * LINES_IOD ** 2)
    return float(np.partition(values, len(values) - n)[len(values) - n]) if len(values) >= n else 0.0


def finger_lines(image: np.ndarray, landmarks: np.ndarray) -> np.ndarray:
    """uint8 (h, w) mask, 255 over fingers lying side by side on the lower face (see the module docstring);
    all zero when there are none."""
    out = np.zeros(image.shape[:2], np.uint8)
    found = _line_density(image, landmarks)
    if found is None:
        return out
    (x0, y0, x1, y1), local, valleys, direction, dense, look = found
    ex = local[R.LEFT_IRIS[0]] - local[R.RIGHT_IRIS[0]]
    ex = ex / max(float(np.linalg.norm(ex)), 1e-6)
    hit = look & (dense.max(axis=0) > DENSE)
    if hit.sum() < MIN_DENSE_AREA * LINES_IOD ** 2:
        return out
    # the fingers: the lines of the direction found, where they are at least half as dense, around the hit
    b = int(np.bincount(dense[:, hit].argmax(axis=0), minlength=DIRECTIONS).argmax())
    theta = np.pi * b / DIRECTIONS
    off = np.abs((direction - theta + np.pi / 2) % np.pi - np.pi / 2)
    _, labels = cv2.connectedComponents((dense[b] > DENSE / 2).astype(np.uint8), connectivity=8)
    keep = np.isin(labels, np.unique(labels[hit & (labels > 0)]))
    on = np.argwhere(keep & valleys & (off < np.pi / DIRECTIONS))[:, ::-1].astype(np.float32)  # (m, 2) x, y
    shape = dense.shape[1:]
    region = np.zeros(shape, np.uint8)
    if len(on) >= 3:
        hull = cv2.convexHull(on).reshape(-1, 2)
        # the palm is beyond the fingers' base; the hull swept that way by a palm's length covers the back of
        # the hand too. Fingers that run up and down the face come from below it (a hand under the chin or
        # on the cheek), fingers that run across it from the side nearer their end (a hand from outside)
        u = np.array([np.cos(theta), np.sin(theta)], np.float32)
        down = np.array([-ex[1], ex[0]], np.float32)  # the face's own downwards
        if abs(float(u @ down)) > 0.5:
            towards = u if u @ down > 0 else -u
        else:
            ends = on[[np.argmin(on @ u), np.argmax(on @ u)]]
            outline = local[list(R.FACE_OVAL)].astype(np.float32)
            depth = [cv2.pointPolygonTest(outline, (float(x), float(y)), True) for x, y in ends]
            towards = -u if depth[0] < depth[1] else u
        hull = cv2.convexHull(np.concatenate([hull, hull + PALM * LINES_IOD * towards])).reshape(-1, 2)
        fill(region, hull)
    region = grow(region | (hit.astype(np.uint8) * 255), FINGERS_GROW * LINES_IOD)
    lips = np.zeros(shape, np.uint8)
    fill(lips, np.concatenate([local[list(R.LIPS_OUTER_UPPER)], local[list(R.LIPS_OUTER_LOWER[::-1])]]))
    region[grow(lips, 0.05 * LINES_IOD) > 0] = 0  # a region found this way never holds the lips still
    out[y0:y1, x0:x1] = cv2.resize(region, (x1 - x0, y1 - y0), interpolation=cv2.INTER_NEAREST)
    return out


def hands_on_face(image: np.ndarray, landmarks: np.ndarray) -> np.ndarray:
    """uint8 (h, w) mask, 255 where a hand near the face is (all zero when there is none): the hands MediaPipe
    Hands finds, and fingers lying side by side on the lower face that it may miss (`finger_lines`)."""
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
    return out | finger_lines(image, landmarks)
