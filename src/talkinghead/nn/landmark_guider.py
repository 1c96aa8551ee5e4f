"""SkyReels-A1 (arXiv 2502.10841) expression-aware landmark guidance: 3D FaceMesh landmarks (driven by a MotionTrack)
rendered as guidance frames, and the 3D landmark guider — a causal 3D conv encoder built like (and
initialised from) the CogVideoX 3D VAE's encoder that turns guidance frames into latents aligned with
the video latents.

Causality. diffusers' `CogVideoXEncoder3D` pads time on the left only and compresses time by averaging
pairs of past frames, but its GroupNorms pool statistics over all frames of the clip, so frame t's latent
would see frame t+1. The guider swaps every GroupNorm for `FrameGroupNorm` (same parameters, so the VAE
encoder's weights load key-for-key) which normalises each frame on its own: latent frame j then depends
only on guidance frames <= j * temporal_compression_ratio.

The official SkyReels-A1 release ships its guider as a whole CogVideoX VAE (`pose_guider/`) and encodes with
that VAE's own `encode`: plain GroupNorms, frames taken in batches of 8 (the first batch 8 + F mod 8) with a
causal conv cache, the posterior mean times the scaling factor. `causal=False` reproduces exactly that, so the
release's numbers come out; our own trained guiders keep `causal=True`.
"""
from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np
import torch
from diffusers.models.autoencoders.autoencoder_kl_cogvideox import CogVideoXEncoder3D
from einops import rearrange
from torch import nn

from ..face import regions as R
from ..types import FaceAnalysis, MotionFrame, MotionTrack

# Guidance-frame palette (RGB): one colour per face part so the guider can tell lips from brows.
REGION_COLOURS = {
    "oval": (200, 200, 200),
    "brows": (255, 170, 0),
    "eyes": (0, 200, 255),
    "irises": (255, 255, 255),
    "lips_outer": (255, 40, 40),
    "lips_inner": (255, 0, 200),
    "nose": (40, 255, 40),
}
NOSE_BRIDGE = (168, 6, 197, 195, 5, 4, 1)  # FaceMesh nose ridge, top to tip
DEPTH_SHADE = (0.45, 1.0)  # colour brightness at the farthest / nearest landmark (expression-aware depth cue)
LINE_PX = 1.0 / 128  # line thickness as a fraction of the frame's shorter side


def _contours() -> list[tuple[str, tuple[int, ...], bool]]:
    """(region, ordered landmark indices, closed) for every drawn polyline."""
    return [
        ("oval", R.FACE_OVAL, True),
        ("brows", R.RIGHT_BROW[:5], False), ("brows", R.LEFT_BROW[:5], False),
        ("eyes", R.RIGHT_EYE_UPPER, False), ("eyes", R.RIGHT_EYE_LOWER, False),
        ("eyes", R.LEFT_EYE_UPPER, False), ("eyes", R.LEFT_EYE_LOWER, False),
        ("irises", R.RIGHT_IRIS[1:], True), ("irises", R.LEFT_IRIS[1:], True),
        ("lips_outer", R.LIPS_OUTER_UPPER, False), ("lips_outer", R.LIPS_OUTER_LOWER, False),
        ("lips_inner", R.LIPS_INNER_UPPER, False), ("lips_inner", R.LIPS_INNER_LOWER, False),
        ("nose", NOSE_BRIDGE, False),
    ]


CONTOURS = _contours()


