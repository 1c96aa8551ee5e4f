"""EMO §3 speed layers: per-frame head-rotation speed -> bucket code -> embedding, injected by temporal attention."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import torch
from diffusers.models.attention_processor import Attention
from diffusers.models.embeddings import SinusoidalPositionalEmbedding, TimestepEmbedding
from einops import rearrange, repeat
from torch import nn


def rotation_matrices(angles: torch.Tensor) -> torch.Tensor:
    """(..., 3) yaw, pitch, roll in degrees -> (..., 3, 3), composed as Rz(roll) @ Ry(yaw) @ Rx(pitch) like
    the warp renderer's head rig (x right, y down, z into the image)."""
    yaw, pitch, roll = torch.deg2rad(angles).unbind(-1)
    one, zero = torch.ones_like(yaw), torch.zeros_like(yaw)

    def mat(*rows):
        return torch.stack([torch.stack(r, -1) for r in rows], -2)

    ry = mat((yaw.cos(), zero, -yaw.sin()), (zero, one, zero), (yaw.sin(), zero, yaw.cos()))
    rx = mat((one, zero, zero), (zero, pitch.cos(), -pitch.sin()), (zero, pitch.sin(), pitch.cos()))
    rz = mat((roll.cos(), -roll.sin(), zero), (roll.sin(), roll.cos(), zero), (zero, zero, one))
    return rz @ ry @ rx


def head_speed(angles: torch.Tensor, fps: float | None = None) -> torch.Tensor:
    """(..., f, 3) head yaw/pitch/roll in degrees -> (..., f) rotation speed.

    The speed of frame i is the geodesic angle between the head rotations of frames i-1 and i, in degrees
    per frame (degrees per second if `fps` is given). Frame 0 takes frame 1's speed; a single frame has 0.
    """
    f = angles.shape[-2]
    if f < 2:
        return angles.new_zeros(angles.shape[:-1])
    r = rotation_matrices(angles)  # (..., f, 3, 3)
    rel = r[..., 1:, :, :] @ r[..., :-1, :, :].transpose(-1, -2)  # (..., f-1, 3, 3)
    # angle of a rotation: 2 sin(a) = |axis part|, 2 cos(a) = trace - 1; atan2 stays exact for small steps
    skew = rel - rel.transpose(-1, -2)
    axis = torch.stack([skew[..., 2, 1], skew[..., 0, 2], skew[..., 1, 0]], -1)  # (..., f-1, 3)
    trace = rel.diagonal(dim1=-2, dim2=-1).sum(-1)
    step = torch.rad2deg(torch.atan2(axis.norm(dim=-1), trace - 1))  # (..., f-1)
    speed = torch.cat([step[..., :1], step], dim=-1)  # (..., f)
    return speed * fps if fps is not None else speed


@dataclass
class SpeedConfig:
    centers: tuple[float, ...] = (0.0, 0.25, 0.5, 1.0, 2.0, 4.0)  # bucket centres, degrees per frame
    radii: tuple[float, ...] = (0.125, 0.125, 0.25, 0.5, 1.0, 2.0)  # bucket radii, same units
    sharpness: float = 3.0  # EMO's factor inside the tanh
    dim: int = 1280  # embedding width (the UNet's timestep-embedding width for SD 1.5)

    def __post_init__(self) -> None:
        if len(self.centers) != len(self.radii) or not self.centers:
            raise ValueError(f"need one radius per bucket centre, got {len(self.centers)} and {len(self.radii)}")
        if min(self.radii) <= 0:
            raise ValueError(f"bucket radii must be > 0, got {self.radii}")


def speed_bucket_index(speed: torch.Tensor, centers: tuple[float, ...]) -> torch.Tensor:
    """(...) speeds -> (...) long index of the nearest bucket centre."""
    c = torch.tensor(centers, dtype=speed.dtype, device=speed.device)
    return (speed[..., None] - c).abs().argmin(-1)


def encode_speed(speed: torch.Tensor, config: SpeedConfig) -> torch.Tensor:
    """(...) speeds -> (..., buckets) EMO's soft bucket code: tanh(sharpness * (speed - centre_i) / radius_i).

    Buckets whose centre lies well below the speed read +1, well above -1, and the bucket the speed falls
    in reads in between (0 exactly at its centre), so the code varies smoothly with the speed.
    """
    c = torch.tensor(config.centers, dtype=speed.dtype, device=speed.device)
    r = torch.tensor(config.radii, dtype=speed.dtype, device=speed.device)
    return torch.tanh(config.sharpness * (speed[..., None] - c) / r)


class SpeedEmbedding(nn.Module):
    """(b, f) head speeds -> (b, f, dim) embedding: bucket code through an MLP (diffusers' TimestepEmbedding)."""

    def __init__(self, config: SpeedConfig | None = None):
        super().__init__()
        self.config = config or SpeedConfig()
        self.mlp = TimestepEmbedding(len(self.config.centers), self.config.dim)

    def forward(self, speed: torch.Tensor) -> torch.Tensor:
        return self.mlp(encode_speed(speed, self.config))


def add_speed_to_timestep(
    temb: torch.Tensor, speed_emb: torch.Tensor, mode: Literal["add", "concat"] = "add"
) -> torch.Tensor:
    """Per-frame timestep embedding from a clip's temb (b, t) and speed embeddings (b, f, d):
    "add" -> (b, f, t) (needs d == t); "concat" -> (b, f, t + d)."""
    temb = repeat(temb, "b t -> b f t", f=speed_emb.shape[1])
    if mode == "add":
        return temb + speed_emb
    if mode == "concat":
        return torch.cat([temb, speed_emb], dim=-1)
    raise ValueError(f"mode must be 'add' or 'concat', got {mode!r}")


class SpeedAttention(nn.Module):
    """Temporal cross-attention that injects speed: at every spatial position the f frame tokens (queries)
    attend over the clip's f speed embeddings (keys/values); both carry sinusoidal frame positions so a
    frame can tell its own speed from its neighbours'. Pre-norm, residual, zero-initialised output."""

    def __init__(self, dim: int, speed_dim: int, heads: int = 8, dim_head: int = 64, max_frames: int = 64):
        super().__init__()
        self.norm = nn.LayerNorm(dim)
        self.frame_pos = SinusoidalPositionalEmbedding(dim, max_frames)
        self.speed_pos = SinusoidalPositionalEmbedding(speed_dim, max_frames)
        self.attn = Attention(query_dim=dim, cross_attention_dim=speed_dim, heads=heads, dim_head=dim_head)
        nn.init.zeros_(self.attn.to_out[0].weight)
        nn.init.zeros_(self.attn.to_out[0].bias)

    def forward(self, x: torch.Tensor, speed_emb: torch.Tensor) -> torch.Tensor:
        """x: (b, f, n, c) latent tokens; speed_emb: (b, f, d) from SpeedEmbedding."""
        b, f, n, _ = x.shape
        if f > self.frame_pos.pe.shape[1]:
            raise ValueError(f"{f} frames exceed max_frames={self.frame_pos.pe.shape[1]}")
        h = self.frame_pos(rearrange(self.norm(x), "b f n c -> (b n) f c"))
        context = repeat(self.speed_pos(speed_emb), "b f d -> (b n) f d", n=n)
        out = self.attn(h, encoder_hidden_states=context)  # ((b n), f, c)
        return x + rearrange(out, "(b n) f c -> b f n c", b=b)

