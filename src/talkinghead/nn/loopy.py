"""Loopy (arXiv 2409.02634) §3: inter/intra-clip temporal layers, temporal segment module, audio-to-latents."""
from __future__ import annotations

from dataclasses import dataclass

import torch
from diffusers.models.attention import FeedForward
from diffusers.models.attention_processor import Attention
from einops import rearrange, repeat
from torch import nn


def temporal_segment_indices(num_frames: int, stride: int = 4, expand: int = 2) -> list[int]:
    """Which of `num_frames` motion frames (index 0 oldest, num_frames-1 the newest, right before the current
    clip) the temporal segment module keeps as abstract frames, in ascending order.

    The history is cut into consecutive segments going back in time from the newest frame. Segment k covers
    stride * expand**k frames, split into `stride` bins of expand**k frames each, and the newest frame of
    every bin is kept: segment k gives `stride` abstract frames spaced expand**k apart. The oldest segment
    is truncated where the history ends and keeps the newest frame of each bin it still reaches (so at
    least one frame).

    Example, 20 frames, stride 4, expand 2: segments cover frames 16-19 (4 frames, keep all), 8-15 (8 frames,
    keep 9, 11, 13, 15) and 0-7 (16 frames nominally, truncated to 8: keep 3, 7)
    -> [3, 7, 9, 11, 13, 15, 16, 17, 18, 19].
    """
    if stride < 1 or expand < 1:
        raise ValueError(f"stride and expand must be >= 1, got {stride} and {expand}")
    kept: list[int] = []
    end, step = num_frames, 1
    while end > 0:
        start = max(end - stride * step, 0)
        kept += range(end - 1, start - 1, -step)  # newest frame of each bin, newest bin first
        end, step = end - stride * step, step * expand
    return sorted(kept)


class TemporalSegmentModule(nn.Module):
    """Loopy's TSM: abstracts a long motion-frame history into a few frames, dense near the current clip and
    sparse further back, so the temporal layers see seconds of motion at the cost of a few frames."""

    def __init__(self, stride: int = 4, expand: int = 2):
        super().__init__()
        self.stride, self.expand = stride, expand

    def forward(self, motion: torch.Tensor) -> torch.Tensor:
        """(b, m, ...) motion frames, oldest first -> (b, k, ...) abstract frames, oldest first."""
        index = temporal_segment_indices(motion.shape[1], self.stride, self.expand)
        return motion[:, index]


class ClipTemporalAttention(nn.Module):
    """Temporal self-attention at every spatial position, with learnable frame-slot embeddings; pre-norm,
    residual, zero-initialised output (identity when inserted).

    Given motion-frame tokens it is Loopy's inter-clip layer: the current clip's frames attend over
    [motion frames, clip frames] and only the clip's tokens are updated. Without, it is the intra-clip
    layer: self-attention among the clip's frames.
    """

    def __init__(self, dim: int, heads: int = 8, dim_head: int = 64, max_frames: int = 64):
        super().__init__()
        self.norm = nn.LayerNorm(dim)
        self.frame_embedding = nn.Parameter(torch.empty(max_frames, dim))
        nn.init.normal_(self.frame_embedding, std=0.02)
        self.attn = Attention(dim, heads=heads, dim_head=dim_head)
        nn.init.zeros_(self.attn.to_out[0].weight)
        nn.init.zeros_(self.attn.to_out[0].bias)

    def forward(self, x: torch.Tensor, motion: torch.Tensor | None = None) -> torch.Tensor:
        """x: (b, f, n, c) current-clip tokens; motion: (b, m, n, c) motion-frame tokens, oldest first."""
        b, f = x.shape[:2]
        tokens = x if motion is None else torch.cat([motion, x], dim=1)  # (b, t, n, c), t = m + f
        t = tokens.shape[1]
        if t > self.frame_embedding.shape[0]:
            raise ValueError(f"{t} frames exceed max_frames={self.frame_embedding.shape[0]}")
        h = rearrange(self.norm(tokens), "b t n c -> (b n) t c") + self.frame_embedding[:t]
        out = self.attn(h[:, t - f :], encoder_hidden_states=h)  # clip frames query all t frames
        return x + rearrange(out, "(b n) f c -> b f n c", b=b)


class LoopyTemporalModule(nn.Module):
    """Inter-clip layer (clip over [motion frames, clip]), then intra-clip layer (clip over clip), then a
    feed-forward; every branch starts at zero."""

    def __init__(self, dim: int, heads: int = 8, dim_head: int = 64, max_motion_frames: int = 32, max_frames: int = 32):
        super().__init__()
        self.inter_clip = ClipTemporalAttention(dim, heads, dim_head, max_motion_frames + max_frames)
        self.intra_clip = ClipTemporalAttention(dim, heads, dim_head, max_frames)
        self.ff_norm = nn.LayerNorm(dim)
        self.ff = FeedForward(dim, activation_fn="geglu")
        nn.init.zeros_(self.ff.net[2].weight)
        nn.init.zeros_(self.ff.net[2].bias)

    def forward(self, x: torch.Tensor, motion: torch.Tensor) -> torch.Tensor:
        """x: (b, f, n, c) noisy-clip tokens; motion: (b, m, n, c) abstract motion-frame tokens."""
        x = self.intra_clip(self.inter_clip(x, motion))
        return x + self.ff(self.ff_norm(x))


