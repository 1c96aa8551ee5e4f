"""Sampling for the DiT family (Hallo3 here, Hallo4 in pipelines/hallo4.py): long videos as clips of
`clip_frames` frames; the first clip is conditioned on the portrait's 3D-VAE latent, every later one on the
latents of the previous clip's last `motion_frames` frames (Hallo3 §3.4), denoised with audio
classifier-free guidance, decoded, and yielded clip by clip so memory stays flat with audio length.

    pipe = Hallo3Pipeline.from_pretrained(local_folder)  # transformer/ + vae/, never downloaded
    for chunk in pipe(portrait, face_embedding, audio_windows, text_tokens):  # (f, H, W, 3) uint8
        writer.write(chunk)
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

import numpy as np
import torch
from diffusers import AutoencoderKLCogVideoX, CogVideoXDDIMScheduler
from tqdm.auto import tqdm

from ..errors import InputError
from ..models.hallo3 import COGVIDEOX_SCHEDULER, Hallo3Model

WEIGHT_FILES = ("diffusion_pytorch_model.safetensors",)


@dataclass
class DiTSamplingConfig:
    steps: int = 50
    guidance_scale: float = 3.5  # audio classifier-free guidance (1: off)
    clip_frames: int = 49  # video frames per clip, 1 + 4k (CogVideoX: 49 -> 13 latent frames)
    motion_frames: int = 5  # last frames of a clip that condition the next one, 1 + 4k (ours: 2 latent frames)
    seed: int = 42
    progress: bool = True

    def validate(self) -> "DiTSamplingConfig":
        for name in ("clip_frames", "motion_frames"):
            v = getattr(self, name)
            if v < 1 or (v - 1) % 4:
                raise InputError(f"{name} must be 1 + 4k for the causal 3D VAE, got {v}", "use 5, 9, 13, ..., 49")
        if self.motion_frames >= self.clip_frames:
            raise InputError(f"motion_frames ({self.motion_frames}) must be fewer than clip_frames "
                             f"({self.clip_frames})", "lower motion_frames")
        if self.steps < 1:
            raise InputError(f"steps must be at least 1, got {self.steps}", "use e.g. 50")
        return self


def check_release(folder: Path, parts: dict[str, str]) -> None:
    """InputError listing every missing file of a diffusers-style release folder (part -> subfolder)."""
    folder = Path(folder)
    missing = []
    for part, sub in parts.items():
        d = folder / sub
        if not (d / "config.json").is_file():
            missing.append(f"{sub}/config.json ({part})")
        if not any((d / name).is_file() for name in WEIGHT_FILES):
            missing.append(f"{sub}/{WEIGHT_FILES[0]} ({part})")
    if missing:
        raise InputError(f"{folder} is missing local weights: " + ", ".join(missing),
                         "nothing is downloaded: save the model with save_pretrained() into that folder "
                         "(transformer/, vae/) or point to the folder that holds them")


class DiTClipPipeline:
    """Clip loop shared by the DiT systems. Subclasses define `model_output` (the guided prediction for one
    step) and may prepare per-clip state in `begin_clip`. Per-frame conditions have the frame axis at 1."""

    guided_keys: tuple[str, ...] = ("audio_windows",)  # zeroed in the unconditional half
    model_class: type  # the system's model (diffusers ModelMixin), saved in the folder's transformer/
    model_name: str  # how missing-file messages name it

    @classmethod
    def from_pretrained(cls, folder: str | Path):
        """A local folder (never a hub id) with transformer/ (the model's save_pretrained) and vae/
        (AutoencoderKLCogVideoX); one InputError lists whatever is missing."""
        folder = Path(folder)
        check_release(folder, {cls.model_name: "transformer", "CogVideoX 3D VAE": "vae"})
        model = cls.model_class.from_pretrained(folder / "transformer", local_files_only=True)
        vae = AutoencoderKLCogVideoX.from_pretrained(folder / "vae", local_files_only=True)
        return cls(model, vae)

    def __init__(self, model, vae: AutoencoderKLCogVideoX, scheduler):
        self.model = model.eval()
        self.vae = vae.eval()
        self.scheduler = scheduler

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    @property
    def dtype(self) -> torch.dtype:
        return next(self.model.parameters()).dtype

    # -- pixels <-> latents -------------------------------------------------------------------------
    @torch.no_grad()
    def encode_video(self, pixels: torch.Tensor) -> torch.Tensor:
        """(b, 3, T, H, W) in [-1, 1] -> scaled latents (b, T', c, h, w) (the distribution's mode)."""
        z = self.vae.encode(pixels.to(self.device, self.vae.dtype)).latent_dist.mode()
        return (z * self.vae.config.scaling_factor).permute(0, 2, 1, 3, 4).to(self.dtype)

    @torch.no_grad()
    def decode_latents(self, latents: torch.Tensor) -> torch.Tensor:
        """(b, T', c, h, w) scaled latents -> (b, 3, T, H, W) in [0, 1]."""
        z = latents.permute(0, 2, 1, 3, 4).to(self.vae.dtype) / self.vae.config.scaling_factor
        return (self.vae.decode(z).sample.float() / 2 + 0.5).clamp(0, 1)

    # -- hooks --------------------------------------------------------------------------------------
    def begin_clip(self, cond: dict, reference_latents: torch.Tensor) -> None:
        """Per-clip work done once, before the denoising steps."""

    def model_output(self, x: torch.Tensor, t: torch.Tensor, cond: dict, motion: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    # -- sampling -----------------------------------------------------------------------------------
    def guided_conditions(self, cond: dict, guidance: bool) -> dict:
        """[unconditional, conditional] rows: the guided conditions zeroed in the first half."""
        if not guidance:
            return cond
        return {k: (torch.cat([torch.zeros_like(v) if k in self.guided_keys else v, v]) if torch.is_tensor(v) else v)
                for k, v in cond.items()}

    @torch.no_grad()
    def sample_clip(self, cond: dict, motion: torch.Tensor, shape: tuple, config: DiTSamplingConfig,
                    generator: torch.Generator, bar=None) -> torch.Tensor:
        """Denoise one clip of latents `shape` (1, T', c, h, w) from seeded noise."""
        guidance = config.guidance_scale != 1.0
        cond = self.guided_conditions(cond, guidance)
        motion = torch.cat([motion, motion]) if guidance else motion
        self.scheduler.set_timesteps(config.steps, device=self.device)
        latents = torch.randn(shape, generator=generator, dtype=torch.float32).to(self.device)
        latents = latents * getattr(self.scheduler, "init_noise_sigma", 1.0)
        for t in self.scheduler.timesteps:
            x = torch.cat([latents, latents]) if guidance else latents
            if hasattr(self.scheduler, "scale_model_input"):
                x = self.scheduler.scale_model_input(x, t)
            out = self.model_output(x.to(self.dtype), t, cond, motion).float()
            if guidance:
                uncond, c = out.chunk(2)
                out = uncond + config.guidance_scale * (c - uncond)
            latents = self.scheduler.step(out, t, latents, return_dict=False)[0]
            if bar is not None:
                bar.update(1)
        return latents

    def generate(self, reference: torch.Tensor, per_frame: dict[str, torch.Tensor], static: dict,
                 config: DiTSamplingConfig) -> Iterator[np.ndarray]:
        """Yield (f, H, W, 3) uint8 chunks, one per clip, covering every frame of the `per_frame` conditions.
        `reference` (1, 3, H, W) in [-1, 1]; `per_frame` tensors (1, N, ...); `static` tensors (1, ...)."""
        config.validate()
        total = next(iter(per_frame.values())).shape[1]
        T, n = config.clip_frames, config.motion_frames
        clips = 1 + math.ceil(max(0, total - T) / (T - n))
        generator = torch.Generator().manual_seed(config.seed)
        ref_latents = self.encode_video(reference[:, :, None])  # (1, 1, c, h, w)
        _, _, c, h, w = ref_latents.shape
        shape = (1, 1 + (T - 1) // 4, c, h, w)
        motion, emitted = ref_latents, 0
        with tqdm(total=clips * config.steps, disable=not config.progress, desc=type(self).__name__,
                  unit="step") as bar:
            while emitted < total:
                first = emitted == 0
                start = 0 if first else emitted - n  # conditions' frame index of the clip's frame 0
                idx = torch.arange(start, start + T).clamp(max=total - 1)  # past the end: repeat the last frame
                cond = {**static, **{k: v[:, idx] for k, v in per_frame.items()}}
                self.begin_clip(cond, ref_latents)
                latents = self.sample_clip(cond, motion, shape, config, generator, bar)
                pixels = self.decode_latents(latents)  # (1, 3, T, H, W)
                keep = pixels[0, :, (0 if first else n):][:, : total - emitted]  # (3, f, H, W)
                yield (keep.permute(1, 2, 3, 0) * 255).round().to(torch.uint8).cpu().numpy()
                emitted += keep.shape[1]
                motion = self.encode_video(pixels[:, :, -n:] * 2 - 1)  # (1, m, c, h, w)


class Hallo3Pipeline(DiTClipPipeline):
    """Hallo3 sampling: the identity reference network runs once per clip; audio CFG."""

    model_class, model_name = Hallo3Model, "Hallo3 model"

    def __init__(self, model: Hallo3Model, vae: AutoencoderKLCogVideoX,
                 scheduler: CogVideoXDDIMScheduler | None = None):
        super().__init__(model, vae, scheduler or CogVideoXDDIMScheduler(**COGVIDEOX_SCHEDULER))

    def begin_clip(self, cond: dict, reference_latents: torch.Tensor) -> None:
        self.model.encode_reference(reference_latents, cond["text"])

    def model_output(self, x: torch.Tensor, t: torch.Tensor, cond: dict, motion: torch.Tensor) -> torch.Tensor:
        return self.model(x, t, cond["text"], cond.get("face_embedding"), cond.get("audio_windows"), motion,
                          reuse_reference=True)

    def __call__(self, reference: torch.Tensor, face_embedding: torch.Tensor, audio_windows: torch.Tensor,
                 text: torch.Tensor, config: DiTSamplingConfig | None = None) -> Iterator[np.ndarray]:
        """reference (1, 3, H, W) in [-1, 1]; face_embedding (1, 512); audio_windows (1, N, window, layers,
        channels) for N output frames; text (1, L, text_embed_dim). Yields (f, H, W, 3) uint8 per clip."""
        dev, dt = self.device, self.dtype
        static = {"text": text.to(dev, dt), "face_embedding": face_embedding.to(dev, dt)}
        return self.generate(reference, {"audio_windows": audio_windows.to(dev, dt)}, static,
                             (config or DiTSamplingConfig()).validate())
