"""Hallo §3.2 hierarchical audio-visual synthesis: lip / expression(face) / pose(full) masks.

Built from our MediaPipe landmarks the way upstream Hallo builds them (hallo/utils/util.py
`get_mask` and helpers, hallo/datasets/image_processor.py `preprocess`):

- face region (the face-locator input): the bounding box of the 36 face-oval points, grown about its
  centre by `expand` (1.2: the `--face_expand_ratio` default of scripts/inference.py, which overrides
  the 1.1 in configs/inference/default.yaml), a hard 0/1 rectangle at image resolution, repeated over
  3 channels.
- blurred masks, always made at MASK_SIDE x MASK_SIDE whatever the image size: the face rectangle and
  the lip rectangle (box of the 20 outer-lip points grown 2x) are each shrunk to 64 x 64 (bilinear),
  Gaussian blurred (51 px kernel for the face, 31 px for the lips, sigma from the kernel size) and
  min-max stretched to 0..255, all in 8 bits.
  lip = blurred lip; face = blurred face - lip (clipped at 0); full = 1 - blurred face (the
  background/pose region). So full + face + lip is 1 (to 8-bit rounding) wherever the lip does not
  poke out of the face.
- pyramid: each 8-bit mask is resized (PIL bilinear, i.e. antialiased) to size/8, /16, /32, /64,
  flattened row-major and repeated over the frames of a clip.
"""
from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np
import torch
from PIL import Image

from ..types import FaceAnalysis
from .regions import FACE_OVAL, LIPS_OUTER_LOWER, LIPS_OUTER_UPPER

FACE_EXPAND = 1.2  # face box growth (scripts/inference.py --face_expand_ratio default)
LIP_EXPAND = 2.0  # lip box growth, fixed upstream
MASK_SIDE = 64  # px: upstream blurs the region masks at this size, independent of the image size
FACE_BLUR = 51  # px at MASK_SIDE: Gaussian kernel for the face mask
LIP_BLUR = 31  # px at MASK_SIDE: Gaussian kernel for the lip mask
LEVELS = (8, 16, 32, 64)  # pixel strides of the UNet levels the masks feed (latent /1, /2, /4, /8)
LIP_POINTS = tuple(sorted(set(LIPS_OUTER_UPPER + LIPS_OUTER_LOWER)))  # 20 outer-lip landmarks

Box = tuple[int, int, int, int]  # x0, y0, x1, y1 in pixels, half-open


def _square_points(face: FaceAnalysis, size: int) -> np.ndarray:
    """(478, 2) landmark x, y in pixels of the face's image resized to `size` x `size`."""
    w, h = face.image_size
    return face.landmarks[:, :2].astype(np.float64) * (size / w, size / h)


def _grow_span(lo: float, hi: float, ratio: float, side: int) -> tuple[int, int]:
    """[lo, hi) grown about its centre by `ratio`, shifted back inside [0, side) like upstream.

    Upstream arithmetic: integer (floored) centre and half-length of the rounded extremes; a span
    that sticks out on one side is slid in, not cut. Ours also cuts what is still outside after
    sliding (a face larger than the image), where upstream would index with negative numbers.
    """
    lo, hi = float(np.round(lo)), float(np.round(hi))
    mid = (lo + hi) // 2
    half = ((hi - lo) * ratio) // 2
    lo, hi = mid - half, mid + half
    if lo < 0:
        lo, hi = 0.0, hi - lo
    if hi > side:
        lo, hi = lo - (hi - side), float(side)
    return int(max(lo, 0)), int(min(hi, side))


def _grown_box(points: np.ndarray, ratio: float, size: int) -> Box:
    """Bounding box of (n, 2) points grown by `ratio`, inside a `size` x `size` image."""
    x0, x1 = _grow_span(points[:, 0].min(), points[:, 0].max(), ratio, size)
    y0, y1 = _grow_span(points[:, 1].min(), points[:, 1].max(), ratio, size)
    return x0, y0, x1, y1


def _box_image(box: Box, size: int) -> np.ndarray:
    """(size, size) uint8: 255 inside the box, 0 elsewhere."""
    x0, y0, x1, y1 = box
    out = np.zeros((size, size), np.uint8)
    out[y0:y1, x0:x1] = 255
    return out


def face_box(face: FaceAnalysis, size: int, expand: float = FACE_EXPAND) -> Box:
    """The face-oval box grown by `expand`, in pixels of the image resized to `size` x `size`."""
    return _grown_box(_square_points(face, size)[list(FACE_OVAL)], expand, size)


