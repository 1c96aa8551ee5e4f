"""MIDAS (Chen et al. 2025, arXiv 2508.19320): multimodal condition tokens (quantized audio, pose
velocities, text) and a frame-causal autoregressive transformer over chunks of frames whose outputs condition
a light diffusion head per frame. No official weights exist; this is a trainable re-implementation.

Sequence of chunk k (chunk_frames = F frames): [F·a audio, F·p pose, T text tokens | L reference tokens |
F frames x L tokens]. Frame slot j (1..F) holds the latents of the frame before it (the reference before the
first frame), so its output predicts frame j. Mask: prefix tokens (conditions + reference, slot 0) see their
whole prefix; slot j sees the prefix (the chunk's conditions for all its frames, later ones included), slots
1..j; every token sees the last `window_chunks` chunks entirely and nothing older."""
from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import NamedTuple

import torch
import torch.nn.functional as F
from diffusers.models.embeddings import apply_rotary_emb, get_1d_rotary_pos_embed
from einops import rearrange
from torch import nn

from ...errors import InputError
from ...models.checkpoints import ConfiguredModel
from ...nn.causal_conv import StreamCache
from ...nn.dc_video_autoencoder import DCVideoAEConfig, VideoDecoder, VideoEncoder
from ...nn.diffusion_head import DiffusionHead, DiffusionHeadConfig
from ...nn.vector_quantizer import AudioTokenizer, AudioTokenizerConfig, VectorQuantizerConfig

PREFIX_SLOT = 0  # slot of the condition and reference tokens


