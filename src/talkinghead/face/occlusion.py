"""Rigid things on the face: what must not bend with the mouth, brows or blinks.

A portrait's face is skin plus the features that move (eyes, brows, lips). Anything else inside the
face (glasses rims, dark lenses, a hand, jewellery, a hat brim, a microphone) is in front of it and
rigid: it follows the head but never the expression. We find it by colour: a robust skin model
from patches on the cheeks, forehead, nose and chin (in CIE Lab), then every face pixel that is not
skin-coloured and not a moving feature. Two zones differ:

- upper face (above the nose tip): dark pixels count too (rims, frames, lenses; dark hair over the
  forehead), since nothing there but the brows, eyes and lashes is dark, and those are excluded;
- lower face: only colour far from skin counts (a gloved hand, jewellery, a microphone, a scarf);
  dark or colourless pixels there are stubble, beard or shadow and move with the jaw.

A bare hand of the face's own colour is not told apart from the cheek it covers by colour; it is
found by shape instead (face.hands: MediaPipe Hands, and the parallel lines between fingers lying side
by side for hands MediaPipe misses), and its grown outline is rigid like the rest.

Eyes behind dark lenses are `eyes_hidden`: the lens then stays rigid as a whole (no blink shows).
Glasses whose rims are found around both eyes (`glasses`) make the whole spectacle zone rigid but
the eye openings: frames of a colour close to skin (clear or tortoiseshell plastic) are only
partly found by colour, and must not bend either. The lids still blink inside the openings; the
brows, which rims usually touch, are the renderer's to hold still.
The result is a soft mask in [0, 1] at image resolution (1 = rigid) that falls off linearly over
RAMP around each rigid thing: skin at distance d from it moves at most d / RAMP of its expression,
which keeps its displacement below d, so no moving pixel ever samples the rim (no ghost rims).
"""
from __future__ import annotations

import threading
from dataclasses import dataclass

import cv2
import numpy as np

from . import regions as R
from .hands import hands_on_face
from .shapes import fill, grow, moving_features

# MediaPipe points on plain skin: cheeks, under the eyes, forehead, nose tip/ridge, chin
SKIN_POINTS = (50, 280, 205, 425, 117, 346, 123, 352, 151, 108, 337, 9, 4, 195, 199, 200, 175)
NOSE_TIP = 4
PATCH = 0.035  # IOD, half side of each skin patch
CHROMA_FAR = 4.0  # chroma distance (in robust spreads) beyond which a pixel is not skin
MIN_CHROMA_SPREAD = 3.5  # Lab units: JPEG noise and grayscale images must not make every pixel "far"
DARK = 0.5  # upper face: L below this fraction of the skin's L is not skin (rims, lenses)
GLASSES = 0.025  # share of rigid pixels in the lens area around *each* eye that means glasses
LENS = (0.44, 0.32)  # IOD, half width and half height of the spectacle zone around each eye
EYES_HIDDEN = 0.6  # share of dark pixels around the eyes (lens area, outside the lids) that means dark lenses
RAMP = 0.12  # IOD, the expression fades in over this distance from a rigid thing (about the
# largest expression displacement near the eyes and brows: a brow lift is 0.1 IOD)
OVAL_GROW = 1.06  # the face oval grown about its centre: where occluders are looked for ...
REACH = 1.45  # ... and how far (same growth) an occluder found there is followed outwards
SAME_COLOUR = 14.0  # Lab distance: pixels outside the face this close to an occluder's colour belong to it
MIN_AREA = 0.0015  # IOD^2, smaller specks of "not skin" are noise


@dataclass
class Occlusion:
    """What in the portrait is rigid. `mask`: (h, w) float32 in [0, 1], 1 = rigid."""

    mask: np.ndarray
    eyes_hidden: bool  # dark lenses: the eyes cannot blink or look around visibly
    glasses: bool = False  # rims found around both eyes
    mouth_covered: float = 0.0  # share of the lips' area that is covered (0 .. 1)
    hand: bool = False  # a hand (found by its shape) is in front of the face

    @property
    def any(self) -> bool:
        return bool(self.mask.max() > 0.05)


_lab_warmup: threading.Thread | None = None
_lab_lock = threading.Lock()


def warm_lab_tables() -> None:
    """Start building OpenCV's RGB -> Lab tables in a background thread. The first Lab conversion in a
    process builds them (~0.09 s of one core, whatever the image size); started before the face analysis,
    which keeps one core busy, the build runs on the other and is done by the time `to_lab` needs it."""
    global _lab_warmup
    with _lab_lock:
        if _lab_warmup is None:
            _lab_warmup = threading.Thread(target=_build_lab_tables, name="talkinghead-lab-tables", daemon=True)
            _lab_warmup.start()


def _build_lab_tables() -> None:
    cv2.cvtColor(np.zeros((1, 1, 3), np.float32), cv2.COLOR_RGB2LAB)


