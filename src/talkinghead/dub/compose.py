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
SHIFT = 4  # fractional bits for cv2.fillConvexPoly
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


class MouthCompositor:
    """Renders dubbed frames: `render(image, retarget, m, mesh)` -> a new frame."""

    def __init__(self):
        self.last_roi: tuple[int, int, int, int] | None = None  # the changed region of the last frame

    def render(self, image: np.ndarray, pts: np.ndarray, rt: Retarget, m: MotionFrame, mesh: ShotMesh) -> np.ndarray:
        h, w = image.shape[:2]
        ff = rt.frame
        anchors = ff.px(mesh.anchors)
        src = np.concatenate([pts[mesh.landmarks, :2].astype(np.float64), anchors])
        dst = np.concatenate([rt.target[mesh.landmarks], anchors])
        move = np.zeros(len(src), bool)
        move[: mesh.n_landmarks] = np.abs(rt.displacement[mesh.landmarks]).max(1) > MOVING
        tris = mesh.triangles[move[mesh.triangles].any(1)]
        out = image.copy()
        self.last_roi = None
        if len(tris) == 0:
            return out
        corners = np.concatenate([src[tris].reshape(-1, 2), dst[tris].reshape(-1, 2)])
        stride = int(np.clip(round(ff.iod / 45.0), 1, 4))
        x0, y0 = np.floor(corners.min(0)).astype(int) - 2
        x1, y1 = np.ceil(corners.max(0)).astype(int) + 3
        x0, y0 = max(x0, 0), max(y0, 0)
        x1, y1 = min(x1, w), min(y1, h)
        if x1 - x0 < 2 or y1 - y0 < 2:
            return out
        gw, gh = -(-(x1 - x0) // stride), -(-(y1 - y0) // stride)
        off = (stride - 1) / 2
        # triangle ids on the coarse grid (0: identity), in grid units: p_grid = (p - x0 - off) / stride
        ids = np.zeros((gh, gw), np.uint16)
        g = (dst[tris] - [x0 + off, y0 + off]) / stride  # (n, 3, 2)
        gi = np.round(g * (1 << SHIFT)).astype(np.int32)
        for t in range(len(tris)):
            cv2.fillConvexPoly(ids, gi[t], t + 1, lineType=cv2.LINE_8, shift=SHIFT)
        # target -> source affine map per triangle: src = A @ [x, y, 1]
        T = np.concatenate([dst[tris], np.ones((len(tris), 3, 1))], 2)  # (n, 3, 3) rows [x y 1]
        S = src[tris]  # (n, 3, 2)
        det = np.linalg.det(T)
        ok = np.abs(det) > 1e-6
        A = np.zeros((len(tris) + 1, 2, 3))
        A[0] = [[1, 0, 0], [0, 1, 0]]
        A[1:][ok] = np.transpose(np.linalg.solve(T[ok], S[ok]), (0, 2, 1))
        A[1:][~ok] = A[0]
        gx = (x0 + off + stride * np.arange(gw, dtype=np.float32))[None, :]
        gy = (y0 + off + stride * np.arange(gh, dtype=np.float32))[:, None]
        Ai = A.astype(np.float32)[ids]  # (gh, gw, 2, 3)
        coarse = np.empty((gh, gw, 2), np.float32)
        coarse[..., 0] = Ai[..., 0, 0] * gx + Ai[..., 0, 1] * gy + Ai[..., 0, 2]
        coarse[..., 1] = Ai[..., 1, 0] * gx + Ai[..., 1, 1] * gy + Ai[..., 1, 2]
        full = coarse if stride == 1 else cv2.resize(coarse, (gw * stride, gh * stride), interpolation=cv2.INTER_LINEAR)
        full = full[: y1 - y0, : x1 - x0]
        out[y0:y1, x0:x1] = cv2.remap(image, full, None, cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)
        self.last_roi = (x0, y0, x1, y1)
        self._interior(out, image, pts, rt, m)
        return out

    def _interior(self, out: np.ndarray, image: np.ndarray, pts: np.ndarray, rt: Retarget, m: MotionFrame) -> None:
        """Draw teeth and cavity where the new mouth is open wider than the source frame's was."""
        if rt.target_open <= 0.0:
            return
        ratio = rt.source_open / max(rt.target_open, 1e-6)
        a = float(np.clip((INTERIOR_NONE - ratio) / (INTERIOR_NONE - INTERIOR_FULL), 0.0, 1.0))
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
