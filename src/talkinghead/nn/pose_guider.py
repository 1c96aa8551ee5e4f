"""EMO2 §3.2 stage-2 guidance: rendered hand maps with a per-frame hand-confidence embedding, and upper-limb
and leg keypoints (median-filtered over time) drawn as maps that a face-locator-style guider encodes."""
from __future__ import annotations

import torch
import torch.nn.functional as F
from diffusers.models.embeddings import TimestepEmbedding
from torch import nn

from ..face.body import HAND_BONES, LEG_BONES, UPPER_LIMB_BONES
from .face_locator import FaceLocator

GUIDE_CHANNELS = 4  # left hand, right hand, upper limbs, legs
LINE_SIGMA = 0.01  # Gaussian half-width of a drawn bone, fraction of the image's longer side
RENDER_MAX_SIDE = 128  # px: guidance maps are drawn at most this large, then upsampled
MEDIAN_KERNEL = 15  # frames (0.6 s at 25 fps): EMO2's large-kernel temporal median filter


def median_filter(points: torch.Tensor, kernel: int = MEDIAN_KERNEL, mask: torch.Tensor | None = None) -> torch.Tensor:
    """Temporal median filter of keypoint tracks: (f, ...) -> (f, ...), the edges padded by replication.

    With `mask` (f, k) (points (f, k, c)) only valid frames vote; a point with no valid frame in its
    window keeps its own value. `kernel` must be odd.
    """
    if kernel % 2 == 0 or kernel < 1:
        raise ValueError(f"kernel must be an odd number >= 1, got {kernel}")
    f, r = points.shape[0], kernel // 2
    if mask is None:
        flat = points.reshape(f, -1).T[:, None]  # (n, 1, f)
        padded = F.pad(flat, (r, r), mode="replicate")
        return padded.unfold(-1, kernel, 1).median(-1).values[:, 0].T.reshape(points.shape)
    vals = points.masked_fill(~mask[..., None].bool(), float("nan"))
    flat = vals.reshape(f, -1).T[:, None]  # (n, 1, f)
    padded = F.pad(flat, (r, r), mode="replicate")
    out = padded.unfold(-1, kernel, 1).nanmedian(-1).values[:, 0].T.reshape(points.shape)
    return torch.where(out.isnan(), points, out)


def draw_bones(points: torch.Tensor, visible: torch.Tensor, bones: tuple[tuple[int, int], ...],
               size: tuple[int, int], sigma: float = LINE_SIGMA) -> torch.Tensor:
    """Soft line drawing of a skeleton: (n, p, 2) points in [0, 1] image coordinates (x, y), (n, p) visibility
    -> (n, h, w) in [0, 1], the max over bones of exp(-d²/2σ²) with d the distance to the bone segment.
    A bone is drawn only when both its ends are visible. Vectorised; one frame's bones at a time in memory."""
    h, w = size
    ys = (torch.arange(h, dtype=points.dtype, device=points.device) + 0.5) / h
    xs = (torch.arange(w, dtype=points.dtype, device=points.device) + 0.5) / w
    pix = torch.stack(torch.meshgrid(xs, ys, indexing="xy"), -1)  # (h, w, 2)
    scale = torch.tensor([w, h], dtype=points.dtype, device=points.device) / max(h, w)  # isotropic distances
    a_idx = torch.tensor([i for i, _ in bones], device=points.device)
    b_idx = torch.tensor([j for _, j in bones], device=points.device)
    out = []
    for pts, vis in zip(points.nan_to_num(0.0), visible.bool()):
        a, b = pts[a_idx] * scale, pts[b_idx] * scale  # (s, 2)
        on = vis[a_idx] & vis[b_idx]  # (s,)
        ab = b - a
        rel = pix[None] * scale - a[:, None, None]  # (s, h, w, 2)
        t = ((rel * ab[:, None, None]).sum(-1) / (ab * ab).sum(-1).clamp(min=1e-12)[:, None, None]).clamp(0, 1)
        d2 = (rel - t[..., None] * ab[:, None, None]).pow(2).sum(-1)  # (s, h, w)
        lines = torch.exp(-d2 / (2 * sigma ** 2)) * on[:, None, None]
        out.append(lines.amax(0) if len(bones) else pix.new_zeros(h, w))
    return torch.stack(out)


