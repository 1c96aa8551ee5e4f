"""EchoMimic v1 sampling: the audio-driven `Audio2VideoPipeline` and the landmark-driven
`AudioPose2VideoPipeline` of the official code, reproduced number for number (see
the echomimic reference data's README, section 3), as methods that tests and `verify` run one by one.

One call renders the whole video in one go (no clips): every step denoises overlapping context windows of
`context_frames` frames, sums each frame's predictions, divides by how many windows covered it, then
applies guidance and one DDIM step. What the official code does and this reproduces by default:
- the reference UNet runs once per video (batch 1, timestep 0); its bank is cast to float16, and the
  unconditional rows of the CFG batch never read it;
- audio enters through the spatial cross-attention, one whisper window per frame (zeros for uncond),
  scaled by 3; the face-locator features are added after conv_in (zeros for uncond);
- the initial noise is one draw from the seeded generator, clamped to [-1.5, 1.5] in the audio-driven
  pipeline only; windows wrap around the end of the video and shift by 2 (audio) or 3 (landmark) frames
  per step;
- with guidance <= 1 the audio-driven pipeline sums overlapping window predictions without averaging
  them (`average_without_guidance=True` fixes that; the landmark pipeline always averages).
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from ...pipelines.reference_net import ReferenceNetPipeline
from ...sampling import denoise, split_guidance
from .model import EchoMimicNet


VAE_SCALE = 0.18215  # hard-coded upstream for encode and decode, whatever the VAE config says

# configs/inference/inference_v2.yaml: noise_scheduler_kwargs (DDIMScheduler defaults for the rest)
DEFAULT_SCHEDULER = {
    "beta_start": 0.00085, "beta_end": 0.012, "beta_schedule": "linear", "clip_sample": False, "steps_offset": 1,
    "prediction_type": "v_prediction", "rescale_betas_zero_snr": True, "timestep_spacing": "trailing",
}


@dataclass
class SamplingConfig:
    """The infer scripts' defaults (infer_audio2vid.py / infer_audio2vid_pose.py)."""

    steps: int = 30
    guidance_scale: float = 2.5
    context_frames: int = 12
    context_overlap: int = 3
    fps: float = 24.0
    seed: int = 420
    landmarks: bool = False  # AudioPose2VideoPipeline (per-frame landmark images) instead of Audio2VideoPipeline
    average_without_guidance: bool = False  # fix for the audio pipeline's unaveraged windows at guidance <= 1
    window_batch: int = 1  # context windows per UNet call (officially 1; more is faster on a GPU, same numbers)

    @property
    def shift_per_step(self) -> int:
        return 3 if self.landmarks else 2

    @property
    def clamp_noise(self) -> bool:
        return not self.landmarks


def context_windows(num_frames: int, context_frames: int, overlap: int) -> list[list[int]]:
    """Step 0 of the official `uniform` context scheduler (stride 1): windows of `context_frames` frames
    starting every `context_frames - overlap` frames, wrapping past the end; one window when the video is short."""
    if num_frames <= context_frames:
        return [list(range(num_frames))]
    step = context_frames - overlap
    if step < 1:
        raise ValueError(f"context overlap {overlap} must be smaller than the window ({context_frames} frames)")
    return [[j % num_frames for j in range(start, start + context_frames)] for start in range(0, num_frames, step)]


def shifted(window: list[int], step_index: int, shift: int, num_frames: int) -> list[int]:
    return [(i + step_index * shift) % num_frames for i in window]


