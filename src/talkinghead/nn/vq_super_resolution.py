"""Hallo2 §3.3 high-resolution enhancement: VQ codes predicted with spatial + temporal attention, then decoded."""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import NamedTuple

import torch
from diffusers.models.attention import FeedForward
from diffusers.models.attention_processor import Attention
from diffusers.models.autoencoders.vae import Decoder, Encoder, VectorQuantizer
from diffusers.models.embeddings import get_2d_sincos_pos_embed
from einops import rearrange
from torch import nn


@dataclass
class VQSuperResolutionConfig:
    """Tiny defaults (tests); CodeFormer-sized ones are widths (64, 128, 128, 256, 256, 512), 1024 codes of
    256 channels, a 512-wide transformer with 9 layers."""

    scale: int = 2  # output side / input side, a power of two
    block_channels: tuple[int, ...] = (16, 32, 32)  # high-quality autoencoder widths, full resolution -> code grid
    layers_per_block: int = 1
    norm_groups: int = 8
    code_dim: int = 8  # width of a codebook entry
    codebook_size: int = 32
    commitment: float = 0.25  # beta: weight of ||z - sg(e)||^2 in the quantiser loss
    dim: int = 32  # transformer width
    heads: int = 4
    layers: int = 2

    def __post_init__(self) -> None:
        if self.scale < 1 or self.scale & (self.scale - 1):
            raise ValueError(f"scale must be a power of two, got {self.scale}")
        if self.lq_levels < 1:
            raise ValueError(f"block_channels {self.block_channels} has too few levels for scale {self.scale}")
        if self.dim % 4:
            raise ValueError(f"dim must be a multiple of 4 for 2D sin-cos positions, got {self.dim}")

    @property
    def lq_levels(self) -> int:
        """Levels of the low-quality encoder: the last ones of the high-quality autoencoder."""
        return len(self.block_channels) - int(math.log2(self.scale))

    @property
    def lq_factor(self) -> int:
        """Low-quality input side / code-grid side."""
        return 2 ** (self.lq_levels - 1)


class AutoencodeOutput(NamedTuple):
    sample: torch.Tensor  # (b, f, 3, H, W) reconstruction
    vq_loss: torch.Tensor  # codebook + commitment loss
    codes: torch.Tensor  # (b, f, h, w) long, index of each latent cell's codebook entry