@dataclass
class MidasConfig:
    """Defaults are the paper's sizes where it gives them; tests pass tiny ones. Token counts are fields."""

    dim: int = 2048  # the paper's backbone is Qwen2.5-3B (2048 wide, 36 layers); ours is a plain pre-norm GPT
    layers: int = 36
    heads: int = 16
    mlp_ratio: float = 4.0
    chunk_frames: int = 6  # frames per autoregressive chunk
    audio_tokens_per_frame: int = 1  # one 80 ms audio token per frame (12.5 fps)
    pose_tokens_per_frame: int = 10
    pose_joints: int = 25  # joints per frame, (x, y, z) each
    text_tokens: int = 256  # T5 tokens per chunk
    text_dim: int = 4096  # T5-XXL width
    latent_channels: int = 128
    latent_size: tuple[int, int] = (8, 8)  # (h, w) latent grid of a frame: its token count is h*w
    window_chunks: int = 2  # past chunks every token sees (and the KV cache keeps)
    input_noise_max: float = 0.0  # training: frame inputs get noise of a level drawn from [0, this]
    input_noise: float = 0.0  # sampling: the noise level put on each generated frame before it is fed back
    rope_theta: float = 10000.0
    audio: AudioTokenizerConfig = field(default_factory=lambda: AudioTokenizerConfig(
        quantizer=VectorQuantizerConfig(codebook_size=1024, dim=256)))
    head: DiffusionHeadConfig = field(default_factory=lambda: DiffusionHeadConfig(cond_dim=2048))

    def __post_init__(self) -> None:
        self.latent_size = tuple(self.latent_size)
        if isinstance(self.audio, dict):
            self.audio = AudioTokenizerConfig(**self.audio)
        if isinstance(self.head, dict):
            self.head = DiffusionHeadConfig(**self.head)
        if self.dim % self.heads or (self.dim // self.heads) % 2:
            raise ValueError(f"dim {self.dim} must split into {self.heads} heads of even width")
        if self.head.cond_dim != self.dim or self.head.latent_channels != self.latent_channels:
            raise ValueError("head.cond_dim must equal dim and head.latent_channels latent_channels")

    @classmethod
    def tiny(cls, **overrides) -> "MidasConfig":
        """A few tokens of each kind and a 32-wide model: for tests and CPU benchmarks."""
        d = dict(dim=32, layers=2, heads=4, chunk_frames=3, pose_tokens_per_frame=2, pose_joints=4, text_tokens=4,
                 text_dim=16, latent_channels=8, latent_size=(2, 2), window_chunks=1,
                 audio=AudioTokenizerConfig(feature_dim=12, quantizer=VectorQuantizerConfig(codebook_size=16, dim=8)),
                 head=DiffusionHeadConfig(latent_channels=8, cond_dim=32, width=32, layers=2, sample_steps=3))
        return cls(**{**d, **overrides})

    @property
    def frame_tokens(self) -> int:  # L
        return self.latent_size[0] * self.latent_size[1]

    @property
    def condition_tokens(self) -> int:
        return self.chunk_frames * (self.audio_tokens_per_frame + self.pose_tokens_per_frame) + self.text_tokens

    @property
    def prefix_tokens(self) -> int:
        return self.condition_tokens + self.frame_tokens

    @property
    def chunk_tokens(self) -> int:
        return self.prefix_tokens + self.chunk_frames * self.frame_tokens

    @property
    def audio_features_per_chunk(self) -> int:
        """Whisper-style (50 Hz) feature frames one chunk consumes."""
        return self.chunk_frames * self.audio_tokens_per_frame * self.audio.frames_per_token

    def to_dict(self) -> dict:
        return asdict(self)


# ------------------------------------------------------------------ conditions


class Conditions(NamedTuple):
    tokens: torch.Tensor  # (b, n_chunks, condition_tokens, dim)
    vq_loss: torch.Tensor  # scalar


class PoseVelocityEmbedding(nn.Module):
    """MIDAS pose condition: joint velocities (differences between consecutive frames) -> p tokens/frame."""

    def __init__(self, config: MidasConfig):
        super().__init__()
        self.tokens = config.pose_tokens_per_frame
        self.proj = nn.Linear(config.pose_joints * 3, config.pose_tokens_per_frame * config.dim)

    def forward(self, pose: torch.Tensor, previous: torch.Tensor | None = None) -> torch.Tensor:
        """pose (b, f, J, 3) joint positions; previous (b, J, 3) the frame before (None: a still start)."""
        before = torch.cat([(pose[:, :1] if previous is None else previous[:, None]), pose[:, :-1]], dim=1)
        velocity = rearrange(pose - before, "b f j c -> b f (j c)")
        return rearrange(self.proj(velocity), "b f (p d) -> b (f p) d", p=self.tokens)


class ConditionEncoder(nn.Module):
    """Audio (quantized, one token per 80 ms), pose velocities and text embeddings -> condition tokens per chunk."""

    def __init__(self, config: MidasConfig):
        super().__init__()
        self.config = config
        self.audio = AudioTokenizer(config.audio)
        self.audio_out = nn.Linear(config.audio.quantizer.dim, config.dim)
        self.pose = PoseVelocityEmbedding(config)
        self.text = nn.Linear(config.text_dim, config.dim)

    def forward(self, audio: torch.Tensor, pose: torch.Tensor | None = None, text: torch.Tensor | None = None,
                previous_pose: torch.Tensor | None = None) -> Conditions:
        """audio (b, n*A, feat) for n whole chunks (A = audio_features_per_chunk); pose (b, n*F, J, 3) or None
        (still); text (b, T, text_dim) shared by the chunks, (b, n, T, text_dim) per chunk, or None."""
        c = self.config
        b, n = audio.shape[0], audio.shape[1] // c.audio_features_per_chunk
        if audio.shape[1] != n * c.audio_features_per_chunk or n == 0:
            raise ValueError(f"audio holds {audio.shape[1]} feature frames, not a whole number of "
                             f"{c.audio_features_per_chunk}-frame chunks")
        q = self.audio(audio)
        audio_tok = rearrange(self.audio_out(q.quantized), "b (n t) d -> b n t d", n=n)
        if pose is None:
            pose = audio.new_zeros(b, n * c.chunk_frames, c.pose_joints, 3)
        pose_tok = rearrange(self.pose(pose, previous_pose), "b (n t) d -> b n t d", n=n)
        if text is None:
            text = audio.new_zeros(b, c.text_tokens, c.text_dim)
        if text.dim() == 3:
            text = text[:, None].expand(-1, n, -1, -1)
        text_tok = self.text(text)  # (b, n, T, dim)
        return Conditions(torch.cat([audio_tok, pose_tok, text_tok], dim=2), q.loss)


# ------------------------------------------------------------------ frame-causal transformer


def frame_causal_mask(q_chunk: torch.Tensor, q_slot: torch.Tensor, k_chunk: torch.Tensor, k_slot: torch.Tensor,
                      window_chunks: int) -> torch.Tensor:
    """(n_q, n_k) bool, True where a query may attend to a key (see the module docstring)."""
    qc, qs, kc, ks = q_chunk[:, None], q_slot[:, None], k_chunk[None], k_slot[None]
    same = (kc == qc) & (ks <= qs)
    past = (kc < qc) & (kc >= qc - window_chunks)
    return same | past


class KVCache:
    """Keys/values per layer of the tokens seen so far, with their (chunk, slot); `trim` bounds it."""

    def __init__(self, layers: int):
        self.kv: list[tuple[torch.Tensor, torch.Tensor] | None] = [None] * layers
        self.chunk = torch.zeros(0, dtype=torch.long)
        self.slot = torch.zeros(0, dtype=torch.long)

    def __len__(self) -> int:
        return int(self.chunk.numel())

    def trim(self, first_chunk: int) -> None:
        """Forget tokens of chunks before `first_chunk` (no later query can see them)."""
        keep = self.chunk >= first_chunk
        self.chunk, self.slot = self.chunk[keep], self.slot[keep]
        idx = keep.nonzero().squeeze(1)
        self.kv = [None if kv is None else (kv[0][:, :, idx.to(kv[0].device)], kv[1][:, :, idx.to(kv[1].device)])
                   for kv in self.kv]


class FrameCausalBlock(nn.Module):
    """Pre-norm transformer block: rotary self-attention under the frame-causal mask, then an MLP."""

    def __init__(self, config: MidasConfig):
        super().__init__()
        self.heads = config.heads
        self.norm1 = nn.LayerNorm(config.dim, eps=1e-6)
        self.qkv = nn.Linear(config.dim, 3 * config.dim)
        self.proj = nn.Linear(config.dim, config.dim)
        self.norm2 = nn.LayerNorm(config.dim, eps=1e-6)
        hidden = int(config.dim * config.mlp_ratio)
        self.mlp = nn.Sequential(nn.Linear(config.dim, hidden), nn.GELU(approximate="tanh"),
                                 nn.Linear(hidden, config.dim))

    def forward(self, x: torch.Tensor, rope: tuple[torch.Tensor, torch.Tensor], mask: torch.Tensor,
                past: tuple[torch.Tensor, torch.Tensor] | None
                ) -> tuple[torch.Tensor, tuple[torch.Tensor, torch.Tensor]]:
        q, k, v = rearrange(self.qkv(self.norm1(x)), "b n (three m d) -> three b m n d", three=3, m=self.heads)
        q, k = apply_rotary_emb(q, rope), apply_rotary_emb(k, rope)
        if past is not None:
            k, v = torch.cat([past[0], k], dim=2), torch.cat([past[1], v], dim=2)
        out = F.scaled_dot_product_attention(q, k, v, attn_mask=mask)  # (b, m, n, d)
        x = x + self.proj(rearrange(out, "b m n d -> b n (m d)"))
        return x + self.mlp(self.norm2(x)), (k, v)


class MidasTransformer(ConfiguredModel):
    """Conditions + reference + frame latents -> per-frame-token conditions for the diffusion head."""

    config_class = MidasConfig

    def __init__(self, config: MidasConfig | None = None, **fields):
        super().__init__(config, **fields)
        config = self.config
        self.conditions = ConditionEncoder(config)
        self.latent_in = nn.Linear(config.latent_channels, config.dim)
        self.prefix_embed = nn.Parameter(torch.zeros(config.prefix_tokens, config.dim))  # index in the prefix
        self.frame_embed = nn.Parameter(torch.zeros(config.frame_tokens, config.dim))  # position in the frame
        self.slot_embed = nn.Parameter(torch.zeros(config.chunk_frames, config.dim))  # frame within the chunk
        for p in (self.prefix_embed, self.frame_embed, self.slot_embed):
            nn.init.normal_(p, std=0.02)
        self.noise_level_embed = nn.Linear(1, config.dim)  # how noisy a frame input is (exposure bias)
        nn.init.zeros_(self.noise_level_embed.weight)
        nn.init.zeros_(self.noise_level_embed.bias)
        self.blocks = nn.ModuleList(FrameCausalBlock(config) for _ in range(config.layers))
        self.norm_out = nn.LayerNorm(config.dim, eps=1e-6)
        self.head = DiffusionHead(config.head)

    # -------------------------------------------------------------- tokens

    def latent_tokens(self, latents: torch.Tensor) -> torch.Tensor:
        """(b, g, C, h, w) -> (b, g, L, dim)."""
        return self.latent_in(rearrange(latents, "b g c h w -> b g (h w) c"))

    def prefix(self, conditions: torch.Tensor, reference: torch.Tensor) -> torch.Tensor:
        """conditions (b, condition_tokens, dim) of one chunk + reference latent (b, C, h, w) -> (b, P, dim)."""
        ref = self.latent_tokens(reference[:, None])[:, 0]
        return torch.cat([conditions, ref], dim=1) + self.prefix_embed

    def frame_inputs(self, previous: torch.Tensor, first_slot: int, level: torch.Tensor | None = None) -> torch.Tensor:
        """Latents (b, g, C, h, w) of the frames before slots first_slot.., carrying noise `level` (b, g)
        (None: clean) -> (b, g*L, dim) tokens."""
        g = previous.shape[1]
        tok = self.latent_tokens(previous) + self.frame_embed + self.slot_embed[first_slot - 1:first_slot - 1 + g, None]
        if level is not None:
            tok = tok + self.noise_level_embed(level.to(tok.dtype)[..., None])[:, :, None]
        return rearrange(tok, "b g l d -> b (g l) d")

    def _rope(self, chunk: torch.Tensor, slot: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        pos = (chunk * (self.config.chunk_frames + 1) + slot).float()
        return get_1d_rotary_pos_embed(self.config.dim // self.config.heads, pos, theta=self.config.rope_theta,
                                       use_real=True)

    # -------------------------------------------------------------- running

    def run(self, tokens: torch.Tensor, chunk: torch.Tensor, slot: torch.Tensor,
            cache: KVCache | None = None) -> torch.Tensor:
        """Hidden states (b, n, dim) of `tokens` labelled (chunk, slot) each (n,); with a cache, the new
        tokens also see (and are appended to) the cached ones."""
        k_chunk, k_slot = chunk, slot
        if cache is not None:
            k_chunk, k_slot = torch.cat([cache.chunk, chunk]), torch.cat([cache.slot, slot])
        mask = frame_causal_mask(chunk, slot, k_chunk, k_slot, self.config.window_chunks).to(tokens.device)
        rope = tuple(r.to(tokens.device, tokens.dtype) for r in self._rope(chunk, slot))
        x = tokens
        for i, block in enumerate(self.blocks):
            x, kv = block(x, rope, mask, cache.kv[i] if cache is not None else None)
            if cache is not None:
                cache.kv[i] = kv
        if cache is not None:
            cache.chunk, cache.slot = k_chunk, k_slot
        return self.norm_out(x)

    def sequence(self, prefixes: torch.Tensor, inputs: torch.Tensor, levels: torch.Tensor | None = None
                 ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        """The whole token sequence for chunk prefixes (b, n, P, dim) and g = inputs.shape[1] frame slots fed
        `inputs` (b, g, C, h, w) = [reference, frame 0, ...] with noise `levels` (b, g): (tokens, chunk, slot,
        bool mask of the frame tokens)."""
        c = self.config
        g, parts, chunk, slot = inputs.shape[1], [], [], []
        for k in range(prefixes.shape[1]):
            parts.append(prefixes[:, k])
            chunk.append(torch.full((c.prefix_tokens,), k))
            slot.append(torch.full((c.prefix_tokens,), PREFIX_SLOT))
            a, n = k * c.chunk_frames, min(c.chunk_frames, g - k * c.chunk_frames)
            if n > 0:
                parts.append(self.frame_inputs(inputs[:, a:a + n], 1, None if levels is None else levels[:, a:a + n]))
                chunk.append(torch.full((n * c.frame_tokens,), k))
                slot.append(torch.arange(1, n + 1).repeat_interleave(c.frame_tokens))
        chunk, slot = torch.cat(chunk), torch.cat(slot)
        return torch.cat(parts, dim=1), chunk, slot, slot != PREFIX_SLOT

    def frame_conditions(self, prefixes: torch.Tensor, inputs: torch.Tensor, levels: torch.Tensor | None = None
                         ) -> torch.Tensor:
        """One full (cache-free) pass: head conditions (b, g, L, dim) for the g frames whose slots are fed
        `inputs` (b, g, C, h, w) (see `sequence`)."""
        tokens, chunk, slot, is_frame = self.sequence(prefixes, inputs, levels)
        out = self.run(tokens, chunk, slot)[:, is_frame.to(tokens.device)]
        return rearrange(out, "b (g l) d -> b g l d", l=self.config.frame_tokens)

    def noised(self, latents: torch.Tensor, level: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        """Exposure-bias noise on frame inputs: (1 - s) x + s e per frame, level s (b, g) in [0, 1]."""
        e = torch.randn(latents.shape, generator=generator, device=generator.device).to(latents.device, latents.dtype)
        s = level.to(latents.dtype)[..., None, None, None]
        return (1 - s) * latents + s * e

    def prefixes(self, conditions: torch.Tensor, reference: torch.Tensor) -> torch.Tensor:
        """(b, n, condition_tokens, dim) conditions -> (b, n, P, dim) chunk prefixes."""
        return torch.stack([self.prefix(conditions[:, k], reference) for k in range(conditions.shape[1])], dim=1)

    def sample_frame(self, z: torch.Tensor, noise: torch.Tensor, steps: int | None = None) -> torch.Tensor:
        """Head conditions (b, L, dim) + noise (b, C, h, w) -> a frame's latents (b, C, h, w)."""
        h, w = self.config.latent_size
        x = self.head.sample(rearrange(z, "b l d -> (b l) d"), rearrange(noise, "b c h w -> (b h w) c"), steps)
        return rearrange(x, "(b h w) c -> b c h w", h=h, w=w)


class DCVideoAutoencoder(ConfiguredModel):
    """MIDAS's deep-compression video autoencoder: frames (b, f, 3, H, W) in [-1, 1] <-> latents
    (b, f, C, H/s, W/s), causal in time (parts in nn/dc_video_autoencoder.py). Pass a cache from `new_cache()` to
    `encode`/`decode` to stream: call after call, the outputs equal one pass over all frames."""

    config_class = DCVideoAEConfig

    def __init__(self, config: DCVideoAEConfig | None = None, **fields):
        super().__init__(config, **fields)
        self.encoder = VideoEncoder(self.config)
        self.decoder = VideoDecoder(self.config)

    def new_cache(self) -> StreamCache:
        return StreamCache(self.config.cache_frames)

    def _check(self, frames: torch.Tensor) -> None:
        s = self.config.spatial_compression
        if frames.dim() != 5 or frames.shape[2] != 3 or frames.shape[-1] % s or frames.shape[-2] % s:
            raise InputError(f"must be (b, f, 3, H, W) with H and W multiples of {s}, got {tuple(frames.shape)}",
                             f"resize or crop the video to a multiple of {s} pixels", field="frames")

    def encode(self, frames: torch.Tensor, cache: StreamCache | None = None) -> torch.Tensor:
        self._check(frames)
        start = cache.next_frame if cache is not None else 0
        cache_used = cache if cache is not None else self.new_cache()
        z = self.encoder(frames, cache_used, start) * self.config.scaling_factor
        cache_used.next_frame = start + frames.shape[1]
        return z

    def decode(self, latents: torch.Tensor, cache: StreamCache | None = None) -> torch.Tensor:
        start = cache.next_frame if cache is not None else 0
        cache_used = cache if cache is not None else self.new_cache()
        x = self.decoder(latents / self.config.scaling_factor, cache_used, start)
        cache_used.next_frame = start + latents.shape[1]
        return x

    def forward(self, frames: torch.Tensor) -> torch.Tensor:
        return self.decode(self.encode(frames))