def lip_box(face: FaceAnalysis, size: int, expand: float = LIP_EXPAND) -> Box:
    """The outer-lip box grown by `expand`, in pixels of the image resized to `size` x `size`."""
    return _grown_box(_square_points(face, size)[list(LIP_POINTS)], expand, size)


def face_region_mask(face: FaceAnalysis, size: int, expand: float = FACE_EXPAND) -> np.ndarray:
    """(size, size) float32 in {0, 1}: the grown face box, the face locator's region.

    `face` may refer to an image of any size; it is taken as resized (not cropped) to `size` x `size`.
    """
    return (_box_image(face_box(face, size, expand), size) / 255).astype(np.float32)


def _blurred(mask: np.ndarray, kernel: int) -> np.ndarray:
    """(size, size) uint8 0/255 -> (MASK_SIDE, MASK_SIDE) uint8: shrink, blur, stretch to 0..255."""
    small = cv2.resize(mask, (MASK_SIDE, MASK_SIDE), interpolation=cv2.INTER_LINEAR)
    soft = cv2.GaussianBlur(small, (kernel, kernel), 0)
    if soft.min() == soft.max():  # flat (box covers all or nothing): keep it, cv2 would zero it
        return soft
    return cv2.normalize(soft, None, 0, 255, cv2.NORM_MINMAX)


def _region_masks_u8(face: FaceAnalysis, size: int, expand: float) -> dict[str, np.ndarray]:
    """full / face / lip as (MASK_SIDE, MASK_SIDE) uint8, the 8-bit images upstream writes as PNG."""
    face_soft = _blurred(_box_image(face_box(face, size, expand), size), FACE_BLUR)
    lip = _blurred(_box_image(lip_box(face, size), size), LIP_BLUR)
    full = ((1.0 - face_soft / 255.0) * 255).astype(np.uint8)  # truncation, as upstream
    return {"full": full, "face": cv2.subtract(face_soft, lip), "lip": lip}


def region_masks(face: FaceAnalysis, size: int, expand: float = FACE_EXPAND) -> dict[str, np.ndarray]:
    """Hallo's `full`, `face` and `lip` masks, each (MASK_SIDE, MASK_SIDE) float32 in [0, 1].

    They are at upstream's working size (64 x 64, which is the first latent level at 512 px), not at
    `size`: upsampling them to `size` and resizing back for the pyramid would change the values.
    `size` is the side of the square image the masks describe (the landmarks are scaled to it).
    """
    return {k: (v / 255).astype(np.float32) for k, v in _region_masks_u8(face, size, expand).items()}


def mask_pyramid(mask: np.ndarray, n_frames: int, levels: tuple[int, ...] = LEVELS,
                 size: int | None = None) -> list[torch.Tensor]:
    """One (n_frames, h*w) float32 tensor per level, h = w = size // level, flattened row-major.

    mask: (s, s) values in [0, 1], describing a `size` x `size` image (default: size = s). It is
    rounded to 8 bits and resized with PIL bilinear (antialiased), as upstream does with its PNGs.
    """
    if mask.ndim != 2 or mask.shape[0] != mask.shape[1]:
        raise ValueError(f"mask must be square (s, s), got {mask.shape}")
    size = mask.shape[0] if size is None else size
    bad = [lv for lv in levels if size % lv]
    if bad:
        raise ValueError(f"size {size} px is not a multiple of the level strides {bad}")
    img = Image.fromarray(np.round(np.clip(mask, 0, 1) * 255).astype(np.uint8))
    out = []
    for level in levels:
        side = size // level
        small = np.asarray(img.resize((side, side), Image.BILINEAR), np.float32) / 255  # (side, side)
        out.append(torch.from_numpy(small.reshape(1, -1)).repeat(n_frames, 1))  # (n_frames, side*side)
    return out


@dataclass
class HalloMasks:
    """Everything mask-shaped one Hallo clip needs."""

    face_region: torch.Tensor  # (1, 3, size, size) float32 in {0, 1}: the face locator's input
    full: list[torch.Tensor]  # per level (n_frames, h*w) float32, h = size/8, /16, /32, /64
    face: list[torch.Tensor]
    lip: list[torch.Tensor]


def hallo_masks(face: FaceAnalysis, size: int, n_frames: int, expand: float = FACE_EXPAND) -> HalloMasks:
    """Face-locator region and the three mask pyramids for a `size` x `size` portrait."""
    region = torch.from_numpy(face_region_mask(face, size, expand))  # (size, size)
    masks = _region_masks_u8(face, size, expand)
    pyramids = {k: mask_pyramid(v / 255.0, n_frames, size=size) for k, v in masks.items()}
    return HalloMasks(face_region=region.expand(1, 3, size, size).contiguous(), **pyramids)
