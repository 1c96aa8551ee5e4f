"""The training adapter the DiT systems share (Hallo3, Hallo4, SkyReels-A1, SkyReels-A2: each subclasses
`DiTSystem` in its systems/<name>/train.py).

Each adapter turns dataset clips into the latents and conditions its model file documents and calls that model's
objective. Clips go through the system's video VAE (`system.vae`: a local diffusers VAE folder of the
release; `size: tiny` builds the tiny VAE of the model file with seeded weights instead); the VAE is frozen
and never saved. Stand-ins for front ends this machine does not run, each noted where it is used: the T5 /
UMT5 prompt is the null prompt (zeros), the face-recognition embedding is zeros (identity comes from the
reference latents), SigLIP identity features are pooled portrait pixels, and without wav2vec2 features in the
dataset the per-frame log-mel windows are resampled (no parameters) to the audio projection's window shape.
"""
from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from ..errors import InputError
from .base import TrainSystem


def vae_from_folder(cls, folder: str):
    p = Path(folder).expanduser()
    if not (p / "config.json").is_file():
        raise InputError(f"system.vae {p} is not a diffusers VAE folder (no config.json)",
                         "point system.vae at the release's vae/ folder, or use size: tiny")
    try:
        vae = cls.from_pretrained(str(p), local_files_only=True)
    except (OSError, ValueError, EnvironmentError) as e:
        raise InputError(f"cannot load the VAE in {p}: {e}", "point system.vae at the release's vae/ folder") from None
    return vae


def resample_mel(audio: torch.Tensor, shape: tuple[int, int, int]) -> torch.Tensor:
    """(b, f, W, m, 80) log-mel windows -> (b, f, window, layers, channels): the window axis and the flattened
    (mel frame, bin) axis bilinearly resampled to the audio projection's window and layers x channels. The
    stand-in for wav2vec2 windows when the dataset has none: no parameters, the same mapping every step."""
    b, f, w, m, d = audio.shape
    window, layers, channels = shape
    x = audio.reshape(b * f, 1, w, m * d)
    x = F.interpolate(x, size=(window, layers * channels), mode="bilinear", align_corners=False)
    return x.reshape(b, f, window, layers, channels)


def pooled_tokens(images: torch.Tensor, n: int, dim: int) -> torch.Tensor:
    """(b, 3, H, W) portraits -> (b, n, dim): the image average-pooled to ceil(sqrt n)^2 cells, the first n
    cells' RGB resampled to `dim` (a parameter-free stand-in for SigLIP identity features)."""
    side = int(np.ceil(np.sqrt(n)))
    cells = F.adaptive_avg_pool2d(images, side).flatten(2).transpose(1, 2)[:, :n]  # (b, n, 3)
    return F.interpolate(cells, size=dim, mode="linear", align_corners=False)


class DiTSystem(TrainSystem):
    """Shared by the DiT adapters: the frozen VAE, clips -> latents, the portrait latent, audio windows."""

    vae_kind = "cogvideox"  # cogvideox | wan
    frames_multiple = 4  # clip_frames must be 1 + 4k (causal 3D VAE)

    def __init__(self, config):
        super().__init__()
        self.train_config = config
        self.vae = self.build_vae(config).requires_grad_(False).eval()
        self.net = self.build_net(config)

    # ---------------------------------------------------------- construction (per system)

    def build_net(self, config) -> nn.Module:
        raise NotImplementedError

    def tiny_vae_config(self) -> dict:
        raise NotImplementedError

    def build_vae(self, config):
        from diffusers import AutoencoderKLCogVideoX, AutoencoderKLWan

        cls = AutoencoderKLWan if self.vae_kind == "wan" else AutoencoderKLCogVideoX
        if config.system.vae:
            return vae_from_folder(cls, config.system.vae)
        if config.system.size != "tiny":
            raise InputError(f"{config.system.name} trains in its release VAE's latent space; system.vae is not set",
                             "set system.vae to the release's vae/ folder (or size: tiny for a tiny model)")
        return cls(**self.tiny_vae_config())

    @classmethod
    def from_train_config(cls, config, dataset) -> "DiTSystem":
        return cls(config)

    @classmethod
    def check_config(cls, config) -> None:
        super().check_config(config)
        if (config.clip_frames - 1) % cls.frames_multiple:
            raise InputError(f"clip_frames must be 1 + {cls.frames_multiple}k for the causal 3D VAE, "
                             f"not {config.clip_frames}", "e.g. clip_frames: 49")
        if config.motion_frames and (config.motion_frames - 1) % cls.frames_multiple:
            raise InputError(f"motion_frames must be 0 or 1 + {cls.frames_multiple}k, not {config.motion_frames}",
                             "e.g. motion_frames: 5")

    @classmethod
    def smoke_overrides(cls, config):
        return replace(config, clip_frames=5, motion_frames=1 if config.motion_frames else 0)

    # ---------------------------------------------------------- data

    @torch.no_grad()
    def encode(self, frames: torch.Tensor) -> torch.Tensor:
        """(b, T, 3, H, W) in [-1, 1] -> (b, T', c, h, w) scaled latents (the VAE's mean)."""
        x = frames.transpose(1, 2).to(self.vae.dtype)  # (b, 3, T, H, W)
        z = self.vae.encode(x).latent_dist.mode()  # (b, c, T', h, w)
        cfg = self.vae.config
        if self.vae_kind == "wan":
            mean = torch.tensor(cfg.latents_mean, dtype=z.dtype, device=z.device).view(1, -1, 1, 1, 1)
            std = torch.tensor(cfg.latents_std, dtype=z.dtype, device=z.device).view(1, -1, 1, 1, 1)
            z = (z - mean) / std
        else:
            z = z * cfg.scaling_factor
        return z.transpose(1, 2).float()

    def portrait_latent(self, batch: dict) -> torch.Tensor:
        """(b, 1, c, h, w): the reference frame as a one-frame clip."""
        return self.encode(batch["reference"][:, None])

    @staticmethod
    def audio_windows(batch: dict, shape: tuple[int, int, int]) -> torch.Tensor:
        """(b, f, window, layers, channels): wav2vec2 windows when the dataset has them in this shape,
        else the resampled log-mel windows; zeros where the audio condition is dropped."""
        feats = batch.get("audio_feats")
        if feats is not None and tuple(feats.shape[2:]) == tuple(shape):
            out = feats
        else:
            out = resample_mel(batch["audio"], shape)
        return out * (~batch["drop_audio"]).to(out.dtype).view(-1, 1, 1, 1, 1)


# ============================================================================ Hallo3


__all__ = ["vae_from_folder", "resample_mel", "pooled_tokens", "DiTSystem"]
