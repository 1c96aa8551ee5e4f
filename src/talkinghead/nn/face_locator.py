"""Hallo / EchoMimic face locator: a light conv encoder of a region (or landmark) image whose features are
added to the denoising UNet's first conv output, telling it where the face is."""
from __future__ import annotations

import torch
import torch.nn.functional as F
from einops import rearrange
from torch import nn


class FaceLocator(nn.Module):
    """conv_in, then per stage a conv and a stride-2 conv, then conv_out; SiLU between convs.

    With `block_out_channels` of length k the output is at 1/2^(k-1) of the input size (1/8 for the
    default 4 stages, the latent size of an SD VAE). Keys `conv_in`, `blocks.N`, `conv_out` match the
    official `face_locator.` entries. Applied per frame: (b, c, f, H, W) -> (b, C, f, H/8, W/8).
    """

    def __init__(self, embedding_channels: int = 320, conditioning_channels: int = 3,
                 block_out_channels: tuple[int, ...] = (16, 32, 64, 128)):
        super().__init__()
        self.conv_in = nn.Conv2d(conditioning_channels, block_out_channels[0], 3, padding=1)
        self.blocks = nn.ModuleList()
        for c_in, c_out in zip(block_out_channels[:-1], block_out_channels[1:]):
            self.blocks.append(nn.Conv2d(c_in, c_in, 3, padding=1))
            self.blocks.append(nn.Conv2d(c_in, c_out, 3, padding=1, stride=2))
        self.conv_out = nn.Conv2d(block_out_channels[-1], embedding_channels, 3, padding=1)
        nn.init.zeros_(self.conv_out.weight)  # starts as "no location signal" when trained from scratch
        nn.init.zeros_(self.conv_out.bias)

    def forward(self, condition: torch.Tensor) -> torch.Tensor:
        video = condition.ndim == 5
        b = condition.shape[0]
        x = rearrange(condition, "b c f h w -> (b f) c h w") if video else condition
        x = F.silu(self.conv_in(x))
        for conv in self.blocks:
            x = F.silu(conv(x))
        x = self.conv_out(x)
        return rearrange(x, "(b f) c h w -> b c f h w", b=b) if video else x
