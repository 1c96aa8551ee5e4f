"""Loopy's engine: renders with a `talkinghead train` checkpoint (Loopy has no released weights)."""
from __future__ import annotations

from ..trained import CheckpointAnimator


class LoopyAnimator(CheckpointAnimator):
    engine = "loopy"
