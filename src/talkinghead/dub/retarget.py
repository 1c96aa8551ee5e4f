"""Moving a frame's mouth from where the source speech put it to where the new speech wants it.

Work in the frame's own face coordinates (origin between the irises, unit = inter-ocular distance,
IOD): first close the source mouth (the jaw, lower lip and chin rise, the upper lip comes down a
little, inner lips meet), then open and shape it to the new speech's MotionFrame (jaw, width,
rounding, press), as the warp engine's rig does for a photo. Every other landmark keeps its place,
so head pose, eyes, brows and expression stay the source's.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..face import regions as R
from ..types import MotionFrame

# Amplitudes at parameter value 1, in IOD units (the warp engine's rig uses the same scale).
JAW_OPEN = 0.30
UPPER_LIP_RAISE = 0.035
LIP_WIDTH = 0.10
LIP_ROUND = 0.12
LIP_PROTRUDE = 0.025
PRESS = 0.008
JAW_SHARE = 0.8  # share of the source opening closed by raising the jaw; the upper lip does the rest
INNER_UP, INNER_LO = list(R.LIPS_INNER_UPPER[1:-1]), list(R.LIPS_INNER_LOWER[1:-1])
OUTER_UP, OUTER_LO = list(R.LIPS_OUTER_UPPER[1:-1]), list(R.LIPS_OUTER_LOWER[1:-1])
CENTRE = slice(3, 6)  # the middle three of the nine inner-lip pairs


def _smoothstep(x):
    x = np.clip(x, 0.0, 1.0)
    return x * x * (3 - 2 * x)


@dataclass
class FaceFrame:
    """Similarity frame of a face: image px = origin + iod * (u * ex + v * ey)."""

    origin: np.ndarray
    ex: np.ndarray
    ey: np.ndarray
    iod: float

    @classmethod
    def of(cls, pts: np.ndarray) -> "FaceFrame":
        el, er = R.eye_centres(pts)
        el, er = el.astype(np.float64), er.astype(np.float64)
        iod = float(np.linalg.norm(er - el))
        ex = (er - el) / max(iod, 1e-6)
        return cls((el + er) / 2, ex, np.array([-ex[1], ex[0]]), iod)

    def uv(self, xy: np.ndarray) -> np.ndarray:
        return (np.asarray(xy, np.float64)[..., :2] - self.origin) @ np.stack([self.ex, self.ey], 1) / self.iod

    def vec(self, d_uv: np.ndarray) -> np.ndarray:
        """Face-frame displacement (IOD) -> image displacement (px)."""
        return self.iod * (d_uv[..., :1] * self.ex + d_uv[..., 1:2] * self.ey)

    def px(self, uv: np.ndarray) -> np.ndarray:
        return self.origin + self.vec(uv)


@dataclass
class Retarget:
    displacement: np.ndarray  # (478, 2) px, source landmark -> target landmark
    target: np.ndarray  # (478, 2) px, target landmark positions
    source_open: float  # IOD, the source's central inner-lip gap
    target_open: float  # IOD, the new mouth's central inner-lip gap
    frame: FaceFrame


def mouth_weights(uv: np.ndarray) -> dict:
    """Per-landmark weights of the jaw, the upper lip and the mouth surround, from face coordinates."""
    u, v = uv[:, 0], uv[:, 1]
    iu, il = list(R.LIPS_INNER_UPPER), list(R.LIPS_INNER_LOWER)
    cl, cr = uv[R.LIPS_INNER_UPPER[0]], uv[R.LIPS_INNER_UPPER[-1]]
    um = (cl[0] + cr[0]) / 2
    vm = (uv[R.LIP_MID_UPPER_INNER, 1] + uv[R.LIP_MID_LOWER_INNER, 1]) / 2
    hw = max(abs(cr[0] - cl[0]) / 2, 0.05)
    lu = (uv[iu, 0] + uv[il, 0]) / 2
    lv = (uv[iu, 1] + uv[il, 1]) / 2
    order = np.argsort(lu)
    line = np.interp(u, lu[order], lv[order])  # the lip line, between the inner lips
    du = np.abs(u - um)
    below = (v > line).astype(np.float64)
    below[il] = 1.0
    below[iu] = 0.0
    lateral = 1.0 - _smoothstep((du - 0.9 * hw) / (1.4 * hw))
    depth = np.where(du < hw, 1.0, _smoothstep((v - line) / 0.35))
    jaw = below * lateral * depth
    jaw[list(R.MOUTH_CORNERS)] = 0.45
    upper = (1 - below) * np.exp(-((du / (1.2 * hw)) ** 2) - (((v - vm) / 0.18) ** 2))
    r = np.sqrt(((u - um) / (2.0 * hw)) ** 2 + ((v - vm) / 0.5) ** 2)
    return dict(jaw=jaw, upper=upper, mouth=np.clip(2 * (1 - r), 0, 1), side=np.clip((u - um) / hw, -1, 1),
                centre=np.array([um, vm]), half_width=hw)


def retarget(pts: np.ndarray, m: MotionFrame) -> Retarget:
    """Landmark displacements that turn this frame's mouth into the one `m` asks for."""
    ff = FaceFrame.of(pts)
    uv = ff.uv(pts)
    w = mouth_weights(uv)
    gap = np.maximum(uv[INNER_LO, 1] - uv[INNER_UP, 1], 0.0)  # (9,) source opening per lip pair
    g = float(gap[CENTRE].mean())
    d = np.zeros_like(uv)
    # 1. close the source mouth: jaw and lower lip rise, the upper lip comes down; inner lips meet
    # each column closes by the opening above/below it: the full gap at the middle, nothing at the
    # corners (closed already), so lips near the corners never fold over each other
    cu = (uv[INNER_UP, 0] + uv[INNER_LO, 0]) / 2
    corners_u = uv[[R.LIPS_INNER_UPPER[0], R.LIPS_INNER_UPPER[-1]], 0]
    us = np.concatenate([corners_u[:1], cu, corners_u[1:]])
    gs = np.concatenate([[0.0], gap, [0.0]])
    order = np.argsort(us)
    column = np.interp(uv[:, 0], us[order], gs[order], left=0.0, right=0.0)
    below_lip = w["jaw"] * (uv[:, 1] > uv[INNER_LO, 1].max())  # chin and below: the whole jaw rises
    column = np.where(below_lip > 0, np.maximum(column, g * np.clip(1 - np.abs(uv[:, 0] - w["centre"][0])
                                                                     / (2.5 * w["half_width"]), 0, 1)), column)
    d[:, 1] += column * ((1 - JAW_SHARE) * w["upper"] - JAW_SHARE * w["jaw"])
    d[INNER_UP, 1] = (1 - JAW_SHARE) * gap
    d[INNER_LO, 1] = -JAW_SHARE * gap
    # 2. open and shape it as the new speech wants
    d[:, 1] += m.jaw * JAW_OPEN * w["jaw"] - m.jaw * UPPER_LIP_RAISE * w["upper"]
    d[INNER_UP, 1] += m.press * PRESS - m.jaw * UPPER_LIP_RAISE * (1 - w["upper"][INNER_UP])
    d[INNER_LO, 1] += -m.press * PRESS + m.jaw * JAW_OPEN - m.jaw * JAW_OPEN * w["jaw"][INNER_LO]
    d[:, 0] += (m.width * LIP_WIDTH - m.round * LIP_ROUND) * w["mouth"] * w["side"]
    d[OUTER_UP, 1] -= m.round * LIP_PROTRUDE - m.press * 0.015
    d[OUTER_LO, 1] += m.round * LIP_PROTRUDE - m.press * 0.015
    disp = ff.vec(d)
    target_open = max(0.0, m.jaw * (JAW_OPEN + UPPER_LIP_RAISE) - 2 * m.press * PRESS)
    return Retarget(disp, pts[:, :2] + disp, g, target_open, ff)
