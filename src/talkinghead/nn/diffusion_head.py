"""MIDAS (arXiv 2508.19320) light diffusion head (MAR-style, no masked modelling): a small AdaLN MLP that denoises each
latent token conditioned on the autoregressive transformer's output for that token (rectified flow)."""
from __future__ import annotations

from dataclasses import dataclass

import torch
from diffusers.models.embeddings import TimestepEmbedding, Timesteps
from torch import nn

FLOW_TIMESTEPS = 1000.0  # sigma in [0, 1] is embedded as the timestep 1000 * sigma


@dataclass
class DiffusionHeadConfig:
    latent_channels: int = 128  # one token is one latent cell's channels
    cond_dim: int = 1024  # width of the transformer's output
    width: int = 1024
    layers: int = 3
    sample_steps: int = 4  # Euler steps when sampling (the paper uses four)
    shift: float = 1.0  # sigma shift s: s*sigma / (1 + (s - 1) sigma), for training and sampling


class AdaLNResBlock(nn.Module):
    """x + gate * MLP(LN(x) * (1 + scale) + shift), with (shift, scale, gate) from the condition."""

    def __init__(self, width: int):
        super().__init__()
        self.norm = nn.LayerNorm(width, elementwise_affine=False, eps=1e-6)
        self.mlp = nn.Sequential(nn.Linear(width, width), nn.SiLU(), nn.Linear(width, width))
        self.modulation = nn.Sequential(nn.SiLU(), nn.Linear(width, 3 * width))
        nn.init.zeros_(self.modulation[1].weight)
        nn.init.zeros_(self.modulation[1].bias)

    def forward(self, x: torch.Tensor, c: torch.Tensor) -> torch.Tensor:
        shift, scale, gate = self.modulation(c).chunk(3, dim=-1)
        return x + gate * self.mlp(self.norm(x) * (1 + scale) + shift)


class DiffusionHead(nn.Module):
    """Velocity v(x_sigma, sigma | z) for tokens x (n, C) and conditions z (n, cond_dim)."""

    def __init__(self, config: DiffusionHeadConfig | None = None):
        super().__init__()
        self.config = config = config or DiffusionHeadConfig()
        self.time_proj = Timesteps(256, flip_sin_to_cos=True, downscale_freq_shift=0)
        self.time_embed = TimestepEmbedding(256, config.width)
        self.cond_embed = nn.Linear(config.cond_dim, config.width)
        self.x_embed = nn.Linear(config.latent_channels, config.width)
        self.blocks = nn.ModuleList(AdaLNResBlock(config.width) for _ in range(config.layers))
        self.norm_out = nn.LayerNorm(config.width, elementwise_affine=False, eps=1e-6)
        self.out_modulation = nn.Sequential(nn.SiLU(), nn.Linear(config.width, 2 * config.width))
        self.proj_out = nn.Linear(config.width, config.latent_channels)
        nn.init.zeros_(self.proj_out.weight)
        nn.init.zeros_(self.proj_out.bias)

    def forward(self, x: torch.Tensor, sigma: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
        t = self.time_proj(sigma.reshape(-1) * FLOW_TIMESTEPS).to(x.dtype)  # (n, 256)
        c = self.time_embed(t) + self.cond_embed(z)  # (n, width)
        h = self.x_embed(x)
        for block in self.blocks:
            h = block(h, c)
        shift, scale = self.out_modulation(c).chunk(2, dim=-1)
        return self.proj_out(self.norm_out(h) * (1 + scale) + shift)

    def _shifted(self, sigma: torch.Tensor) -> torch.Tensor:
        s = self.config.shift
        return s * sigma / (1 + (s - 1) * sigma)

    @torch.no_grad()
    def sample(self, z: torch.Tensor, noise: torch.Tensor, steps: int | None = None) -> torch.Tensor:
        """Tokens (n, C) from starting noise (n, C) by Euler steps from sigma 1 to 0."""
        steps = steps or self.config.sample_steps
        sigmas = self._shifted(torch.linspace(1.0, 0.0, steps + 1, device=z.device))
        x = noise.to(z.dtype)
        for s, s_next in zip(sigmas[:-1], sigmas[1:]):
            x = x + (s_next - s) * self(x, s.expand(x.shape[0]), z)
        return x
