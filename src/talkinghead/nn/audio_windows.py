"""EMO §3 audio layers: each frame cross-attends to the audio features of its ±m neighbouring frames."""
from __future__ import annotations

import torch
from diffusers.models.attention_processor import Attention
from einops import rearrange
from torch import nn


def audio_windows(audio: torch.Tensor, radius: int = 2) -> torch.Tensor:
    """(b, f, n, d) per-frame audio tokens -> (b, f, (2m+1)*n, d), m = radius.

    Frame i gets the tokens of frames i-m .. i+m concatenated along the token axis, oldest first; frame
    indices outside the clip are clamped to its first / last frame.
    """
    if radius < 0:
        raise ValueError(f"radius must be >= 0, got {radius}")
    f = audio.shape[1]
    offsets = torch.arange(-radius, radius + 1, device=audio.device)  # (2m+1,)
    index = (torch.arange(f, device=audio.device)[:, None] + offsets).clamp(0, f - 1)  # (f, 2m+1)
    return rearrange(audio[:, index], "b f w n d -> b f (w n) d")


class AudioCrossAttention(nn.Module):
    """Pre-norm residual cross-attention from a frame's latent tokens to that frame's audio window.

    The output projection starts at zero, so the layer is the identity when inserted into a pretrained UNet.
    """

    def __init__(self, dim: int, audio_dim: int, heads: int = 8, dim_head: int = 64):
        super().__init__()
        self.norm = nn.LayerNorm(dim)
        self.attn = Attention(query_dim=dim, cross_attention_dim=audio_dim, heads=heads, dim_head=dim_head)
        nn.init.zeros_(self.attn.to_out[0].weight)
        nn.init.zeros_(self.attn.to_out[0].bias)

    def forward(self, x: torch.Tensor, audio: torch.Tensor) -> torch.Tensor:
        """x: (b, f, n, c) latent tokens; audio: (b, f, k, d) windows from `audio_windows`."""
        b, f = x.shape[:2]
        if audio.shape[:2] != (b, f):
            raise ValueError(f"audio windows {tuple(audio.shape)} do not match features {tuple(x.shape)}")
        h = rearrange(self.norm(x), "b f n c -> (b f) n c")
        context = rearrange(audio, "b f k d -> (b f) k d")
        out = self.attn(h, encoder_hidden_states=context)  # ((b f), n, c)
        return x + rearrange(out, "(b f) n c -> b f n c", b=b)
