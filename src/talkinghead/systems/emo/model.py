"""EMO (Tian et al. 2024, "Emote Portrait Alive"): ReferenceNet + video UNet whose audio layers cross-attend
to frame-concatenated windows of wav2vec features, motion frames through the reference net, and speed
layers (head-speed buckets → an embedding added to each frame's timestep embedding). No official weights
exist; this is a trainable re-implementation with typed configs."""
from __future__ import annotations

from dataclasses import dataclass, field

import torch

from ...models.reference_video import ReferenceVideoNet
from ...models.unet3d import SD15_UNET, VideoUNetConfig
from ...nn.audio_windows import audio_windows
from ...nn.face_locator import FaceLocator
from ...nn.speed import SpeedConfig, SpeedEmbedding
from ...nn.temporal import TemporalConfig


@dataclass
class EMOConfig:
    unet: dict = field(default_factory=lambda: dict(SD15_UNET))
    audio_dim: int = 768  # wav2vec feature width
    audio_radius: int = 2  # frames of audio context on each side (windows of 2m+1 frames)
    motion: TemporalConfig = field(default_factory=TemporalConfig)
    speed: SpeedConfig | None = field(default_factory=SpeedConfig)
    # EMO's face locator: stage widths of a conv encoder of the face-region mask, added to the noisy latents
    # after conv_in (k stages downsample by 2^(k-1): (16,) for pixel space, 4 stages for SD-VAE latents);
    # None leaves it out. It is used when a batch carries `face_region` (b, 1, f, H, W).
    face_locator: tuple[int, ...] | None = (16, 32, 64, 128)

    def denoising(self) -> VideoUNetConfig:
        return VideoUNetConfig(unet=self.unet, motion_module=self.motion, audio_attention_dim=self.audio_dim,
                               stack_enable_blocks_name=(), stack_enable_blocks_depth=())  # plain audio attention


class EMONet(ReferenceVideoNet):
    config_class = EMOConfig

    def __init__(self, config: EMOConfig | None = None, **fields):
        super().__init__(config, **fields)
        config = self.config
        self.speed = SpeedEmbedding(config.speed) if config.speed is not None else None
        self.face_locator = None
        if config.face_locator:
            self.face_locator = FaceLocator(self.denoising_unet.unet_config.block_out_channels[0], 1,
                                            tuple(config.face_locator))

    def audio_tokens(self, audio: torch.Tensor) -> torch.Tensor:  # (b, f, t, d) -> (b, f, (2m+1) t, d)
        return audio_windows(audio, self.config.audio_radius)

    def location(self, batch: dict) -> torch.Tensor | None:
        """Face-locator features of the face-region mask, when the net has a locator and the batch the mask."""
        if self.face_locator is None or batch.get("face_region") is None:
            return None
        return self.face_locator(batch["face_region"])  # (b, c0, f, h, w)

    def frame_embedding(self, batch: dict, temb_shape: tuple[int, int]) -> torch.Tensor | None:
        if self.speed is None or "speed" not in batch:
            return None
        return self.speed(batch["speed"])  # (b, f, d_time)
