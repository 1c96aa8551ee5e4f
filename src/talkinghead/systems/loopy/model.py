"""Loopy (Jiang et al. 2024, arXiv 2409.02634): audio-only conditioning with long-term motion context.
A temporal segment module abstracts a long motion-frame history into a few frames that the reference net
encodes; every temporal layer of the video UNet is Loopy's inter/intra-clip module (the clip attends over
[those frames' features, the clip], then over itself); an audio-to-latents module turns audio into a
motion latent added to every frame's timestep embedding.
No official weights exist; this is a trainable re-implementation with typed configs."""
from __future__ import annotations

from dataclasses import dataclass, field

import torch
from einops import rearrange
from torch import nn

from ...models.reference_video import ReferenceVideoNet
from ...models.unet3d import SD15_UNET, VideoUNetConfig
from ...nn.loopy import AudioToLatents, AudioToLatentsConfig, LoopyMotionModule, temporal_segment_indices
from ...nn.temporal import TemporalConfig


@dataclass
class LoopyConfig:
    unet: dict = field(default_factory=lambda: dict(SD15_UNET))
    audio_dim: int = 768
    motion: TemporalConfig = field(default_factory=TemporalConfig)
    segment_stride: int = 4  # abstract frames per segment (s)
    segment_expand: int = 2  # each older segment covers r times more frames
    audio_to_latents: AudioToLatentsConfig = field(default_factory=AudioToLatentsConfig)
    temporal: str = "loopy"  # "loopy": inter/intra-clip modules; "animatediff": the UNet family's motion module
    max_motion_frames: int = 32  # abstract motion frames the inter-clip layer's frame slots cover
    max_frames: int = 32  # clip frames the frame slots cover

    def denoising(self) -> VideoUNetConfig:
        return VideoUNetConfig(unet=self.unet, motion_module=self.motion, audio_attention_dim=self.audio_dim,
                               stack_enable_blocks_name=(), stack_enable_blocks_depth=())


class LoopyNet(ReferenceVideoNet):
    """Batches as `ReferenceVideoNet`, with `history` (b, n, 4, h, w) motion-frame latents (oldest first)
    instead of motion frames in `ref`, and in training `head_motion`/`expression` (b, f, 1) variances."""

    config_class = LoopyConfig

    def __init__(self, config: LoopyConfig | None = None, **fields):
        super().__init__(config, **fields)
        config = self.config
        if config.temporal not in ("loopy", "animatediff"):
            raise ValueError(f"temporal must be loopy or animatediff, got {config.temporal!r}")
        if config.temporal == "loopy":
            for block in self.denoising_unet.modules():
                modules = getattr(block, "motion_modules", None)
                if isinstance(modules, nn.ModuleList):
                    for j, old in enumerate(modules):
                        channels = old.temporal_transformer.norm.num_channels
                        modules[j] = LoopyMotionModule(channels, config.motion.num_attention_heads,
                                                       config.max_motion_frames, config.max_frames)
        self.audio_to_latents = AudioToLatents(config.audio_to_latents)

    def reference_images(self, batch: dict) -> torch.Tensor:
        """The portrait then the temporal segment module's abstraction of the motion-frame history."""
        history = batch.get("history")
        if history is None or not history.shape[1]:
            return batch["ref"]
        keep = temporal_segment_indices(history.shape[1], self.config.segment_stride, self.config.segment_expand)
        return torch.cat([batch["ref"][:, :1], history[:, keep]], dim=1)

    def frame_embedding(self, batch: dict, temb_shape: tuple[int, int]) -> torch.Tensor:
        audio = rearrange(batch["audio"], "b f t d -> b f (t d)")
        b, f = audio.shape[:2]
        zeros = torch.zeros(b, temb_shape[1], device=audio.device, dtype=audio.dtype)
        # the module adds the motion latent to a clip embedding; here only the addition is wanted
        return self.audio_to_latents(zeros, audio, batch.get("head_motion"), batch.get("expression"),
                                     batch.get("generator"))
