"""Sampling of the released Hallo4 (Wan2.1-VACE): one clip as the official `generate` runs it.

- UniPC (bh2, order 2, x0-prediction from the flow velocity, lower order at the end) on the official shifted
  sigmas: σ = linspace(0.999, 0, N + 1)[:-1] in float64, σ′ = sσ / (1 + (s − 1)σ), 0 appended (float32); the
  model gets the truncated integer σ′·1000 (diffusers' own flow sigmas start at 1.0 instead, so they are set here);
- latent frame 0 is overwritten with the reference latent before *every* model call (and is what the scheduler
  receives), and dropped before decoding;
- `sampler="dpm"` (`--scheduler dpm`): diffusers' DPM-Solver++ (2M) for flow matching on the same shifted sigmas
  and timesteps (its own flow schedule equals the official one), the same model calls; not the official numbers;
- classifier-free guidance as two model calls: the prompt with the audio, and the negative prompt with the audio
  windows zeroed *before* the projection; skeleton, VACE context and reference are the same in both.
"""
from __future__ import annotations

import numpy as np
import torch
from diffusers import DPMSolverMultistepScheduler, UniPCMultistepScheduler

from ...pipelines.memory import execution_device
from ...sampling import classifier_free_guidance, denoise
from .model import Hallo4WanModel


def _pad(context: torch.Tensor, length: int) -> torch.Tensor:  # (L, d) -> (length, d), zeros after
    out = context.new_zeros(length, context.shape[-1])
    out[: min(length, context.shape[0])] = context[:length]
    return out


def official_scheduler(steps: int, shift: float, num_train_timesteps: int = 1000) -> UniPCMultistepScheduler:
    """diffusers' UniPC with the official FlowUniPC settings and sigmas/timesteps for `steps` at `shift`."""
    s = UniPCMultistepScheduler(num_train_timesteps=num_train_timesteps, prediction_type="flow_prediction",
                                use_flow_sigmas=True, flow_shift=1.0, solver_order=2, predict_x0=True,
                                solver_type="bh2", lower_order_final=True, final_sigmas_type="zero")
    s.set_timesteps(steps)
    sigma = np.linspace(1 - 1 / num_train_timesteps, 0, steps + 1)[:-1]
    sigma = shift * sigma / (1 + (shift - 1) * sigma)
    s.sigmas = torch.from_numpy(np.append(sigma, 0.0)).to(torch.float32)
    s.timesteps = torch.from_numpy((sigma * num_train_timesteps).astype(np.int64))
    return s


def flow_dpm_scheduler(steps: int, shift: float, num_train_timesteps: int = 1000) -> DPMSolverMultistepScheduler:
    """diffusers' DPM-Solver++ (2M, first order at the last step) for flow prediction at `shift`, set for `steps`:
    its flow sigmas 1 - linspace(1, 1/n, N + 1), shifted, the last dropped, 0 appended, are the official
    schedule's, and its timesteps the same truncated integers (tests/systems/hallo4 checks both)."""
    s = DPMSolverMultistepScheduler(num_train_timesteps=num_train_timesteps, prediction_type="flow_prediction",
                                    use_flow_sigmas=True, flow_shift=shift, solver_order=2,
                                    algorithm_type="dpmsolver++", lower_order_final=True, final_sigmas_type="zero")
    s.set_timesteps(steps)
    return s


SAMPLERS = ("unipc", "dpm")  # the official UniPC, or DPM-Solver++ on the same schedule


def make_sampler(name: str, steps: int, shift: float):
    """The scheduler `name` ("unipc": the official one; "dpm") set for `steps` at `shift`."""
    if name not in SAMPLERS:
        raise ValueError(f"sampler must be one of {SAMPLERS}, not {name!r}")
    return official_scheduler(steps, shift) if name == "unipc" else flow_dpm_scheduler(steps, shift)