def to_lab(rgb: np.ndarray) -> np.ndarray:
    """CIE Lab (L 0..100, a and b about -128..127) of an RGB uint8 image, float32, as OpenCV converts
    float RGB in 0..1. Waits for a table build `warm_lab_tables` started: OpenCV builds its tables
    without a lock, so no conversion may run while another thread builds them."""
    warmup = _lab_warmup
    if warmup is not None:
        warmup.join()
    return cv2.cvtColor(rgb.astype(np.float32) / 255.0, cv2.COLOR_RGB2LAB)


def _skin_model(lab: np.ndarray, pts: np.ndarray, iod: float) -> tuple[np.ndarray, float]:
    """(median Lab of the skin, chroma spread) from patches at SKIN_POINTS; a patch
    covered by something (a hand on one cheek) is outvoted by the others."""
    h, w = lab.shape[:2]
    r = max(1, int(round(PATCH * iod)))
    meds = []
    for i in SKIN_POINTS:
        x, y = np.round(pts[i, :2]).astype(int)
        patch = lab[max(0, y - r):min(h, y + r + 1), max(0, x - r):min(w, x + r + 1)].reshape(-1, 3)
        if len(patch):
            meds.append(np.median(patch, axis=0))
    meds = np.array(meds)
    centre = np.median(meds, axis=0)
    chroma = np.hypot(meds[:, 1] - centre[1], meds[:, 2] - centre[2])
    spread_c = max(1.4826 * float(np.median(chroma)), MIN_CHROMA_SPREAD)
    return centre, spread_c


_EYES = ((R.RIGHT_EYE_UPPER, R.RIGHT_EYE_LOWER, R.RIGHT_IRIS), (R.LEFT_EYE_UPPER, R.LEFT_EYE_LOWER, R.LEFT_IRIS))


def _eye_opening(shape: tuple[int, int], pts: np.ndarray, up, lo) -> np.ndarray:
    m = np.zeros(shape, np.uint8)
    fill(m, np.concatenate([pts[list(up), :2], pts[list(lo[::-1]), :2]]))
    return m


def _around_eyes(shape: tuple[int, int], pts: np.ndarray, iod: float) -> list[np.ndarray]:
    """Per eye, the ring a lens covers around it: skin under clear glasses, dark behind sunglasses."""
    rings = []
    for up, lo, _ in _EYES:
        m = _eye_opening(shape, pts, up, lo)
        rings.append((grow(m, 0.16 * iod) > 0) & (grow(m, 0.07 * iod) == 0))
    return rings


def _lenses(shape: tuple[int, int], pts: np.ndarray, iod: float, angle: float) -> list[np.ndarray]:
    """Per eye, the area a lens of ordinary size covers (uint8 0/255)."""
    axes = (int(LENS[0] * iod), int(LENS[1] * iod))
    out = []
    for _, _, iris in _EYES:
        m = np.zeros(shape, np.uint8)
        cv2.ellipse(m, tuple(np.round(pts[iris[0], :2]).astype(int)), axes, angle, 0, 360, 255, -1)
        out.append(m)
    return out


def _spectacle_zone(shape: tuple[int, int], pts: np.ndarray, iod: float, angle: float) -> np.ndarray:
    """float32 0..1: both lens areas and the bridge, less the eye openings (where the lids blink)."""
    a, b = _lenses(shape, pts, iod, angle)
    zone = a | b
    centres = [pts[iris[0], :2] for _, _, iris in _EYES]
    cv2.line(zone, tuple(np.round(centres[0]).astype(int)), tuple(np.round(centres[1]).astype(int)), 255,
             max(1, int(0.12 * iod)))
    for up, lo, _ in _EYES:
        zone[grow(_eye_opening(shape, pts, up, lo), 0.04 * iod) > 0] = 0
    return cv2.GaussianBlur(zone.astype(np.float32) / 255.0, (0, 0), max(0.015 * iod, 0.6))


def _follow_outwards(rigid: np.ndarray, lab: np.ndarray, reach: np.ndarray, inside: np.ndarray,
                     moving: np.ndarray) -> np.ndarray:
    """An occluder found on the face often continues past its outline (a hand's palm below the
    jaw, glasses temples): add the pixels outside the face, within `reach`, that have the colour of
    an occluder part they touch."""
    if not rigid.any():
        return rigid
    band = np.zeros(rigid.shape, np.uint8)
    fill(band, reach)
    band = (band > 0) & ~inside & ~moving
    n, labels = cv2.connectedComponents(rigid, connectivity=8)
    out = rigid.copy()
    by, bx = np.nonzero(band)
    band_lab = lab[by, bx]  # (m, 3): only the band's pixels are compared with each occluder's colour
    for k in range(1, n):
        part = labels == k
        colour = np.median(lab[part], axis=0)
        near = ((band_lab - colour) ** 2).sum(axis=1) < SAME_COLOUR ** 2
        grown_k = part.astype(np.uint8)
        grown_k[by[near], bx[near]] = 1
        _, lab_k = cv2.connectedComponents(grown_k, connectivity=8)
        keep = np.unique(lab_k[part])
        out[np.isin(lab_k, keep[keep > 0])] = 255
    return out


