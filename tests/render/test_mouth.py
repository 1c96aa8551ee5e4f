"""The mouth interior's upper teeth: the portrait's own where it shows them (the `teeth` control), else drawn."""
from __future__ import annotations

import numpy as np
import pytest

from talkinghead.assets import portrait
from talkinghead.config import AnimateConfig
from talkinghead.face import prepare
from talkinghead.face import regions as R
from talkinghead.systems.warp.engine import Animator
from talkinghead.render import WarpRenderer
from talkinghead.types import MotionFrame, Portrait
from talkinghead.systems import SYSTEMS


def _animator(name: str, teeth: str) -> Animator:
    c = AnimateConfig()
    c.render.size, c.render.teeth = 256, teeth
    return Animator(Portrait(portrait(name), name), c, warn=False)


def test_teeth_is_a_warp_control_with_three_choices():
    assert "teeth" in SYSTEMS["warp"].controls
    c = AnimateConfig()
    assert c.render.teeth == "auto"
    c.render.teeth = "gold"
    with pytest.raises(Exception) as e:
        c.validate()
    assert getattr(e.value, "field", None) == "teeth"


def test_auto_reuses_teeth_the_portrait_shows_and_draws_them_otherwise():
    assert _animator("astronaut", "auto").renderer.mouth.teeth is not None  # her smile shows her upper teeth
    assert _animator("astronaut", "drawn").renderer.mouth.teeth is None
    assert _animator("grace_hopper", "auto").renderer.mouth.teeth is None  # closed lips: nothing to reuse
    assert _animator("grace_hopper", "own").renderer.mouth.teeth is None


def _upper_band(renderer: WarpRenderer, frame: np.ndarray, depth=(0.2, 0.3)) -> np.ndarray:
    """Pixels of the open mouth just under the upper inner lip (at `depth` shares of the gap), (n, 3)."""
    disp = renderer.rig.displace(MotionFrame(jaw=0.8))
    lm = renderer.rig.P[:, :2] + disp[: renderer.rig.P.shape[0]]
    up = lm[list(R.LIPS_INNER_UPPER)]
    lo = lm[list(R.LIPS_INNER_LOWER)]
    xs = np.round(np.linspace(up[3, 0], up[7, 0], 12)).astype(int)
    rows = []
    for x in xs:
        y_up = np.interp(x, *zip(*sorted(zip(up[:, 0], up[:, 1]))))
        y_lo = np.interp(x, *zip(*sorted(zip(lo[:, 0], lo[:, 1]))))
        ys = np.round(y_up + (y_lo - y_up) * np.array(depth)).astype(int)
        rows.append(frame[ys, x])
    return np.concatenate(rows).astype(np.float32)


def test_own_teeth_come_from_the_portrait():
    """Under the upper lip of the open mouth: drawn teeth are a neutral white, the astronaut's own keep her
    teeth's warmer tint; both are bright next to the dark cavity."""
    por, face = prepare(Portrait(portrait("astronaut"), "astronaut"), 512)
    frames = {}
    for mode in ("drawn", "own"):
        r = WarpRenderer(por, face, own_teeth=mode)
        frames[mode] = _upper_band(r, r.render(MotionFrame(jaw=0.8)))
    for band in frames.values():
        assert band.mean() > 120  # teeth, not the cavity
    warmth = {mode: float((band[:, 0] - band[:, 2]).mean()) for mode, band in frames.items()}
    assert warmth["own"] > warmth["drawn"] + 5, warmth
    assert not np.allclose(frames["own"], frames["drawn"], atol=4)


def test_own_teeth_start_at_the_lip_on_a_small_portrait():
    """At 256 px the astronaut's teeth are a few pixels tall: they must hang from the lip's edge, not
    start under a dark strip of cavity."""
    por, face = prepare(Portrait(portrait("astronaut"), "astronaut"), 256)
    r = WarpRenderer(por, face, own_teeth="own")
    band = _upper_band(r, r.render(MotionFrame(jaw=0.8)), depth=(0.05, 0.1))
    assert band.mean() > 140, band.mean()  # teeth (a dark strip above them gave about 100)