def render_landmarks(points: np.ndarray, size: tuple[int, int], box: tuple[float, float, float, float] | None = None
                     ) -> np.ndarray:
    """(f, 478, 3) landmarks in pixels (x, y, depth z; smaller z = nearer, MediaPipe) -> (f, h, w, 3) uint8
    guidance frames: face-part contours on black, each segment's brightness set by its depth so the 3D
    expression (e.g. lip protrusion, head turn) shows. `size` is (width, height); `box` optionally maps
    the landmarks' pixel box (x0, y0, x1, y1) onto the whole frame."""
    points = np.asarray(points, dtype=np.float64)
    if points.ndim == 2:
        points = points[None]
    w, h = size
    xy = points[..., :2].copy()
    if box is not None:
        x0, y0, x1, y1 = box
        xy = (xy - [x0, y0]) * [w / max(x1 - x0, 1e-6), h / max(y1 - y0, 1e-6)]
    z = points[..., 2]
    lo, hi = z.min(axis=1, keepdims=True), z.max(axis=1, keepdims=True)
    near = 1.0 - (z - lo) / np.maximum(hi - lo, 1e-6)  # (f, 478): 1 nearest .. 0 farthest
    shade = DEPTH_SHADE[0] + (DEPTH_SHADE[1] - DEPTH_SHADE[0]) * near
    thick = max(1, int(round(min(w, h) * LINE_PX)))
    pix = np.round(xy * 16).astype(np.int32)  # 4 fractional bits for cv2's sub-pixel lines
    out = np.zeros((len(points), h, w, 3), np.uint8)
    for k in range(len(points)):
        for region, idx, closed in CONTOURS:
            idx = list(idx) + ([idx[0]] if closed else [])
            colour = np.asarray(REGION_COLOURS[region], np.float64)
            for a, b in zip(idx[:-1], idx[1:]):
                c = colour * 0.5 * (shade[k, a] + shade[k, b])
                cv2.line(out[k], tuple(pix[k, a]), tuple(pix[k, b]), tuple(float(v) for v in c), thick,
                         cv2.LINE_AA, shift=4)
    return out


def motion_landmarks(face: FaceAnalysis, motion: MotionTrack | list[MotionFrame]) -> np.ndarray:
    """(f, 478, 3) landmarks of the portrait's face moved by each MotionFrame (the warp engine's rig):
    expression displaces x, y; the head pose rotates the 3D points about the rig's neck pivot, so depth
    follows yaw/pitch/roll. This is how the shared MotionTrack controls drive SkyReels-A1."""
    from ..render.rig import FaceRig, _rotation  # the rig's own rotation convention

    frames = motion.frames if isinstance(motion, MotionTrack) else list(motion)
    rig = FaceRig(face)
    P = rig.P  # (478, 3) rest landmarks
    out = np.empty((len(frames), len(P), 3), np.float64)
    for k, m in enumerate(frames):
        d = rig.displace(m)[: len(P)]  # (478, 2) image-plane displacement, pose included
        rot = _rotation(m.yaw, m.pitch, m.roll)
        out[k, :, :2] = P[:, :2] + d
        out[k, :, 2] = ((P - rig.pivot) @ rot.T + rig.pivot)[:, 2]
    return out.astype(np.float32)


def guidance_tensor(frames: np.ndarray) -> torch.Tensor:
    """(f, h, w, 3) uint8 guidance frames -> (1, 3, f, h, w) float in [-1, 1] (the VAE's input range)."""
    x = torch.from_numpy(np.ascontiguousarray(frames)).float() / 127.5 - 1.0
    return rearrange(x, "f h w c -> 1 c f h w")