@torch.no_grad()
def sample_clip(model: Hallo4WanModel, noise: torch.Tensor, ref_latent: torch.Tensor, context: torch.Tensor,
                negative_context: torch.Tensor, vace_context: torch.Tensor, skeleton_latents: torch.Tensor,
                audio_windows: torch.Tensor, steps: int, shift: float = 8.0, guide_scale: float = 6.0,
                context_scale: float = 1.0, trace: dict | None = None, prefix: str = "",
                batched_cfg: bool = False, sampler: str = "unipc") -> torch.Tensor:
    """Denoise one clip. `noise` (16, 1 + F', h, w) (frame 0 is replaced by `ref_latent` (16, 1, h, w));
    contexts (L, 4096); `vace_context` (96, 1 + F', h, w); `skeleton_latents` (1, 16, F, h, w);
    `audio_windows` (1, F, 5, layers, channels). Returns the final latents (16, 1 + F', h, w), frame 0 included.
    `batched_cfg`: both guidance rows in one model call (the contexts zero-padded to `text_len` first, as the model
    pads each anyway); the official code makes two calls, and the rows then differ from it by float reordering.
    `sampler`: "unipc" (official) or "dpm" (DPM-Solver++ on the same sigmas; see `flow_dpm_scheduler`)."""
    scheduler = make_sampler(sampler, steps, shift)
    latents = noise.to(ref_latent.device, torch.float32).clone()
    if trace is not None:
        trace[f"{prefix}timesteps"], trace[f"{prefix}sigmas"] = scheduler.timesteps, scheduler.sigmas
    corrected = {}
    original = getattr(scheduler, "multistep_uni_c_bh_update", None)  # UniPC's corrector (traced); DPM has none

    def keep_corrected(*args, **kwargs):
        out = original(*args, **kwargs)
        corrected["x"] = out
        return out

    if original is not None:
        scheduler.multistep_uni_c_bh_update = keep_corrected
    silent = torch.zeros_like(audio_windows)
    position = {int(t): i for i, t in enumerate(scheduler.timesteps)}

    def predict(x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        """The guided flow for x (1, c, f, h, w), the reference latent re-imposed first (in place, as officially)."""
        i = position[int(t)]
        x[0, :, :1] = ref_latent
        tt = torch.tensor([int(t)])
        if batched_cfg:
            both = torch.stack([_pad(context, model.text_len), _pad(negative_context, model.text_len)])
            cond, uncond = model(x.expand(2, -1, -1, -1, -1), tt.expand(2), both,
                                 vace_context[None].expand(2, -1, -1, -1, -1), skeleton_latents.expand(2, -1, -1, -1, -1),
                                 torch.cat([audio_windows, silent]), context_scale)
        else:
            cond = model(x, tt, context[None], vace_context[None], skeleton_latents, audio_windows, context_scale)[0]
            uncond = model(x, tt, negative_context[None], vace_context[None], skeleton_latents, silent,
                           context_scale)[0]
        cond, uncond = cond.float(), uncond.float()
        guided = classifier_free_guidance(uncond, cond, guide_scale)
        corrected.clear()
        if trace is not None:
            sigma = scheduler.sigmas[i]
            trace.update({f"{prefix}step.{i}.latent_model_input": x[0].clone(),
                          f"{prefix}step.{i}.noise_pred_cond": cond, f"{prefix}step.{i}.noise_pred_uncond": uncond,
                          f"{prefix}step.{i}.guided": guided, f"{prefix}step.{i}.x0_pred": x[0] - sigma * guided})
        return guided[None]

    def after(i: int, t: torch.Tensor, stepped: tuple) -> torch.Tensor:
        if trace is not None:
            trace[f"{prefix}step.{i}.latents_after"] = stepped[0][0].clone()
            if "x" in corrected:
                trace[f"{prefix}step.{i}.corrected_sample"] = corrected["x"][0]
        return stepped[0]

    return denoise(predict, scheduler, latents[None], after_step=after)[0]


# ------------------------------------------------------------------ source preparation and the VAE, as the official code


def resize_for_rectangle_crop(x: torch.Tensor, height: int, width: int) -> torch.Tensor:
    """(c, f, H, W) in [-1, 1] -> (c, f, height, width): bilinear (antialiased) resize to `height` with the width
    int(W·height/H), then centre padding with −1 or a centre crop (offset //2) to `width`."""
    c, f, h, w = x.shape
    new_w = int(w * height / h)
    y = torch.nn.functional.interpolate(x.permute(1, 0, 2, 3), size=(height, new_w), mode="bilinear",
                                        align_corners=False, antialias=True).permute(1, 0, 2, 3)
    if new_w < width:
        left = (width - new_w) // 2
        return torch.nn.functional.pad(y, (left, width - new_w - left), value=-1.0)
    left = (new_w - width) // 2
    return y[..., left:left + width]


def center_crop_width(video: torch.Tensor, ref_hw: tuple[int, int], height: int) -> torch.Tensor:
    """Crop (c, f, H, W) back to the reference's aspect when the reference was narrower than the target."""
    width = video.shape[-1]
    ref_h, ref_w = ref_hw
    if width / height <= ref_w / ref_h:
        return video
    keep = int(ref_w * height / ref_h)
    left = (width - keep) // 2
    return video[..., left:left + keep]


class WanLatents:
    """Wan2.1 VAE encode/decode as the official wrapper: encode gives the posterior mean normalised with the fixed
    16-channel mean/std; decode un-normalises and clamps to [−1, 1]."""

    def __init__(self, vae):
        self.vae = vae
        c = vae.config
        self.mean = torch.tensor(c.latents_mean).view(1, -1, 1, 1, 1)
        self.std = torch.tensor(c.latents_std).view(1, -1, 1, 1, 1)

    @torch.no_grad()
    def encode(self, video: torch.Tensor) -> torch.Tensor:  # (3, f, H, W) -> (16, f', h, w)
        p = next(self.vae.parameters())  # its dtype; the device is where it computes (also when offloaded)
        mu = self.vae.encode(video[None].to(execution_device(self.vae), p.dtype)).latent_dist.mean.float()
        return ((mu - self.mean.to(mu.device)) / self.std.to(mu.device))[0]

    def encode_frames(self, video: torch.Tensor) -> torch.Tensor:  # every frame on its own -> (1, 16, f, h, w)
        return torch.stack([self.encode(video[:, i:i + 1])[:, 0] for i in range(video.shape[1])], dim=1)[None]

    @torch.no_grad()
    def decode(self, latents: torch.Tensor) -> torch.Tensor:  # (16, f', h, w) -> (3, f, H, W)
        p = next(self.vae.parameters())
        z = latents[None].float() * self.std.to(latents.device) + self.mean.to(latents.device)
        return self.vae.decode(z.to(execution_device(self.vae), p.dtype)).sample.float().clamp(-1, 1)[0]


def vace_context(latents: WanLatents, frames: torch.Tensor, mask: torch.Tensor, ref_latent: torch.Tensor,
                 trace: dict | None = None, prefix: str = "") -> torch.Tensor:
    """The VACE context z (96, 1 + F', h, w) = [enc(frames·(1−m)) | enc(frames·m) | mask as 8×8 sub-pixel
    channels resampled nearest-exact to F' frames], with the reference latent (resp. zeros) as frame 0."""
    inactive, reactive = latents.encode(frames * (1 - mask)), latents.encode(frames * mask)
    if trace is not None:
        trace[f"{prefix}vace_inactive_latents"], trace[f"{prefix}vace_reactive_latents"] = inactive, reactive
    inactive = torch.cat([ref_latent, inactive], dim=1)
    reactive = torch.cat([torch.zeros_like(ref_latent), reactive], dim=1)
    f, H, W = mask.shape[1:]
    m = mask[0].view(f, H // 8, 8, W // 8, 8).permute(2, 4, 0, 1, 3).reshape(64, f, H // 8, W // 8)
    m = torch.nn.functional.interpolate(m[None], size=((f + 3) // 4, H // 8, W // 8), mode="nearest-exact")[0]
    m = torch.cat([torch.zeros_like(m[:, :1]), m], dim=1).to(inactive.device)
    return torch.cat([inactive, reactive, m], dim=0)


# ------------------------------------------------------------------ `--engine hallo4`: the official release

# Wan2.1's default negative prompt (the official `n_prompt ""` is replaced by it)
NEGATIVE_PROMPT = "色调艳丽，过曝，静态，细节模糊不清，字幕，风格，作品，画作，画面，静止，整体发灰，最差质量，低质量，JPEG压缩残留，丑陋的，残缺的，多余的手指，画得不好的手部，画得不好的脸部，畸形的，毁容的，形态畸形的肢体，手指融合，静止不动的画面，杂乱的背景，三条腿，背景人很多，倒着走"
OFFICIAL = {"size_hw": [480, 832], "frame_num": 81, "sample_steps": 25, "sample_shift": 8.0, "guide_scale": 6.0,
            "context_scale": 1.0, "prompt": "a person is talking", "fps": 25}
PATCH_MASK_RATE = 0.1  # share of the motion frame's 2x2 patches set to -1


def random_mask_patches(frame: torch.Tensor, generator: torch.Generator, rate: float = PATCH_MASK_RATE,
                        patch: int = 2) -> torch.Tensor:
    """(3, 1, H, W): `rate` of its patch x patch squares set to -1, chosen by a random permutation (drawn on the
    generator's device)."""
    _, _, h, w = frame.shape
    rows, cols = h // patch, w // patch
    chosen = torch.randperm(rows * cols, generator=generator, device=generator.device)[: int(rows * cols * rate)]
    blank = torch.zeros(rows * cols, dtype=torch.bool, device=frame.device)
    blank[chosen.to(frame.device)] = True
    blank = blank.view(rows, cols).repeat_interleave(patch, 0).repeat_interleave(patch, 1)
    full = torch.zeros(h, w, dtype=torch.bool, device=frame.device)
    full[: rows * patch, : cols * patch] = blank
    return frame.masked_fill(full, -1.0)
