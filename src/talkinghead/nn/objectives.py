"""The objectives seed models compute in their own `loss` methods, as pure tensor functions: diffusion and
flow-matching targets, timestep and flow-σ sampling, the x0 estimate, weighted and masked MSE, SkyReels-A1's
face-aware flow-masked loss and Diffusion-DPO's per-sample errors and loss (Hallo4). `train.losses` re-exports
them beside the training-only losses (Min-SNR weighting, EchoMimic's timestep-aware spatial loss, SSIM).

Conventions. Latents are (b, ...) with the batch first; a timestep tensor `t` is (b,) integer indices
into the scheduler's `alphas_cumprod` (DDPM family) and a flow-matching `sigma` is (b,) in [0, 1].
Per-sample quantities are (b,) tensors; every loss returns a scalar that `.backward()` works on.
Which seed uses what: the SD-1.5 UNet family (Hallo, Hallo2, EchoMimic, EMO, Loopy) trains ε- or
v-prediction on a DDPM schedule; CogVideoX (the base of Hallo3 and SkyReels-A1) trains v-prediction on a
zero-terminal-SNR DDPM schedule, so it uses `diffusion_target(..., "v_prediction")` too; Wan-style DiTs
(SkyReels-A2, and any rectified-flow model) use `flow_matching_pair`.
"""
from __future__ import annotations

import math
from typing import Literal

import cv2
import numpy as np
import torch
import torch.nn.functional as F
from diffusers.training_utils import compute_density_for_timestep_sampling
from einops import rearrange

PredictionType = Literal["epsilon", "v_prediction", "sample"]
FLOW_MASK_MIN, FLOW_MASK_MAX = 1.0, 1.5  # SkyReels-A1 motion-mask range
FLOW_TO_BYTE = 255.0  # the mask formula reads flow as an 8-bit magnitude image (0..255)
FARNEBACK = dict(pyr_scale=0.5, levels=3, winsize=15, iterations=3, poly_n=5, poly_sigma=1.2, flags=0)


