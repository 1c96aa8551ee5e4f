"""Mouth interior: when the lips part, fill the inner-lip polygon with a shaded cavity, tongue and
teeth whose visibility follows the opening, feathered so no seam shows.

Where the portrait itself shows its upper teeth (a smile, parted lips), those teeth are reused: cut
out once with a brightness matte, they ride on the upper inner lip (the upper teeth sit in the skull,
so they move with the upper lip, not the jaw) in place of the drawn upper teeth.
"""
from __future__ import annotations

import cv2
import numpy as np

from ..face import regions as R
from ..types import FaceAnalysis, MotionFrame
from .rig import _sorted

CAVITY = np.array([58, 22, 26], np.float32)  # RGB at nominal skin brightness
TONGUE = np.array([150, 72, 78], np.float32)
TEETH = np.array([222, 218, 208], np.float32)
UPPER_TEETH = 0.085  # IOD, visible height of the upper teeth when open
LOWER_TEETH = 0.045
TOOTH_WIDTH = 0.085  # IOD, spacing of the faint gaps between teeth
MIN_OPEN = 0.012  # IOD, below this opening nothing is drawn
# A portrait's lips parted at least TEETH_GAP (IOD) with at least TEETH_SHARE of the gap looking like
# teeth show a clear row to reuse ("auto"); "own" takes a narrower strip too
TEETH_GAP = {"auto": 0.04, "own": 0.02}
TEETH_SHARE = {"auto": 0.2, "own": 0.08}
TEETH_MODES = ("auto", "drawn", "own")
SS = 4  # supersampling of the polygon mask (cv2 shift bits = 2)
_INNER_UPPER = np.array(R.LIPS_INNER_UPPER)
_INNER_LOWER = np.array(R.LIPS_INNER_LOWER)


