"""Hallo2 textual prompt control: adaptive layer norm whose scale, shift and gate come from a prompt embedding."""
from __future__ import annotations

import torch
from torch import nn


class TextAdaLN(nn.Module):
    """x + gate(t) * (LN(x) * (1 + scale(t)) + shift(t)), with t the embedding of an expression prompt.

    The projection that makes (scale, shift, gate) is zero-initialised (adaLN-Zero), so a freshly inserted
    layer is the identity and fine-tuning starts from the pretrained network's behaviour.

    The prompt embedding's leading dims line up with x's leading dims and broadcast over the rest:
    t (b, text_dim) modulates x (b, n, c) or (b, f, n, c) per sample; t (b, f, text_dim) modulates
    x (b, f, n, c) per frame, which is how a prompt that changes mid-video is applied.
    """

    def __init__(self, dim: int, text_dim: int):
        super().__init__()
        self.norm = nn.LayerNorm(dim, elementwise_affine=False, eps=1e-6)
        self.modulation = nn.Sequential(nn.SiLU(), nn.Linear(text_dim, 3 * dim))
        nn.init.zeros_(self.modulation[1].weight)
        nn.init.zeros_(self.modulation[1].bias)

    def forward(self, x: torch.Tensor, text: torch.Tensor) -> torch.Tensor:
        if x.ndim < text.ndim or x.shape[: text.ndim - 1] != text.shape[:-1]:
            raise ValueError(f"prompt embedding {tuple(text.shape)} does not line up with features {tuple(x.shape)}")
        mod = self.modulation(text)  # (..., 3c)
        mod = mod.view(*text.shape[:-1], *[1] * (x.ndim - text.ndim), mod.shape[-1])  # broadcast over tokens
        scale, shift, gate = mod.chunk(3, dim=-1)
        return x + gate * (self.norm(x) * (1 + scale) + shift)
