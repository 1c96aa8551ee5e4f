"""EMO's engine: renders with a `talkinghead train` checkpoint (EMO has no released weights)."""
from __future__ import annotations

from ..trained import CheckpointAnimator


class EMOAnimator(CheckpointAnimator):
    engine = "emo"