class EchoMimicPipeline(ReferenceNetPipeline):
    """Owns the loaded parts (net with its reference bank, VAE, scheduler); every stage is a method."""

    net: EchoMimicNet
    default_scheduler = DEFAULT_SCHEDULER

    # -- images <-> latents ----------------------------------------------------------------------------
    @torch.no_grad()
    def encode_reference(self, image: np.ndarray | torch.Tensor) -> torch.Tensor:
        """(H, W, 3) uint8 RGB -> (1, 4, H/8, W/8). The pixels keep their HWC memory layout (channels-last),
        as the official image processor hands them to the VAE."""
        pixels = torch.as_tensor(np.asarray(image)).float() / 255.0 * 2.0 - 1.0
        pixels = pixels.permute(2, 0, 1)[None].to(self.device, self.vae.dtype)
        return self.vae.encode(pixels).latent_dist.mean.to(self.dtype) * VAE_SCALE

    @torch.no_grad()
    def decode_latents(self, latents: torch.Tensor) -> torch.Tensor:
        """(b, 4, f, h, w) -> (b, 3, f, H, W) in [0, 1], one frame at a time."""
        latents = 1 / VAE_SCALE * latents
        frames = [self.vae.decode(latents[:, :, i].to(self.vae.dtype)).sample for i in range(latents.shape[2])]
        return (torch.stack(frames, dim=2).float() / 2 + 0.5).clamp(0, 1)

    # -- conditions ------------------------------------------------------------------------------------
    @torch.no_grad()
    def location(self, condition: torch.Tensor) -> torch.Tensor:
        """Face-locator features: a mask (1, 1, 1, H, W) or landmark images (1, 3, f, H, W) in [0, 1]
        -> (1, c, 1 or f, H/8, W/8)."""
        return self.net.face_locator(condition.to(self.device, self.dtype))

    @torch.no_grad()
    def fill_bank(self, ref_latents: torch.Tensor, guidance: bool) -> None:
        """Run the reference UNet once on the portrait latents (1, 4, h, w) at timestep 0 and keep every
        transformer block's LayerNorm-1 output; with guidance the bank serves both CFG halves, of which only
        the conditional one reads it."""
        bank = self.bank
        bank.clear()
        bank.groups, bank.uncond_groups = 1, 0
        bank.recording = True
        try:
            t = torch.zeros(1, device=self.device, dtype=torch.long)
            self.net.reference_unet(ref_latents.to(self.device, self.dtype), t, None, return_dict=False)
        finally:
            bank.recording = False
        if guidance:
            written = dict(bank.features)
            bank.groups, bank.uncond_groups = 2, 1
            for name, tokens in written.items():
                bank.write(name, tokens.repeat(2, 1, 1))
            bank.features.update(written)

    # -- denoising -------------------------------------------------------------------------------------
    @torch.no_grad()
    def model_output(self, latents: torch.Tensor, t: torch.Tensor, audio: torch.Tensor, location: torch.Tensor,
                     guidance: bool) -> torch.Tensor:
        """The denoising UNet on n windows: latents (n, 4, f, h, w), audio (n, f, tokens, 384), location
        (n or 1, c, 1 or f, h, w) -> (g n, 4, f, h, w), [uncond rows, cond rows] with guidance."""
        n, _, f = latents.shape[:3]
        audio = audio.to(self.device, self.dtype)
        location = location.to(self.device, self.dtype).expand(n, -1, f, -1, -1)
        batch = latents.to(self.device, self.dtype)
        if guidance:
            batch = batch.repeat(2, 1, 1, 1, 1)
            audio = torch.cat([torch.zeros_like(audio), audio])
            location = torch.cat([torch.zeros_like(location), location])
        batch = self.scheduler.scale_model_input(batch, t)
        return self.net.denoising_unet(batch, t, audio, location=location)

    @staticmethod
    def guided(out: torch.Tensor, guidance_scale: float) -> torch.Tensor:
        """The CFG batch (g, ...) -> the guided prediction (one branch when g is 1)."""
        return split_guidance(out, guidance_scale if out.shape[0] > 1 else None)

    def initial_latents(self, shape: tuple[int, ...], generator: torch.Generator, clamp: bool) -> torch.Tensor:
        noise = torch.randn(shape, generator=generator, dtype=torch.float32)
        return noise.clamp(-1.5, 1.5) if clamp else noise

    @torch.no_grad()
    def sample(self, ref_latents: torch.Tensor, audio: torch.Tensor, location: torch.Tensor,
               latents: torch.Tensor, s: SamplingConfig, trace: dict | None = None, progress=None) -> torch.Tensor:
        """Denoise the whole video. ref_latents (1, 4, h, w); audio (1, F, tokens, 384) one window per frame;
        location (1, c, 1, h, w) (mask) or (1, c, F, h, w) (landmarks); latents (1, 4, F, h, w) initial noise."""
        guidance = s.guidance_scale > 1.0
        num_frames = latents.shape[2]
        self.scheduler.set_timesteps(s.steps, device=self.device)
        latents = latents.to(self.device, torch.float32) * self.scheduler.init_noise_sigma
        windows = context_windows(num_frames, s.context_frames, s.context_overlap)
        per_frame_location = location.shape[2] > 1
        self.fill_bank(ref_latents, guidance)
        index = {int(t): i for i, t in enumerate(self.scheduler.timesteps)}  # the windows shift with the step

        def predict(x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
            i = index[int(t)]
            total = torch.zeros((2 if guidance else 1, *x.shape[1:]), device=self.device)
            counter = torch.zeros((1, 1, num_frames, 1, 1), device=self.device)
            for first in range(0, len(windows), max(s.window_batch, 1)):
                chunk = [shifted(w, i, s.shift_per_step, num_frames) for w in windows[first:first + s.window_batch]]
                loc = torch.cat([location[:, :, idx] for idx in chunk]) if per_frame_location else location
                out = self.model_output(torch.cat([x[:, :, idx] for idx in chunk]), t,
                                        torch.cat([audio[:, idx] for idx in chunk]), loc, guidance).float()
                out = out.unflatten(0, (-1, len(chunk)))  # (g, windows, 4, f, h, w)
                for k, idx in enumerate(chunk):
                    if trace is not None:
                        trace[f"context_idx.{i}.{first + k}"] = torch.tensor(idx)
                        if i == 0:
                            trace[f"unet_out.{i}.{first + k}"] = out[:, k].clone()
                    total[:, :, idx] += out[:, k]
                    counter[:, :, idx] += 1
            if guidance or s.landmarks or s.average_without_guidance:
                total = total / counter
            return total

        def record(i, t, x, guided):
            trace[f"step_in_latents.{i}"] = x.clone()
            trace[f"step_guided_out.{i}"] = guided.clone()
            trace[f"step_t.{i}"] = t.clone()

        return denoise(predict, self.scheduler, latents, s.guidance_scale if guidance else None,  # DDIM, eta 0
                       on_step=record if trace is not None else None, progress=progress)
