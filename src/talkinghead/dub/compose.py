"""Re-rendering the lower face of one video frame: a piecewise-affine warp over a mesh of the
lower-face landmarks and a ring of fixed anchors, then the mouth interior where the source frame
has none to show.

The mesh's triangles are fixed per shot (Delaunay in face coordinates), so the warp changes smoothly
from frame to frame. Per frame only the triangles that move are rasterised (their ids on a coarse
grid), each pixel takes its triangle's target->source affine map, the map is upsampled and the
region is resampled in one `cv2.remap`. The anchors do not move, so the map is the identity on the
region's edge: no seam, and every pixel outside the region is the source's, untouched.
"""
from __future__ import annotations

from types import SimpleNamespace

import cv2
import numpy as np
from scipy.spatial import Delaunay

from ..face import regions as R
from ..render.mouth import MouthInterior
from ..types import FaceAnalysis, MotionFrame
from .retarget import INNER_LO, INNER_UP, FaceFrame, Retarget, mouth_weights

MESH_TOP = 0.62  # IOD above the lip line: landmarks below this line are mesh vertices
ANCHOR_TOP = 0.8  # IOD above the lip line: the row of fixed anchors across the face
ANCHOR_SCALE = 1.5  # fixed anchors sit this far out from the mouth centre, relative to the face oval
MOVING = 0.05  # px: a vertex moving less than this is still
MIN_AREA = 0.05  # px^2: a target triangle smaller than this (or folded over) is not drawn
SHIFT = 4  # fractional bits for cv2.fillConvexPoly
GRID_IOD = 40.0  # px of inter-ocular distance per pixel of the coarse grid the warp is computed on
LIP_BITE = 0.015  # IOD: a closing mouth takes its lip line from this far inside each lip ...
BITE_SHARE = 0.15  # ... plus this share of how far it closes (landmarks sit a little inside a wide opening)
MAX_BITE = 0.05  # IOD
CLOSED = 0.03  # IOD: a new mouth opening less than this is closed
FILL_RATIO = 0.5  # a new opening under this share of the source's: the source interior would be squeezed
# into aliased streaks, so the opening is filled and the interior drawn instead
FILL_START = 0.005  # IOD of closing before the fill begins ...
FILL_RAMP = 0.03  # ... and over which it grows to full
FILL_DOWN = 0.3  # share of the source opening the fill reaches below the inner lower lip
FILL_GROW = 0.035  # IOD: the source opening is filled this much beyond FaceMesh's inner lips
LIP_LINE = 0.4  # darkening of the line where filled lips meet
CORNER_BITE = 0.7  # share of the way from the inner to the outer mouth corner a closed corner samples from
INTERIOR_FULL = 0.25  # source/target opening ratio at or below which the interior is fully drawn
INTERIOR_NONE = 0.75  # ... at or above which the source's own interior is kept


class ShotMesh:
    """Mesh topology for one shot: which landmarks, which fixed anchors (face coordinates), triangles."""

    def __init__(self, pts: np.ndarray):
        ff = FaceFrame.of(pts)
        uv = ff.uv(pts)
        w = mouth_weights(uv)
        um, vm = w["centre"]
        self.landmarks = np.nonzero(uv[:, 1] > vm - MESH_TOP)[0]
        oval = uv[list(R.FACE_OVAL)]
        oval = oval[oval[:, 1] > vm - MESH_TOP]
        c = np.array([um, vm])
        ring = c + (oval - c) * ANCHOR_SCALE
        half = max(np.abs(ring[:, 0] - um).max(), 1.2)
        top = np.stack([np.linspace(um - half, um + half, 9), np.full(9, vm - ANCHOR_TOP)], 1)
        # face coordinates: each later frame places them with its own face frame (eyes), which the
        # mouth does not move
        self.anchors = np.concatenate([ring, top])
        ref = uv[self.landmarks].copy()
        # open the reference lips a little so that the gap between them gets its own triangles
        pos = {int(k): i for i, k in enumerate(self.landmarks)}
        for a, b in zip(INNER_UP, INNER_LO):
            if a in pos and b in pos:
                ref[pos[b], 1] = max(ref[pos[b], 1], ref[pos[a], 1] + 0.05)
        verts = np.concatenate([ref, self.anchors])
        verts += np.random.default_rng(0).normal(0, 1e-5, verts.shape)  # no exactly coincident points
        self.triangles = Delaunay(verts).simplices.astype(np.int32)
        self.n_landmarks = len(self.landmarks)
        pairs = [(pos[a], pos[b], i) for i, (a, b) in enumerate(zip(INNER_UP, INNER_LO)) if a in pos and b in pos]
        self.inner_pairs = np.array(pairs, np.int64).reshape(-1, 3)  # (upper, lower) mesh positions, pair index
        # (inner corner, outer corner, nearest inner-lip pair) on each side
        corners = [(78, 61, 0), (308, 291, len(INNER_UP) - 1)]
        self.corners = [(pos[a], pos[b], i) for a, b, i in corners if a in pos and b in pos]


