"""Mesh warp of the portrait: control-point displacements -> dense backward map -> one remap.

The mesh (landmarks + hair ring + fixed anchors, Delaunay) is rasterised once, on a half-resolution
grid over the moving region's bounding box, into a sparse matrix of barycentric weights. Per frame:
displacements of the control points -> field (one sparse product) -> inverse by two fixed-point
steps -> upsample -> one cv2.remap of the region. Pixels outside the region are never touched.

Rigid things in front of the face (glasses, dark lenses, a gloved hand, jewellery: face.occlusion)
keep only the head's motion: on their grid cells the expression's share of the field is taken out
again (a second sparse product over just those rows), and the mouth interior is not drawn over them.
A frame whose mesh would fold over (a turned face's far side squeezed past its outline, where the
warp would tear) takes as much of the head motion as keeps every triangle the right way round, then
as much of the expression; a normal frame pays one vectorised area check for this.
Behind glasses the brows do not lift (the rims rest on them); behind dark lenses the eyes neither
blink nor look around (nothing of them shows).
"""
from __future__ import annotations

from dataclasses import replace

import cv2
import numpy as np
from scipy import sparse
from scipy.spatial import Delaunay

from ..face.occlusion import analyze_occlusion
from ..types import FaceAnalysis, MotionFrame, Portrait
from .mouth import MouthInterior
from .rig import FaceRig

FIELD_STRIDE = 2  # px, the displacement field is computed at 1/FIELD_STRIDE resolution
INVERSE_STEPS = 2  # fixed-point iterations inverting the forward warp
MIN_AREA_KEPT = 0.1  # an outline triangle squeezed below this share of its rest area counts as folding
FOLD_STEPS = 6  # bisection steps when a frame has to give up part of its motion