def keypoint_heatmaps(points: torch.Tensor, visible: torch.Tensor, size: tuple[int, int],
                      sigma: float = 2 * LINE_SIGMA) -> torch.Tensor:
    """(n, p, 2) points in [0, 1], (n, p) visibility -> (n, p, h, w) Gaussian blobs (0 where invisible)."""
    h, w = size
    ys = (torch.arange(h, dtype=points.dtype, device=points.device) + 0.5) / h
    xs = (torch.arange(w, dtype=points.dtype, device=points.device) + 0.5) / w
    scale = max(h, w)
    dx = (xs[None, None, None, :] - points[..., 0, None, None]) * w / scale  # (n, p, 1, w)
    dy = (ys[None, None, :, None] - points[..., 1, None, None]) * h / scale  # (n, p, h, 1)
    maps = torch.exp(-(dx.pow(2) + dy.pow(2)) / (2 * sigma ** 2))
    return (maps * visible[..., None, None].to(maps.dtype)).nan_to_num(0.0)


def limb_heatmaps(points: torch.Tensor, visible: torch.Tensor, bones: tuple[tuple[int, int], ...],
                  size: tuple[int, int], sigma: float = 2 * LINE_SIGMA) -> torch.Tensor:
    """(n, p, 2), (n, p) -> (n, len(bones), h, w): one soft line map per limb."""
    return torch.stack([draw_bones(points, visible, (bone,), size, sigma) for bone in bones], 1)


def render_guidance(hands: torch.Tensor, hand_mask: torch.Tensor, body: torch.Tensor, body_mask: torch.Tensor,
                    size: tuple[int, int], sigma: float = LINE_SIGMA) -> torch.Tensor:
    """The stage-2 guidance maps of a clip: hands (f, 2, 21, ≥2) and body (f, 12, 2) in [0, 1] image
    coordinates with masks (f, 2) / (f, 12) -> (GUIDE_CHANNELS, f, h, w): left hand, right hand,
    upper limbs, legs. Drawn at a longer side of at most RENDER_MAX_SIDE, then upsampled."""
    h, w = size
    shrink = min(1.0, RENDER_MAX_SIDE / max(h, w))  # the lines are smooth: draw small, upsample bilinearly
    small = (max(1, round(h * shrink)), max(1, round(w * shrink)))
    hand_vis = hand_mask[:, :, None].expand(-1, -1, hands.shape[2])
    maps = [draw_bones(hands[:, k, :, :2], hand_vis[:, k], HAND_BONES, small, sigma) for k in range(2)]
    maps.append(draw_bones(body, body_mask, UPPER_LIMB_BONES, small, sigma))
    maps.append(draw_bones(body, body_mask, LEG_BONES, small, sigma))
    out = torch.stack(maps)  # (4, f, h', w')
    return out if small == (h, w) else F.interpolate(out, size=(h, w), mode="bilinear", align_corners=False)


def hand_confidence(hands: torch.Tensor, hand_mask: torch.Tensor) -> torch.Tensor:
    """Per-frame confidence of generated hands: the share of a hand's points inside the image ([0, 1]²),
    0 for a masked hand. (f, 2, 21, ≥2), (f, 2) -> (f, 2)."""
    xy = hands[..., :2]
    inside = ((xy >= 0) & (xy <= 1)).all(-1).float().mean(-1)  # (f, 2)
    return (inside * hand_mask.float()).nan_to_num(0.0)


class HandConfidenceEmbedding(nn.Module):
    """(b, f, 2) per-frame confidence of both hands -> (b, f, d) added to each frame's timestep embedding.
    Zero-initialised output: a no-op until trained."""

    def __init__(self, dim: int, hands: int = 2):
        super().__init__()
        self.mlp = TimestepEmbedding(hands, dim)
        nn.init.zeros_(self.mlp.linear_2.weight)
        nn.init.zeros_(self.mlp.linear_2.bias)

    def forward(self, confidence: torch.Tensor) -> torch.Tensor:
        return self.mlp(confidence)


class PoseGuider(FaceLocator):
    """The face locator's conv encoder on the 4 guidance channels (hands, upper limbs, legs): its features
    are added after the denoising UNet's conv_in. (b, 4, f, H, W) -> (b, C, f, H/8, W/8)."""

    def __init__(self, embedding_channels: int = 320, conditioning_channels: int = GUIDE_CHANNELS,
                 block_out_channels: tuple[int, ...] = (16, 32, 96, 256)):
        super().__init__(embedding_channels, conditioning_channels, block_out_channels)
