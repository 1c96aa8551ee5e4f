"""What the portrait's own mouth shows: a tongue sticking out of it, which the warp cannot animate.

The warp engine brings an open mouth to closed lips for its neutral mouth (render.rig) and draws the
interior itself, so a tongue inside the mouth simply disappears behind the lips. A tongue out over
the lower lip cannot: closing the lips would leave it hanging below them, and speech would move the
lips around it. It is found by colour: lip- and tongue-coloured pixels (far from the skin's chroma,
redder than skin, not the dark cavity) in a run from the lower inner lip down. A lower lip alone
reaches about as far as the upper lip does upwards; a tongue over it reaches much further.
Black-and-white photos carry no colour to tell a tongue by, and pass.
"""
from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

from ..errors import InputError
from . import regions as R
from .occlusion import _skin_model, to_lab

UPPER_INNER, LOWER_INNER = 13, 14  # MediaPipe: centre of the upper / lower inner lip
RED = 1.6  # chroma distance from skin (robust spreads) beyond which a pixel is lip or tongue coloured
NOT_DARK = 0.3  # share of the skin's lightness below which a pixel is the mouth's dark cavity
COLUMNS = 0.08  # IOD, the runs are measured on 5 columns over +-this around the lip centre
GAP = 0.03  # IOD, a run bridges gaps up to this long (a crease, a highlight)
TONGUE_REACH = 0.13  # IOD: red reaching further than this below the lower inner lip ...
TONGUE_RATIO = 2.0  # ... and this many times further than the upper lip reaches up, is a tongue out
WORK_IOD = 100.0  # px, the mouth box is scaled up to at least this inter-ocular distance


@dataclass
class MouthState:
    upper: float  # IOD, how far lip colour reaches up from the upper inner lip (the upper lip)
    lower: float  # IOD, how far it reaches down from the lower inner lip (the lower lip, a tongue over it)

    @property
    def tongue_out(self) -> bool:
        return self.lower > TONGUE_REACH and self.lower > TONGUE_RATIO * self.upper


def _run(red: np.ndarray, x: int, y: int, step: int, limit: int, gap: int) -> int:
    """Length (px) of the run of `red` pixels from (x, y) going `step` (+-1) rows, bridging short gaps."""
    h = red.shape[0]
    end, miss = 0, 0
    for k in range(limit):
        yy = y + k * step
        if not 0 <= yy < h:
            break
        if red[yy, x]:
            end, miss = k, 0
        else:
            miss += 1
            if miss > gap and (end > 0 or miss > 5 * gap):
                break
    return end


def analyze_mouth(image: np.ndarray, landmarks: np.ndarray) -> MouthState:
    """The lip-colour reach above and below the mouth of an RGB uint8 portrait with its (478, 3) landmarks."""
    pts = np.asarray(landmarks, np.float64)
    el, er = R.eye_centres(pts)
    iod = float(max(np.linalg.norm(er - el), 1.0))
    h, w = image.shape[:2]
    # work in a box around the mouth (about one IOD on each side)
    c = pts[[UPPER_INNER, LOWER_INNER], :2].mean(axis=0)
    x0, y0 = np.maximum(np.floor(c - 1.2 * iod).astype(int), 0)
    x1, y1 = np.minimum(np.ceil(c + 1.2 * iod).astype(int), [w, h])
    # measured on the box scaled to WORK_IOD: a small face's lip a few pixels thick is not rounded to whole
    # pixels, and a large photo's mouth costs no more than a small one's
    scale = WORK_IOD / iod
    box = cv2.resize(image[y0:y1, x0:x1], None, fx=scale, fy=scale,
                     interpolation=cv2.INTER_CUBIC if scale > 1 else cv2.INTER_AREA)
    lab_full = to_lab(box)
    local = (pts[:, :2] - [x0, y0]) * scale
    iod *= scale
    skin, spread = _skin_model(lab_full, local, iod)
    chroma = np.hypot(lab_full[..., 1] - skin[1], lab_full[..., 2] - skin[2]) / spread
    red = (chroma > RED) & (lab_full[..., 1] > skin[1]) & (lab_full[..., 0] > NOT_DARK * skin[0])
    gap = max(2, int(round(GAP * iod)))
    limit = int(round(iod))
    reach = {}
    for name, start, step in (("upper", UPPER_INNER, -1), ("lower", LOWER_INNER, 1)):
        runs = []
        for dx in np.linspace(-COLUMNS, COLUMNS, 5) * iod:
            x = int(round(local[start, 0] + dx))
            if 0 <= x < red.shape[1]:
                runs.append(_run(red, x, int(round(local[start, 1])), step, limit, gap))
        reach[name] = float(np.median(runs)) / iod if runs else 0.0
    return MouthState(reach["upper"], reach["lower"])


def refuse_tongue_out(image: np.ndarray, landmarks: np.ndarray) -> MouthState:
    """The portrait's MouthState; an InputError about the image when a tongue sticks out of the mouth."""
    state = analyze_mouth(image, landmarks)
    if state.tongue_out:
        raise InputError(
            f"shows a tongue sticking out or a mouth wide open (lip or tongue colour reaches {state.lower:.2f} eye "
            f"distances below the lower lip line); the lips cannot be closed over it to animate them",
            "use a photo with the mouth closed or slightly open and the tongue inside", field="image")
    return state
