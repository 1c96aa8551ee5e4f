"""Mesh warp of the portrait: control-point displacements -> dense backward map -> one remap.

The mesh (landmarks + hair ring + fixed anchors, Delaunay) is rasterised once, on a coarse grid
over the moving region's bounding box (one cell of margin around it; cells a fixed share of the eye
distance, finer going down than across), into three vertex ids and barycentric weights per cell.
Per frame: displacements of the control points -> field (three gathers and a weighted sum) ->
inverse by two fixed-point steps -> one resize straight to the absolute sampling map -> its
fixed-point form (cv2.convertMaps: the same 1/32-pixel positions cv2.remap would use, converted in
one pass instead of block by block) -> one cv2.remap of the region into the output frame. Pixels
outside the region are never touched. OpenCV does all of it (no scipy: importing scipy.spatial and
scipy.sparse cost more start-up time than the rest of the engine's set-up).

Rigid things in front of the face (glasses, dark lenses, a gloved hand, jewellery: face.occlusion)
keep only the head's motion: on their grid cells the expression's share of the field is taken out
again (a second blend over just those cells), and the mouth interior is not drawn over them.
A frame whose mesh would fold over (a turned face's far side squeezed past its outline, where the
warp would tear) takes as much of the head motion as keeps every triangle the right way round, then
as much of the expression; a normal frame pays one vectorised area check for this.
Behind glasses the brows do not lift (the rims rest on them); behind dark lenses the eyes neither
blink nor look around (nothing of them shows).
"""
from __future__ import annotations

import threading
from dataclasses import replace

import cv2
import numpy as np

from ..face.occlusion import analyze_occlusion
from ..types import FaceAnalysis, MotionFrame, Portrait
from .mouth import MouthInterior
from .rig import FaceRig

# Grid cells per eye distance, across and down. The field changes fastest going down (eyelids and
# lip lines are horizontal edges that move up and down), so the grid is twice as fine that way:
# at 512 px, cells of 4 x 2 px instead of 2 x 2 keep the blink's closure, give frames 57 dB (median
# PSNR) from the finer grid's and a quarter less render time; 3 x 3 loses a tenth of the closure
CELLS_PER_IOD_ACROSS = 25
CELLS_PER_IOD_DOWN = 50
MIN_STRIDE = 2  # px, the finest grid (small faces)
INVERSE_STEPS = 2  # fixed-point iterations inverting the forward warp
MIN_AREA_KEPT = 0.1  # an outline triangle squeezed below this share of its rest area counts as folding
FOLD_STEPS = 6  # bisection steps when a frame has to give up part of its motion


