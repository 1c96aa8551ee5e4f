"""Hallo4 sampling: the DiT clip loop of pipelines/hallo3.py with a rectified-flow Euler sampler and
per-frame audio + skeleton keypoints feeding the temporal motion modulation; audio and motion are dropped
together in the unconditional half of classifier-free guidance."""
from __future__ import annotations

from typing import Iterator

import numpy as np
import torch
from diffusers import AutoencoderKLCogVideoX, FlowMatchEulerDiscreteScheduler

from ..models.hallo4 import Hallo4Model
from .hallo3 import DiTClipPipeline, DiTSamplingConfig

FLOW_SCHEDULER = {"num_train_timesteps": 1000, "shift": 3.0}  # ours: a resolution shift as Wan/SD3 samplers use


class Hallo4Pipeline(DiTClipPipeline):
    guided_keys = ("audio_windows", "keypoints")
    model_class, model_name = Hallo4Model, "Hallo4 model"

    def __init__(self, model: Hallo4Model, vae: AutoencoderKLCogVideoX,
                 scheduler: FlowMatchEulerDiscreteScheduler | None = None):
        super().__init__(model, vae, scheduler or FlowMatchEulerDiscreteScheduler(**FLOW_SCHEDULER))

    def model_output(self, x: torch.Tensor, t: torch.Tensor, cond: dict, motion: torch.Tensor) -> torch.Tensor:
        return self.model(x, t.expand(x.shape[0]), cond["text"], cond.get("audio_windows"), cond.get("keypoints"),
                          motion)

    def __call__(self, reference: torch.Tensor, audio_windows: torch.Tensor, keypoints: torch.Tensor,
                 text: torch.Tensor, config: DiTSamplingConfig | None = None) -> Iterator[np.ndarray]:
        """reference (1, 3, H, W) in [-1, 1]; audio_windows (1, N, window, layers, channels) and keypoints
        (1, N, K, 2) in [0, 1] for N output frames; text (1, L, text_embed_dim). Yields (f, H, W, 3) uint8."""
        if keypoints.shape[1] != audio_windows.shape[1]:
            from ..errors import InputError

            raise InputError(f"{keypoints.shape[1]} frames of keypoints for {audio_windows.shape[1]} frames of audio",
                             "give one keypoint set per output frame")
        dev, dt = self.device, self.dtype
        per_frame = {"audio_windows": audio_windows.to(dev, dt), "keypoints": keypoints.to(dev, dt)}
        return self.generate(reference, per_frame, {"text": text.to(dev, dt)},
                             (config or DiTSamplingConfig()).validate())