class WarpRenderer:
    """Renders frames of one portrait. Construction does all geometry work once."""

    def __init__(self, portrait: Portrait, face: FaceAnalysis, own_teeth: bool = False):
        """`own_teeth`: draw the portrait's own upper teeth in the open mouth where it shows them
        (render.mouth). Off by default: FaceMesh reads a mouth with real teeth as less open, which
        lowers the eval card's sync confidence (0.56 -> 0.41 on the astronaut with LibriVox at 256 px)."""
        self.image = np.ascontiguousarray(portrait.image)
        h, w = self.image.shape[:2]
        self.rig = FaceRig(face)
        pts = self.rig.points
        pts, self.keep = _dedupe(pts)
        tri = Delaunay(pts)
        moving = self.rig.P.shape[0] + len(self.rig.hair)  # landmarks + hair ring come first
        # region: bounding box of every triangle touching a moving point
        touch = (self.keep < moving)[tri.simplices].any(axis=1)
        self.rest = pts
        area = _areas(pts, tri.simplices)
        # the outline's triangles (a landmark and a hair-ring or fixed point): folding there tears the
        # face from its surroundings; folds inside the face are the 2-D picture of 3-D occlusion
        # (the nose passing the cheek, a lid over the iris) and are left to the inverse map
        outline = (self.keep >= self.rig.P.shape[0])[tri.simplices].any(axis=1) & \
            (self.keep < self.rig.P.shape[0])[tri.simplices].any(axis=1)
        self.triangles = tri.simplices[outline & (area > 0.5)]  # slivers cannot fold visibly
        self.rest_area = _areas(pts, self.triangles)
        corners = pts[tri.simplices[touch]].reshape(-1, 2)
        x0, y0 = np.floor(corners.min(0)).astype(int)
        x1, y1 = np.ceil(corners.max(0)).astype(int) + 1
        x0, y0 = max(0, x0 - x0 % FIELD_STRIDE), max(0, y0 - y0 % FIELD_STRIDE)
        x1, y1 = min(w, x1), min(h, y1)
        x1 -= (x1 - x0) % FIELD_STRIDE
        y1 -= (y1 - y0) % FIELD_STRIDE
        self.roi = (x0, y0, x1, y1)
        # coarse grid over the region; cell i covers pixels [S*i, S*i+S) and sits at its centre, so
        # cv2.resize by S upsamples it exactly (linear, half-pixel centres)
        off = (FIELD_STRIDE - 1) / 2
        gx = np.arange(x0, x1, FIELD_STRIDE, dtype=np.float64) + off
        gy = np.arange(y0, y1, FIELD_STRIDE, dtype=np.float64) + off
        self.grid_shape = (len(gy), len(gx))
        G = np.stack(np.meshgrid(gx, gy), -1).reshape(-1, 2)
        simplex = tri.find_simplex(G)
        inside = simplex >= 0
        T = tri.transform[simplex[inside]]  # (n, 3, 2)
        b = np.einsum("nij,nj->ni", T[:, :2], G[inside] - T[:, 2])
        bary = np.concatenate([b, 1 - b.sum(1, keepdims=True)], 1)  # (n, 3)
        verts = tri.simplices[simplex[inside]]  # indices into deduped pts
        rows = np.repeat(np.nonzero(inside)[0], 3)
        # weights pre-divided by the stride: the field comes out in coarse-grid cells
        self.W = sparse.csr_matrix((bary.ravel().astype(np.float32) / FIELD_STRIDE, (rows, verts.ravel())),
                                   shape=(len(G), len(pts)))
        # identity maps: output pixels of the region, and coarse-grid cell indices
        ox, oy = np.meshgrid(np.arange(x0, x1, dtype=np.float32), np.arange(y0, y1, dtype=np.float32))
        self.out_grid = np.dstack([ox, oy])  # (h, w, 2): a CV_32FC2 identity map of the region
        gi, gj = np.meshgrid(np.arange(len(gx), dtype=np.float32), np.arange(len(gy), dtype=np.float32))
        self.grid_idx = np.dstack([gi, gj])  # (gh, gw, 2) each coarse cell's own index
        self.occlusion = analyze_occlusion(self.image, face.landmarks)
        # rigid share per coarse cell (a thin rim must survive the downsampling: max, not mean)
        rig_roi = self.occlusion.mask[y0:y1, x0:x1]
        coarse = rig_roi.reshape(len(gy), FIELD_STRIDE, len(gx), FIELD_STRIDE).max(axis=(1, 3)).ravel()
        self.rigid_rows = np.flatnonzero(coarse > 0.02)
        self.rigid_share = coarse[self.rigid_rows, None].astype(np.float32)
        self.W_rigid = self.W[self.rigid_rows]
        self.mouth = MouthInterior(self.image, face, self.rig, own_teeth=own_teeth)
        self.mouth.cover = self.occlusion.mask if self.occlusion.any else None

    def field(self, disp: np.ndarray, expression: np.ndarray | None = None) -> np.ndarray:
        """Forward displacement on the coarse grid, in coarse-grid cells: (gh, gw, 2) float32.
        With `expression` (its share of `disp`), rigid cells keep only disp - expression."""
        f = self.W @ disp[self.keep].astype(np.float32)
        if expression is not None and len(self.rigid_rows):
            f[self.rigid_rows] -= self.rigid_share * (self.W_rigid @ expression[self.keep].astype(np.float32))
        return f.reshape(*self.grid_shape, 2)

    def backward_map(self, disp: np.ndarray, expression: np.ndarray | None = None) -> np.ndarray:
        """For each output pixel of the region, where to sample the portrait: (h, w, 2) float32."""
        d = self.field(disp, expression)
        # solve x + d(x) = p for x on the coarse grid, starting from x = p - d(p): x <- p - d(x)
        x = self.grid_idx - d
        for _ in range(INVERSE_STEPS):
            d_at_x = cv2.remap(d, x, None, cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)
            x = self.grid_idx - d_at_x
        back = (x - self.grid_idx) * FIELD_STRIDE  # backward displacement, pixels
        full = cv2.resize(back, None, fx=FIELD_STRIDE, fy=FIELD_STRIDE, interpolation=cv2.INTER_LINEAR)
        full += self.out_grid
        return full

    def render(self, m: MotionFrame) -> np.ndarray:
        """One RGB frame (h, w, 3) uint8."""
        occ = self.occlusion
        if occ.glasses and m.brows:
            m = replace(m, brows=0.0)
        if occ.eyes_hidden and (m.blink or m.gaze_x or m.gaze_y):
            m = replace(m, blink=0.0, gaze_x=0.0, gaze_y=0.0)
        disp, expression = self._unfolded(*self.rig.displace(m, with_expression=True))
        x0, y0, x1, y1 = self.roi
        out = self.image.copy()
        if np.abs(disp).max() < 1e-3:
            return out
        out[y0:y1, x0:x1] = cv2.remap(self.image, self.backward_map(disp, expression), None, cv2.INTER_LINEAR,
                                      borderMode=cv2.BORDER_REPLICATE)
        lm = self.rig.P[:, :2] + disp[: self.rig.P.shape[0]]
        self.mouth.draw(out, lm, m)
        return out


    def _folds(self, disp: np.ndarray) -> bool:
        a = _areas(self.rest + disp[self.keep], self.triangles)
        return bool((a < MIN_AREA_KEPT * self.rest_area).any())

    def _unfolded(self, disp: np.ndarray, expression: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(disp, expression) scaled back just enough that no triangle folds (see the module docstring)."""
        if not self._folds(disp):
            return disp, expression
        head = disp - expression
        if not self._folds(expression):  # the head motion folds it: keep the largest share that does not
            lo, hi = 0.0, 1.0
            for _ in range(FOLD_STEPS):
                mid = (lo + hi) / 2
                lo, hi = (mid, hi) if not self._folds(expression + mid * head) else (lo, mid)
            return expression + lo * head, expression
        lo, hi = 0.0, 1.0  # the expression alone folds it (an extreme face): scale both
        for _ in range(FOLD_STEPS):
            mid = (lo + hi) / 2
            lo, hi = (mid, hi) if not self._folds(mid * expression) else (lo, mid)
        return lo * expression, lo * expression


def _areas(pts: np.ndarray, triangles: np.ndarray) -> np.ndarray:
    """Signed areas (px^2, positive = Delaunay's orientation) of `triangles` over `pts`."""
    a, b, c = pts[triangles[:, 0]], pts[triangles[:, 1]], pts[triangles[:, 2]]
    return 0.5 * ((b[:, 0] - a[:, 0]) * (c[:, 1] - a[:, 1]) - (b[:, 1] - a[:, 1]) * (c[:, 0] - a[:, 0]))


def _dedupe(pts: np.ndarray, tol: float = 0.75) -> tuple[np.ndarray, np.ndarray]:
    """Drop points closer than `tol` px to an earlier one (Delaunay dislikes duplicates)."""
    q = np.round(pts / tol).astype(np.int64)
    _, first = np.unique(q, axis=0, return_index=True)
    keep = np.sort(first)
    return pts[keep], keep