def analyze_occlusion(image: np.ndarray, landmarks: np.ndarray, hands: bool = True) -> Occlusion:
    """The rigid mask of an RGB uint8 portrait with its (478, 3) landmarks (see the module docstring).
    `hands`: also look for hands by their shape (MediaPipe Hands and the finger lines, some 50 ms once a
    portrait)."""
    h, w = image.shape[:2]
    pts = np.asarray(landmarks, np.float64)
    el, er = R.eye_centres(pts)
    iod = float(max(np.linalg.norm(er - el), 1.0))
    # work only inside the grown face oval's bounding box
    oval = pts[list(R.FACE_OVAL), :2]
    c = oval.mean(axis=0)
    grown = c + OVAL_GROW * (oval - c)
    reach = c + REACH * (oval - c)
    x0, y0 = np.maximum(np.floor(reach.min(0)).astype(int) - 2, 0)
    x1, y1 = np.minimum(np.ceil(reach.max(0)).astype(int) + 3, [w, h])
    full = np.zeros((h, w), np.float32)
    if x1 - x0 < 8 or y1 - y0 < 8:
        return Occlusion(full, False)
    crop = image[y0:y1, x0:x1]
    local = pts.copy()
    local[:, 0] -= x0
    local[:, 1] -= y0
    shape = crop.shape[:2]
    lab = to_lab(crop)
    skin, spread_c = _skin_model(lab, local, iod)
    chroma_d = np.hypot(lab[..., 1] - skin[1], lab[..., 2] - skin[2]) / spread_c
    far = chroma_d > CHROMA_FAR
    dark = lab[..., 0] < DARK * skin[0]
    rings = _around_eyes(shape, local, iod)
    eyes_hidden = bool(all(r.any() and dark[r].mean() > EYES_HIDDEN for r in rings))
    # zones, split along the face's own vertical at the nose tip
    ex = (er - el) / iod
    ey = np.array([-ex[1], ex[0]])
    yy, xx = np.mgrid[0:shape[0], 0:shape[1]]
    v = (xx - local[NOSE_TIP, 0]) * ey[0] + (yy - local[NOSE_TIP, 1]) * ey[1]
    upper = v < 0
    region = np.zeros(shape, np.uint8)
    fill(region, grown - [x0, y0])
    moving = moving_features(shape, local, iod, not eyes_hidden) > 0
    rigid = (far | (dark & upper)) & (region > 0) & ~moving
    rigid = rigid.astype(np.uint8) * 255
    rigid = cv2.morphologyEx(rigid, cv2.MORPH_OPEN, np.ones((2, 2), np.uint8))
    n, labels, stats, _ = cv2.connectedComponentsWithStats(rigid, connectivity=8)
    small = np.flatnonzero(stats[:, cv2.CC_STAT_AREA] < MIN_AREA * iod * iod)
    rigid[np.isin(labels, small[small > 0])] = 0
    rigid = _follow_outwards(rigid, lab, reach - [x0, y0], region > 0, moving)
    hand = hands_on_face(image, pts)[y0:y1, x0:x1] if hands else np.zeros(shape, np.uint8)
    rigid |= hand  # whatever it covers (a cheek, the lips, an eye) stays still under it
    lips = np.zeros(shape, np.uint8)
    fill(lips, np.concatenate([local[list(R.LIPS_OUTER_UPPER), :2], local[list(R.LIPS_OUTER_LOWER[::-1]), :2]]))
    covered = (far | (hand > 0)) & (lips > 0)
    mouth_covered = float(covered.sum() / max((lips > 0).sum(), 1))
    dist = cv2.distanceTransform((rigid == 0).astype(np.uint8), cv2.DIST_L2, 3)
    soft = np.clip(1.0 - dist / max(RAMP * iod, 1.0), 0.0, 1.0)
    angle = float(np.degrees(np.arctan2(ex[1], ex[0])))
    openings = [grow(_eye_opening(shape, local, up, lo), 0.07 * iod) > 0 for up, lo, _ in _EYES]
    lens_areas = [(m > 0) & ~o for m, o in zip(_lenses(shape, local, iod, angle), openings)]
    glasses = eyes_hidden or all(z.any() and (rigid[z] > 0).mean() > GLASSES for z in lens_areas)
    if glasses and not eyes_hidden:
        soft = np.maximum(soft, _spectacle_zone(shape, local, iod, angle))
    full[y0:y1, x0:x1] = soft
    return Occlusion(full, eyes_hidden, mouth_covered=mouth_covered, glasses=glasses, hand=bool(hand.any()))
