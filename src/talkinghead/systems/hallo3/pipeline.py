"""Hallo3 sampling (Hallo4 has its own, systems/hallo4/pipeline.py): long videos as clips of
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
from types import SimpleNamespace
from typing import Iterator

import numpy as np
import torch
from diffusers import AutoencoderKLCogVideoX, CogVideoXDDIMScheduler
from tqdm.auto import tqdm

from ...errors import InputError
from ...pipelines.memory import execution_device
from ...sampling import denoise
from .model import COGVIDEOX_SCHEDULER, Hallo3Model


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
        return execution_device(self.model)  # where it computes, also when it is offloaded to the CPU

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
        def predict(latents: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
            x = torch.cat([latents, latents]) if guidance else latents
            if hasattr(self.scheduler, "scale_model_input"):
                x = self.scheduler.scale_model_input(x, t)
            return self.model_output(x.to(self.dtype), t, cond, motion).float()

        return denoise(predict, self.scheduler, latents, config.guidance_scale if guidance else None,
                       progress=bar.update if bar is not None else None)

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


class Hallo3Sampler:
    """The official Hallo3 sampler (SAT's `VPSDEDPMPP2MSampler` with zero-terminal-SNR DDPM discretisation and
    `DynamicCFG`), reproduced with its behaviours:
    - timestep indices `linspace(999, 0, n, endpoint=False)` (3 steps: 999, 666, 333); the sampler's √ᾱ are the
      scaled-linear table at those indices rescaled to zero terminal SNR *over that subset*, then 1 appended;
    - the denoiser snaps √ᾱ to the nearest of the full 1000-entry rescaled table for its skip/out scalings
      (v-prediction: x0 = a·x − √(1−a²)·v) and gets the integer index as its timestep;
    - the guidance scale is a constant (`guidance_scale`, 3.5 in the release: its cosine schedule is overwritten);
    - a middle step draws noise for the first-order update and again for the second-order one it uses (two draws),
      the first step one draw, the last step none (it returns the prediction).
    Noise comes from `generator` in that order, so seeding it as the official seed gives the official draws."""

    def __init__(self, num_train_timesteps: int = 1000, beta_start: float = 0.00085, beta_end: float = 0.012,
                 shift_scale: float = 1.0):
        betas = torch.linspace(beta_start ** 0.5, beta_end ** 0.5, num_train_timesteps, dtype=torch.float64) ** 2
        ac = torch.cumprod(1.0 - betas, dim=0)
        self.alphas_cumprod = ac / (shift_scale + (1.0 - shift_scale) * ac)  # float64, index order
        self.num_train_timesteps = num_train_timesteps
        self.table = torch.flip(self._rescaled(torch.arange(num_train_timesteps)), (0,))  # the denoiser's √ᾱ

    def _rescaled(self, idx: torch.Tensor) -> torch.Tensor:
        """Zero-terminal-SNR √ᾱ (float32) of ascending indices `idx`, rescaled over that subset."""
        a = self.alphas_cumprod[idx].to(torch.float32).sqrt()
        a0, at = a[0].clone(), a[-1].clone()
        return (a - at) * (a0 / (a0 - at))

    def schedule(self, steps: int) -> tuple[torch.Tensor, torch.Tensor]:
        """(timestep indices, descending; √ᾱ per step with 1 appended)."""
        idx = np.linspace(self.num_train_timesteps - 1, 0, steps, endpoint=False).astype(int)[::-1].copy()
        alphas = torch.flip(self._rescaled(torch.from_numpy(idx)), (0,))
        return torch.from_numpy(idx[::-1].copy()), torch.cat([alphas, alphas.new_ones(1)])

    def snap(self, alpha: torch.Tensor) -> torch.Tensor:
        table = self.table.to(alpha.device)
        return table[(alpha.reshape(-1)[:, None] - table[None]).abs().argmin(dim=1)].reshape(alpha.shape)

    def denoised(self, model_out: torch.Tensor, x: torch.Tensor, alpha: torch.Tensor) -> torch.Tensor:
        """x0 from the network's v-prediction at √ᾱ = `alpha` (snapped to the table)."""
        a = self.snap(alpha)
        return model_out * (-((1 - a ** 2) ** 0.5)) + x * a

    @torch.no_grad()
    def sample(self, predict, x: torch.Tensor, steps: int, guidance_scale: float, generator: torch.Generator,
               trace: dict | None = None, bar=None) -> torch.Tensor:
        """Denoise `x` (the initial noise). `predict(x_batch, index)` returns the network output for the CFG batch
        [unconditional, conditional] (or one row when `guidance_scale` is 1)."""
        timesteps, alphas = self.schedule(steps)
        guidance = guidance_scale != 1.0
        steps_ = timesteps.tolist()
        position = {index: i for i, index in enumerate(steps_)}
        state = {"old": None, "draws": 0}

        def noise():
            z = torch.randn(x.shape, generator=generator, dtype=torch.float32).to(x.device)
            if trace is not None:
                trace[f"s.noise_draw{state['draws']}"] = z
            state["draws"] += 1
            return z

        def denoised_rows(x: torch.Tensor, index: int) -> torch.Tensor:
            """x0 of every CFG row: the sampler guides denoised samples, not network outputs."""
            i = position[index]
            cur, nxt = alphas[i], alphas[i + 1]
            xb = torch.cat([x, x]) if guidance else x
            if trace is not None:
                trace[f"s.step{i}.x_in"] = x
                trace[f"s.step{i}.alpha_cumprod_sqrt"] = torch.stack([cur, nxt])
                trace[f"step{i}.den_alpha_cumprod_sqrt"] = cur.expand(xb.shape[0])
            out = predict(xb, index).float()
            den = self.denoised(out, xb.float(), cur.to(x.device))
            if trace is not None:
                trace.update({f"step{i}.model_out": out, f"step{i}.den_out": den})
            return den

        def step(den: torch.Tensor, index: int, x: torch.Tensor, return_dict: bool = False) -> tuple:
            """DPM-Solver++(2M) SDE update from the guided x0 (the last step returns x0 itself)."""
            i = position[index]
            if i == len(steps_) - 1:
                return (den,)
            cur, nxt = alphas[i], alphas[i + 1]
            lam = lambda a: ((a ** 2) / (1 - a ** 2)) ** 0.5  # noqa: E731
            lamb, lamb_next = lam(cur).log(), lam(nxt).log()
            h = lamb_next - lamb
            m1 = ((1 - nxt ** 2) / (1 - cur ** 2)) ** 0.5 * (-h).exp()
            m2 = (-2 * h).expm1() * nxt
            m_noise = (1 - nxt ** 2) ** 0.5 * (1 - (-2 * h).exp()) ** 0.5
            x_new = m1 * x - m2 * den + m_noise * noise()
            if state["old"] is not None and float(nxt) >= 1e-14:
                r = (lamb - lam(alphas[i - 1]).log()) / h
                den_d = (1 + 1 / (2 * r)) * den - (1 / (2 * r)) * state["old"]
                x_new = m1 * x - m2 * den_d + m_noise * noise()
            state["old"] = den
            return (x_new,)

        def guided(i, index, x, den):
            if trace is not None:
                trace[f"s.step{i}.denoised_guided"] = den

        def after(i, index, stepped):
            if trace is not None:
                trace[f"s.step{i}.x_out"] = stepped[0]
            return stepped[0]

        return denoise(denoised_rows, SimpleNamespace(step=step), x, guidance_scale if guidance else None,
                       timesteps=steps_, on_step=guided, after_step=after,
                       progress=bar.update if bar is not None else None)


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
