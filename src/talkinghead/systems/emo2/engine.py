"""EMO2's engine: renders with the stage-2 video model of a `talkinghead train` run, guided by the portrait's
own end effectors."""
from __future__ import annotations

import numpy as np
import torch

from ...errors import InputError
from ...types import Portrait
from ..trained import CheckpointAnimator


class EMO2Animator(CheckpointAnimator):
    """EMO2's stage-2 video model from its checkpoint. The end effectors guiding it are the portrait's own: its
    upper body from MediaPipe Pose held still, and no hands unless the portrait shows them (generating hand
    motion from audio with a stage-1 checkpoint is not wired into this engine)."""

    engine = "emo2"

    def build(self, train):
        from .train import EMO2Options, EMO2Video

        if str(train.stage) != "2":
            raise InputError(f"this is an EMO2 stage-{train.stage} checkpoint (hand motion); the engine renders "
                             "with the stage-2 video model", "pass the output folder of an emo2_stage2 run")
        from ...train.base import parse_options

        return EMO2Video(train, parse_options(EMO2Options, train.system.options, "emo2"))

    def extra(self, frames: int) -> dict:
        if not hasattr(self, "_body"):
            self._body = portrait_end_effectors(self.portrait)
        return {k: v[None, None].expand(1, frames, *v.shape) for k, v in self._body.items()}


def portrait_end_effectors(portrait: Portrait) -> dict[str, torch.Tensor]:
    """The portrait's hands (2, 21, 3) and body points (12, 2) in [0, 1] of the image (x, y over width, height;
    depth over width), with their masks (2,) and (12,) as float {0, 1}: the layout of a dataset item."""
    from ...face.body import analyze_body

    k = analyze_body(portrait)
    w, h = k.image_size
    hands = np.nan_to_num(k.hands / np.array([w, h, w], np.float32))
    body = np.nan_to_num(k.body / np.array([w, h], np.float32))
    return {"hands": torch.from_numpy(hands.astype(np.float32)),
            "hand_mask": torch.from_numpy(k.hand_mask.astype(np.float32)),
            "body": torch.from_numpy(body.astype(np.float32)),
            "body_mask": torch.from_numpy(k.body_mask.astype(np.float32))}