class WarpRenderer:
    """Renders frames of one portrait. Construction does all geometry work once; `render` may be
    called from several threads at once (frames are independent)."""

    def __init__(self, portrait: Portrait, face: FaceAnalysis, own_teeth: bool = False):
        """`own_teeth`: draw the portrait's own upper teeth in the open mouth where it shows them
        (render.mouth). Off by default: FaceMesh reads a mouth with real teeth as less open, which
        lowers the eval card's sync confidence (0.56 -> 0.41 on the astronaut with LibriVox at 256 px)."""
        self.image = np.ascontiguousarray(portrait.image)
        h, w = self.image.shape[:2]
        self.rig = FaceRig(face)
        pts = self.rig.points
        pts, self.keep = _dedupe(pts)
        simplices = _delaunay(pts, w, h)
        moving = self.rig.P.shape[0] + len(self.rig.hair)  # landmarks + hair ring come first
        # region: bounding box of every triangle touching a moving point
        touch = (self.keep < moving)[simplices].any(axis=1)
        self.rest = pts
        area = _areas(pts, simplices)
        # the outline's triangles (a landmark and a hair-ring or fixed point): folding there tears the
        # face from its surroundings; folds inside the face are the 2-D picture of 3-D occlusion
        # (the nose passing the cheek, a lid over the iris) and are left to the inverse map
        outline = (self.keep >= self.rig.P.shape[0])[simplices].any(axis=1) & \
            (self.keep < self.rig.P.shape[0])[simplices].any(axis=1)
        self.triangles = simplices[outline & (area > 0.5)]  # slivers cannot fold visibly
        self.rest_area = _areas(pts, self.triangles)
        # the grid's cell, px (across, down): the same share of the face at every output size
        self.stride = SX, SY = _strides(self.rig.iod)
        corners = pts[simplices[touch]].reshape(-1, 2)
        x0, y0 = np.floor(corners.min(0)).astype(int)
        x1, y1 = np.ceil(corners.max(0)).astype(int) + 1
        x0, y0 = max(0, x0 - x0 % SX), max(0, y0 - y0 % SY)
        x1, y1 = min(w, x1), min(h, y1)
        x1 -= (x1 - x0) % SX
        y1 -= (y1 - y0) % SY
        self.roi = (x0, y0, x1, y1)
        # coarse grid over the region and one cell of margin on every side; cell i covers pixels
        # [S*i, S*i+S) from the margin's corner and sits at its centre, so cv2.resize by (SX, SY)
        # upsamples it exactly (linear, half-pixel centres) and the margin keeps the region's edge
        # pixels from being clamped to the last cell
        gx = np.arange(x0 - SX, x1 + SX, SX, dtype=np.float64) + (SX - 1) / 2
        gy = np.arange(y0 - SY, y1 + SY, SY, dtype=np.float64) + (SY - 1) / 2
        self.grid_shape = (len(gy), len(gx))
        verts, bary = _locate(pts, simplices, gx, gy)  # (n, 3) vertex ids and weights; zero weights outside
        # weights pre-divided by the strides: the field comes out in coarse-grid cells
        self._gather = [np.dstack([verts[:, k].reshape(self.grid_shape), np.zeros(self.grid_shape, np.int64)])
                        .astype(np.int16) for k in range(3)]  # CV_16SC2 maps (vertex id, 0): exact gathers
        self._weight = [np.ascontiguousarray((bary[:, k, None] / [SX, SY]).astype(np.float32)
                                             .reshape(*self.grid_shape, 2)) for k in range(3)]
        gi, gj = np.meshgrid(np.arange(len(gx), dtype=np.float32), np.arange(len(gy), dtype=np.float32))
        self.grid_idx = np.dstack([gi, gj])  # (gh, gw, 2) each coarse cell's own index
        self._grid_px = np.dstack(np.meshgrid(gx, gy)).astype(np.float32)  # (gh, gw, 2) its centre, pixels
        self._cell = (float(SX), float(SY), 0.0, 0.0)  # px per cell, as an OpenCV scalar
        # the upsampled map, one reused buffer per rendering thread, and its part over the region
        self._full_shape = (len(gy) * SY, len(gx) * SX, 2)
        self._crop = (slice(SY, SY + y1 - y0), slice(SX, SX + x1 - x0))
        self._buffers = threading.local()
        self.occlusion = analyze_occlusion(self.image, face.landmarks)
        # rigid share per coarse cell (a thin rim must survive the downsampling: max, not mean)
        gh, gw = self.grid_shape
        pad = np.zeros((gh * SY, gw * SX), np.float32)
        ys, xs = slice(max(y0 - SY, 0), min(y1 + SY, h)), slice(max(x0 - SX, 0), min(x1 + SX, w))
        pad[ys.start - (y0 - SY):ys.stop - (y0 - SY), xs.start - (x0 - SX):xs.stop - (x0 - SX)] = \
            self.occlusion.mask[ys, xs]
        coarse = pad.reshape(gh, SY, gw, SX).max(axis=(1, 3)).ravel()
        self.rigid_rows = np.flatnonzero(coarse > 0.02)
        self.rigid_share = coarse[self.rigid_rows, None].astype(np.float32)
        self._gather_rigid = [np.ascontiguousarray(g.reshape(-1, 2)[self.rigid_rows][None]) for g in self._gather]
        self._weight_rigid = [np.ascontiguousarray(wt.reshape(-1, 2)[self.rigid_rows][None] * self.rigid_share[None])
                              for wt in self._weight]
        self.mouth = MouthInterior(self.image, face, self.rig, own_teeth=own_teeth)
        self.mouth.cover = self.occlusion.mask if self.occlusion.any else None

    def field(self, disp: np.ndarray, expression: np.ndarray | None = None) -> np.ndarray:
        """Forward displacement on the coarse grid, in coarse-grid cells: (gh, gw, 2) float32.
        With `expression` (its share of `disp`), rigid cells keep only disp - expression."""
        f = _blend(disp[self.keep].astype(np.float32), self._gather, self._weight)
        if expression is not None and len(self.rigid_rows):
            e = _blend(expression[self.keep].astype(np.float32), self._gather_rigid, self._weight_rigid)
            f.reshape(-1, 2)[self.rigid_rows] -= e[0]
        return f

    def backward_map(self, disp: np.ndarray, expression: np.ndarray | None = None) -> np.ndarray:
        """For each output pixel of the region, where to sample the portrait: (h, w, 2) float32.
        The array is a view of a buffer the next call from the same thread overwrites."""
        d = self.field(disp, expression)
        # solve x + d(x) = p for x on the coarse grid, starting from x = p - d(p): x <- p - d(x)
        d_at_x = d
        for _ in range(INVERSE_STEPS):
            x = cv2.subtract(self.grid_idx, d_at_x)
            d_at_x = cv2.remap(d, x, None, cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)
        # where each cell samples the portrait, in pixels: its centre less the displacement there
        x = cv2.subtract(self._grid_px, cv2.multiply(d_at_x, self._cell))
        full = getattr(self._buffers, "full", None)
        if full is None:
            full = self._buffers.full = np.empty(self._full_shape, np.float32)
        cv2.resize(x, full.shape[1::-1], dst=full, interpolation=cv2.INTER_LINEAR)
        return full[self._crop]

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
        region = out[y0:y1, x0:x1]
        # fixed-point maps: the positions remap would quantise to anyway (identical frames), in half its time
        xy, frac = cv2.convertMaps(self.backward_map(disp, expression), None, cv2.CV_16SC2)
        warped = cv2.remap(self.image, xy, frac, cv2.INTER_LINEAR, dst=region, borderMode=cv2.BORDER_REPLICATE)
        if warped is not region and not np.shares_memory(warped, region):  # OpenCV made its own array
            region[:] = warped
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


