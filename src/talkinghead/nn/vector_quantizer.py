"""MIDAS (arXiv 2508.19320) audio tokens: a trainable vector quantizer (VQ-VAE codebook, commitment loss and a
straight-through gradient) over Whisper-style features pooled to one token per 80 ms."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import NamedTuple

import torch
import torch.nn.functional as F
from einops import rearrange
from torch import nn


@dataclass
class VectorQuantizerConfig:
    codebook_size: int = 1024
    dim: int = 256  # width of one code
    commitment: float = 0.25  # beta: weight of ||z - sg(e)||^2


class Quantized(NamedTuple):
    quantized: torch.Tensor  # (..., dim): the chosen codes, with the input's gradient passed straight through
    indices: torch.Tensor  # (...) long
    loss: torch.Tensor  # codebook + beta * commitment, scalar


class VectorQuantizer(nn.Module):
    """(..., dim) vectors -> nearest codebook entries (Euclidean)."""

    def __init__(self, config: VectorQuantizerConfig | None = None):
        super().__init__()
        self.config = config = config or VectorQuantizerConfig()
        self.codebook = nn.Embedding(config.codebook_size, config.dim)
        nn.init.uniform_(self.codebook.weight, -1.0 / config.codebook_size, 1.0 / config.codebook_size)

    def indices(self, z: torch.Tensor) -> torch.Tensor:
        flat = z.reshape(-1, z.shape[-1])  # (n, dim)
        e = self.codebook.weight
        dist = flat.pow(2).sum(1, keepdim=True) - 2 * flat @ e.t() + e.pow(2).sum(1)[None]  # (n, codes)
        return dist.argmin(dim=1).reshape(z.shape[:-1])

    def forward(self, z: torch.Tensor) -> Quantized:
        idx = self.indices(z)
        e = self.codebook(idx)  # (..., dim)
        loss = F.mse_loss(e, z.detach()) + self.config.commitment * F.mse_loss(z, e.detach())
        return Quantized(z + (e - z).detach(), idx, loss)


@dataclass
class AudioTokenizerConfig:
    feature_dim: int = 1280  # Whisper-large encoder width
    frames_per_token: int = 4  # Whisper features come at 50 Hz (20 ms): 4 of them make one 80 ms token
    quantizer: VectorQuantizerConfig = field(default_factory=VectorQuantizerConfig)

    def __post_init__(self) -> None:
        if isinstance(self.quantizer, dict):
            self.quantizer = VectorQuantizerConfig(**self.quantizer)


class AudioTokenizer(nn.Module):
    """(b, n, feature_dim) Whisper-style features at 50 Hz -> (b, n / 4, dim) quantized tokens (one per 80 ms).
    Each token reads only its own 80 ms, so tokens are causal."""

    def __init__(self, config: AudioTokenizerConfig | None = None):
        super().__init__()
        self.config = config = config or AudioTokenizerConfig()
        self.proj = nn.Sequential(nn.LayerNorm(config.frames_per_token * config.feature_dim),
                                  nn.Linear(config.frames_per_token * config.feature_dim, config.quantizer.dim))
        self.quantizer = VectorQuantizer(config.quantizer)

    def forward(self, features: torch.Tensor) -> Quantized:
        k = self.config.frames_per_token
        if features.shape[1] % k:
            raise ValueError(f"{features.shape[1]} feature frames is not a whole number of {k}-frame tokens")
        grouped = rearrange(features, "b (n k) d -> b n (k d)", k=k)
        return self.quantizer(self.proj(grouped))
