"""EMO2 (Tian et al. 2025, "End-Effector Guided Audio-Driven Avatar Video Generation"): stage 1 diffuses hand
motion (MediaPipe's 21-point hands instead of MANO, upper-body keypoints as weak supervision) from audio with
a small transformer; stage 2 is the EMO reference video net guided by rendered hand and body-keypoint maps,
a hand-confidence embedding and a pose discriminator loss. No official weights exist; this is a trainable
re-implementation with typed configs saved beside safetensors weights."""
from __future__ import annotations

from dataclasses import asdict, dataclass, field

import torch
import torch.nn.functional as F
from diffusers import DDIMScheduler
from diffusers.models.embeddings import SinusoidalPositionalEmbedding, TimestepEmbedding, Timesteps
from torch import nn

from ...models.checkpoints import ConfiguredModel
from ...models.reference_video import ReferenceVideoNet
from ...models.unet3d import SD15_UNET, VideoUNetConfig
from ...nn.audio_windows import audio_windows
from ...nn.hand_motion import (N_PARTS, AdaLNBlock, HandConditionConfig, HandConditionEmbedding, MotionLayout,
                               hand_amplitude, hand_speed)
from ...nn.pose_discriminator import PoseDiscriminator, PoseDiscriminatorConfig
from ...nn.pose_guider import HandConfidenceEmbedding, PoseGuider, render_guidance
from ...nn.temporal import TemporalConfig
from ...sampling import denoise

# x0 ("sample") prediction is the usual choice for motion diffusion: the loss is on the motion itself, so the
# mask of missing hands applies directly
STAGE1_SCHEDULER = {"num_train_timesteps": 1000, "beta_schedule": "squaredcos_cap_v2", "clip_sample": False,
                    "prediction_type": "sample", "timestep_spacing": "trailing", "set_alpha_to_one": True}


# ============================================================================ stage 1: audio -> hand motion


@dataclass
class EMO2Stage1Config:
    layout: MotionLayout = field(default_factory=MotionLayout)
    condition: HandConditionConfig = field(default_factory=HandConditionConfig)
    audio_dim: int = 768  # wav2vec width x tokens per frame (tokens are flattened)
    dim: int = 512
    depth: int = 8
    heads: int = 8
    frames: int = 50  # frames per generated clip (2 s at 25 fps)
    prev_frames: int = 10  # motion frames of the previous clip, prepended for continuity
    max_len: int = 128  # prev_frames + frames must fit
    audio_dropout: float = 0.1  # classifier-free guidance on audio

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> "EMO2Stage1Config":
        d = {k: v for k, v in d.items() if k in cls.__dataclass_fields__}
        if isinstance(d.get("layout"), dict):
            d["layout"] = MotionLayout(**d["layout"])
        if isinstance(d.get("condition"), dict):
            d["condition"] = HandConditionConfig.from_dict(d["condition"])
        return cls(**d)


