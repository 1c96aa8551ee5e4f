"""Hallo4 §3.3 temporal motion modulation: per-video-frame audio features and skeleton motion features are
reshaped from T frames to the VAE's T' = T/ρ latent frames with ρ folded into the token axis, linearly
projected to the DiT width, and fused into each latent frame's video tokens by cross-attention with a
residual. The skeleton features come from keypoints drawn as Gaussian heatmaps and a small conv encoder."""
from __future__ import annotations

import torch
import torch.nn.functional as F
from einops import rearrange
from torch import nn

from .dit import DiTConditions, TokenCrossAttention, fold_to_latent_frames


def keypoint_heatmaps(keypoints: torch.Tensor, size: tuple[int, int], sigma: float = 1.5) -> torch.Tensor:
    """(..., K, 2) keypoints, x and y in [0, 1] of the image -> (..., K, H, W) Gaussian heatmaps (peak 1,
    `sigma` in heatmap pixels). Keypoints with a NaN coordinate (not detected) draw nothing."""
    h, w = size
    ys = torch.arange(h, device=keypoints.device, dtype=torch.float32)
    xs = torch.arange(w, device=keypoints.device, dtype=torch.float32)
    px = keypoints[..., 0:1].float() * (w - 1)  # (..., K, 1)
    py = keypoints[..., 1:2].float() * (h - 1)
    gx = torch.exp(-((xs - px) ** 2) / (2 * sigma**2))  # (..., K, W)
    gy = torch.exp(-((ys - py) ** 2) / (2 * sigma**2))  # (..., K, H)
    maps = gy[..., :, None] * gx[..., None, :]
    return torch.nan_to_num(maps, nan=0.0)


class SkeletonMotionEncoder(nn.Module):
    """Keypoints (b, T, K, 2) -> skeleton motion features (b, T, g², c): heatmaps, strided 3x3 convs with
    SiLU, then an adaptive average pool to a g×g grid of tokens per frame."""

    def __init__(self, keypoints: int = 68, channels: tuple[int, ...] = (32, 64, 128), heatmap_size: int = 64,
                 grid: int = 4, sigma: float = 1.5):
        super().__init__()
        self.heatmap_size, self.grid, self.sigma = heatmap_size, grid, sigma
        layers, c_in = [], keypoints
        for c in channels:
            layers += [nn.Conv2d(c_in, c, 3, stride=2, padding=1), nn.SiLU()]
            c_in = c
        self.convs = nn.Sequential(*layers)
        self.out_dim = c_in

    def forward(self, keypoints: torch.Tensor) -> torch.Tensor:
        b = keypoints.shape[0]
        maps = keypoint_heatmaps(keypoints, (self.heatmap_size,) * 2, self.sigma)  # (b, T, K, H, W)
        dtype = self.convs[0].weight.dtype
        x = self.convs(rearrange(maps, "b t k h w -> (b t) k h w").to(dtype))
        x = F.adaptive_avg_pool2d(x, self.grid)  # ((b T), c, g, g)
        return rearrange(x, "(b t) c h w -> b t (h w) c", b=b)


class TemporalMotionModulation(TokenCrossAttention):
    """The fusion layer of one DiT block. Reads `conditions.tokens["audio"]` (b, T, n_a, c_a) and
    `["motion"]` (b, T, n_m, c_m) per video frame; each is folded to (b, T', ρ·n, c), projected to the DiT
    width and concatenated on the token axis; latent frame k's video tokens attend to its ρ·(n_a + n_m)
    tokens, and the result is added to them (zero-initialised output: identity at the start)."""

    def __init__(self, dim: int, audio_dim: int, motion_dim: int, heads: int, head_dim: int):
        super().__init__(dim, dim, heads, head_dim)
        self.audio_in = nn.Linear(audio_dim, dim)
        self.motion_in = nn.Linear(motion_dim, dim)

    def motion_tokens(self, audio: torch.Tensor | None, motion: torch.Tensor | None, latent_frames: int
                      ) -> torch.Tensor | None:
        """(b, T', ρ·(n_a + n_m), dim) fused condition tokens, or None when neither signal is given."""
        parts = []
        if audio is not None:
            parts.append(self.audio_in(fold_to_latent_frames(audio, latent_frames).to(self.audio_in.weight.dtype)))
        if motion is not None:
            parts.append(self.motion_in(fold_to_latent_frames(motion, latent_frames).to(self.motion_in.weight.dtype)))
        return torch.cat(parts, dim=2) if parts else None

    def forward(self, x: torch.Tensor, conditions: DiTConditions | None) -> torch.Tensor:  # (b, T'·h·w, d)
        if conditions is None:
            return x
        tokens = self.motion_tokens(conditions.get("audio"), conditions.get("motion"), conditions.frames)
        if tokens is None:
            return x
        f = conditions.frames
        y = self.attend(rearrange(x, "b (f l) d -> (b f) l d", f=f), rearrange(tokens, "b f n c -> (b f) n c"))
        return rearrange(y, "(b f) l d -> b (f l) d", f=f)
