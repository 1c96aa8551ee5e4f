"""Sampling for the Hallo family: clips of `clip_length` frames, each conditioned on the portrait
(reference bank), the previous clip's last frames (motion frames), audio tokens and region masks, denoised
with classifier-free guidance, decoded frame by frame and streamed out.

Reproduces the official FaceAnimatePipeline numerics (see the hallo reference data's README §4) with
these speed-ups that keep parity: the unconditional rows skip the reference attention they would
discard, cond/uncond run as one batch, SDPA attention, and optional fp16/bf16 and other schedulers.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch

from ...pipelines.reference_net import ReferenceNetPipeline
from ...sampling import denoise, split_guidance
from .model import HalloNet

VAE_SCALE = 0.18215  # official Hallo hard-codes SD's latent scale, whatever the VAE config says
BRANCH_NAMES = ("full", "face", "lip")

# configs/inference/default.yaml + the DDIM settings of scripts/inference.py
DEFAULT_SCHEDULER = {
    "num_train_timesteps": 1000, "beta_start": 0.00085, "beta_end": 0.012, "beta_schedule": "linear",
    "clip_sample": False, "steps_offset": 1, "prediction_type": "v_prediction",
    "rescale_betas_zero_snr": True, "timestep_spacing": "trailing", "set_alpha_to_one": True,
}


@dataclass
class SamplingConfig:
    """Official inference defaults (configs/inference/default.yaml)."""

    steps: int = 40
    guidance_scale: float = 3.5
    clip_length: int = 16  # frames generated per clip
    n_motion_frames: int = 2  # last frames of the previous clip fed back as context
    branch_weights: tuple[float, float, float] = (1.0, 1.0, 1.0)  # pose, face, lip (Hallo's motion_scale)
    seed: int = 42


@dataclass
class ClipCondition:
    """Everything one clip is conditioned on, already in the CFG batch layout [uncond, cond]."""

    image_tokens: torch.Tensor  # (g, n, d)
    audio_tokens: torch.Tensor  # (g, f, tokens, d)
    location: torch.Tensor  # (g, c, f, h, w)
    masks: dict[str, list[torch.Tensor]]  # branch -> per level ((g f), h_l*w_l)
    branch_weights: tuple[float, float, float] = (1.0, 1.0, 1.0)
    groups: int = 2  # 2 with guidance, 1 without


class HalloPipeline(ReferenceNetPipeline):
    """Owns the loaded parts; every step of sampling is a method, so tests and `verify` run the same code."""

    default_scheduler = DEFAULT_SCHEDULER

    net: HalloNet

    # -- images <-> latents ----------------------------------------------------------------------------
    @torch.no_grad()
    def encode_images(self, pixels: torch.Tensor) -> torch.Tensor:  # (n, 3, H, W) in [-1, 1] -> (n, 4, h, w)
        pixels = pixels.to(self.device, self.vae.dtype)
        return self.vae.encode(pixels).latent_dist.mean.to(self.dtype) * VAE_SCALE

    @torch.no_grad()
    def decode_latents(self, latents: torch.Tensor) -> torch.Tensor:  # (b, 4, f, h, w) -> (b, 3, f, H, W) in [0, 1]
        frames = [self.vae.decode(latents[:, :, i].to(self.vae.dtype) / VAE_SCALE).sample
                  for i in range(latents.shape[2])]
        return (torch.stack(frames, dim=2).float() / 2 + 0.5).clamp(0, 1)

    # -- conditions ------------------------------------------------------------------------------------
    @torch.no_grad()
    def image_tokens(self, face_embedding: torch.Tensor, guidance: bool) -> torch.Tensor:  # (1, 512) -> (g, n, d)
        emb = face_embedding.to(self.device, self.dtype)
        cond = self.net.imageproj(emb)
        return torch.cat([self.net.imageproj(torch.zeros_like(emb)), cond]) if guidance else cond

    @torch.no_grad()
    def audio_tokens(self, windows: torch.Tensor, guidance: bool) -> torch.Tensor:  # (1, f, w, l, c) -> (g, f, n, d)
        tokens = self.net.audioproj(windows.to(self.device, self.dtype))
        return torch.cat([torch.zeros_like(tokens), tokens]) if guidance else tokens

    @torch.no_grad()
    def location(self, region: torch.Tensor, frames: int, guidance: bool) -> torch.Tensor:
        """region (1, 3, H, W) in [0, 1] -> (g, c, f, h, w) face-locator features (zeros for uncond)."""
        video = region.to(self.device, self.dtype)[:, :, None].repeat(1, 1, frames, 1, 1)
        feats = self.net.face_locator(video)
        return torch.cat([torch.zeros_like(feats), feats]) if guidance else feats

    def condition(self, face_embedding: torch.Tensor, audio_windows: torch.Tensor, region: torch.Tensor,
                  masks: dict[str, list[torch.Tensor]], guidance: bool,
                  branch_weights: tuple[float, float, float] = (1.0, 1.0, 1.0)) -> ClipCondition:
        """masks: branch -> per level (f, h_l*w_l) (one clip, not yet duplicated for CFG)."""
        frames = audio_windows.shape[1]
        groups = 2 if guidance else 1
        dup = {k: [m.to(self.device, self.dtype).repeat(groups, 1) for m in v] for k, v in masks.items()}
        return ClipCondition(self.image_tokens(face_embedding, guidance),
                             self.audio_tokens(audio_windows, guidance),
                             self.location(region, frames, guidance), dup, tuple(branch_weights), groups)

    # -- reference bank --------------------------------------------------------------------------------
    @torch.no_grad()
    def fill_bank(self, ref_latents: torch.Tensor, cond: ClipCondition) -> None:
        """Run the reference UNet once on [portrait, motion frames] (latents (1+m, 4, h, w)).

        As officially: each CFG group sees all images, and the image tokens are tiled across the
        batch ([u, c, u, c, ...]), so images within a group get alternating tokens.
        """
        g = cond.groups
        n_images = ref_latents.shape[0]
        batch = ref_latents.to(self.device, self.dtype).repeat(g, 1, 1, 1)
        tokens = cond.image_tokens.repeat(n_images, 1, 1)
        self.bank.clear()
        self.bank.groups = g
        self.bank.uncond_groups = 1 if g == 2 else 0
        self.bank.recording = True
        try:
            t = torch.zeros(batch.shape[0], device=self.device, dtype=torch.long)
            self.net.reference_unet(batch, t, encoder_hidden_states=tokens, return_dict=False)
        finally:
            self.bank.recording = False

    # -- denoising -------------------------------------------------------------------------------------
    @torch.no_grad()
    def model_output(self, latents: torch.Tensor, t: torch.Tensor, cond: ClipCondition) -> torch.Tensor:
        """The denoising UNet on the CFG batch: latents (1, 4, f, h, w) -> (g, 4, f, h, w)."""
        batch = latents.to(self.dtype).repeat(cond.groups, 1, 1, 1, 1)
        batch = self.scheduler.scale_model_input(batch, t)
        return self.net.denoising_unet(batch, t, cond.image_tokens, cond.audio_tokens, cond.location,
                                       cond.masks, cond.branch_weights, self.bank)

    @staticmethod
    def guided(out: torch.Tensor, guidance_scale: float) -> torch.Tensor:
        """The CFG batch (g, ...) -> the guided prediction (one branch when g is 1)."""
        return split_guidance(out, guidance_scale if out.shape[0] > 1 else None)

    @torch.no_grad()
    def sample_clip(self, ref_latents: torch.Tensor, cond: ClipCondition, latents: torch.Tensor, steps: int,
                    guidance_scale: float, trace: dict | None = None, progress=None) -> torch.Tensor:
        """Denoise `latents` (1, 4, f, h, w) from pure noise; the bank is filled once for the clip."""
        self.scheduler.set_timesteps(steps, device=self.device)
        latents = latents.to(self.device, torch.float32) * self.scheduler.init_noise_sigma
        self.fill_bank(ref_latents, cond)

        def record(i, t, x, out):
            trace[f"step_in_latents.{i}"] = x.clone()
            trace[f"step_guided_out.{i}"] = out.clone()

        return denoise(lambda x, t: self.model_output(x, t, cond).float(), self.scheduler, latents,  # DDIM: eta 0
                       guidance_scale if cond.groups > 1 else None, on_step=record if trace is not None else None,
                       progress=progress)
