"""AnimateDiff temporal motion modules (the layout Hallo and EchoMimic use): self-attention across frames
at every spatial position, inserted after the spatial layers of an image UNet."""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from diffusers.models.attention import FeedForward
from diffusers.models.attention_processor import Attention
from einops import rearrange
from torch import nn


@dataclass
class TemporalConfig:
    """Hallo's `motion_module_kwargs` (AnimateDiff "Vanilla" motion module)."""

    num_attention_heads: int = 8
    num_transformer_block: int = 1
    attention_block_types: tuple[str, ...] = ("Temporal_Self", "Temporal_Self")
    temporal_position_encoding: bool = True
    temporal_position_encoding_max_len: int = 32
    temporal_attention_dim_div: int = 1
    norm_num_groups: int = 32

    @classmethod
    def from_dict(cls, d: dict) -> "TemporalConfig":
        known = {k: v for k, v in d.items() if k in cls.__dataclass_fields__}
        if "attention_block_types" in known:
            known["attention_block_types"] = tuple(known["attention_block_types"])
        return cls(**known)


class SinusoidalPositions(nn.Module):
    """Adds fixed sin/cos frame-index encodings; `pe` is a persistent buffer, as in the official checkpoints."""

    def __init__(self, dim: int, max_len: int):
        super().__init__()
        position = torch.arange(max_len).unsqueeze(1)
        div = torch.exp(torch.arange(0, dim, 2) * (-math.log(10000.0) / dim))
        pe = torch.zeros(1, max_len, dim)
        pe[0, :, 0::2] = torch.sin(position * div)
        pe[0, :, 1::2] = torch.cos(position * div)
        self.register_buffer("pe", pe)

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (n, f, c)
        if x.shape[1] > self.pe.shape[1]:
            raise ValueError(f"{x.shape[1]} frames exceed the temporal encoding length {self.pe.shape[1]}")
        return x + self.pe[:, : x.shape[1]]


class TemporalSelfAttention(Attention):
    """Self-attention over the frame axis of (positions, frames, channels) tokens, frame encodings added first."""

    def __init__(self, dim: int, heads: int, dim_head: int, max_len: int | None):
        super().__init__(query_dim=dim, heads=heads, dim_head=dim_head, bias=False)
        self.pos_encoder = SinusoidalPositions(dim, max_len) if max_len else None

    def forward(self, hidden_states: torch.Tensor, **kwargs) -> torch.Tensor:  # (n, f, c)
        if self.pos_encoder is not None:
            hidden_states = self.pos_encoder(hidden_states)
        return super().forward(hidden_states)


class TemporalTransformerBlock(nn.Module):
    """Pre-norm temporal self-attention layers, then a GEGLU feed-forward."""

    def __init__(self, dim: int, heads: int, dim_head: int, n_attention: int, max_len: int | None):
        super().__init__()
        self.attention_blocks = nn.ModuleList(
            [TemporalSelfAttention(dim, heads, dim_head, max_len) for _ in range(n_attention)])
        self.norms = nn.ModuleList([nn.LayerNorm(dim) for _ in range(n_attention)])
        self.ff = FeedForward(dim, activation_fn="geglu")
        self.ff_norm = nn.LayerNorm(dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (positions, frames, c)
        for attention, norm in zip(self.attention_blocks, self.norms):
            x = attention(norm(x)) + x
        return self.ff(self.ff_norm(x)) + x


class TemporalTransformer(nn.Module):
    """GroupNorm → linear in → temporal blocks → linear out (zero-initialised) → residual."""

    def __init__(self, channels: int, config: TemporalConfig):
        super().__init__()
        if any(t != "Temporal_Self" for t in config.attention_block_types):
            raise ValueError(f"only Temporal_Self attention blocks are supported, got {config.attention_block_types}")
        heads = config.num_attention_heads
        dim_head = channels // heads // config.temporal_attention_dim_div
        inner = heads * dim_head
        max_len = config.temporal_position_encoding_max_len if config.temporal_position_encoding else None
        self.norm = nn.GroupNorm(config.norm_num_groups, channels, eps=1e-6)
        self.proj_in = nn.Linear(channels, inner)
        self.transformer_blocks = nn.ModuleList(
            [TemporalTransformerBlock(inner, heads, dim_head, len(config.attention_block_types), max_len)
             for _ in range(config.num_transformer_block)])
        self.proj_out = nn.Linear(inner, channels)
        nn.init.zeros_(self.proj_out.weight)  # a fresh module is the identity
        nn.init.zeros_(self.proj_out.bias)

    def forward(self, x: torch.Tensor, num_frames: int) -> torch.Tensor:  # ((b f), c, h, w)
        residual = x
        _, _, h, w = x.shape
        x = rearrange(self.norm(x), "(b f) c h w -> (b h w) f c", f=num_frames)
        x = self.proj_in(x)
        for block in self.transformer_blocks:
            x = block(x)
        x = self.proj_out(x)
        return rearrange(x, "(b h w) f c -> (b f) c h w", h=h, w=w) + residual


class MotionModule(nn.Module):
    """The AnimateDiff wrapper: one `temporal_transformer` (key layout of the official checkpoints).

    `forward` takes frames folded into the batch, ((b f), c, h, w). `context` (b, c, m, h, w), when given,
    holds m earlier frames (Hallo's motion frames) that are prepended on the frame axis so the clip attends
    to them, and removed again from the output.
    """

    def __init__(self, channels: int, config: TemporalConfig):
        super().__init__()
        self.temporal_transformer = TemporalTransformer(channels, config)

    def forward(self, x: torch.Tensor, num_frames: int, context: torch.Tensor | None = None) -> torch.Tensor:
        if context is None or context.shape[2] == 0:
            return self.temporal_transformer(x, num_frames)
        m = context.shape[2]
        video = rearrange(x, "(b f) c h w -> b c f h w", f=num_frames)
        video = torch.cat([context.to(x.dtype), video], dim=2)
        out = self.temporal_transformer(rearrange(video, "b c f h w -> (b f) c h w"), num_frames + m)
        out = rearrange(out, "(b f) c h w -> b c f h w", f=num_frames + m)[:, :, m:]
        return rearrange(out, "b c f h w -> (b f) c h w")
