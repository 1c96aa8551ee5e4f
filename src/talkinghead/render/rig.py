"""Motion parameters -> per-landmark displacements (the face rig), in image pixels.

Expression moves landmarks in a face-aligned frame (unit = inter-ocular distance, IOD; vertically
at least FACE_HEIGHT_IOD of the face's height, so a face turned sideways, whose eyes look closer
together, still opens its mouth as far as it would facing the camera): jaw,
lip width/rounding/press, smile, brows, blinks, gaze. The head then rotates rigidly in 3D (MediaPipe
depth) about a pivot behind the face; hair and neck anchors follow with falloff, the outer ring and
image border stay put.
"""
from __future__ import annotations

import numpy as np

from ..errors import InputError
from ..face import regions as R
from ..types import FaceAnalysis, MotionFrame

# Amplitudes at parameter value 1, in IOD units.
JAW_OPEN = 0.30  # lower lip/chin travel when wide open
UPPER_LIP_RAISE = 0.035
LIP_WIDTH = 0.10  # mouth-corner travel for width = 1
LIP_ROUND = 0.12  # corner travel inwards for round = 1
LIP_PROTRUDE = 0.025
# An open mouth in the portrait is closed for the neutral (silent) mouth: lips parted up to PARTED
# meet halfway; what is open beyond that is a dropped jaw, so the jaw takes JAW_SHARE of the rest.
PARTED = 0.08
JAW_SHARE = 0.8
OVERCLOSE = 0.25  # an open mouth is closed this much past its landmarks: FaceMesh puts the inner-lip
# points of an open mouth a little inside the visible lip edges
MAX_REST_GAP = 0.38  # wider open than our own widest (a scream, a yawn) cannot be closed believably: refused
SMILE_CORNER = (0.085, -0.075)  # (outwards, up)
SMILE_CHEEK = 0.03
BROW_LIFT = 0.10
BLINK_MEET = 0.82  # lids meet this fraction of the way from upper to lower lid
GAZE_SHIFT = (1.0, 1.0)  # scale of gaze_x (eye widths) and gaze_y (eye heights)

HAIR_SCALE = (1.45, 1.65, 1.25)  # hair/ear/neck ring: x, up, down scale of the face oval
STATIC_SCALE = 1.8  # outer ring that never moves
HAIR_FOLLOW = 0.92  # share of the head motion the hair ring takes
NECK_FOLLOW = 0.45  # below the chin the neck follows less
RING_EXPRESSION = 0.6  # share of its face-outline point's expression a hair/neck ring point takes
# (the skin under a dropping chin stretches instead of folding over the neck)
BORDER_STEP = 48  # px between fixed anchors on the image border
FACE_HEIGHT_IOD = 0.4  # IOD / (forehead-chin distance) of a face looking at the camera
FACE_CLEARANCE = 1.08  # ring and anchor points inside the landmarks' hull grown by this are dropped