@dataclass
class AudioToLatentsConfig:
    audio_dim: int = 768  # per-frame audio feature width (e.g. a flattened wav2vec window)
    head_motion_dim: int = 1  # per-frame head-motion variance features
    expression_dim: int = 1  # per-frame expression variance features
    num_latents: int = 128  # learnable embeddings used as keys and values
    dim: int = 256  # width of queries, keys, values and the motion latent
    heads: int = 8
    time_embed_dim: int = 1280  # the UNet's timestep-embedding width (SD 1.5)


class AudioToLatents(nn.Module):
    """Loopy's audio-to-latents: a condition becomes a query (one linear layer per condition) that attends
    over learnable embeddings; the resulting per-frame motion latent is expanded by a linear layer to the
    timestep-embedding width and added to the timestep embedding.

    Training picks, per sample and with equal probability, which condition makes the query: audio, head-motion
    variance or expression variance, so the motion-correlated signals shape the same latent space the audio
    maps into. Inference uses audio alone. The expansion starts at zero, so the timestep embedding is
    unchanged when the module is inserted.
    """

    def __init__(self, config: AudioToLatentsConfig | None = None):
        super().__init__()
        c = self.config = config or AudioToLatentsConfig()
        self.audio_query = nn.Linear(c.audio_dim, c.dim)
        self.head_motion_query = nn.Linear(c.head_motion_dim, c.dim)
        self.expression_query = nn.Linear(c.expression_dim, c.dim)
        self.latents = nn.Parameter(torch.randn(c.num_latents, c.dim) * c.dim**-0.5)
        self.attn = Attention(c.dim, cross_attention_dim=c.dim, heads=c.heads, dim_head=c.dim // c.heads)
        self.to_time_embed = nn.Linear(c.dim, c.time_embed_dim)
        nn.init.zeros_(self.to_time_embed.weight)
        nn.init.zeros_(self.to_time_embed.bias)

    def forward(
        self,
        temb: torch.Tensor,
        audio: torch.Tensor,
        head_motion: torch.Tensor | None = None,
        expression: torch.Tensor | None = None,
        generator: torch.Generator | None = None,
    ) -> torch.Tensor:
        """temb: (b, t) clip timestep embedding; audio: (b, f, audio_dim); head_motion: (b, f, head_motion_dim)
        and expression: (b, f, expression_dim), needed in training only -> (b, f, t) per-frame embedding."""
        b, f = audio.shape[:2]
        query = self.audio_query(audio)  # (b, f, dim)
        if self.training:
            if head_motion is None or expression is None:
                raise ValueError("training needs head_motion and expression variances as well as audio")
            device = generator.device if generator is not None else audio.device
            choice = torch.randint(3, (b,), generator=generator, device=device).to(audio.device)  # (b,)
            queries = torch.stack([query, self.head_motion_query(head_motion), self.expression_query(expression)])
            query = queries[choice, torch.arange(b, device=audio.device)]  # (b, f, dim)

        q = rearrange(query, "b f d -> (b f) 1 d")
        kv = repeat(self.latents, "l d -> bf l d", bf=b * f)
        motion = rearrange(self.attn(q, encoder_hidden_states=kv), "(b f) 1 d -> b f d", b=b)  # motion latents
        return temb[:, None] + self.to_time_embed(motion)


class LoopyMotionModule(nn.Module):
    """`LoopyTemporalModule` with the video UNet's motion-module interface: frames folded into the batch,
    ((b f), c, h, w), and the motion frames' features at this layer as `context` (b, c, m, h, w) (the
    reference net's features of the abstract motion frames), so LoopyNet's UNet runs the inter-clip layer
    over [motion frames, clip] and the intra-clip layer over the clip in place of AnimateDiff's module."""

    def __init__(self, channels: int, heads: int = 8, max_motion_frames: int = 32, max_frames: int = 32):
        super().__init__()
        heads = max(1, min(heads, channels))
        self.temporal = LoopyTemporalModule(channels, heads, channels // heads, max_motion_frames, max_frames)

    def forward(self, x: torch.Tensor, num_frames: int, context: torch.Tensor | None = None) -> torch.Tensor:
        h = x.shape[-2]
        clip = rearrange(x, "(b f) c h w -> b f (h w) c", f=num_frames)
        if context is None:
            motion = clip[:, :0]  # no motion frames: the inter-clip layer attends within the clip
        else:
            motion = rearrange(context.to(x.dtype), "b c m h w -> b m (h w) c")
        out = self.temporal(clip, motion)
        return rearrange(out, "b f (h w) c -> (b f) c h w", h=h)
