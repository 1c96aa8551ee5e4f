"""The seed papers' training losses: Min-SNR weighting, EchoMimic's timestep-aware spatial loss and SSIM here;
the objectives the models compute themselves (diffusion / flow-matching targets, SkyReels-A1's face-aware
flow-masked loss, Diffusion-DPO) live in `nn.objectives` and are re-exported, so trainers import one module.

Conventions. Latents are (b, ...) with the batch first; a timestep tensor `t` is (b,) integer indices
into the scheduler's `alphas_cumprod` (DDPM family) and a flow-matching `sigma` is (b,) in [0, 1].
Per-sample quantities are (b,) tensors; every loss returns a scalar that `.backward()` works on.
Which seed uses what: the SD-1.5 UNet family (Hallo, Hallo2, EchoMimic, EMO, Loopy) trains ε- or
v-prediction on a DDPM schedule; CogVideoX (the base of Hallo3 and SkyReels-A1) trains v-prediction on a
zero-terminal-SNR DDPM schedule, so it uses `diffusion_target(..., "v_prediction")` too; Wan-style DiTs
(SkyReels-A2, and any rectified-flow model) use `flow_matching_pair`.
"""
from __future__ import annotations

import warnings
from typing import Callable

import torch
import torch.nn.functional as F
from einops import rearrange

from ..nn.objectives import (  # re-exported (see __all__): trainers import one module
                             diffusion_dpo_loss,
                             diffusion_loss,
                             diffusion_target,
                             dpo_errors,
                             face_aware_loss,
                             face_mask_from_landmarks,
                             flow_matching_pair,
                             flow_motion_mask,
                             flow_predicted_x0,
                             per_sample_mse,
                             predicted_x0,
                             PredictionType,
                             resize_mask,
                             sample_flow_sigmas,
                             sample_timesteps,
                             snr,
                             spatial_weight,
                             )

SSIM_WINDOW = 11  # px: Gaussian window of Wang et al. 2004 (skimage's gaussian_weights=True)
SSIM_SIGMA = 1.5  # px
SSIM_K1, SSIM_K2 = 0.01, 0.03  # stabilisers, times the data range


def min_snr_weight(snr: torch.Tensor, gamma: float = 5.0, prediction_type: PredictionType = "epsilon"
                   ) -> torch.Tensor:
    """Min-SNR-γ loss weight (Hang et al. 2023), (b,): min(SNR, γ)/SNR for ε, min(SNR, γ)/(SNR+1) for v,
    min(SNR, γ) for x0. SNR = 0 (zero-terminal schedules) gives the ε limit 1 instead of 0/0."""
    clipped = snr.clamp(max=gamma)
    if prediction_type == "epsilon":
        return torch.where(snr > 0, clipped / snr.clamp(min=torch.finfo(snr.dtype).tiny), torch.ones_like(snr))
    if prediction_type == "v_prediction":
        return clipped / (snr + 1.0)
    if prediction_type == "sample":
        return clipped
    raise ValueError(f"prediction_type must be epsilon, v_prediction or sample, not {prediction_type!r}")


def _gaussian_window(dtype: torch.dtype, device: torch.device) -> torch.Tensor:
    """(11,) normalised Gaussian taps, σ = 1.5 px (scipy's truncate=3.5 gives exactly these 11)."""
    x = torch.arange(SSIM_WINDOW, dtype=dtype, device=device) - SSIM_WINDOW // 2
    g = torch.exp(-(x**2) / (2 * SSIM_SIGMA**2))
    return g / g.sum()


def ssim(x: torch.Tensor, y: torch.Tensor, data_range: float = 2.0) -> torch.Tensor:
    """(n,) mean SSIM (Wang et al. 2004) of (n, c, h, w) images, differentiable: Gaussian 11-tap window,
    σ 1.5, population covariances, valid region only — skimage's gaussian_weights=True, channel mean."""
    n, c, h, w = x.shape
    if min(h, w) < SSIM_WINDOW:
        raise ValueError(f"SSIM needs images of at least {SSIM_WINDOW}x{SSIM_WINDOW} px, got {h}x{w}")
    g = _gaussian_window(x.dtype, x.device)
    gh, gw = g.view(1, 1, -1, 1).repeat(c, 1, 1, 1), g.view(1, 1, 1, -1).repeat(c, 1, 1, 1)

    def blur(z):  # separable Gaussian, per channel, no padding
        return F.conv2d(F.conv2d(z, gh, groups=c), gw, groups=c)

    mx, my = blur(x), blur(y)
    vx, vy, cxy = blur(x * x) - mx**2, blur(y * y) - my**2, blur(x * y) - mx * my
    c1, c2 = (SSIM_K1 * data_range) ** 2, (SSIM_K2 * data_range) ** 2
    s = ((2 * mx * my + c1) * (2 * cxy + c2)) / ((mx**2 + my**2 + c1) * (vx + vy + c2))  # (n, c, h', w')
    return s.flatten(1).mean(1)


def structural_loss(x: torch.Tensor, y: torch.Tensor, data_range: float = 2.0) -> torch.Tensor:
    """(n,) perceptual stand-in when no LPIPS backbone is given: L1 + (1 − SSIM) of (n, c, h, w) images."""
    return (x - y).abs().flatten(1).mean(1) + 1.0 - ssim(x, y, data_range)