class MouthInterior:
    def __init__(self, image: np.ndarray, face: FaceAnalysis, rig, own_teeth: bool | str = False):
        """`own_teeth`: which upper teeth the open mouth shows. "drawn" (or False): drawn ones; "auto"
        (or True): the ones `image` (the warp engine's portrait) shows where they form a clear row,
        else drawn; "own": the portrait's wherever it shows some, else drawn."""
        self.iod = rig.iod
        # brightness of the skin under the eyes, to light the interior like the face
        P = face.landmarks
        cheeks = P[[50, 280, 205, 425], :2].astype(int)
        h, w = image.shape[:2]
        vals = [image[np.clip(y, 0, h - 1), np.clip(x, 0, w - 1)].astype(np.float32) for x, y in cheeks]
        skin = np.mean(vals, axis=0)
        self.light = float(np.clip(skin.mean() / 170.0, 0.45, 1.15))
        self.tint = np.clip(skin / max(skin.mean(), 1.0), 0.8, 1.2).astype(np.float32)
        # a black-and-white or faded photo gets an interior as colourless as its skin
        sat = float(np.ptp(skin) / max(skin.max(), 1.0))
        self.colour = float(np.clip(sat / 0.12, 0.0, 1.0))
        self.cover: np.ndarray | None = None  # (h, w) 0..1: rigid things in front of the mouth
        # the interior's three colours, lit and tinted like the skin (the teeth take only its
        # brightness) and as colourless as it: columns cavity, tongue - cavity, teeth
        cavity = CAVITY * self.tint
        palette = np.stack([cavity, 0.7 * TONGUE * self.tint - cavity, TEETH], axis=1).astype(np.float64)
        grey = palette.mean(axis=0, keepdims=True)
        self.palette = (grey + self.colour * (palette - grey)).astype(np.float32)  # (3, 3) for cv2.transform
        mode = {True: "auto", False: "drawn"}.get(own_teeth, own_teeth)
        if mode not in TEETH_MODES:
            raise ValueError(f"own_teeth must be one of {TEETH_MODES}, got {own_teeth!r}")
        self.teeth = None if mode == "drawn" else _own_teeth(image, P[:, :2].astype(np.float64), self.iod, skin,
                                                                 TEETH_GAP[mode], TEETH_SHARE[mode])

    def draw(self, out: np.ndarray, lm: np.ndarray, m: MotionFrame) -> None:
        """Composite the interior into `out` in place. `lm`: displaced landmarks (478, 2)."""
        up = lm[_INNER_UPPER]
        lo = lm[_INNER_LOWER]
        opening = float(np.linalg.norm(lo[3:8] - up[3:8], axis=1).mean())  # central lip gap, px
        if opening < MIN_OPEN * self.iod:
            return
        poly = np.concatenate([up, lo[::-1]])
        h, w = out.shape[:2]
        pad = 3
        x0, y0 = np.floor(poly.min(0)).astype(int) - pad
        x1, y1 = np.ceil(poly.max(0)).astype(int) + pad
        x0, y0, x1, y1 = max(x0, 0), max(y0, 0), min(x1, w), min(y1, h)
        if x1 - x0 < 3 or y1 - y0 < 2:
            return
        bw, bh = x1 - x0, y1 - y0
        local = poly - [x0, y0]
        mask = _poly_mask(local, bw, bh)
        yy = np.arange(bh, dtype=np.float32)[:, None]  # (bh, 1)
        xx = np.arange(bw, dtype=np.float32)[None, :]  # (1, bw)
        # horizontal position across the mouth: 0 at centre, 1 at the corners
        cx = (local[0, 0] + local[10, 0]) / 2
        half = max(abs(local[10, 0] - local[0, 0]) / 2, 1.0)
        across = np.clip(np.abs(xx - cx) / half, 0, 1)  # (1, bw)
        # the upper and lower inner lip along each column
        up_y = np.interp(xx[0], *_sorted(local[:11, 0], local[:11, 1]))[None, :].astype(np.float32)
        lo_y = np.interp(xx[0], *_sorted(local[11:, 0], local[11:, 1]))[None, :].astype(np.float32)
        gap = np.maximum(lo_y - up_y, 1e-3)
        frac = np.clip((yy - up_y) / gap, 0, 1)  # (bh, bw): 0 at the upper lip, 1 at the lower
        # tongue: lower part of the cavity, more visible when wide open
        tongue = np.clip((frac - 0.55) / 0.3, 0, 1) * min(1.0, opening / (0.18 * self.iod))
        # teeth bands hanging from the upper lip and rising from the lower, tapered at the corners
        top_h = min(UPPER_TEETH * self.iod, 0.45 * opening)
        bot_h = min(LOWER_TEETH * self.iod, 0.22 * opening) * float(np.clip(m.jaw * 2.5, 0, 1))
        taper = np.clip((0.72 - across) / 0.25, 0, 1)
        hang = np.clip((up_y + top_h - yy) / 1.5, 0, 1)  # (bh, bw): down to the upper teeth's edge
        lower = np.clip((yy - (lo_y - bot_h)) / 1.5, 0, 1) * taper
        # the upper teeth come from the portrait (below) when it shows them
        teeth = lower if self.teeth is not None else np.maximum(hang * taper, lower)
        # shading: lip shadow at the top of the upper teeth, faint gaps between teeth, sides deeper
        below_lip = np.clip((yy - up_y) / max(top_h, 1.0), 0, 1)
        phase = (xx - cx) / (TOOTH_WIDTH * self.iod)
        gaps = 1.0 - 0.22 * np.exp(-(((phase - np.round(phase)) * TOOTH_WIDTH * self.iod / 0.7) ** 2))
        shade = (0.62 + 0.38 * np.sqrt(below_lip)) * (gaps * (0.8 + 0.2 * (1 - across)))
        # depth: darker towards the corners
        depth = (1.0 - 0.45 * across ** 2) * self.light  # (1, bw)
        # every pixel mixes three fixed colours (cavity, tongue - cavity, teeth: self.palette) with
        # weights made here, in one cv2.transform
        cavity = (1 - teeth) * depth
        weights = cv2.merge([cavity, cavity * tongue, teeth * shade * depth])
        img = cv2.transform(weights, self.palette)  # (bh, bw, 3) float32
        if self.teeth is not None:
            own, alpha = self.teeth.place(up, (x0, y0, bw, bh))
            # from the upper lip's edge down (their top edge is pinned there; the polygon mask feathers
            # it), and no taller than drawn teeth would be: the dark gap under them shows the mouth open
            alpha = alpha * np.clip(frac * gap + 0.5, 0, 1) * hang
            own -= img
            own *= alpha[..., None]
            img += own
        vis = float(np.clip((opening / self.iod - MIN_OPEN) / 0.03, 0, 1))
        if self.cover is not None:  # a hand or a microphone stays in front of the mouth
            mask = mask * (1.0 - self.cover[y0:y1, x0:x1])
        a = mask * vis
        roi = out[y0:y1, x0:x1]
        base = roi.astype(np.float32)
        img -= base
        img *= a[..., None]
        img += base + 0.5
        roi[:] = np.clip(img, 0, 255, out=img).astype(np.uint8)


