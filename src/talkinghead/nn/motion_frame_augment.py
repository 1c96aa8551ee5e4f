"""Hallo2 §3.2 long-duration animation: patch-drop and Gaussian-noise augmentation of the motion frames."""
from __future__ import annotations

from dataclasses import dataclass

import torch
from diffusers.utils.torch_utils import randn_tensor
from torch import nn


@dataclass
class MotionFrameAugmentConfig:
    patch_size: int = 16  # side of the square patches that are dropped, in pixels (or latent cells)
    drop_rate: float = 0.25  # probability that a patch is zeroed (the official training config's mask_rate)
    noise_std: float = 0.05  # std of the added Gaussian noise, in the input's units ([-1, 1] pixels or latents)

    def __post_init__(self) -> None:
        if self.patch_size < 1:
            raise ValueError(f"patch_size must be >= 1, got {self.patch_size}")
        if not 0.0 <= self.drop_rate <= 1.0:
            raise ValueError(f"drop_rate must be in [0, 1], got {self.drop_rate}")
        if self.noise_std < 0.0:
            raise ValueError(f"noise_std must be >= 0, got {self.noise_std}")


class MotionFrameAugment(nn.Module):
    """Corrupts the appearance in the motion frames (the previous clip's last frames) so the denoiser keeps
    taking appearance from the reference image and only motion from the motion frames.

    In training each frame is cut into non-overlapping p×p patches (a partial patch at the right/bottom edge
    when p does not divide the size), each patch is zeroed independently with probability `drop_rate`, then
    Gaussian noise of std `noise_std` is added everywhere. In eval mode the frames pass through untouched.
    """

    def __init__(self, config: MotionFrameAugmentConfig | None = None):
        super().__init__()
        self.config = config or MotionFrameAugmentConfig()

    def forward(
        self,
        frames: torch.Tensor,
        generator: torch.Generator | None = None,
        keep: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """frames: (b, f, c, h, w). keep: optional bool mask broadcastable to (b, f, 1, h, w), True where
        pixels are never dropped (the official training code keeps the face region this way)."""
        if not self.training:
            return frames
        b, f, c, h, w = frames.shape
        p = self.config.patch_size
        grid = (b, f, 1, -(-h // p), -(-w // p))  # one keep/drop draw per patch, shared by the channels

        device = generator.device if generator is not None else frames.device
        kept = torch.rand(grid, generator=generator, device=device).to(frames.device) >= self.config.drop_rate
        mask = kept.repeat_interleave(p, dim=3).repeat_interleave(p, dim=4)[..., :h, :w]  # (b, f, 1, h, w)
        if keep is not None:
            mask = mask | keep.bool()

        noise = randn_tensor(frames.shape, generator=generator, device=frames.device, dtype=frames.dtype)
        return frames * mask + self.config.noise_std * noise  # (b, f, c, h, w)