def decode_latents(vae, z0: torch.Tensor, scaling_factor: float | None = None) -> torch.Tensor:
    """(n, c, h, w) scaled latents -> (n, 3, H, W) images via `vae.decode(z / scaling_factor).sample`
    (factor from `vae.config.scaling_factor` when not given)."""
    if scaling_factor is None:
        scaling_factor = vae.config.scaling_factor
    return vae.decode((z0 / scaling_factor).to(getattr(vae, "dtype", z0.dtype))).sample


def timestep_aware_spatial_loss(
    scheduler, vae, model_pred: torch.Tensor, target: torch.Tensor, noisy_latents: torch.Tensor,
    t: torch.Tensor, frames: torch.Tensor, prediction_type: PredictionType | None = None,
    perceptual: Callable[[torch.Tensor, torch.Tensor], torch.Tensor] | None = None,
    spatial_scale: float = 1.0, latent_weight: torch.Tensor | None = None,
    frame_index: torch.Tensor | None = None, scaling_factor: float | None = None,
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """EchoMimic timestep-aware spatial loss: L = L_latent + λ · mean_b w(t_b)·(MSE + P)(D(ẑ0_b), frames_b).

    Latents (b, c, h, w) with frames (b, 3, H, W), or video (b, c, f, h, w) with frames (b, 3, f, H, W),
    frames in the VAE's [-1, 1]. ẑ0 comes from the prediction at t (`predicted_x0`), is decoded with
    gradients (keep the VAE frozen), and compared per frame; `frame_index` (k,) decodes only those frames
    to save memory. P is `perceptual(x, y) -> (n,)` (e.g. LPIPS) or, when None, L1 + (1 − SSIM) with a
    warning. `latent_weight` (b,) weights the latent MSE (e.g. Min-SNR). Returns (total, parts to log)."""
    latent = diffusion_loss(model_pred, target, latent_weight)
    z0 = predicted_x0(scheduler, noisy_latents, model_pred, t, prediction_type)
    video = z0.dim() == 5
    if video:
        if frame_index is not None:
            z0, frames = z0[:, :, frame_index], frames[:, :, frame_index]
        nf = z0.shape[2]
        z0, frames = rearrange(z0, "b c f h w -> (b f) c h w"), rearrange(frames, "b c f h w -> (b f) c h w")
    else:
        nf = 1
    decoded = decode_latents(vae, z0, scaling_factor).float()  # (b·f, 3, H, W)
    frames = frames.to(decoded)
    pixel = (decoded - frames).pow(2).flatten(1).mean(1)  # (b·f,)
    if perceptual is None:
        warnings.warn("timestep_aware_spatial_loss: no perceptual (LPIPS) callable given; using "
                      "L1 + (1 - SSIM) as the perceptual term", UserWarning, stacklevel=2)
        pixel = pixel + structural_loss(decoded, frames)
    else:
        p = perceptual(decoded, frames)
        pixel = pixel + (p.expand(decoded.shape[0]) if p.dim() == 0 else p.reshape(decoded.shape[0], -1).mean(1))
    per_sample = pixel.view(-1, nf).mean(1)  # (b,)
    w = spatial_weight(t, scheduler.config.num_train_timesteps).to(per_sample)
    spatial = (w * per_sample).mean()
    total = latent + spatial_scale * spatial
    return total, {"latent": latent.detach(), "spatial": spatial.detach(), "w_t": w.detach()}


def reference_video_loss(net, batch: dict, scheduler, generator: torch.Generator) -> torch.Tensor:
    """EMO/Loopy reference video net (`models.reference_video.ReferenceVideoNet`): v-prediction MSE of
    `net.predict` at a random timestep. batch["target"] (b, c, f, h, w) clean latents; noise and t from `generator`."""
    target = batch["target"]
    noise = torch.randn(target.shape, generator=generator)
    t = torch.randint(0, scheduler.config.num_train_timesteps, (target.shape[0],), generator=generator)
    noisy = scheduler.add_noise(target, noise, t)
    return F.mse_loss(net.predict(noisy, t, batch), scheduler.get_velocity(target, noise, t))


def flow_head_loss(head, x0: torch.Tensor, z: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """Flow-matching MSE of a per-token diffusion head (`nn.diffusion_head.DiffusionHead`) for tokens x0 (n, C)
    given conditions z (n, cond_dim); levels (shifted as the head samples them) and noise from `generator`."""
    n = x0.shape[0]
    sigma = sample_flow_sigmas(n, generator, shift=head.config.shift).to(x0.device, x0.dtype)
    noise = torch.randn(x0.shape, generator=generator, device=generator.device).to(x0.device, x0.dtype)
    x_t, target = flow_matching_pair(x0, noise, sigma)
    return (head(x_t, sigma, z) - target).pow(2).mean()


__all__ = ["decode_latents", "diffusion_dpo_loss", "diffusion_loss", "diffusion_target", "dpo_errors",
           "face_aware_loss", "face_mask_from_landmarks", "flow_head_loss", "flow_matching_pair", "flow_motion_mask",
           "flow_predicted_x0", "min_snr_weight", "per_sample_mse", "predicted_x0", "reference_video_loss",
           "resize_mask", "sample_flow_sigmas", "sample_timesteps", "snr", "spatial_weight", "ssim", "structural_loss",
           "timestep_aware_spatial_loss", "PredictionType"]