class MouthCompositor:
    """Renders dubbed frames: `render(image, retarget, m, mesh)` -> a new frame."""

    def __init__(self):
        self.last_roi: tuple[int, int, int, int] | None = None  # the changed region of the last frame

    def render(self, image: np.ndarray, pts: np.ndarray, rt: Retarget, m: MotionFrame, mesh: ShotMesh) -> np.ndarray:
        h, w = image.shape[:2]
        ff = rt.frame
        anchors = ff.px(mesh.anchors)
        src = np.concatenate([pts[mesh.landmarks, :2].astype(np.float64), anchors])
        _bite(src, rt, mesh)
        dst = np.concatenate([rt.target[mesh.landmarks], anchors])
        move = np.zeros(len(src), bool)
        move[: mesh.n_landmarks] = np.abs(rt.displacement[mesh.landmarks]).max(1) > MOVING
        moving = move[mesh.triangles].any(1)
        out = image.copy()
        self.last_roi = None
        if not moving.any():
            return out
        cand = mesh.triangles[moving]
        corners = np.concatenate([src[cand].reshape(-1, 2), dst[cand].reshape(-1, 2)])
        # a triangle that collapses (closing lips) or folds over has no area of its own: it is not
        # drawn, and its pixels go to a neighbour below
        ok = _area(dst[cand]) * np.sign(_area(src[cand])) > MIN_AREA
        tris, skipped = cand[ok], cand[~ok]
        stride = int(np.clip(round(ff.iod / GRID_IOD), 1, 4))
        x0, y0 = np.floor(corners.min(0)).astype(int) - 2
        x1, y1 = np.ceil(corners.max(0)).astype(int) + 3
        x0, y0 = max(x0, 0), max(y0, 0)
        x1, y1 = min(x1, w), min(y1, h)
        if x1 - x0 < 2 or y1 - y0 < 2:
            return out
        gw, gh = -(-(x1 - x0) // stride), -(-(y1 - y0) // stride)
        off = (stride - 1) / 2
        # triangle ids on the coarse grid (0: the identity), in grid units: p_grid = (p - x0 - off) / stride
        ids = np.zeros((gh, gw), np.uint16)
        scale = (1 << SHIFT) / stride
        gi = np.round((dst[tris] - [x0 + off, y0 + off]) * scale).astype(np.int32)
        for t in range(len(tris)):
            cv2.fillConvexPoly(ids, gi[t], t + 1, lineType=cv2.LINE_8, shift=SHIFT)
        if len(skipped):
            holes = np.zeros((gh, gw), np.uint8)
            for tri in np.round((dst[skipped] - [x0 + off, y0 + off]) * scale).astype(np.int32):
                cv2.fillConvexPoly(holes, tri, 1, lineType=cv2.LINE_8, shift=SHIFT)
            for _ in range(3):
                hole = (ids == 0) & (holes > 0)
                if not hole.any():
                    break
                ids[hole] = cv2.dilate(ids, np.ones((3, 3), np.uint8))[hole]
        # per pixel: barycentric weights in its target triangle, clamped to the triangle (a pixel on
        # a thin triangle's rasterised edge must not extrapolate), applied to the source triangle
        T = np.concatenate([dst[tris], np.ones((len(tris), 3, 1))], 2)  # (n, 3, 3) rows [x y 1]
        Tinv = np.zeros((len(tris) + 1, 3, 3), np.float32)
        Tinv[1:] = np.linalg.inv(T)  # bary = [x y 1] @ Tinv
        S = np.zeros((len(tris) + 1, 3, 2), np.float32)
        S[1:] = src[tris]
        gx = (x0 + off + stride * np.arange(gw, dtype=np.float32))[None, :].repeat(gh, 0)
        gy = (y0 + off + stride * np.arange(gh, dtype=np.float32))[:, None].repeat(gw, 1)
        inside = ids > 0
        k = ids[inside]
        Ti = Tinv[k]  # (m, 3, 3)
        px, py = gx[inside], gy[inside]
        bary = px[:, None] * Ti[:, 0] + py[:, None] * Ti[:, 1] + Ti[:, 2]  # (m, 3)
        bary = np.maximum(bary, 0.0)
        bary /= np.maximum(bary.sum(1, keepdims=True), 1e-6)
        coarse = np.stack([gx, gy], -1)
        coarse[inside] = np.einsum("mk,mkc->mc", bary, S[k])
        full = coarse if stride == 1 else cv2.resize(coarse, (gw * stride, gh * stride), interpolation=cv2.INTER_LINEAR)
        full = full[: y1 - y0, : x1 - x0]
        sx0, sy0 = np.maximum(np.floor(src[tris].reshape(-1, 2).min(0)).astype(int) - 4, 0)
        sx1, sy1 = np.minimum(np.ceil(src[tris].reshape(-1, 2).max(0)).astype(int) + 5, [w, h])
        texture, filled = _closed_texture(image[sy0:sy1, sx0:sx1], pts[:, :2] - [sx0, sy0], rt)
        full -= np.array([sx0, sy0], np.float32)
        out[y0:y1, x0:x1] = cv2.remap(texture, full, None, cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)
        if filled > 0.0 and rt.target_open < CLOSED:
            _lip_line(out, rt, filled)
        self.last_roi = (x0, y0, x1, y1)
        self._interior(out, image, pts, rt, m, filled=filled)
        return out

    def _interior(self, out: np.ndarray, image: np.ndarray, pts: np.ndarray, rt: Retarget, m: MotionFrame,
                  filled: float = 0.0) -> None:
        """Draw teeth and cavity where the new mouth is open wider than the source frame's was (or
        where the source opening was filled)."""
        if rt.target_open <= 0.0:
            return
        a = max(filled, interior_weight(rt))
        if a <= 0.0:
            return
        lm = rt.target
        poly = np.concatenate([lm[list(R.LIPS_INNER_UPPER)], lm[list(R.LIPS_INNER_LOWER)]])
        h, w = out.shape[:2]
        x0, y0 = np.floor(poly.min(0)).astype(int) - 4
        x1, y1 = np.ceil(poly.max(0)).astype(int) + 5
        x0, y0, x1, y1 = max(x0, 0), max(y0, 0), min(x1, w), min(y1, h)
        if x1 - x0 < 3 or y1 - y0 < 3:
            return
        roi = out[y0:y1, x0:x1]
        drawn = roi.copy()
        face = FaceAnalysis(landmarks=pts, box=(0.0, 0.0, 1.0, 1.0), image_size=(w, h))
        interior = MouthInterior(image, face, SimpleNamespace(iod=rt.frame.iod))
        interior.draw(drawn, lm - [x0, y0], m)
        if a >= 1.0:
            roi[:] = drawn
        else:
            roi[:] = (roi.astype(np.float32) * (1 - a) + drawn.astype(np.float32) * a + 0.5).astype(np.uint8)


def _area(t: np.ndarray) -> np.ndarray:
    """Signed areas of triangles (n, 3, 2)."""
    a, b, c = t[:, 0], t[:, 1], t[:, 2]
    return 0.5 * ((b[:, 0] - a[:, 0]) * (c[:, 1] - a[:, 1]) - (b[:, 1] - a[:, 1]) * (c[:, 0] - a[:, 0]))


def _bite(src: np.ndarray, rt: Retarget, mesh: ShotMesh) -> None:
    """Where the new mouth is more closed than the source's, sample the meeting lips from a little
    inside each lip, so the dark edge of the source's opening does not show along the closed line."""
    if not len(mesh.inner_pairs):
        return
    up, lo = mesh.inner_pairs[:, 0], mesh.inner_pairs[:, 1]
    ey, iod = rt.frame.ey, rt.frame.iod
    land = mesh.landmarks
    src_gap = (src[lo] - src[up]) @ ey / iod
    tgt_gap = (rt.target[land[lo]] - rt.target[land[up]]) @ ey / iod
    closing = np.maximum(src_gap - tgt_gap, 0.0)  # IOD
    bite = iod * np.minimum(LIP_BITE * np.clip(closing / 0.03, 0.0, 1.0) + BITE_SHARE * closing, MAX_BITE)
    src[up] -= bite[:, None] * ey
    src[lo] += bite[:, None] * ey
    # the opening's dark corners reach past FaceMesh's inner corner: take the closed corner from
    # nearer the outer one
    for inner, outer, pair in mesh.corners:
        k = np.nonzero(mesh.inner_pairs[:, 2] == pair)[0]
        if len(k):
            share = CORNER_BITE * float(np.clip(closing[k[0]] / 0.04, 0.0, 1.0))
            src[inner] += share * (src[outer] - src[inner])


def interior_weight(rt: Retarget) -> float:
    """How much of the drawn interior covers the new opening (0..1): all of it where the source shows
    little of its own mouth, none where it shows most of what the new mouth needs."""
    if rt.target_open <= 0.0:
        return 0.0
    ratio = rt.source_open / rt.target_open
    return float(np.clip((INTERIOR_NONE - ratio) / (INTERIOR_NONE - INTERIOR_FULL), 0.0, 1.0))


def fill_weight(rt: Retarget) -> float:
    """How much of the source opening is filled (0..1): none while the new mouth keeps at least
    FILL_RATIO of it open, then rising with how far the mouth closes, so that the choice never flips
    from one frame to the next."""
    if rt.target_open > rt.source_open:  # opening wider: filled as far as the interior is drawn over it
        return interior_weight(rt)
    if rt.target_open >= max(CLOSED, FILL_RATIO * rt.source_open):
        return 0.0
    return float(np.clip((rt.source_open - rt.target_open - FILL_START) / FILL_RAMP, 0.0, 1.0))


def _closed_texture(image: np.ndarray, pts: np.ndarray, rt: Retarget) -> tuple[np.ndarray, float]:
    """(what to sample from, how much its opening was filled). `image` is the part of the frame the
    warp samples, `pts` the landmarks in its pixels. When an open source mouth must close (or open
    much less), its opening (a little beyond FaceMesh's inner lips, out to the mouth corners) is
    filled from the lips around it, so no dark edge of the opening can reach the closed lip line."""
    f = fill_weight(rt)
    if f <= 0.0:
        return image, 0.0
    h, w = image.shape[:2]
    inner = R.inner_lip_polygon(pts)
    grow = max(1, int(round(FILL_GROW * rt.frame.iod)))
    outer = pts[list(R.LIPS_OUTER_UPPER) + list(R.LIPS_OUTER_LOWER), :2]
    x0, y0 = np.floor(outer.min(0)).astype(int) - 3 * grow
    x1, y1 = np.ceil(outer.max(0)).astype(int) + 3 * grow
    x0, y0, x1, y1 = max(x0, 0), max(y0, 0), min(x1, w), min(y1, h)
    if x1 - x0 < 4 or y1 - y0 < 4:
        return image, 0.0
    mask = np.zeros((y1 - y0, x1 - x0), np.uint8)
    cv2.fillPoly(mask, [np.round(inner - [x0, y0]).astype(np.int32)], 255)
    for a, b in ((78, 61), (308, 291)):  # the opening's corners reach towards the outer corners
        pa, pb = np.round(pts[[a, b], :2] - [x0, y0]).astype(int)
        cv2.line(mask, tuple(int(v) for v in pa), tuple(int(v) for v in pb), 255, 1)
    mask = cv2.dilate(mask, cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * grow + 1, 2 * grow + 1)))
    # a wide opening often shows more of itself below FaceMesh's inner lower lip: reach down by a share of it
    down = int(round(FILL_DOWN * rt.source_open * rt.frame.iod))
    if down > 0:
        mask[down:] |= mask[:-down]
    texture = image.copy()
    box = np.ascontiguousarray(image[y0:y1, x0:x1])
    filled = cv2.inpaint(box, mask, 3, cv2.INPAINT_TELEA)
    if f < 1.0:
        filled = cv2.addWeighted(filled, f, box, 1.0 - f, 0.0)
    texture[y0:y1, x0:x1] = filled
    return texture, f


def _lip_line(out: np.ndarray, rt: Retarget, strength: float = 1.0) -> None:
    """A soft darker line where the closed lips meet (the fill above leaves none)."""
    line = (rt.target[list(R.LIPS_INNER_UPPER)] + rt.target[list(R.LIPS_INNER_LOWER)]) / 2
    h, w = out.shape[:2]
    x0, y0 = np.floor(line.min(0)).astype(int) - 3
    x1, y1 = np.ceil(line.max(0)).astype(int) + 4
    x0, y0, x1, y1 = max(x0, 0), max(y0, 0), min(x1, w), min(y1, h)
    if x1 - x0 < 3 or y1 - y0 < 2:
        return
    mask = np.zeros((y1 - y0, x1 - x0), np.uint8)
    cv2.polylines(mask, [np.round((line - [x0, y0]) * 4).astype(np.int32)], False, 255, 1, cv2.LINE_AA, shift=2)
    a = cv2.GaussianBlur(mask, (0, 0), 0.6).astype(np.float32)[..., None] * (strength * LIP_LINE / 255.0)
    roi = out[y0:y1, x0:x1]
    roi[:] = (roi.astype(np.float32) * (1.0 - a) + 0.5).astype(np.uint8)