class SpatioTemporalBlock(nn.Module):
    """Pre-norm transformer block: self-attention within each frame, then across frames at each position."""

    def __init__(self, dim: int, heads: int):
        super().__init__()
        self.spatial_norm = nn.LayerNorm(dim)
        self.spatial_attn = Attention(dim, heads=heads, dim_head=dim // heads)
        self.spatial_ff_norm = nn.LayerNorm(dim)
        self.spatial_ff = FeedForward(dim, mult=2, activation_fn="gelu")
        self.temporal_norm = nn.LayerNorm(dim)
        self.temporal_attn = Attention(dim, heads=heads, dim_head=dim // heads)
        self.temporal_ff_norm = nn.LayerNorm(dim)
        self.temporal_ff = FeedForward(dim, mult=2, activation_fn="gelu")

    def forward(self, x: torch.Tensor, frames: int) -> torch.Tensor:
        n = x.shape[1]  # x: ((b f), n, c)
        x = x + self.spatial_attn(self.spatial_norm(x))
        x = x + self.spatial_ff(self.spatial_ff_norm(x))
        x = rearrange(x, "(b f) n c -> (b n) f c", f=frames)
        x = x + self.temporal_attn(self.temporal_norm(x))
        x = x + self.temporal_ff(self.temporal_ff_norm(x))
        return rearrange(x, "(b n) f c -> (b f) n c", n=n)


class VQVideoSuperResolution(nn.Module):
    """CodeFormer-style restoration made temporal, upscaling by `scale`.

    Stage I (`autoencode`) learns a codebook of high-quality frame patches: encoder -> nearest-neighbour
    quantiser (straight-through gradients, codebook + commitment loss) -> decoder. Stage II (`code_logits`)
    learns to predict those codes from low-quality frames: a shallower encoder whose code grid matches the
    high-quality one, then transformer blocks alternating spatial and temporal self-attention, so the chosen
    codes agree across frames. `forward` decodes the most likely codes with the high-quality decoder.
    """

    def __init__(self, config: VQSuperResolutionConfig | None = None):
        super().__init__()
        c = self.config = config or VQSuperResolutionConfig()
        levels = len(c.block_channels)
        self.encoder = _encoder(c, c.block_channels)
        self.quantizer = VectorQuantizer(
            c.codebook_size, c.code_dim, beta=c.commitment, legacy=False, sane_index_shape=True
        )
        self.decoder = Decoder(
            in_channels=c.code_dim,
            out_channels=3,
            up_block_types=("UpDecoderBlock2D",) * levels,
            block_out_channels=c.block_channels,
            layers_per_block=c.layers_per_block,
            norm_num_groups=c.norm_groups,
        )
        self.lq_encoder = _encoder(c, c.block_channels[levels - c.lq_levels :])
        self.code_in = nn.Linear(c.code_dim, c.dim)
        self.blocks = nn.ModuleList(SpatioTemporalBlock(c.dim, c.heads) for _ in range(c.layers))
        self.code_head = nn.Sequential(nn.LayerNorm(c.dim), nn.Linear(c.dim, c.codebook_size, bias=False))

    def forward(self, video: torch.Tensor) -> torch.Tensor:
        """(b, f, 3, h, w) low-quality frames in [-1, 1] -> (b, f, 3, h*scale, w*scale) in [-1, 1]."""
        return self.decode(self.code_logits(video).argmax(-1)).clamp(-1.0, 1.0)

    def code_logits(self, video: torch.Tensor) -> torch.Tensor:
        """(b, f, 3, h, w) low-quality frames -> (b, f, h/k, w/k, codebook_size) logits, k = config.lq_factor."""
        b, f, _, h, w = video.shape
        k = self.config.lq_factor
        if h % k or w % k:
            raise ValueError(f"frame size {h}x{w} must be a multiple of {k}")
        z = self.lq_encoder(rearrange(video, "b f c h w -> (b f) c h w"))  # ((b f), code_dim, gh, gw)
        gh, gw = z.shape[-2:]
        x = self.code_in(rearrange(z, "bf c h w -> bf (h w) c"))  # ((b f), gh*gw, dim)
        x = x + get_2d_sincos_pos_embed(self.config.dim, (gh, gw), device=x.device).to(x.dtype)
        for block in self.blocks:
            x = block(x, f)
        return rearrange(self.code_head(x), "(b f) (h w) k -> b f h w k", b=b, h=gh)

    def decode(self, codes: torch.Tensor) -> torch.Tensor:
        """(b, f, h, w) codebook indices -> (b, f, 3, H, W) frames, H = h * 2**(levels - 1)."""
        b, f, gh, gw = codes.shape
        z = self.quantizer.get_codebook_entry(codes.flatten(), (b * f, gh, gw, self.config.code_dim))
        return rearrange(self.decoder(z), "(b f) c h w -> b f c h w", b=b)

    def autoencode(self, video: torch.Tensor) -> AutoencodeOutput:
        """Stage I on (b, f, 3, H, W) high-quality frames: reconstruction through the quantised codes."""
        b = video.shape[0]
        z = self.encoder(rearrange(video, "b f c h w -> (b f) c h w"))  # ((b f), code_dim, h, w)
        z_q, vq_loss, (_, _, codes) = self.quantizer(z)  # z_q carries straight-through gradients to z
        sample = rearrange(self.decoder(z_q), "(b f) c h w -> b f c h w", b=b)
        return AutoencodeOutput(sample, vq_loss, rearrange(codes, "(b f) h w -> b f h w", b=b))


def _encoder(config: VQSuperResolutionConfig, channels: tuple[int, ...]) -> Encoder:
    """Frames -> continuous code maps, downsampling by 2**(len(channels) - 1)."""
    return Encoder(
        in_channels=3,
        out_channels=config.code_dim,
        down_block_types=("DownEncoderBlock2D",) * len(channels),
        block_out_channels=channels,
        layers_per_block=config.layers_per_block,
        norm_num_groups=config.norm_groups,
        double_z=False,
    )
