"""MIDAS (arXiv 2508.19320) deep-compression video autoencoder parts: DC-AE's residual space-to-channel blocks
(64x spatial, 128 channels) with a causal 3D convolution and a RoPE temporal attention after each spatial block,
no temporal compression, each pass reading and updating a cache of the last frames' states (streaming). The model
that joins them, `DCVideoAutoencoder`, is in systems/midas/model.py."""
from __future__ import annotations

import fnmatch
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from diffusers.models.autoencoders.autoencoder_dc import DCDownBlock2d, DCUpBlock2d, ResBlock
from diffusers.models.normalization import RMSNorm
from einops import rearrange
from torch import nn

from .causal_conv import CausalConv3d, CausalTemporalAttention, StreamCache

TEMPORAL_PATTERNS = ("*.temporal_conv.*", "*.temporal_attn.*")  # parameter names of the temporal modules


@dataclass
class DCVideoAEConfig:
    """Defaults are the paper's size (64x spatial compression, 128 latent channels); tests pass tiny widths.
    The spatial compression is 2 ** (len(block_channels) - 1)."""

    block_channels: tuple[int, ...] = (128, 256, 512, 512, 1024, 1024, 1024)  # full resolution -> latent grid
    layers_per_block: int = 1  # spatial residual blocks per level (each followed by the temporal modules)
    latent_channels: int = 128
    temporal_kernel: int = 3  # frames one causal convolution reads
    head_dim: int = 32  # temporal attention head width
    cache_frames: int = 5  # past frames a streaming pass keeps (attention window and convolution history)
    scaling_factor: float = 1.0  # latents are multiplied by this after encoding (set from data statistics)

    def __post_init__(self) -> None:
        self.block_channels = tuple(self.block_channels)
        if self.temporal_kernel - 1 > self.cache_frames:
            raise ValueError(f"temporal_kernel {self.temporal_kernel} needs more than cache_frames {self.cache_frames}")
        for a, b in zip(self.block_channels, self.block_channels[1:]):
            if (4 * a) % b or (4 * b) % a or b % 4:
                raise ValueError(f"space-to-channel from {a} to {b} channels needs 4*{a} divisible by {b} and back")

    @classmethod
    def tiny(cls, **overrides) -> "DCVideoAEConfig":
        """4x compression, 8 latent channels: for tests and CPU benchmarks."""
        return cls(**{**dict(block_channels=(8, 16, 32), latent_channels=8, head_dim=8), **overrides})

    @property
    def spatial_compression(self) -> int:
        return 2 ** (len(self.block_channels) - 1)


class CausalConvBlock(nn.Module):
    """Pre-norm residual causal 3D convolution, zero-initialised so it starts as the identity."""

    def __init__(self, channels: int, temporal_kernel: int):
        super().__init__()
        self.norm = nn.GroupNorm(1, channels, eps=1e-6)
        self.conv = CausalConv3d(channels, channels, temporal_kernel)
        nn.init.zeros_(self.conv.conv.weight)
        nn.init.zeros_(self.conv.conv.bias)

    def forward(self, x: torch.Tensor, cache: StreamCache | None) -> torch.Tensor:
        b = x.shape[0]
        h = rearrange(self.norm(rearrange(x, "b c f h w -> (b f) c h w")), "(b f) c h w -> b c f h w", b=b)
        return x + self.conv(F.silu(h), cache)


class SpatioTemporalLevel(nn.Module):
    """One resolution: [spatial residual block -> causal 3D conv -> RoPE temporal attention] x layers."""

    def __init__(self, channels: int, config: DCVideoAEConfig):
        super().__init__()
        n = config.layers_per_block
        self.spatial = nn.ModuleList(ResBlock(channels, channels, norm_type="rms_norm", act_fn="silu")
                                     for _ in range(n))
        self.temporal_conv = nn.ModuleList(CausalConvBlock(channels, config.temporal_kernel) for _ in range(n))
        self.temporal_attn = nn.ModuleList(
            CausalTemporalAttention(channels, min(config.head_dim, channels), config.cache_frames) for _ in range(n))

    def forward(self, x: torch.Tensor, cache: StreamCache | None, start: int) -> torch.Tensor:
        b = x.shape[0]  # x: (b, c, f, h, w)
        for spatial, conv, attn in zip(self.spatial, self.temporal_conv, self.temporal_attn):
            x = rearrange(spatial(rearrange(x, "b c f h w -> (b f) c h w")), "(b f) c h w -> b c f h w", b=b)
            x = attn(conv(x, cache), cache, start)
        return x