class FrameGroupNorm(nn.GroupNorm):
    """GroupNorm whose statistics never cross frames: (b, c, f, h, w) is normalised per (b, f)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.dim() != 5:
            return super().forward(x)
        b = x.shape[0]
        y = super().forward(rearrange(x, "b c f h w -> (b f) c h w"))
        return rearrange(y, "(b f) c h w -> b c f h w", b=b)


def make_frame_causal(module: nn.Module) -> int:
    """Replace every nn.GroupNorm under `module` by a FrameGroupNorm sharing its parameters; returns the count."""
    count = 0
    for name, child in list(module.named_children()):
        if type(child) is nn.GroupNorm:
            norm = FrameGroupNorm(child.num_groups, child.num_channels, child.eps, child.affine)
            if child.affine:
                norm.weight, norm.bias = child.weight, child.bias
            setattr(module, name, norm)
            count += 1
        else:
            count += make_frame_causal(child)
    return count


@dataclass
class LandmarkGuiderConfig:
    """The encoder half of an AutoencoderKLCogVideoX config (same names), plus the latent scaling."""

    in_channels: int = 3
    latent_channels: int = 16
    down_block_types: tuple[str, ...] = ("CogVideoXDownBlock3D",) * 4
    block_out_channels: tuple[int, ...] = (128, 256, 256, 512)
    layers_per_block: int = 3
    norm_num_groups: int = 32
    norm_eps: float = 1e-6
    temporal_compression_ratio: int = 4
    scaling_factor: float = 0.7  # CogVideoX-5B VAE
    causal: bool = True  # per-frame GroupNorm (ours); False: the release's VAE encode (see the module docstring)
    frame_batch: int = 8  # causal=False: frames per encoder call, as AutoencoderKLCogVideoX.encode

    @classmethod
    def from_vae_config(cls, vae_config: dict) -> "LandmarkGuiderConfig":
        keys = {f for f in cls.__dataclass_fields__}
        kw = {k: (tuple(v) if isinstance(v, list) else v) for k, v in dict(vae_config).items() if k in keys}
        return cls(**kw)


class CausalLandmarkGuider(nn.Module):
    """SkyReels-A1 3D landmark guider: (b, 3, F, H, W) guidance frames in [-1, 1] -> (b, f, c, h, w) latents
    (CogVideoX transformer layout, f = (F - 1) / ratio + 1), causal in time (see the module docstring)."""

    def __init__(self, config: LandmarkGuiderConfig | None = None):
        super().__init__()
        self.config = config = config or LandmarkGuiderConfig()
        self.encoder = CogVideoXEncoder3D(
            in_channels=config.in_channels, out_channels=config.latent_channels,
            down_block_types=tuple(config.down_block_types), block_out_channels=tuple(config.block_out_channels),
            layers_per_block=config.layers_per_block, norm_eps=config.norm_eps,
            norm_num_groups=config.norm_num_groups, temporal_compression_ratio=config.temporal_compression_ratio)
        if config.causal:
            make_frame_causal(self.encoder)

    def load_vae_encoder(self, vae_state: dict[str, torch.Tensor]) -> None:
        """Initialise from a CogVideoX VAE state dict (its `encoder.*` keys, strict): the paper's init."""
        enc = {k[len("encoder."):]: v for k, v in vae_state.items() if k.startswith("encoder.")}
        self.encoder.load_state_dict(enc, strict=True)

    def last_input_frame(self, j: int) -> int:
        """Index of the last guidance frame latent frame j can see."""
        return j * self.config.temporal_compression_ratio

    def moments(self, frames: torch.Tensor) -> torch.Tensor:
        """(b, 3, F, H, W) -> (b, 2c, f, h, w) posterior moments (mean and log-variance halves)."""
        if self.config.causal:
            return self.encoder(frames)[0]
        # the release: every batch item on its own, frames in batches carrying the conv cache
        n, rest = max(frames.shape[2] // self.config.frame_batch, 1), frames.shape[2] % self.config.frame_batch
        out = []
        for item in frames.split(1):
            cache, parts = None, []
            for i in range(n):
                start = self.config.frame_batch * i + (rest if i else 0)
                part, cache = self.encoder(item[:, :, start:self.config.frame_batch * (i + 1) + rest],
                                           conv_cache=cache)
                parts.append(part)
            out.append(torch.cat(parts, dim=2))
        return torch.cat(out)

    def forward(self, frames: torch.Tensor) -> torch.Tensor:
        mean = self.moments(frames)[:, : self.config.latent_channels]
        return rearrange(mean * self.config.scaling_factor, "b c f h w -> b f c h w")


# ------------------------------------------------------------------ the release's landmark drawing
# SkyReels-A1's inference draws FaceMesh landmarks with MediaPipe's drawing utilities in its own colours (a
# FaceMeshVisualizer2d with no forehead edge, no head outline, no iris rings): 1-px eye and eyebrow edges, the
# lips as eight coloured runs, 2x2 pupils and a 4x4 nose tip, into a canvas the size of the face box that is
# then pasted into a black frame. Colours are RGB as the release's frames hold them.
RELEASE_LIPS = {  # (start, end) runs of landmark indices -> colour
    (61, 146, 91, 181, 84, 17): (10, 180, 20), (17, 314, 405, 321, 375, 291): (20, 10, 180),
    (78, 95, 88, 178, 87, 14): (100, 100, 30), (14, 317, 402, 318, 324, 308): (100, 150, 50),
    (61, 185, 40, 39, 37, 0): (20, 80, 100), (0, 267, 269, 270, 409, 291): (80, 100, 20),
    (78, 191, 80, 81, 82, 13): (120, 100, 200), (13, 312, 311, 310, 415, 308): (150, 120, 100),
}
RELEASE_EYES = {"LEFT_EYE": (180, 200, 10), "RIGHT_EYE": (10, 200, 180),
                "LEFT_EYEBROW": (180, 220, 10), "RIGHT_EYEBROW": (10, 220, 180)}
RELEASE_POINTS = ((468, 1, (10, 200, 250)), (473, 1, (250, 200, 10)), (4, 2, (200, 200, 200)))  # idx, half, colour


def _release_edges() -> dict[tuple[int, int], tuple[int, int, int]]:
    from mediapipe.tasks.python.vision import FaceLandmarksConnections as C

    edges = {}
    for name, colour in RELEASE_EYES.items():
        for c in getattr(C, f"FACE_LANDMARKS_{name}"):
            edges[(c.start, c.end)] = colour
    for run, colour in RELEASE_LIPS.items():
        edges.update({(a, b): colour for a, b in zip(run[:-1], run[1:])})
    return edges


def draw_release_landmarks(normed: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """(478, >=2) landmarks normalised to a face box (0..1) -> (h, w, 3) uint8 canvas of `size` (w, h), drawn
    as the release draws them (MediaPipe's pixel rounding: floor, points outside [0, 1] skipped)."""
    w, h = size
    canvas = np.zeros((h, w, 3), np.uint8)
    xy = np.asarray(normed, np.float64)[:, :2]
    inside = (xy >= 0).all(1) & (xy <= 1).all(1)
    px = np.stack([np.minimum(np.floor(xy[:, 0] * w), w - 1), np.minimum(np.floor(xy[:, 1] * h), h - 1)], 1)
    px = np.where(np.isfinite(px), px, 0).astype(int)
    for (a, b), colour in _release_edges().items():
        if inside[a] and inside[b]:
            cv2.line(canvas, tuple(int(v) for v in px[a]), tuple(int(v) for v in px[b]), colour, 1)
    for idx, half, colour in RELEASE_POINTS:
        if inside[idx] and xy[idx, 0] < 1 and xy[idx, 1] < 1:
            x, y = int(w * xy[idx, 0]), int(h * xy[idx, 1])
            canvas[max(y - half, 0):y + half, max(x - half, 0):x + half] = colour
    return canvas


def release_control_frames(points: np.ndarray, box: tuple[int, int, int, int], frame: tuple[int, int]) -> np.ndarray:
    """(f, 478, >=2) landmarks in frame pixels -> (f, H, W, 3) uint8: each drawn the release's way into the face
    box (x0, y0, x1, y1) of an otherwise black frame of size `frame` (W, H)."""
    x0, y0, x1, y1 = box
    bw, bh = x1 - x0, y1 - y0
    out = np.zeros((len(points), frame[1], frame[0], 3), np.uint8)
    for k, pts in enumerate(np.asarray(points, np.float64)):
        normed = (pts[:, :2] - [x0, y0]) / [bw, bh]
        out[k, y0:y1, x0:x1] = draw_release_landmarks(normed, (bw, bh))
    return out