def face_frame(P: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """(origin, ex, ey, unit) of landmarks P (478, >=2): the eyes' midpoint, the eye line and its normal, and the
    pixels per face unit along them (u: the eye distance; v: at least FACE_HEIGHT_IOD of the face's height, so a
    face turned sideways, whose eyes look closer, keeps its vertical scale)."""
    el, er = R.eye_centres(P)
    iod = float(np.linalg.norm(er - el))
    ex = (er - el) / iod
    height = float(np.linalg.norm(P[R.CHIN, :2] - P[R.FOREHEAD, :2]))
    return (el + er) / 2, ex, np.array([-ex[1], ex[0]]), np.array([iod, max(iod, FACE_HEIGHT_IOD * height)])


def face_uv(P: np.ndarray) -> np.ndarray:
    """Landmarks P in face units (478, 2): u along the eye line, v down the face (see `face_frame`)."""
    origin, ex, ey, unit = face_frame(P)
    return (P[:, :2] - origin) @ np.stack([ex, ey], 1) / unit


def _smoothstep(x):
    x = np.clip(x, 0.0, 1.0)
    return x * x * (3 - 2 * x)


class FaceRig:
    """Precomputes everything that does not change per frame; `displace(m)` is cheap."""

    def __init__(self, face: FaceAnalysis):
        P = face.landmarks.astype(np.float64)
        self.P = P
        w, h = face.image_size
        self.origin, self.ex, self.ey, self.unit = face_frame(P)  # px per face unit: u, v
        self.iod = float(self.unit[0])
        self._face_axes = self.unit[:, None] * np.stack([self.ex, self.ey])  # (2, 2): face units -> image px
        uv = (P[:, :2] - self.origin) @ np.stack([self.ex, self.ey], 1) / self.unit  # (478, 2)
        self.uv = uv
        # how open the portrait's mouth is, judged on the source photo where there is one: the crop's own
        # landmarks (found again at each output size) put the lips a little differently at every size
        source = face.source_landmarks
        self._source_uv = face_uv(source.astype(np.float64)) if source is not None else uv
        self._mouth_weights(uv)
        self._eye_setup(uv)
        self._brow_weights(uv)
        self._anchors(P, w, h)

    # -- precomputation -------------------------------------------------------------------------
    def _mouth_weights(self, uv):
        u, v = uv[:, 0], uv[:, 1]
        inner_up, inner_lo = list(R.LIPS_INNER_UPPER), list(R.LIPS_INNER_LOWER)
        cl, cr = uv[R.LIPS_INNER_UPPER[0]], uv[R.LIPS_INNER_UPPER[-1]]
        self.um = (cl[0] + cr[0]) / 2
        self.vm = (uv[R.LIP_MID_UPPER_INNER, 1] + uv[R.LIP_MID_LOWER_INNER, 1]) / 2
        self.hw = abs(cr[0] - cl[0]) / 2
        # the lip line: midway between inner lips, interpolated along u
        lu = (uv[inner_up, 0] + uv[inner_lo, 0]) / 2
        lv = (uv[inner_up, 1] + uv[inner_lo, 1]) / 2
        order = np.argsort(lu)
        line = np.interp(u, lu[order], lv[order])
        du = np.abs(u - self.um)
        below = (v > line).astype(float)
        below[inner_lo] = 1.0
        below[inner_up] = 0.0
        lateral = 1.0 - _smoothstep((du - 0.9 * self.hw) / (1.4 * self.hw))
        # beside the mouth the jaw weight ramps in below the corners
        depth = np.where(du < self.hw, 1.0, _smoothstep((v - line) / 0.35))
        jaw = below * lateral * depth
        jaw[list(R.MOUTH_CORNERS)] = 0.45
        self.w_jaw = jaw
        self.w_upper_lip = ((1 - below) * np.exp(-((du / (1.2 * self.hw)) ** 2) - (((v - self.vm) / 0.18) ** 2)))
        # radial falloff around the mouth for width/round/smile, normalised to 1 at the corners
        r = np.sqrt(((u - self.um) / (2.0 * self.hw)) ** 2 + ((v - self.vm) / 0.5) ** 2)
        self.w_mouth = np.clip(2 * (1 - r), 0, 1)  # corners sit at r = 0.5
        self.side = np.clip((u - self.um) / self.hw, -1, 1)
        self.outer_up = list(R.LIPS_OUTER_UPPER[1:-1])
        self.outer_lo = list(R.LIPS_OUTER_LOWER[1:-1])
        self.inner_up, self.inner_lo = inner_up[1:-1], inner_lo[1:-1]
        # a portrait with parted lips or an open mouth is brought to closed lips as the neutral mouth
        self.rest_gap = np.clip(uv[self.inner_lo, 1] - uv[self.inner_up, 1], 0.0, None)
        src = self._source_uv
        gap = float(np.clip(src[self.inner_lo, 1] - src[self.inner_up, 1], 0.0, None)[3:6].mean())
        self.rest_gap = self.rest_gap + OVERCLOSE * np.maximum(self.rest_gap - PARTED, 0)
        if gap > MAX_REST_GAP:
            raise InputError(
                f"shows a mouth wide open ({gap:.2f} eye distances between the lips), too wide to close it "
                "believably before animating",
                "use a photo with the mouth closed or slightly open", field="image")
        self.rest_up = np.minimum(self.rest_gap, PARTED) / 2 + np.maximum(self.rest_gap - PARTED, 0) * (1 - JAW_SHARE)
        cheek = np.exp(-((du - 0.9 * self.hw) / 0.45) ** 2 - ((v - (self.vm - 0.35)) / 0.3) ** 2)
        self.w_cheek = cheek

    def _eye_setup(self, uv):
        self.eyes = []
        for up, lo, crease, iris in ((R.RIGHT_EYE_UPPER, R.RIGHT_EYE_LOWER, R.RIGHT_EYE_CREASE, R.RIGHT_IRIS),
                                     (R.LEFT_EYE_UPPER, R.LEFT_EYE_LOWER, R.LEFT_EYE_CREASE, R.LEFT_IRIS)):
            up, lo, crease, iris = list(up), list(lo), list(crease), list(iris)
            gap = uv[lo, 1] - uv[up, 1]  # (9,) positive: lower lid below upper
            width = float(np.ptp(uv[up + lo, 0]))
            height = float(max(gap.max(), 0.05))
            self.eyes.append(dict(up=up, lo=lo, crease=crease, iris=iris, gap=gap, width=width, height=height))

    def _brow_weights(self, uv):
        brows = list(R.RIGHT_BROW + R.LEFT_BROW)
        brow_v = uv[brows, 1].mean()
        v = uv[:, 1]
        # brows fully, forehead above them partly, fading upwards; the crease ring a little
        w = np.where(v < brow_v, 0.6 * np.exp(-((brow_v - v) / 0.5) ** 2), 0.0)
        w[brows] = 1.0
        for e in self.eyes:
            w[e["crease"]] = np.maximum(w[e["crease"]], 0.25)
        self.w_brow = w

    def _anchors(self, P, w, h):
        oval = P[list(R.FACE_OVAL), :2]
        c = oval.mean(axis=0)
        d = oval - c
        sx, sup, sdown = HAIR_SCALE
        hair = c + np.stack([d[:, 0] * sx, np.where(d[:, 1] < 0, d[:, 1] * sup, d[:, 1] * sdown)], 1)
        follow = np.where(d[:, 1] > 0.25 * np.abs(d[:, 1]).max(), NECK_FOLLOW, HAIR_FOLLOW)
        static = c + d * STATIC_SCALE
        xs = np.arange(0, w, BORDER_STEP, dtype=np.float64)
        ys = np.arange(0, h, BORDER_STEP, dtype=np.float64)
        border = np.concatenate([
            np.stack([xs, np.zeros_like(xs)], 1), np.stack([xs, np.full_like(xs, h - 1)], 1),
            np.stack([np.zeros_like(ys), ys], 1), np.stack([np.full_like(ys, w - 1), ys], 1),
            [[w - 1, h - 1]],
        ])
        # keep anchors inside the image and off the face: on a turned face the scaled rings can land
        # on the far cheek, where a still anchor beside a moving landmark would fold the mesh
        off_face = _outside(P[:, :2], FACE_CLEARANCE)
        static = static[(static[:, 0] > 2) & (static[:, 0] < w - 3) & (static[:, 1] > 2) & (static[:, 1] < h - 3)
                        & off_face(static)]
        hair_in = (hair[:, 0] > 1) & (hair[:, 0] < w - 2) & (hair[:, 1] > 1) & (hair[:, 1] < h - 2) & off_face(hair)
        hair, follow = hair[hair_in], follow[hair_in]
        self.hair_source = np.array(R.FACE_OVAL)[hair_in]  # the outline point each ring point extends
        self.hair = hair
        self.hair_follow = follow
        self.fixed = np.concatenate([static, border])
        # depth of the hair ring: behind the face surface
        self.hair_z = np.full(len(hair), float(np.median(P[:, 2]) + 0.15 * (oval[:, 0].max() - oval[:, 0].min())))
        fw = oval[:, 0].max() - oval[:, 0].min()
        self.face_width = float(fw)
        # pivot: between the ears at chin height, behind the face (the neck)
        self.pivot = np.array([c[0], P[R.CHIN, 1], np.median(P[:, 2]) + 0.6 * fw])
        # for displace_parts: landmarks and hair ring relative to the pivot, and back to displacements
        self._lm_rel = P - self.pivot
        self._lm_back = self.pivot[:2] - P[:, :2]
        self._hair_rel = np.concatenate([hair, self.hair_z[:, None]], 1) - self.pivot
        self._hair_back = self.pivot[:2] - hair

    @property
    def points(self) -> np.ndarray:
        """(V, 2) rest positions of every control point: landmarks, hair ring, fixed anchors."""
        return np.concatenate([self.P[:, :2], self.hair, self.fixed])

    # -- per frame ------------------------------------------------------------------------------
    def expression(self, m: MotionFrame) -> np.ndarray:
        """(478, 2) landmark displacement in face units (IOD), before head motion."""
        uv = self.uv
        d = np.zeros_like(uv)
        # jaw
        d[:, 1] += m.jaw * JAW_OPEN * self.w_jaw - m.jaw * UPPER_LIP_RAISE * self.w_upper_lip
        # width (spread) and rounding (narrow + protrude)
        d[:, 0] += (m.width * LIP_WIDTH - m.round * LIP_ROUND) * self.w_mouth * self.side
        d[self.outer_up, 1] -= m.round * LIP_PROTRUDE
        d[self.outer_lo, 1] += m.round * LIP_PROTRUDE
        # neutral = lips together; press thins them a little more
        gu = self.rest_up[3:6].mean()  # the lips meet; lip bodies and jaw come along
        gl = self.rest_gap[3:6].mean() - gu
        d[:, 1] += gu * self.w_upper_lip - gl * self.w_jaw
        d[self.inner_up, 1] = self.rest_up + m.press * 0.008 - m.jaw * UPPER_LIP_RAISE
        d[self.inner_lo, 1] = -(self.rest_gap - self.rest_up) - m.press * 0.008 + m.jaw * JAW_OPEN
        if m.press > 0:
            d[self.outer_up, 1] += m.press * 0.015
            d[self.outer_lo, 1] -= m.press * 0.015
        # smile
        if m.smile > 0:
            d[:, 0] += m.smile * SMILE_CORNER[0] * self.w_mouth * self.side
            d[:, 1] += m.smile * (SMILE_CORNER[1] * self.w_mouth * np.abs(self.side) - SMILE_CHEEK * self.w_cheek)
        # brows
        d[:, 1] -= m.brows * BROW_LIFT * self.w_brow
        # eyes: gaze moves the irises, a blink brings the upper lid down to meet the lower
        for e in self.eyes:
            d[e["iris"], 0] += m.gaze_x * GAZE_SHIFT[0] * e["width"]
            d[e["iris"], 1] += m.gaze_y * GAZE_SHIFT[1] * e["height"]
            if m.blink > 0:
                travel = m.blink * e["gap"]
                d[e["up"], 1] += travel * BLINK_MEET
                d[e["lo"], 1] -= travel * (1 - BLINK_MEET)
                d[e["crease"], 1] += 0.3 * travel * BLINK_MEET
                # irises squash between the closing lids
                iu = uv[e["iris"]] + d[e["iris"]]
                up_v = np.interp(iu[:, 0], *_sorted(uv[e["up"], 0], uv[e["up"], 1]))
                lo_v = np.interp(iu[:, 0], *_sorted(uv[e["lo"], 0], uv[e["lo"], 1]))
                gap = np.maximum(lo_v - up_v, 1e-3)
                t = np.clip((iu[:, 1] - up_v) / gap, 0, 1)
                new_up = up_v + m.blink * gap * BLINK_MEET
                new_lo = lo_v - m.blink * gap * (1 - BLINK_MEET)
                d[e["iris"], 1] = new_up + t * (new_lo - new_up) - uv[e["iris"], 1]
        return d

    def displace(self, m: MotionFrame, with_expression: bool = False):
        """(V, 2) pixel displacement of every control point (`points`) for frame parameters `m`;
        with `with_expression`, the pair (total, expression) of `displace_parts`."""
        parts = self.displace_parts(m)
        return parts if with_expression else parts[0]

    def displace_parts(self, m: MotionFrame) -> tuple[np.ndarray, np.ndarray]:
        """(total, expression) (V, 2) pixel displacements: everything, and the share that comes from
        the expression (mouth, brows, blinks, gaze) as the head carries it; total - expression is
        the rigid head motion alone, which is all that rigid things in front of the face follow."""
        rot = _rotation(m.yaw, m.pitch, m.roll)
        turn = rot[:2].T  # (3, 2): a point relative to the pivot -> its turned image position
        t = np.array([m.tx, m.ty]) * self.face_width
        # face units -> image pixels (the face's axes and size), turned with the head: one 2 x 2 matrix
        d_expr = self.expression(m) @ (self._face_axes @ rot[:2, :2].T)
        n, k = len(d_expr), len(self.hair)
        total = np.empty((n + k + len(self.fixed), 2))
        total[:n] = self._lm_rel @ turn + self._lm_back + t + d_expr
        d_hair_expr = RING_EXPRESSION * d_expr[self.hair_source]
        total[n:n + k] = (self._hair_rel @ turn + self._hair_back + t) * self.hair_follow[:, None] + d_hair_expr
        total[n + k:] = 0.0
        expr = np.zeros_like(total)
        expr[:n] = d_expr
        expr[n:n + k] = d_hair_expr
        return total, expr


def _outside(points: np.ndarray, grow: float):
    """A test: which of some (n, 2) points lie outside the convex hull of `points` grown about its centre."""
    import cv2

    hull = cv2.convexHull(points.astype(np.float32)).reshape(-1, 2)
    c = hull.mean(axis=0)
    hull = (c + grow * (hull - c)).astype(np.float32)
    return lambda q: np.array([cv2.pointPolygonTest(hull, (float(x), float(y)), False) < 0 for x, y in q], bool)


def _sorted(x, y):
    o = np.argsort(x)
    return x[o], y[o]


def _rotation(yaw: float, pitch: float, roll: float) -> np.ndarray:
    """3x3 rotation, degrees. Image axes: x right, y down, z into the image. +pitch = nod down,
    +yaw = turn to image right, +roll = clockwise in the image."""
    a, b, c = np.radians([yaw, pitch, roll])
    ry = np.array([[np.cos(a), 0, -np.sin(a)], [0, 1, 0], [np.sin(a), 0, np.cos(a)]])
    rx = np.array([[1, 0, 0], [0, np.cos(b), -np.sin(b)], [0, np.sin(b), np.cos(b)]])
    rz = np.array([[np.cos(c), -np.sin(c), 0], [np.sin(c), np.cos(c), 0], [0, 0, 1]])
    return rz @ ry @ rx