def _strides(iod: float) -> tuple[int, int]:
    """(across, down) px of a grid cell for a face with eye distance `iod` px."""
    across = max(MIN_STRIDE, int(round(iod / CELLS_PER_IOD_ACROSS)))
    down = max(MIN_STRIDE, int(round(iod / CELLS_PER_IOD_DOWN)))
    return across, down


def _areas(pts: np.ndarray, triangles: np.ndarray) -> np.ndarray:
    """Signed areas (px^2, positive = counter-clockwise on screen, as `_delaunay` gives) of `triangles` over `pts`."""
    a, b, c = pts[triangles[:, 0]], pts[triangles[:, 1]], pts[triangles[:, 2]]
    return 0.5 * ((b[:, 0] - a[:, 0]) * (c[:, 1] - a[:, 1]) - (b[:, 1] - a[:, 1]) * (c[:, 0] - a[:, 0]))


def _blend(values: np.ndarray, gather: list[np.ndarray], weight: list[np.ndarray]) -> np.ndarray:
    """sum_k weight[k] * values[gather[k]]: (V, 2) values at each cell's three vertices, blended. The
    gathers are nearest-neighbour remaps of the values laid out as a 1 x V image (exact copies)."""
    image = values.reshape(1, -1, 2)
    f = cv2.remap(image, gather[0], None, cv2.INTER_NEAREST)
    f *= weight[0]
    for g, wt in zip(gather[1:], weight[1:]):
        f += cv2.remap(image, g, None, cv2.INTER_NEAREST) * wt
    return f


def _delaunay(pts: np.ndarray, w: int, h: int) -> np.ndarray:
    """(m, 3) vertex ids of the Delaunay triangles of (V, 2) distinct points, counter-clockwise in
    image axes (positive `_areas`)."""
    lo, hi = np.minimum(pts.min(0), 0) - 2, np.maximum(pts.max(0), [w, h]) + 2
    subdiv = cv2.Subdiv2D((int(np.floor(lo[0])), int(np.floor(lo[1])), int(np.ceil(hi[0] - lo[0])) + 1,
                           int(np.ceil(hi[1] - lo[1])) + 1))
    subdiv.insert([(float(x), float(y)) for x, y in pts])
    corners = subdiv.getTriangleList().reshape(-1, 3, 2)  # float32 coordinates of our points
    index = {(x, y): i for i, (x, y) in enumerate(pts.astype(np.float32).tolist())}
    ids = np.array([[index.get((x, y), -1) for x, y in t] for t in corners.tolist()], np.int64).reshape(-1, 3)
    ok = (ids >= 0).all(1)  # drops the triangles on Subdiv2D's outer helper vertices
    tri = ids[ok]
    flip = _areas(pts, tri) < 0
    tri[flip] = tri[flip][:, [0, 2, 1]]
    return tri


