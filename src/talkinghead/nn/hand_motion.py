"""EMO2 §3.1 stage 1 (audio -> hand motion) pieces: the per-frame motion vector and its mask of missing hands,
hand speed buckets and amplitude, offset/style/CLIP embeddings added to the timestep embedding, and an
adaLN transformer block for the motion denoiser."""
from __future__ import annotations

from dataclasses import asdict, dataclass, field, replace

import torch
from diffusers.models.attention import FeedForward
from diffusers.models.attention_processor import Attention
from diffusers.models.embeddings import TimestepEmbedding
from torch import nn

from ..face.body import HAND_POINTS, N_HANDS, UPPER_LIMB
from .speed import SpeedConfig, SpeedEmbedding

N_PARTS = 3  # mask columns: left hand, right hand, upper body
OFFSET_DIM = 4  # body anchor in the image: centre x, y (fractions of width/height), shoulder width, roll (rad)

# Hand speed: centroid travel per frame in shoulder widths (0.05 ≈ 1.25 shoulder widths per second at 25 fps)
HAND_SPEED = SpeedConfig(centers=(0.0, 0.01, 0.025, 0.05, 0.1, 0.2), radii=(0.005, 0.005, 0.01, 0.025, 0.05, 0.1))
# Hand amplitude: variance of the hand centroid over a clip, in shoulder widths squared
HAND_AMPLITUDE = SpeedConfig(centers=(0.0, 0.002, 0.01, 0.03, 0.08, 0.2), radii=(0.001, 0.001, 0.004, 0.01, 0.03, 0.08))