class HandMotionDenoiser(nn.Module):
    """Transformer over per-frame motion tokens: [previous motion frames (clean, with their part mask), noisy
    clip frames (+ audio)], each frame token conditioned by adaLN on the timestep + condition embedding."""

    def __init__(self, config: EMO2Stage1Config):
        super().__init__()
        c, d = config, config.dim
        self.in_proj = nn.Linear(c.layout.dim + N_PARTS, d)
        self.audio_proj = nn.Linear(c.audio_dim, d)
        self.token_type = nn.Embedding(2, d)  # 0: previous motion frame, 1: frame to generate
        self.pos = SinusoidalPositionalEmbedding(d, c.max_len)
        self.time_proj = Timesteps(d, flip_sin_to_cos=True, downscale_freq_shift=0)
        self.time_embedding = TimestepEmbedding(d, d)
        self.condition = HandConditionEmbedding(c.condition, d)
        self.blocks = nn.ModuleList([AdaLNBlock(d, c.heads, d // c.heads) for _ in range(c.depth)])
        self.norm_out = nn.LayerNorm(d, elementwise_affine=False, eps=1e-6)
        self.modulation_out = nn.Linear(d, 2 * d)
        self.out_proj = nn.Linear(d, c.layout.dim)
        for layer in (self.modulation_out, self.out_proj):
            nn.init.zeros_(layer.weight)
            nn.init.zeros_(layer.bias)
        self.layout = c.layout

    def forward(self, noisy: torch.Tensor, t: torch.Tensor, audio: torch.Tensor, prev: torch.Tensor | None = None,
                prev_mask: torch.Tensor | None = None, **condition) -> torch.Tensor:
        """noisy (b, f, D); t (b,) or scalar; audio (b, f, A); prev (b, m, D) with prev_mask (b, m, 3);
        condition: style/offset/speed/amplitude/clip for HandConditionEmbedding. Returns (b, f, D)."""
        b, f, _ = noisy.shape
        ones = noisy.new_ones(b, f, N_PARTS)
        x = self.in_proj(torch.cat([noisy, ones], -1)) + self.audio_proj(audio) + self.token_type.weight[1]
        m = 0
        if prev is not None and prev.shape[1]:
            m = prev.shape[1]
            pm = prev_mask.to(prev) if prev_mask is not None else prev.new_ones(b, m, N_PARTS)
            p = self.in_proj(torch.cat([prev * self.layout.feature_mask(pm), pm], -1)) + self.token_type.weight[0]
            x = torch.cat([p, x], 1)  # (b, m + f, d)
        if m + f > self.pos.pe.shape[1]:
            raise ValueError(f"{m} previous + {f} clip frames exceed max_len={self.pos.pe.shape[1]}")
        x = self.pos(x)
        t = torch.as_tensor(t, device=noisy.device).reshape(-1).expand(b)
        temb = self.time_embedding(self.time_proj(t).to(noisy.dtype))  # (b, d)
        cond = self.condition(temb, f, **condition)  # (b, f, d)
        if m:  # speed describes the clip's frames; previous frames get the clip-level condition only
            cond = torch.cat([self.condition(temb, m, **{**condition, "speed": None}), cond], 1)
        for block in self.blocks:
            x = block(x, cond)
        shift, scale = self.modulation_out(F.silu(cond)).chunk(2, -1)
        x = self.norm_out(x) * (1 + scale) + shift
        return self.out_proj(x[:, m:])


CONDITION_KEYS = ("style", "offset", "speed", "amplitude", "clip")


class EMO2Stage1Net(ConfiguredModel):
    """Batches: `motion` (b, f, D) clean body-relative motion (layout.pack), `mask` (b, f, 3) present parts,
    `audio` (b, f, A) or (b, f, t, d); optional `prev`/`prev_mask` (b, m, D)/(b, m, 3) and the conditions
    `style` (b,), `offset` (b, 4), `speed` (b, f) or (b,), `amplitude` (b,), `clip` (b, c). In training,
    missing `speed`/`amplitude` are measured from the target motion."""

    config_class = EMO2Stage1Config

    def __init__(self, config: EMO2Stage1Config | None = None, **fields):
        super().__init__(config, **fields)
        self.denoiser = HandMotionDenoiser(self.config)

    @property
    def layout(self) -> MotionLayout:
        return self.config.layout

    def scheduler(self) -> DDIMScheduler:
        return DDIMScheduler(**STAGE1_SCHEDULER)

    def denoiser_inputs(self, batch: dict, audio: torch.Tensor | None = None) -> dict:
        """The denoiser's keyword inputs from a batch (audio flattened to (b, f, A))."""
        a = batch["audio"] if audio is None else audio
        return dict(audio=a.flatten(2) if a.ndim == 4 else a, prev=batch.get("prev"), prev_mask=batch.get("prev_mask"),
                    **{k: batch[k] for k in CONDITION_KEYS if batch.get(k) is not None})

    def measured_condition(self, motion: torch.Tensor, mask: torch.Tensor) -> dict:
        """Hand speed (b, f) and amplitude (b,) of clean motion (b, f, D) with its part mask (b, f, 3)."""
        hands, _ = self.layout.unpack(motion)
        present = mask[..., :2].bool()
        return {"speed": hand_speed(hands, present), "amplitude": hand_amplitude(hands, present)}

    @torch.no_grad()
    def sample(self, batch: dict, frames: int, steps: int, generator: torch.Generator,
               guidance_scale: float = 1.0) -> torch.Tensor:
        """(b, frames, D) motion; classifier-free guidance on audio when guidance_scale != 1."""
        scheduler = self.scheduler()
        scheduler.set_timesteps(steps)
        inputs = self.denoiser_inputs(batch)
        b = inputs["audio"].shape[0]
        x = torch.randn((b, frames, self.layout.dim), generator=generator).to(inputs["audio"])
        silent = {**inputs, "audio": torch.zeros_like(inputs["audio"])}
        if guidance_scale == 1.0:
            return denoise(lambda z, t: self.denoiser(z, t, **inputs), scheduler, x)
        return denoise(lambda z, t: torch.cat([self.denoiser(z, t, **silent), self.denoiser(z, t, **inputs)]),
                       scheduler, x, guidance_scale)



# ============================================================================ stage 2: guided video generation


@dataclass
class EMO2Stage2Config:
    unet: dict = field(default_factory=lambda: dict(SD15_UNET))
    audio_dim: int = 768
    audio_radius: int = 2
    motion: TemporalConfig = field(default_factory=TemporalConfig)
    guider_channels: tuple[int, ...] = (16, 32, 96, 256)  # 4 stages: maps at 8x the latent size
    discriminator: PoseDiscriminatorConfig = field(default_factory=PoseDiscriminatorConfig)
    pose_loss_weight: float = 0.1

    def denoising(self) -> VideoUNetConfig:
        return VideoUNetConfig(unet=self.unet, motion_module=self.motion, audio_attention_dim=self.audio_dim,
                               stack_enable_blocks_name=(), stack_enable_blocks_depth=())

    @property
    def map_scale(self) -> int:  # guidance-map pixels per latent pixel
        return 2 ** (len(self.guider_channels) - 1)

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> "EMO2Stage2Config":
        d = {k: v for k, v in d.items() if k in cls.__dataclass_fields__}
        if isinstance(d.get("motion"), dict):
            d["motion"] = TemporalConfig.from_dict(d["motion"])
        if isinstance(d.get("discriminator"), dict):
            d["discriminator"] = PoseDiscriminatorConfig.from_dict(d["discriminator"])
        if "guider_channels" in d:
            d["guider_channels"] = tuple(d["guider_channels"])
        return cls(**d)


class EMO2Stage2Net(ReferenceVideoNet):
    """Batches as EMO's (`ref`, `audio`, `target`) plus `pose_maps` (b, 4, f, H, W) from `guidance_maps`,
    `hand_confidence` (b, f, 2) and, for the pose discriminator loss, `body` (b, f, 12, 2) keypoints in
    [0, 1] with `body_mask` (b, f, 12)."""

    config_class = EMO2Stage2Config

    def __init__(self, config: EMO2Stage2Config | None = None, **fields):
        super().__init__(config, **fields)
        config = self.config
        channels = self.denoising_unet.unet_config.block_out_channels[0]
        self.pose_guider = PoseGuider(channels, block_out_channels=config.guider_channels)
        self.hand_confidence = HandConfidenceEmbedding(self.denoising_unet.time_embedding.linear_2.out_features)
        self.pose_discriminator = PoseDiscriminator(config.discriminator)

    @staticmethod
    def guidance_maps(hands: torch.Tensor, hand_mask: torch.Tensor, body: torch.Tensor, body_mask: torch.Tensor,
                      size: tuple[int, int]) -> torch.Tensor:
        """(b, f, 2, 21, ≥2), (b, f, 2), (b, f, 12, 2), (b, f, 12) in [0, 1] -> (b, 4, f, H, W) maps."""
        return torch.stack([render_guidance(*x, size) for x in zip(hands, hand_mask.bool(), body, body_mask.bool())])

    def audio_tokens(self, audio: torch.Tensor) -> torch.Tensor:  # (b, f, t, d) -> (b, f, (2m+1) t, d)
        return audio_windows(audio, self.config.audio_radius)

    def frame_embedding(self, batch: dict, temb_shape: tuple[int, int]) -> torch.Tensor | None:
        conf = batch.get("hand_confidence")
        return None if conf is None else self.hand_confidence(conf)  # (b, f, d_time)

    def location(self, batch: dict) -> torch.Tensor | None:
        """The pose guider's features of the rendered hand/arm/leg maps, added after conv_in."""
        return self.pose_guider(batch["pose_maps"]) if batch.get("pose_maps") is not None else None


