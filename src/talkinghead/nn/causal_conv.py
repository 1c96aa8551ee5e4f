"""MIDAS (arXiv 2508.19320) temporal layers of the deep-compression video autoencoder: a causal 3D convolution with
asymmetric replicate padding and a RoPE attention over past frames, both streamable with a bounded cache."""
from __future__ import annotations

import torch
import torch.nn.functional as F
from diffusers.models.embeddings import apply_rotary_emb, get_1d_rotary_pos_embed
from einops import rearrange
from torch import nn


class StreamCache:
    """State of a frame-by-frame pass: per temporal layer, the last inputs of its convolution or the last
    keys/values of its attention (at most `frames` past frames each), and the index of the next frame."""

    def __init__(self, frames: int):
        self.frames = frames  # past frames any layer keeps
        self.state: dict[int, object] = {}
        self.next_frame = 0  # absolute index of the first frame of the next call

    def get(self, layer: nn.Module):
        return self.state.get(id(layer))

    def put(self, layer: nn.Module, value) -> None:
        self.state[id(layer)] = value

    def held_frames(self) -> int:
        """The most past frames any layer holds now (bounded by `frames`)."""
        sizes = [v.shape[2] if isinstance(v, torch.Tensor) else v[0].shape[2] for v in self.state.values()]
        return max(sizes, default=0)


class CausalConv3d(nn.Module):
    """(b, c, f, h, w) -> (b, c_out, f, h, w): a k_t x k x k convolution whose frame t sees frames t-k_t+1..t.
    The past is padded on one side only, by replicating the first frame (asymmetric replicate padding), so a
    clip's first output frame equals the one a stream computes from that frame alone."""

    def __init__(self, in_channels: int, out_channels: int, temporal_kernel: int = 3, spatial_kernel: int = 3):
        super().__init__()
        self.past = temporal_kernel - 1  # frames of history the kernel reads
        self.conv = nn.Conv3d(in_channels, out_channels, (temporal_kernel, spatial_kernel, spatial_kernel),
                              padding=(0, spatial_kernel // 2, spatial_kernel // 2))

    def forward(self, x: torch.Tensor, cache: StreamCache | None = None) -> torch.Tensor:
        history = cache.get(self) if cache is not None else None
        if history is None:  # the stream starts here: the first frame stands in for the missing past
            history = x[:, :, :1].expand(-1, -1, self.past, -1, -1)
        x_full = torch.cat([history, x], dim=2)  # (b, c, past + f, h, w)
        if cache is not None:
            cache.put(self, x_full[:, :, x_full.shape[2] - self.past:].detach())
        return self.conv(x_full)


class CausalTemporalAttention(nn.Module):
    """Attention along time at every spatial position: frame t attends to frames t-window..t, with 1D rotary
    positions on the absolute frame index (so scores depend on frame distance only). Pre-norm, residual,
    output projection zero-initialised so a freshly added layer is the identity."""

    def __init__(self, channels: int, head_dim: int = 32, window: int = 5, theta: float = 10000.0):
        super().__init__()
        if channels % head_dim or head_dim % 2:
            raise ValueError(f"channels {channels} must be a multiple of an even head_dim {head_dim}")
        self.heads, self.head_dim, self.window, self.theta = channels // head_dim, head_dim, window, theta
        self.norm = nn.GroupNorm(1, channels, eps=1e-6)  # per frame and position: no statistics over time
        self.to_qkv = nn.Linear(channels, 3 * channels)
        self.to_out = nn.Linear(channels, channels)
        nn.init.zeros_(self.to_out.weight)
        nn.init.zeros_(self.to_out.bias)

    def _rope(self, positions: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return get_1d_rotary_pos_embed(self.head_dim, positions.float(), theta=self.theta, use_real=True)

    def forward(self, x: torch.Tensor, cache: StreamCache | None = None, start: int = 0) -> torch.Tensor:
        b, c, f, h, w = x.shape
        tokens = rearrange(self.norm(rearrange(x, "b c f h w -> (b f) c h w")), "(b f) c h w -> (b h w) f c", b=b)
        q, k, v = rearrange(self.to_qkv(tokens), "n f (three m d) -> three n m f d", three=3, m=self.heads)
        q_pos = torch.arange(start, start + f, device=x.device)
        q = apply_rotary_emb(q, self._rope(q_pos))
        k = apply_rotary_emb(k, self._rope(q_pos))
        past = cache.get(self) if cache is not None else None
        if past is not None:
            k, v = torch.cat([past[0], k], dim=2), torch.cat([past[1], v], dim=2)
        k_pos = torch.arange(start + f - k.shape[2], start + f, device=x.device)
        if cache is not None:  # keep the keys/values the next frames may still see
            keep = min(self.window, k.shape[2])
            cache.put(self, (k[:, :, -keep:].detach(), v[:, :, -keep:].detach()))
        lag = q_pos[:, None] - k_pos[None, :]  # (f, keys) frame distance
        mask = (lag >= 0) & (lag <= self.window)
        out = F.scaled_dot_product_attention(q, k, v, attn_mask=mask)  # (n, m, f, d)
        out = self.to_out(rearrange(out, "n m f d -> n f (m d)"))
        return x + rearrange(out, "(b h w) f c -> b c f h w", b=b, h=h, w=w)
