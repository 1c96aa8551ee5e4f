"""EMO2 §3.2 pose discriminator: a small ResNet on (predicted clean) latents that predicts keypoint and limb
heatmaps; its L2 error on the denoiser's x0 estimate is an extra loss during denoising training."""
from __future__ import annotations

from dataclasses import asdict, dataclass

import torch
from diffusers.models.resnet import ResnetBlock2D
from torch import nn
from torch.func import functional_call

from ..face.body import BODY_POINTS, LEG_BONES, UPPER_LIMB_BONES
from .pose_guider import keypoint_heatmaps, limb_heatmaps

LIMB_BONES = UPPER_LIMB_BONES + LEG_BONES
HEATMAP_SIGMA = 1.0  # latent pixels: blobs and limbs stay visible on an 8x-downsampled grid


@dataclass
class PoseDiscriminatorConfig:
    latent_channels: int = 4
    channels: tuple[int, ...] = (64, 128)  # one stage of 2 ResNet blocks per entry, same resolution throughout
    keypoints: int = len(BODY_POINTS)
    limbs: int = len(LIMB_BONES)
    norm_groups: int = 32

    @property
    def out_channels(self) -> int:
        return self.keypoints + self.limbs

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> "PoseDiscriminatorConfig":
        d = {k: v for k, v in d.items() if k in cls.__dataclass_fields__}
        if "channels" in d:
            d["channels"] = tuple(d["channels"])
        return cls(**d)


def pose_targets(body: torch.Tensor, body_mask: torch.Tensor, size: tuple[int, int],
                 sigma_px: float = HEATMAP_SIGMA) -> tuple[torch.Tensor, torch.Tensor]:
    """Heatmap targets at latent size for (n, 12, 2) keypoints in [0, 1] and (n, 12) visibility:
    (n, 12 + limbs, h, w) maps and (n, 12 + limbs) weights (1 where the point / both limb ends are visible)."""
    vis = body_mask.bool()
    sigma = sigma_px / max(size)
    maps = torch.cat([keypoint_heatmaps(body, vis, size, sigma), limb_heatmaps(body, vis, LIMB_BONES, size, sigma)], 1)
    limb_vis = torch.stack([vis[:, i] & vis[:, j] for i, j in LIMB_BONES], 1)
    return maps, torch.cat([vis, limb_vis], 1).to(maps.dtype)


class PoseDiscriminator(nn.Module):
    """(n, 4, h, w) latents -> (n, keypoints + limbs, h, w) predicted heatmaps in [0, 1] (sigmoid)."""

    def __init__(self, config: PoseDiscriminatorConfig | None = None):
        super().__init__()
        self.config = cfg = config or PoseDiscriminatorConfig()
        self.conv_in = nn.Conv2d(cfg.latent_channels, cfg.channels[0], 3, padding=1)
        blocks, c_in = [], cfg.channels[0]
        for c in cfg.channels:
            for _ in range(2):
                blocks.append(ResnetBlock2D(in_channels=c_in, out_channels=c, temb_channels=None,
                                            groups=min(cfg.norm_groups, c_in), groups_out=min(cfg.norm_groups, c)))
                c_in = c
        self.blocks = nn.ModuleList(blocks)
        self.norm_out = nn.GroupNorm(min(cfg.norm_groups, c_in), c_in)
        self.conv_out = nn.Conv2d(c_in, cfg.out_channels, 3, padding=1)

    def forward(self, latents: torch.Tensor) -> torch.Tensor:
        x = self.conv_in(latents)
        for block in self.blocks:
            x = block(x, None)
        return torch.sigmoid(self.conv_out(torch.nn.functional.silu(self.norm_out(x))))

    def frozen(self, latents: torch.Tensor) -> torch.Tensor:
        """The same forward with detached parameters: gradients reach the latents (the denoiser) only."""
        params = {k: v.detach() for k, v in self.named_parameters()}
        return functional_call(self, params, (latents,))