def _per_sample(v: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    """(b,) -> (b, 1, ..., 1) broadcastable against `like`, on its device and dtype."""
    return v.to(device=like.device, dtype=like.dtype).reshape(-1, *([1] * (like.dim() - 1)))


def _alphas_cumprod(scheduler, t: torch.Tensor) -> torch.Tensor:
    """(b,) integer timesteps -> (b,) ᾱ_t (float32, on t's device) from a diffusers DDPM-family scheduler."""
    return scheduler.alphas_cumprod.to(t.device)[t.long()].float()


# ------------------------------------------------------------------ targets and timestep sampling


def diffusion_target(scheduler, x0: torch.Tensor, noise: torch.Tensor, t: torch.Tensor,
                     prediction_type: PredictionType | None = None) -> torch.Tensor:
    """DDPM training target, shape of x0: ε ("epsilon"), v = √ᾱ ε − √(1−ᾱ) x0 ("v_prediction", diffusers'
    `get_velocity`) or x0 ("sample"); `prediction_type` None reads the scheduler's config."""
    prediction_type = prediction_type or scheduler.config.prediction_type
    if prediction_type == "epsilon":
        return noise
    if prediction_type == "v_prediction":
        return scheduler.get_velocity(x0, noise, t.to(x0.device))
    if prediction_type == "sample":
        return x0
    raise ValueError(f"prediction_type must be epsilon, v_prediction or sample, not {prediction_type!r}")


def flow_matching_pair(x0: torch.Tensor, noise: torch.Tensor, sigma: torch.Tensor
                       ) -> tuple[torch.Tensor, torch.Tensor]:
    """Rectified flow: x_t = (1−σ) x0 + σ noise and the velocity target dx_t/dσ = noise − x0; sigma (b,).

    Same sign as diffusers' FlowMatchEulerDiscreteScheduler: `scale_noise` builds σ·noise + (1−σ)·x0 and
    `step` integrates x += (σ_next − σ)·v with σ decreasing, so the model must predict noise − x0."""
    s = _per_sample(sigma, x0)
    return (1.0 - s) * x0 + s * noise, noise - x0


def flow_predicted_x0(x_t: torch.Tensor, velocity: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
    """Clean sample implied by a flow-matching velocity: x0 = x_t − σ v (as the scheduler's stochastic step)."""
    return x_t - _per_sample(sigma, x_t) * velocity


def sample_flow_sigmas(batch: int, generator: torch.Generator, scheme: Literal["uniform", "logit_normal"] =
                       "logit_normal", mean: float = 0.0, std: float = 1.0, shift: float = 1.0) -> torch.Tensor:
    """(batch,) flow-matching noise levels σ in (0, 1): uniform, or logit-normal σ = sigmoid(N(mean, std))
    (SD3, via diffusers' sampler), then the resolution shift σ' = sσ / (1 + (s−1)σ); timestep = 1000 σ'."""
    if scheme not in ("uniform", "logit_normal"):
        raise ValueError(f"scheme must be uniform or logit_normal, not {scheme!r}")
    u = compute_density_for_timestep_sampling(scheme if scheme == "logit_normal" else "none", batch,
                                              logit_mean=mean, logit_std=std, generator=generator,
                                              device=generator.device)
    return shift * u / (1.0 + (shift - 1.0) * u)


def sample_timesteps(scheduler, batch: int, generator: torch.Generator) -> torch.Tensor:
    """(batch,) int64 DDPM timesteps, uniform over [0, num_train_timesteps)."""
    return torch.randint(0, scheduler.config.num_train_timesteps, (batch,), generator=generator,
                         device=generator.device)


# ------------------------------------------------------------------ Min-SNR weighting


def snr(scheduler, t: torch.Tensor) -> torch.Tensor:
    """(b,) signal-to-noise ratio ᾱ_t / (1 − ᾱ_t) of a DDPM-family scheduler (float32, on t's device)."""
    a = _alphas_cumprod(scheduler, t)
    return a / (1.0 - a)


def per_sample_mse(pred: torch.Tensor, target: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
    """(b,) mean squared error per sample, in float32; with a mask (broadcastable to pred) the
    mask-weighted mean Σ m (p−y)² / Σ m over each sample's elements."""
    err = (pred.float() - target.float()).pow(2)
    if mask is None:
        return err.flatten(1).mean(1)
    m = mask.float().expand_as(err)
    return (m * err).flatten(1).sum(1) / m.flatten(1).sum(1).clamp(min=1e-8)


def diffusion_loss(pred: torch.Tensor, target: torch.Tensor, weight: torch.Tensor | None = None,
                   mask: torch.Tensor | None = None) -> torch.Tensor:
    """Scalar: batch mean of weight (b,) × per-sample (masked) MSE between prediction and target."""
    loss = per_sample_mse(pred, target, mask)
    if weight is not None:
        loss = loss * weight.to(loss)
    return loss.mean()


# ------------------------------------------------------------------ EchoMimic timestep-aware spatial loss


def predicted_x0(scheduler, x_t: torch.Tensor, pred: torch.Tensor, t: torch.Tensor,
                 prediction_type: PredictionType | None = None) -> torch.Tensor:
    """Clean latent (float32, shape of x_t) implied by a DDPM model output at t (b,):
    (x_t − √(1−ᾱ) ε)/√ᾱ for ε, √ᾱ x_t − √(1−ᾱ) v for v, the output itself for "sample"."""
    prediction_type = prediction_type or scheduler.config.prediction_type
    x_t, pred = x_t.float(), pred.float()  # float32: at large t, ε's 1/√ᾱ amplifies bf16 rounding ~150x
    a = _per_sample(_alphas_cumprod(scheduler, t), x_t)
    if prediction_type == "epsilon":
        return (x_t - (1.0 - a).sqrt() * pred) / a.sqrt()
    if prediction_type == "v_prediction":
        return a.sqrt() * x_t - (1.0 - a).sqrt() * pred
    if prediction_type == "sample":
        return pred
    raise ValueError(f"prediction_type must be epsilon, v_prediction or sample, not {prediction_type!r}")


def spatial_weight(t: torch.Tensor, num_train_timesteps: int) -> torch.Tensor:
    """EchoMimic's timestep weight w(t) = cos(tπ / 2T), (b,): 1 at t = 0 (clean) falling to 0 at t = T."""
    return torch.cos(t.float() * math.pi / (2 * num_train_timesteps))


# ------------------------------------------------------------------ SkyReels-A1 face-aware flow-masked loss


def flow_motion_mask(frames: np.ndarray, normalize: bool = True, floor_px: float = 1.0) -> torch.Tensor:
    """SkyReels-A1 motion mask, (f, h, w, 3) uint8 RGB -> (f, 1, h, w) float32 in [1, 1.5].

    mask = clip(F/255 + 0.5, 1, 1.5), F the per-pixel optical-flow magnitude (OpenCV Farneback, frame i
    back to frame i−1 so it lies on frame i's pixels). As written the formula is 1 wherever F ≤ 127.5
    and rises linearly to 1.5 at F = 255, so F is read as an 8-bit magnitude image: with `normalize`
    each pair's magnitude is scaled to 0..255 by max(its largest magnitude, `floor_px`) (like OpenCV's
    HSV flow picture; the floor keeps sub-pixel codec jitter from being stretched to full motion), so a
    still pair stays all 1 and the fastest pixel of a moving pair reaches 1.5. With normalize=False F is
    in pixels/frame and only motions above 127.5 px move the mask off 1. Frame 0 has no predecessor and
    takes frame 1's mask; a single frame gives all ones."""
    f, h, w = frames.shape[:3]
    if f < 2:
        return torch.ones(f, 1, h, w)
    gray = [cv2.cvtColor(np.ascontiguousarray(fr), cv2.COLOR_RGB2GRAY) for fr in frames]
    masks = []
    for prev, cur in zip(gray[:-1], gray[1:]):
        flow = cv2.calcOpticalFlowFarneback(cur, prev, None, **FARNEBACK)  # (h, w, 2) px, on cur's grid
        mag = np.sqrt((flow.astype(np.float64) ** 2).sum(-1))
        if normalize:
            mag = mag * (FLOW_TO_BYTE / max(mag.max(), floor_px))
        masks.append(np.clip(mag / FLOW_TO_BYTE + 0.5, FLOW_MASK_MIN, FLOW_MASK_MAX))
    masks.insert(0, masks[0])
    return torch.from_numpy(np.stack(masks)[:, None].astype(np.float32))


def resize_mask(mask: torch.Tensor, size: tuple[int, int], frames: int | None = None) -> torch.Tensor:
    """(f, 1, h, w) mask -> (f', 1, h', w') at latent size (area average when shrinking, bilinear when
    growing); `frames` also resamples time (area average, e.g. 49 video frames -> 13 latent frames)."""
    if frames is not None and frames != mask.shape[0]:
        m = rearrange(mask, "f c h w -> 1 c f h w")
        m = F.interpolate(m, size=(frames, *size), mode="area" if frames < mask.shape[0] else "trilinear")
        return rearrange(m, "1 c f h w -> f c h w")
    if tuple(mask.shape[-2:]) == tuple(size):
        return mask
    shrink = size[0] <= mask.shape[-2] and size[1] <= mask.shape[-1]
    return F.interpolate(mask, size=size, mode="area") if shrink else \
        F.interpolate(mask, size=size, mode="bilinear", align_corners=False)


def face_mask_from_landmarks(landmarks: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """(f, n, ≥2) landmark x, y in pixels -> (f, 1, h, w) float32 0/1 mask: the filled convex hull per frame."""
    h, w = size
    out = np.zeros((landmarks.shape[0], 1, h, w), np.float32)
    for i, pts in enumerate(landmarks[..., :2].detach().cpu().numpy()):
        hull = cv2.convexHull(np.round(pts).astype(np.int32))
        cv2.fillConvexPoly(out[i, 0], hull, 1.0)
    return torch.from_numpy(out)


def face_aware_loss(pred: torch.Tensor, target: torch.Tensor, motion_mask: torch.Tensor,
                    face_mask: torch.Tensor | None = None, face_weight: float = 2.0,
                    weight: torch.Tensor | None = None) -> torch.Tensor:
    """SkyReels-A1 face-aware motion loss: batch mean of mean(W (p − y)²), W = motion · (1 + (α−1)·face).

    pred/target (b, f, c, h, w) (CogVideoX layout; transpose a (b, c, f, h, w) tensor first); masks
    (f, 1, h, w) or (b, f, 1, h, w) at latent size (`resize_mask`), face mask in [0, 1]. W is an absolute
    weight (still background counts 1, moving pixels up to 1.5, face pixels α times more; α = face_weight
    is our default, not a published value). `weight` (b,) weights samples (e.g. Min-SNR)."""
    w = motion_mask.to(pred)
    if face_mask is not None:
        w = w * (1.0 + (face_weight - 1.0) * face_mask.to(pred))
    if w.dim() == 4:
        w = w[None]  # (1, f, 1, h, w)
    loss = (w.float() * (pred.float() - target.float()).pow(2)).flatten(1).mean(1)  # (b,)
    if weight is not None:
        loss = loss * weight.to(loss)
    return loss.mean()


# ------------------------------------------------------------------ Diffusion-DPO (Hallo4)


def dpo_errors(pred: torch.Tensor, target: torch.Tensor, mask: torch.Tensor | None = None
               ) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-sample MSEs (b/2,) of the preferred and rejected halves of a batch laid out [winners; losers]
    as in the official Diffusion-DPO code; `target` is ε, v or the flow velocity noise − x0 alike."""
    err = per_sample_mse(pred, target, mask)
    if err.shape[0] % 2:
        raise ValueError(f"DPO batch must hold winners then losers (even size), got {err.shape[0]}")
    return err.chunk(2)


def diffusion_dpo_loss(model_err_w: torch.Tensor, model_err_l: torch.Tensor, ref_err_w: torch.Tensor,
                       ref_err_l: torch.Tensor, beta: float) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Diffusion-DPO (Wallace et al. 2023) on (b,) per-sample errors of the trained and frozen reference
    model at the same noise and t: −mean log σ(−β/2 · ((e_w − e_ref_w) − (e_l − e_ref_l))).

    The −0.5·β scaling is the official code's (SalesforceAIResearch/DiffusionDPO train.py: `scale_term =
    -0.5 * args.beta_dpo`; the paper's T·ω(λ_t) is folded into β). Works unchanged for ε- and for
    flow-matching errors. Returns (loss, implicit accuracy = fraction of pairs with a positive margin,
    reward margin = batch mean of the logit); the last two are detached, for logging."""
    logit = -0.5 * beta * ((model_err_w - ref_err_w.detach()) - (model_err_l - ref_err_l.detach()))
    loss = -F.logsigmoid(logit).mean()
    return loss, (logit > 0).float().mean().detach(), logit.mean().detach()
