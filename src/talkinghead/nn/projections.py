"""Hallo §3.1 condition projections: a face-identity embedding and wav2vec audio windows → cross-attention tokens."""
from __future__ import annotations

import torch
from einops import rearrange
from torch import nn


class ImageProjection(nn.Module):
    """A 512-d face embedding → `n_tokens` tokens of the UNet's cross-attention width (IP-Adapter style).

    Keys `proj`, `norm` match Hallo's `imageproj.` checkpoint entries.
    """

    def __init__(self, cross_attention_dim: int = 768, embedding_dim: int = 512, n_tokens: int = 4):
        super().__init__()
        self.cross_attention_dim = cross_attention_dim
        self.n_tokens = n_tokens
        self.proj = nn.Linear(embedding_dim, n_tokens * cross_attention_dim)
        self.norm = nn.LayerNorm(cross_attention_dim)

    def forward(self, embedding: torch.Tensor) -> torch.Tensor:  # (b, 512) -> (b, n_tokens, dim)
        tokens = self.proj(embedding).reshape(-1, self.n_tokens, self.cross_attention_dim)
        return self.norm(tokens)


class AudioProjection(nn.Module):
    """A window of wav2vec hidden states per video frame → `n_tokens` audio tokens per frame.

    Input (b, f, window, layers, channels): for each frame the ±2 neighbouring frames' hidden states of
    every wav2vec layer (see `audio.wav2vec.audio_windows`). Keys `proj1..3`, `norm` match Hallo's `audioproj.`.
    """

    def __init__(self, window: int = 5, layers: int = 12, channels: int = 768, hidden_dim: int = 512,
                 output_dim: int = 768, n_tokens: int = 32):
        super().__init__()
        self.n_tokens = n_tokens
        self.output_dim = output_dim
        self.proj1 = nn.Linear(window * layers * channels, hidden_dim)
        self.proj2 = nn.Linear(hidden_dim, hidden_dim)
        self.proj3 = nn.Linear(hidden_dim, n_tokens * output_dim)
        self.norm = nn.LayerNorm(output_dim)

    def forward(self, windows: torch.Tensor) -> torch.Tensor:  # (b, f, w, l, c) -> (b, f, n_tokens, dim)
        b = windows.shape[0]
        x = rearrange(windows, "b f w l c -> (b f) (w l c)")
        x = torch.relu(self.proj1(x))
        x = torch.relu(self.proj2(x))
        tokens = self.norm(self.proj3(x).reshape(-1, self.n_tokens, self.output_dim))
        return rearrange(tokens, "(b f) n c -> b f n c", b=b)