def _per_frame(module: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """Apply a 2D module to every frame of (b, c, f, h, w)."""
    b = x.shape[0]
    return rearrange(module(rearrange(x, "b c f h w -> (b f) c h w")), "(b f) c h w -> b c f h w", b=b)


class ChannelRMSNorm(RMSNorm):
    """diffusers' RMSNorm over the channel axis of (n, c, h, w)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return super().forward(x.movedim(1, -1)).movedim(-1, 1)


class VideoEncoder(nn.Module):
    def __init__(self, config: DCVideoAEConfig):
        super().__init__()
        ch = config.block_channels
        self.conv_in = nn.Conv2d(3, ch[0], 3, padding=1)
        self.levels = nn.ModuleList(SpatioTemporalLevel(c, config) for c in ch)
        self.down = nn.ModuleList(DCDownBlock2d(a, b, downsample=True, shortcut=True) for a, b in zip(ch, ch[1:]))
        self.conv_out = nn.Conv2d(ch[-1], config.latent_channels, 3, padding=1)
        self.out_group = ch[-1] // config.latent_channels if ch[-1] % config.latent_channels == 0 else 0

    def forward(self, frames: torch.Tensor, cache: StreamCache | None, start: int) -> torch.Tensor:
        x = _per_frame(self.conv_in, rearrange(frames, "b f c h w -> b c f h w"))
        for i, level in enumerate(self.levels):
            x = level(x, cache, start)
            if i < len(self.down):
                x = _per_frame(self.down[i], x)  # residual space-to-channel: (h, w) / 2, channels up
        z = _per_frame(self.conv_out, x)
        if self.out_group:  # DC-AE's channel-averaging shortcut into the latent
            z = z + rearrange(x, "b (c g) f h w -> b c g f h w", g=self.out_group).mean(dim=2)
        return rearrange(z, "b c f h w -> b f c h w")


class VideoDecoder(nn.Module):
    def __init__(self, config: DCVideoAEConfig):
        super().__init__()
        ch = tuple(reversed(config.block_channels))
        self.conv_in = nn.Conv2d(config.latent_channels, ch[0], 3, padding=1)
        self.in_repeats = ch[0] // config.latent_channels if ch[0] % config.latent_channels == 0 else 0
        self.levels = nn.ModuleList(SpatioTemporalLevel(c, config) for c in ch)
        self.up = nn.ModuleList(DCUpBlock2d(a, b, interpolate=False, shortcut=True) for a, b in zip(ch, ch[1:]))
        self.norm_out = ChannelRMSNorm(ch[-1], eps=1e-6)
        self.conv_out = nn.Conv2d(ch[-1], 3, 3, padding=1)

    def forward(self, latents: torch.Tensor, cache: StreamCache | None, start: int) -> torch.Tensor:
        z = rearrange(latents, "b f c h w -> b c f h w")
        x = _per_frame(self.conv_in, z)
        if self.in_repeats:
            x = x + z.repeat_interleave(self.in_repeats, dim=1)
        for i, level in enumerate(self.levels):
            x = level(x, cache, start)
            if i < len(self.up):
                x = _per_frame(self.up[i], x)  # residual channel-to-space: (h, w) * 2
        x = _per_frame(lambda t: self.conv_out(F.silu(self.norm_out(t))), x)
        return rearrange(x, "b c f h w -> b f c h w")


# ------------------------------------------------------------------ staged training


STAGE_TRAINS = ("spatial", "temporal", "all")  # configs/train/midas_ae1..3.yaml express these as patterns


def stage_parameters(ae: nn.Module, trains: str) -> list[nn.Parameter]:
    """Set requires_grad for a stage and return the trainable parameters: spatial (all but the temporal
    modules), temporal (only them) or all."""
    if trains not in STAGE_TRAINS:
        raise ValueError(f"trains must be one of {STAGE_TRAINS}, got {trains!r}")
    out = []
    for name, p in ae.named_parameters():
        temporal = any(fnmatch.fnmatch(name, pat) for pat in TEMPORAL_PATTERNS)
        p.requires_grad_(trains == "all" or (trains == "temporal") == temporal)
        if p.requires_grad:
            out.append(p)
    return out
