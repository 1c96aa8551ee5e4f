"""Synthetic dubbing sources made with our own warp engine: a portrait speaking one utterance,
placed in a larger frame that pans slowly, with a cut-away (a shot without any face) inserted.

Tests and benchmarks dub these with another utterance and score the result: the source's own
speech is known exactly, so "in sync with the new speech, not the old" can be measured.
"""
from __future__ import annotations

import os
from pathlib import Path

import cv2
import numpy as np

from ..config import AnimateConfig, MotionConfig, RenderConfig
from ..io import VideoWriter
from ..systems.warp.engine import Animator
from ..types import Portrait, Speech


def background(width: int, height: int, seed: int = 0) -> np.ndarray:
    """A textured RGB backdrop (gradient + soft blobs): detail for the pass-through checks to see."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:height, 0:width].astype(np.float32)
    img = np.stack([60 + 80 * x / width, 70 + 60 * y / height, 110 + 40 * (1 - x / width)], -1)
    noise = cv2.GaussianBlur(rng.normal(0, 1, (height, width)).astype(np.float32), (0, 0), 6)
    img += 120 * noise[..., None] * np.array([0.6, 0.8, 1.0], np.float32)
    return np.clip(img, 0, 255).astype(np.uint8)


def cutaway_frame(width: int, height: int, i: int) -> np.ndarray:
    """A frame of another shot: shapes on a plain ground, no face, moving a little per frame."""
    img = np.full((height, width, 3), (170, 150, 120), np.uint8)
    cx = int(width * (0.3 + 0.01 * i))
    cv2.circle(img, (cx, height // 2), height // 5, (40, 90, 160), -1)
    cv2.rectangle(img, (width // 2, height // 4), (width // 2 + width // 6, height // 4 + height // 3), (200, 60, 40), -1)
    return img


def source_frames(speech: Speech, width: int, height: int, face: int = 256, fps: float = 25.0,
                  cutaway: tuple[int, int] | None = None, portrait: np.ndarray | None = None,
                  head_motion: float = 1.0, seed: int = 0):
    """Frames of the source video: the engine's render of `speech` (`face` px square) pasted into a
    `width` x `height` backdrop that pans by a few pixels; frames [start, start + n) of `cutaway`
    show another shot instead. Yields (h, w, 3) uint8 RGB."""
    if portrait is None:
        from ..assets import portrait as bundled

        portrait = bundled("astronaut")
    cfg = AnimateConfig(motion=MotionConfig(head_motion=head_motion, seed=seed),
                        render=RenderConfig(fps=fps, size=face))
    anim = Animator(Portrait(portrait, "source portrait"), cfg, warn=False)
    bg = background(width + 64, height + 64, seed)
    fh, fw = anim.frame_size[1], anim.frame_size[0]
    # a soft-edged paste so the portrait's square border does not read as a hard seam
    alpha = np.zeros((fh, fw), np.float32)
    cv2.ellipse(alpha, (fw // 2, fh // 2), (int(fw * 0.46), int(fh * 0.49)), 0, 0, 360, 1.0, -1)
    alpha = cv2.GaussianBlur(alpha, (0, 0), fw * 0.03)[..., None]
    for i, frame in enumerate(anim.frames(speech)):
        if cutaway is not None and cutaway[0] <= i < cutaway[0] + cutaway[1]:
            yield cutaway_frame(width, height, i - cutaway[0])
            continue
        ox = int(round(16 + 12 * np.sin(i / 40.0)))  # slow camera pan
        oy = int(round(16 + 6 * np.cos(i / 55.0)))
        canvas = bg[oy:oy + height, ox:ox + width].copy()
        x0, y0 = (width - fw) // 2 + int(0.1 * (width - fw)), max(0, (height - fh) // 2)
        roi = canvas[y0:y0 + fh, x0:x0 + fw].astype(np.float32)
        canvas[y0:y0 + fh, x0:x0 + fw] = (roi * (1 - alpha) + frame * alpha + 0.5).astype(np.uint8)
        yield canvas


def make_source(path: str | os.PathLike, speech: Speech, width: int = 480, height: int = 320, face: int = 256,
                fps: float = 25.0, cutaway: tuple[int, int] | None = None, crf: int = 12, **kw) -> Path:
    """Encode `source_frames` with `speech` as the soundtrack to `path` (mp4)."""
    with VideoWriter(path, fps, (width, height), audio=speech, crf=crf) as w:
        for frame in source_frames(speech, width, height, face, fps, cutaway, **kw):
            w.write(frame)
    return Path(path)


def decode_frames(path: str | os.PathLike) -> list[np.ndarray]:
    """Every frame of a (short) video as RGB arrays, for checks on small test clips."""
    import av

    with av.open(str(path)) as c:
        return [f.to_ndarray(format="rgb24") for f in c.decode(video=0)]