@dataclass
class MotionLayout:
    """Per-frame motion vector: both hands (21 points, x y [z]) then the upper-limb keypoints (x y), all in
    body-relative units (origin between the shoulders, unit = shoulder width, shoulder roll removed)."""

    hand_coords: int = 3
    body_points: int = len(UPPER_LIMB)
    body_weight: float = 0.1  # upper-body keypoints are weak supervision: a small loss weight

    @property
    def hand_dim(self) -> int:
        return HAND_POINTS * self.hand_coords

    @property
    def dim(self) -> int:
        return N_HANDS * self.hand_dim + 2 * self.body_points

    def pack(self, hands: torch.Tensor, body: torch.Tensor) -> torch.Tensor:
        """hands (..., 2, 21, ≥hand_coords), body (..., body_points, 2) -> (..., dim)."""
        h = hands[..., : self.hand_coords].flatten(-3)
        return torch.cat([h, body.flatten(-2)], -1)

    def unpack(self, motion: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(..., dim) -> hands (..., 2, 21, hand_coords), body (..., body_points, 2)."""
        n = N_HANDS * self.hand_dim
        hands = motion[..., :n].unflatten(-1, (N_HANDS, HAND_POINTS, self.hand_coords))
        return hands, motion[..., n:].unflatten(-1, (self.body_points, 2))

    def feature_mask(self, mask: torch.Tensor) -> torch.Tensor:
        """(..., 3) part mask [left hand, right hand, body] (or (...) for all parts) -> (..., dim) float."""
        if mask.shape[-1:] != (N_PARTS,):
            mask = mask[..., None].expand(*mask.shape, N_PARTS)
        sizes = torch.tensor([self.hand_dim, self.hand_dim, 2 * self.body_points], device=mask.device)
        return mask.float().repeat_interleave(sizes, dim=-1)

    def feature_weight(self, device=None) -> torch.Tensor:
        """(dim,) loss weight per feature: 1 for hands, `body_weight` for the body keypoints."""
        w = torch.ones(self.dim, device=device)
        w[N_HANDS * self.hand_dim:] = self.body_weight
        return w

    def to_dict(self) -> dict:
        return asdict(self)


def _centroids(hands: torch.Tensor) -> torch.Tensor:
    return hands[..., :2].mean(-2)  # (b, f, 2, 2): centre of each hand's 21 points


def hand_speed(hands: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """(b, f, 2, 21, c) hands, (b, f, 2) presence -> (b, f) hand speed: the mean centroid travel per frame of
    the hands present in both frames (0 if none). Frame 0 takes frame 1's speed; one frame gives 0."""
    b, f = hands.shape[:2]
    if f < 2:
        return hands.new_zeros(b, f)
    c = _centroids(hands).nan_to_num(0.0)
    step = (c[:, 1:] - c[:, :-1]).norm(dim=-1)  # (b, f-1, 2)
    both = (mask[:, 1:] & mask[:, :-1]).to(step.dtype)
    speed = (step * both).sum(-1) / both.sum(-1).clamp(min=1)
    return torch.cat([speed[:, :1], speed], 1)


def hand_amplitude(hands: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """(b, f, 2, 21, c), (b, f, 2) -> (b,) amplitude: the variance of each hand's centroid over the frames it
    is present (x and y summed), averaged over hands present in ≥ 2 frames (0 if none)."""
    c = _centroids(hands).nan_to_num(0.0)  # (b, f, 2, 2)
    m = mask.to(c.dtype)[..., None]  # (b, f, 2, 1)
    n = m.sum(1)  # (b, 2, 1)
    mean = (c * m).sum(1) / n.clamp(min=1)
    var = (((c - mean[:, None]) ** 2) * m).sum(1) / (n - 1).clamp(min=1)  # (b, 2, 2)
    ok = (n[..., 0] >= 2).to(c.dtype)  # (b, 2)
    return (var.sum(-1) * ok).sum(-1) / ok.sum(-1).clamp(min=1)


@dataclass
class HandConditionConfig:
    """What conditions a clip besides audio and the previous motion frames."""

    num_styles: int = 8  # gesture-style classes (e.g. speaker ids); index num_styles = "no style"
    offset_dim: int = OFFSET_DIM
    clip_dim: int | None = None  # width of an optional CLIP image embedding of the reference
    speed: SpeedConfig = field(default_factory=lambda: replace(HAND_SPEED))
    amplitude: SpeedConfig = field(default_factory=lambda: replace(HAND_AMPLITUDE))

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> "HandConditionConfig":
        d = {k: v for k, v in d.items() if k in cls.__dataclass_fields__}
        for key in ("speed", "amplitude"):
            if isinstance(d.get(key), dict):
                s = d[key]
                d[key] = SpeedConfig(**{**s, "centers": tuple(s["centers"]), "radii": tuple(s["radii"])})
        return cls(**d)


class HandConditionEmbedding(nn.Module):
    """Timestep embedding + style + offset (body-relative position and rotation) + amplitude + CLIP per clip,
    + hand speed per frame (bucket centres/radii distance-encoded, nn/speed.py) -> (b, f, dim).
    A condition left out (None) adds nothing."""

    def __init__(self, config: HandConditionConfig, dim: int):
        super().__init__()
        self.config = config
        self.style = nn.Embedding(config.num_styles + 1, dim)
        self.offset = TimestepEmbedding(config.offset_dim, dim)
        self.speed = SpeedEmbedding(replace(config.speed, dim=dim))
        self.amplitude = SpeedEmbedding(replace(config.amplitude, dim=dim))
        self.clip = nn.Linear(config.clip_dim, dim) if config.clip_dim else None

    def forward(self, temb: torch.Tensor, frames: int, style: torch.Tensor | None = None,
                offset: torch.Tensor | None = None, speed: torch.Tensor | None = None,
                amplitude: torch.Tensor | None = None, clip: torch.Tensor | None = None) -> torch.Tensor:
        """temb (b, d); style (b,) long; offset (b, offset_dim); speed (b, f) or (b,); amplitude (b,);
        clip (b, clip_dim). Returns (b, f, d)."""
        b = temb.shape[0]
        if style is None:
            style = torch.full((b,), self.config.num_styles, dtype=torch.long, device=temb.device)
        clip_level = temb + self.style(style)
        if offset is not None:
            clip_level = clip_level + self.offset(offset.to(temb))
        if amplitude is not None:
            clip_level = clip_level + self.amplitude(amplitude.to(temb))
        if clip is not None:
            if self.clip is None:
                raise ValueError("a CLIP embedding was given but the config has no clip_dim")
            clip_level = clip_level + self.clip(clip.to(temb))
        out = clip_level[:, None].expand(b, frames, -1)
        if speed is not None:
            speed = speed.to(temb)
            speed = speed[:, None].expand(b, frames) if speed.ndim == 1 else speed
            out = out + self.speed(speed)
        return out


class AdaLNBlock(nn.Module):
    """Pre-norm transformer block whose norms are shifted/scaled and whose residual branches are gated by
    the per-token condition (adaLN-Zero, as in DiT): the identity until trained."""

    def __init__(self, dim: int, heads: int, dim_head: int, ff_mult: int = 4):
        super().__init__()
        self.norm1 = nn.LayerNorm(dim, elementwise_affine=False, eps=1e-6)
        self.attn = Attention(query_dim=dim, heads=heads, dim_head=dim_head)
        self.norm2 = nn.LayerNorm(dim, elementwise_affine=False, eps=1e-6)
        self.ff = FeedForward(dim, mult=ff_mult, activation_fn="gelu-approximate")
        self.modulation = nn.Linear(dim, 6 * dim)
        nn.init.zeros_(self.modulation.weight)
        nn.init.zeros_(self.modulation.bias)

    def forward(self, x: torch.Tensor, cond: torch.Tensor) -> torch.Tensor:
        """x, cond: (b, n, d) -> (b, n, d)."""
        shift1, scale1, gate1, shift2, scale2, gate2 = self.modulation(nn.functional.silu(cond)).chunk(6, -1)
        x = x + gate1 * self.attn(self.norm1(x) * (1 + scale1) + shift1)
        return x + gate2 * self.ff(self.norm2(x) * (1 + scale2) + shift2)
