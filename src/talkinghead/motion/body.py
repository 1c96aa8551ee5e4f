"""EMO2 §3.1 at inference: audio -> body-relative hand/arm motion from a stage-1 model, clip after clip (each
continuing from the last motion frames of the previous one), placed on the portrait's body and written
into the MotionTrack's optional `hands`/`arms` fields."""
from __future__ import annotations

import math
from dataclasses import dataclass, replace

import numpy as np
import torch

from ..face.body import UPPER_LIMB, BodyKeypoints
from ..types import MotionTrack


@dataclass(frozen=True)
class BodyAnchor:
    """Where the body sits in the image: origin between the shoulders, unit = shoulder width, rotated by the
    shoulder line's roll. Body-relative motion is expressed in this frame."""

    center: tuple[float, float]  # pixels
    width: float  # shoulder width, pixels
    roll: float  # radians, the angle of the right-shoulder -> left-shoulder line against the image x axis
    image_size: tuple[int, int]  # (width, height)

    def offset(self) -> np.ndarray:
        """(4,) the stage-1 offset condition: centre x/W, centre y/H, shoulder width/W, roll."""
        w, h = self.image_size
        return np.array([self.center[0] / w, self.center[1] / h, self.width / w, self.roll], np.float32)

    def _rotation(self) -> np.ndarray:
        c, s = math.cos(self.roll), math.sin(self.roll)
        return np.array([[c, -s], [s, c]], np.float32)

    def to_body(self, points: np.ndarray) -> np.ndarray:
        """(..., ≥2) image pixels -> body units (x, y rotated and scaled; a z column is only scaled)."""
        out = np.array(points, np.float32, copy=True)
        out[..., :2] = ((out[..., :2] - np.asarray(self.center, np.float32)) @ self._rotation()) / self.width
        out[..., 2:] /= self.width
        return out

    def to_image(self, points: np.ndarray) -> np.ndarray:
        """Inverse of `to_body`."""
        out = np.array(points, np.float32, copy=True)
        out[..., :2] = (out[..., :2] * self.width) @ self._rotation().T + np.asarray(self.center, np.float32)
        out[..., 2:] *= self.width
        return out


def anchor_of(body: BodyKeypoints) -> BodyAnchor | None:
    """The body anchor from the visible shoulders (BODY_POINTS 0 = left, 1 = right), None if not shown."""
    if not body.shoulders_visible:
        return None
    left, right = body.body[0].astype(np.float64), body.body[1].astype(np.float64)
    v = left - right  # a frontal person's left shoulder is on the image's right
    width = float(np.hypot(*v))
    if width < 1e-3:
        return None
    return BodyAnchor(tuple((left + right) / 2), width, math.atan2(v[1], v[0]), body.image_size)


def motion_of(body: BodyKeypoints, anchor: BodyAnchor, layout) -> tuple[np.ndarray, np.ndarray]:
    """One frame's keypoints -> body-relative motion vector (D,) and part mask (3,) [left, right, body];
    missing parts are zeros with mask False. `layout` is a nn.hand_motion.MotionLayout."""
    hands = np.nan_to_num(anchor.to_body(body.hands[..., : max(layout.hand_coords, 2)]))
    upper = np.nan_to_num(anchor.to_body(body.body[: len(UPPER_LIMB)]))
    hands = hands * body.hand_mask[:, None, None]
    motion = layout.pack(torch.from_numpy(hands), torch.from_numpy(upper[: layout.body_points])).numpy()
    mask = np.concatenate([body.hand_mask, [bool(body.body_mask[: len(UPPER_LIMB)].all())]])
    return motion.astype(np.float32), mask


def generate_motion(model, audio: torch.Tensor, prev: torch.Tensor, prev_mask: torch.Tensor, condition: dict,
                    steps: int, generator: torch.Generator, guidance_scale: float = 1.0) -> torch.Tensor:
    """Long audio (n, A) or (n, t, d) -> motion (n, D), `model.config.frames` at a time. The first clip sees
    `prev` (m, D) with `prev_mask` (m, 3) as its previous motion frames; each later clip the last m frames
    generated before it. `condition`: per-clip conditions for the model (batch size 1)."""
    frames, m = model.config.frames, model.config.prev_frames
    prev, prev_mask = prev[-m:][None], prev_mask[-m:][None].float()  # (1, m, D), (1, m, 3)
    out = []
    for start in range(0, audio.shape[0], frames):
        chunk = audio[start:start + frames][None]
        n = chunk.shape[1]
        if n < frames:  # pad the last clip with its final audio frame; the extra frames are dropped
            chunk = torch.cat([chunk, chunk[:, -1:].expand(1, frames - n, *chunk.shape[2:])], 1)
        clip = model.sample({"audio": chunk, "prev": prev, "prev_mask": prev_mask, **condition}, frames, steps,
                            generator, guidance_scale)
        out.append(clip[0, :n])
        if m:
            prev = torch.cat([prev, clip], 1)[:, -m:]
            prev_mask = torch.cat([prev_mask, torch.ones_like(clip[..., :prev_mask.shape[-1]])], 1)[:, -m:]
    return torch.cat(out, 0)


def body_motion(model, audio: torch.Tensor, body: BodyKeypoints, steps: int = 20, seed: int = 0,
                condition: dict | None = None, guidance_scale: float = 1.0) -> dict[str, np.ndarray] | None:
    """Hands and arms for every audio frame from an EMO2 stage-1 model (systems.emo2.model.EMO2Stage1Net), placed on
    the portrait's body: {"hands" (n, 2, 21, 3) pixels, "arms" (n, 6, 2) pixels, "motion" (n, D)}.
    None when there is no model or the portrait shows no shoulders to anchor the motion to."""
    anchor = anchor_of(body)
    if model is None or anchor is None:
        return None
    layout = model.config.layout
    param = next(model.parameters())
    start, start_mask = motion_of(body, anchor, layout)
    m = max(model.config.prev_frames, 1)
    prev = torch.from_numpy(np.repeat(start[None], m, 0)).to(param)  # the portrait's pose, held
    prev_mask = torch.from_numpy(np.repeat(start_mask[None], m, 0)).to(param)
    cond = {"offset": torch.from_numpy(anchor.offset())[None].to(param), **(condition or {})}
    motion = generate_motion(model, audio.to(param), prev, prev_mask, cond, steps,
                             torch.Generator().manual_seed(seed), guidance_scale)
    hands, upper = layout.unpack(motion.float().cpu())
    hands = hands.numpy()
    if hands.shape[-1] < 3:  # a 2D layout: no depth
        hands = np.concatenate([hands, np.zeros_like(hands[..., :1])], -1)
    return {"hands": anchor.to_image(hands), "arms": anchor.to_image(upper.numpy()), "motion": motion.cpu().numpy()}


def add_body_motion(track: MotionTrack, model, audio: torch.Tensor, body: BodyKeypoints,
                    **kwargs) -> MotionTrack | None:
    """A copy of `track` whose frames carry `hands` and `arms` (one audio frame per track frame; frames past
    the audio keep None). None when `body_motion` gives None (no model, no shoulders)."""
    result = body_motion(model, audio, body, **kwargs)
    if result is None:
        return None
    n = min(len(track), len(result["hands"]))
    frames = [replace(f, hands=result["hands"][i], arms=result["arms"][i]) if i < n else f
              for i, f in enumerate(track.frames)]
    return MotionTrack(track.fps, frames)