class _Teeth:
    """The portrait's own upper teeth: an RGB patch, its matte, and the upper inner lip it hangs from."""

    def __init__(self, patch: np.ndarray, matte: np.ndarray, lip: np.ndarray, drop: float = 0.0):
        self.patch, self.matte, self.lip = patch, matte, lip  # lip: (3, 2) left corner, centre, right, patch px
        self.drop = drop  # px from FaceMesh's upper inner lip down to the teeth's top edge in the portrait

    def place(self, up: np.ndarray, box: tuple[int, int, int, int]) -> tuple[np.ndarray, np.ndarray]:
        """(RGB float32, alpha) of the teeth in the box (x0, y0, w, h) for the upper inner lip `up` (11, 2)."""
        x0, y0, bw, bh = box
        dst = np.float64([up[0], up[5], up[10]]) - [x0, y0]
        src = self.lip.astype(np.float64)
        # the teeth's top edge, not FaceMesh's inner lip (which lies a little inside the lip), is
        # pinned to the lip: the upper teeth sit right behind it
        src[1, 1] += self.drop
        # similarity: scale and turn from the corners, the centre of the lip pinned (an affine fit to
        # three nearly collinear lip points would squash the teeth as the lip flattens)
        a, b = src[2] - src[0], dst[2] - dst[0]
        scale = np.linalg.norm(b) / max(np.linalg.norm(a), 1e-6)
        turn = np.arctan2(b[1], b[0]) - np.arctan2(a[1], a[0])
        rot = scale * np.array([[np.cos(turn), -np.sin(turn)], [np.sin(turn), np.cos(turn)]])
        m = np.hstack([rot, (dst[1] - rot @ src[1])[:, None]]).astype(np.float32)
        rgb = cv2.warpAffine(self.patch, m, (bw, bh), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)
        alpha = cv2.warpAffine(self.matte, m, (bw, bh), flags=cv2.INTER_LINEAR, borderValue=0)
        return rgb, alpha


def _own_teeth(image: np.ndarray, P: np.ndarray, iod: float, skin: np.ndarray, min_gap: float = TEETH_GAP["auto"],
               min_share: float = TEETH_SHARE["auto"]) -> _Teeth | None:
    """The upper teeth shown between the portrait's lips parted at least `min_gap` IOD, or None (lips
    closed, or teeth on less than `min_share` of the gap: a dark gap, a tongue)."""
    up, lo = P[list(R.LIPS_INNER_UPPER)], P[list(R.LIPS_INNER_LOWER)]
    if float(np.linalg.norm(lo[3:8] - up[3:8], axis=1).mean()) < min_gap * iod:
        return None
    poly = np.concatenate([up, lo[::-1]])
    h, w = image.shape[:2]
    x0, y0 = np.maximum(np.floor(poly.min(0)).astype(int) - 2, 0)
    x1, y1 = np.minimum(np.ceil(poly.max(0)).astype(int) + 3, [w, h])
    if x1 - x0 < 6 or y1 - y0 < 3:
        return None
    patch = image[y0:y1, x0:x1].astype(np.float32)
    inside = _poly_mask(poly - [x0, y0], x1 - x0, y1 - y0)
    # teeth: bright and nearly colourless next to the lips and the dark mouth
    lum = patch.mean(axis=-1)
    sat = np.ptp(patch, axis=-1) / np.maximum(patch.max(axis=-1), 1.0)
    bright = np.clip((lum - 0.75 * float(skin.mean())) / 30.0, 0, 1) * np.clip((0.45 - sat) / 0.15, 0, 1)
    matte = cv2.GaussianBlur((bright * inside).astype(np.float32), (0, 0), 0.6)
    if matte.sum() < min_share * max(inside.sum(), 1.0):
        return None
    lip = np.float32([up[0], up[5], up[10]]) - np.float32([x0, y0])
    # how far below the upper inner lip the teeth begin, over the columns that show them
    cols = np.flatnonzero(matte.max(axis=0) > 0.5)
    top = np.argmax(matte[:, cols] > 0.5, axis=0)
    lip_y = np.interp(cols + x0, *_sorted(up[:, 0], up[:, 1])) - y0
    drop = float(np.clip(np.median(top - lip_y), 0.0, 0.06 * iod)) if len(cols) else 0.0
    return _Teeth(patch, matte, lip, drop)


def _poly_mask(poly: np.ndarray, w: int, h: int) -> np.ndarray:
    """Anti-aliased, slightly feathered polygon mask in [0, 1], (h, w) float32."""
    m = np.zeros((h, w), np.uint8)
    cv2.fillPoly(m, [np.round(poly * SS).astype(np.int32)], 255, lineType=cv2.LINE_AA, shift=2)
    m = cv2.GaussianBlur(m, (0, 0), 0.7)
    return m.astype(np.float32) / 255.0

