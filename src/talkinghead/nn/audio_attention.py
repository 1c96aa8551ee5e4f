"""Hallo §3.2 hierarchical audio-driven visual synthesis: per-frame cross-attention to audio tokens, split
into pose (full), expression (face) and lip branches, each masked to its region, passed through a
zero-initialised 1x1 conv and weighted (adaptive fusion). Without `hierarchical` it is a plain audio
cross-attention layer (EMO-style). With `text_dim`, a text AdaLN (Hallo2's textual prompt control) follows
the audio cross-attention, modulated by a pooled prompt embedding."""
from __future__ import annotations

import torch
from diffusers.models.attention import FeedForward
from diffusers.models.attention_processor import Attention
from torch import nn

from .text_adaln import TextAdaLN

BRANCHES = ("full", "face", "lip")  # pose, expression, lip — the order of Hallo's motion_scale weights


def _zero_conv(dim: int) -> nn.Conv2d:
    conv = nn.Conv2d(dim, dim, kernel_size=1)
    nn.init.zeros_(conv.weight)
    nn.init.zeros_(conv.bias)
    return conv


class AudioAttentionBlock(nn.Module):
    """Self-attention, then audio cross-attention (one or three masked branches), then (with `text_dim`) the
    prompt's adaptive layer norm, then feed-forward. The text AdaLN starts as the identity (adaLN-Zero), so
    a block with it computes what the block without it does until its weights are trained."""

    def __init__(self, dim: int, heads: int, dim_head: int, audio_dim: int, hierarchical: bool,
                 text_dim: int | None = None):
        super().__init__()
        self.hierarchical = hierarchical
        self.norm1 = nn.LayerNorm(dim)
        self.attn1 = Attention(query_dim=dim, heads=heads, dim_head=dim_head)
        self.norm2 = nn.LayerNorm(dim)
        if hierarchical:
            for i, branch in enumerate(BRANCHES):
                self.add_module(f"attn2_{i}", Attention(dim, cross_attention_dim=audio_dim, heads=heads, dim_head=dim_head))
                self.add_module(f"zero_conv_{branch}", _zero_conv(dim))
        else:
            self.attn2 = Attention(dim, cross_attention_dim=audio_dim, heads=heads, dim_head=dim_head)
        self.text_adaln = TextAdaLN(dim, text_dim) if text_dim is not None else None
        self.ff = FeedForward(dim, activation_fn="geglu")
        self.norm3 = nn.LayerNorm(dim)

    def forward(self, x: torch.Tensor, audio: torch.Tensor, masks: dict[str, torch.Tensor] | None = None,
                weights: tuple[float, float, float] | None = None, text: torch.Tensor | None = None) -> torch.Tensor:
        # x: (n, h*w, c) with n = b*f; audio: (n, tokens, audio_dim); masks[branch]: (n, h*w);
        # text: (n, text_dim) pooled prompt embedding (used only by a block built with text_dim)
        x = self.attn1(self.norm1(x)) + x
        normed = self.norm2(x)
        if not self.hierarchical:
            x = self.attn2(normed, encoder_hidden_states=audio) + x
        else:
            if masks is None:
                raise ValueError("hierarchical audio attention needs full/face/lip masks")
            n, hw, c = x.shape
            side = int(round(hw ** 0.5))
            if side * side != hw:
                raise ValueError(f"hierarchical audio attention needs square feature maps, got {hw} tokens")
            branches = []
            for i, branch in enumerate(BRANCHES):
                y = getattr(self, f"attn2_{i}")(normed, encoder_hidden_states=audio) * masks[branch][:, :, None]
                y = y.reshape(n, side, side, c).permute(0, 3, 1, 2)
                y = getattr(self, f"zero_conv_{branch}")(y).permute(0, 2, 3, 1).reshape(n, hw, c)
                branches.append(y)
            if weights is None:
                x = branches[0] + branches[1] + branches[2] + x
            else:
                x = weights[0] * branches[0] + weights[1] * branches[1] + weights[2] * branches[2] + x
        if text is not None and self.text_adaln is not None:
            x = self.text_adaln(x, text)
        return self.ff(self.norm3(x)) + x


class AudioAttentionModule(nn.Module):
    """GroupNorm → 1x1 conv in → `AudioAttentionBlock` → 1x1 conv out → residual, on ((b f), c, h, w).

    `level` is the mask-pyramid level this module reads (Hallo: down block i → i, mid → 3, up block i → 3-i).
    Keys `norm`, `proj_in`, `transformer_blocks.0.*`, `proj_out` match Hallo's `audio_modules.N.` entries;
    `text_dim` adds `transformer_blocks.0.text_adaln.*` (a text variant: not in any official checkpoint).
    """

    def __init__(self, channels: int, inner_dim: int, heads: int, audio_dim: int, level: int,
                 hierarchical: bool = True, norm_num_groups: int = 32, text_dim: int | None = None):
        super().__init__()
        self.level = level
        self.norm = nn.GroupNorm(norm_num_groups, channels, eps=1e-6)
        self.proj_in = nn.Conv2d(channels, inner_dim, kernel_size=1)
        self.transformer_blocks = nn.ModuleList(
            [AudioAttentionBlock(inner_dim, heads, inner_dim // heads, audio_dim, hierarchical, text_dim)])
        self.proj_out = nn.Conv2d(inner_dim, channels, kernel_size=1)

    def forward(self, x: torch.Tensor, audio: torch.Tensor, masks: dict[str, list[torch.Tensor]] | None = None,
                weights: tuple[float, float, float] | None = None, text: torch.Tensor | None = None) -> torch.Tensor:
        residual = x
        n, _, h, w = x.shape
        x = self.proj_in(self.norm(x))
        inner = x.shape[1]
        x = x.permute(0, 2, 3, 1).reshape(n, h * w, inner)
        level_masks = None if masks is None else {k: v[self.level] for k, v in masks.items()}
        for block in self.transformer_blocks:
            x = block(x, audio, level_masks, weights, text)
        x = x.reshape(n, h, w, inner).permute(0, 3, 1, 2).contiguous()
        return self.proj_out(x) + residual