def _locate(pts: np.ndarray, tri: np.ndarray, gx: np.ndarray, gy: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """For each point of the grid gx x gy (row-major, n = len(gy) * len(gx); uniform steps): the
    vertex ids (n, 3) of the triangle holding it and its barycentric weights (n, 3) there; a point in
    no triangle gets vertex 0 with weight 0."""
    gh, gw = len(gy), len(gx)
    step = np.array([gx[1] - gx[0] if gw > 1 else 1.0, gy[1] - gy[0] if gh > 1 else 1.0])
    u = (pts - [gx[0], gy[0]]) / step  # vertices in grid units: point (i, j) sits at (i, j)
    # paint each triangle's id on the points it covers, largest first so that slivers keep their
    # few points (the raster also paints the points an edge passes near, sometimes for the
    # neighbour), then check every point exactly with barycentric weights
    owner = np.full((gh, gw), -1, np.int32)
    corners = np.round(u * 256).astype(np.int32)[tri]  # 8 fractional bits
    for t in np.argsort(-np.abs(_areas(u, tri)), kind="stable"):
        cv2.fillConvexPoly(owner, corners[t], int(t), shift=8)
    owner = owner.ravel()
    jj, ii = np.divmod(np.arange(gh * gw), gw)
    q = np.stack([ii, jj], 1).astype(np.float64)
    verts = np.zeros((gh * gw, 3), np.int64)
    bary = np.zeros((gh * gw, 3), np.float64)

    def weights(cell, t):
        a, b, c = u[tri[t, 0]], u[tri[t, 1]], u[tri[t, 2]]
        e1, e2, r = b - a, c - a, q[cell] - a
        det = e1[:, 0] * e2[:, 1] - e1[:, 1] * e2[:, 0]
        l1 = (r[:, 0] * e2[:, 1] - r[:, 1] * e2[:, 0]) / det
        l2 = (e1[:, 0] * r[:, 1] - e1[:, 1] * r[:, 0]) / det
        return np.stack([1 - l1 - l2, l1, l2], 1)

    def take(cell, t, lam):
        inside = lam.min(1) >= -1e-9
        verts[cell[inside]] = tri[t[inside]]
        bary[cell[inside]] = lam[inside]
        return inside

    cell = np.flatnonzero(owner >= 0)
    found = np.zeros(gh * gw, bool)
    found[cell[take(cell, owner[cell], weights(cell, owner[cell]))]] = True
    # the rest: the triangles painted on the 3 x 3 neighbourhood (a point's own triangle is
    # usually next to where the raster put it), then every triangle whose bounding box holds it
    rest = np.flatnonzero(~found)
    if len(rest):
        grid = np.pad(owner.reshape(gh, gw), 1, constant_values=-1)
        r0, c0 = np.divmod(rest, gw)
        near = np.stack([grid[r0 + dy, c0 + dx] for dy in range(3) for dx in range(3)], 1)  # (m, 9)
        cell, t = np.repeat(rest, near.shape[1]), near.ravel()
        cell, t = cell[t >= 0], t[t >= 0]
        found[cell[take(cell, t, weights(cell, t))]] = True
    rest = np.flatnonzero(~found)
    lo, hi = u[tri].min(1) - 1e-6, u[tri].max(1) + 1e-6  # (T, 2) triangle bounding boxes
    for i in range(0, len(rest), 256):
        part = rest[i:i + 256]
        p = q[part][:, None]  # (m, 1, 2)
        cell, t = np.nonzero(((p >= lo) & (p <= hi)).all(-1))
        cell = part[cell]
        take(cell, t, weights(cell, t))
    return verts, bary


def _dedupe(pts: np.ndarray, tol: float = 0.75) -> tuple[np.ndarray, np.ndarray]:
    """Drop points closer than `tol` px to an earlier one (Delaunay dislikes duplicates)."""
    q = np.round(pts / tol).astype(np.int64)
    _, first = np.unique(q, axis=0, return_index=True)
    keep = np.sort(first)
    return pts[keep], keep
