"""Hallo4 (Cui et al. 2025, "High-Fidelity Dynamic Portrait Animation via Direct Preference Optimization and
Temporal Motion Modulation"): a DiT whose blocks fuse audio and skeleton-motion features through temporal
motion modulation (T frames -> T' latent frames, ρ folded into tokens, cross-attention + residual), trained
with flow matching and then with Diffusion-DPO on human-preference pairs. DPO is also given for an
ε-prediction Hallo UNet (the UNet-based variant), through the same function.

Approximation: the official Hallo4 is built on Wan2.1/VACE; here the DiT is diffusers' CogVideoX (as
Hallo3), trained as a rectified flow (velocity noise − x0, `FlowMatchEulerDiscreteScheduler`), with the
portrait / motion frames entering as CogVideoX-I2V condition latents.
"""
from __future__ import annotations

from typing import Callable

import torch
from diffusers.configuration_utils import ConfigMixin, register_to_config
from diffusers.models.modeling_utils import ModelMixin
from torch import nn

from ..nn.dit import DiTConditions, conditioned_cogvideox, conditioned_forward
from ..nn.projections import AudioProjection
from ..nn.reference_attention import ReferenceBank, attach_reference
from ..nn.temporal_modulation import SkeletonMotionEncoder, TemporalMotionModulation
from ..nn import objectives as L
from .hallo import HalloNet
from .hallo3 import COGVIDEOX_5B_I2V, HALLO3_AUDIO, TINY_AUDIO, TINY_TRANSFORMER, StagedModel

FLOW_TIMESTEP_SCALE = 1000.0  # DiT timestep = 1000 σ (FlowMatchEulerDiscreteScheduler's convention)
HALLO4_SKELETON = {"keypoints": 68, "channels": [32, 64, 128], "heatmap_size": 64, "grid": 4, "sigma": 1.5}
HALLO4_TINY = {"transformer_config": TINY_TRANSFORMER, "audio_config": TINY_AUDIO,
               "skeleton_config": {"keypoints": 5, "channels": [8, 8], "heatmap_size": 16, "grid": 2}}
DPO_BETA = 5000.0  # Diffusion-DPO's β for SD-scale latents (Wallace et al. 2023); tune per model


class Hallo4Model(StagedModel, ModelMixin, ConfigMixin):
    """Call with `noisy` (b, T', c, h, w) latents at flow time σ, `timestep` (b,) = 1000 σ, `text`
    (b, L, text_embed_dim), `audio_windows` (b, T, window, layers, channels), `keypoints` (b, T, K, 2) in
    [0, 1], `motion_latents` (b, m, c, h, w) (the portrait's latent for a first clip). Returns the velocity
    noise − x0, (b, T', c, h, w)."""

    system = "hallo4"
    config_name = "config.json"
    STAGES = {  # "sft": flow-matching fine-tuning of everything; "dpo": preference alignment of the DiT blocks
        "sft": (["transformer.*", "audio_proj.*", "skeleton_encoder.*"], []),
        "dpo": (["transformer.transformer_blocks.*"], []),
    }

    @register_to_config
    def __init__(self, transformer_config: dict | None = None, audio_config: dict | None = None,
                 skeleton_config: dict | None = None):
        super().__init__()
        tc = {**COGVIDEOX_5B_I2V, **(transformer_config or {})}
        ac = {**HALLO3_AUDIO, **(audio_config or {})}
        sc = {**HALLO4_SKELETON, **(skeleton_config or {})}
        heads, head_dim = tc["num_attention_heads"], tc["attention_head_dim"]
        self.audio_proj = AudioProjection(ac["window"], ac["layers"], ac["channels"], ac["hidden_dim"],
                                          ac["output_dim"], ac["n_tokens"])
        self.skeleton_encoder = SkeletonMotionEncoder(sc["keypoints"], tuple(sc["channels"]), sc["heatmap_size"],
                                                      sc["grid"], sc["sigma"])
        motion_dim = self.skeleton_encoder.out_dim
        self.transformer = conditioned_cogvideox(tc, lambda i: {
            "motion_mod": TemporalMotionModulation(heads * head_dim, ac["output_dim"], motion_dim, heads, head_dim)})

    def conditions(self, frames: int, audio_windows: torch.Tensor | None, keypoints: torch.Tensor | None
                   ) -> DiTConditions:
        tokens = {}
        if audio_windows is not None:
            tokens["audio"] = self.audio_proj(audio_windows.to(self.dtype))  # (b, T, n_a, c_a) per video frame
        if keypoints is not None:
            tokens["motion"] = self.skeleton_encoder(keypoints)  # (b, T, g², c_m)
        return DiTConditions(frames, tokens)

    def forward(self, noisy: torch.Tensor, timestep: torch.Tensor, text: torch.Tensor,
                audio_windows: torch.Tensor | None = None, keypoints: torch.Tensor | None = None,
                motion_latents: torch.Tensor | None = None) -> torch.Tensor:
        cond = self.conditions(noisy.shape[1], audio_windows, keypoints)
        return conditioned_forward(self.transformer, noisy, timestep, text, motion_latents, cond)

    def predict(self, noisy: torch.Tensor, timestep: torch.Tensor, batch: dict) -> torch.Tensor:
        return self(noisy, timestep, batch["text"], batch.get("audio_windows"), batch.get("keypoints"),
                    batch.get("motion_latents"))

    def loss(self, batch: dict, generator: torch.Generator) -> tuple[torch.Tensor, dict]:
        """Rectified-flow velocity MSE at logit-normal σ; batch["latents"] (b, T', c, h, w)."""
        x0 = batch["latents"]
        noise = torch.randn(x0.shape, generator=generator, device=generator.device).to(x0)
        sigma = L.sample_flow_sigmas(x0.shape[0], generator).to(x0.device)
        x_t, target = L.flow_matching_pair(x0, noise, sigma)
        loss = L.diffusion_loss(self.predict(x_t, FLOW_TIMESTEP_SCALE * sigma, batch), target)
        return loss, {"loss": loss.detach().item(), "sigma_mean": sigma.mean().item()}


# ------------------------------------------------------------------ Diffusion-DPO (one implementation)

Denoiser = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]  # (x_t, model timestep) -> prediction
Noiser = Callable[[torch.Tensor, torch.Tensor, torch.Tensor], tuple[torch.Tensor, torch.Tensor, torch.Tensor]]


def diffusion_dpo(policy: Denoiser, reference: Denoiser, winners: torch.Tensor, losers: torch.Tensor,
                  noise: torch.Tensor, level: torch.Tensor, noiser: Noiser, beta: float = DPO_BETA
                  ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Diffusion-DPO on pairs of clean latents (b, ...) that share their conditions: the batch
    [winners; losers] is noised with the same `noise` and noise `level` (b,) for both halves, by
    `noiser(x0, noise, level) -> (x_t, model timestep, target)`; the policy's and the frozen reference's
    per-sample errors go through `nn.objectives.dpo_errors` and `diffusion_dpo_loss`.
    Returns (loss, implicit accuracy, reward margin)."""
    x0 = torch.cat([winners, losers])
    x_t, t, target = noiser(x0, torch.cat([noise, noise]), torch.cat([level, level]))
    err_w, err_l = L.dpo_errors(policy(x_t, t), target)
    with torch.no_grad():
        ref_w, ref_l = L.dpo_errors(reference(x_t, t), target)
    return L.diffusion_dpo_loss(err_w, err_l, ref_w, ref_l, beta)


def flow_noiser(x0: torch.Tensor, noise: torch.Tensor, sigma: torch.Tensor):
    """Rectified flow: x_t = (1−σ)x0 + σ·noise, timestep 1000σ, target the velocity noise − x0."""
    x_t, target = L.flow_matching_pair(x0, noise, sigma)
    return x_t, FLOW_TIMESTEP_SCALE * sigma, target


def ddpm_noiser(scheduler) -> Noiser:
    """DDPM: x_t from the scheduler at integer t, target ε (or v / x0, as the scheduler predicts)."""
    def noiser(x0: torch.Tensor, noise: torch.Tensor, t: torch.Tensor):
        return scheduler.add_noise(x0, noise, t), t, L.diffusion_target(scheduler, x0, noise, t)
    return noiser


def _pair_batch(batch: dict) -> dict:
    """Conditions of a pair batch, repeated for the [winners; losers] layout."""
    return {k: torch.cat([v, v]) for k, v in batch.items() if k not in ("winners", "losers") and v is not None}


def flow_dpo_loss(policy: Hallo4Model, reference: Hallo4Model, batch: dict, generator: torch.Generator,
                  beta: float = DPO_BETA) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Diffusion-DPO for the flow-matching DiT. batch: `winners`, `losers` (b, T', c, h, w) latents of the
    preferred and rejected videos, plus the shared conditions (text, audio_windows, keypoints, motion_latents)."""
    w = batch["winners"]
    noise = torch.randn(w.shape, generator=generator, device=generator.device).to(w)
    sigma = L.sample_flow_sigmas(w.shape[0], generator).to(w.device)
    cond = _pair_batch(batch)
    return diffusion_dpo(lambda x, t: policy.predict(x, t, cond), lambda x, t: reference.predict(x, t, cond),
                         w, batch["losers"], noise, sigma, flow_noiser, beta)


class HalloEpsDenoiser(nn.Module):
    """A Hallo UNet (`models.hallo.HalloNet`) as an ε-predicting denoiser for DPO: the reference UNet reads
    the portrait latent with the face tokens, the denoising UNet reads noisy video latents (b, 4, f, h, w),
    face tokens and audio tokens (plain, non-hierarchical audio attention unless `masks` are given).
    All rows of a batch share one portrait, as the two halves of a DPO pair batch do."""

    def __init__(self, net: HalloNet):
        super().__init__()
        self.net = net
        self.bank = ReferenceBank(dtype=None)
        attach_reference(net.reference_unet, net.denoising_unet, self.bank)

    def forward(self, noisy: torch.Tensor, t: torch.Tensor, batch: dict) -> torch.Tensor:
        b = noisy.shape[0]
        face = batch["face_embedding"]  # (b, 512)
        tokens = self.net.imageproj(face)  # (b, n, d)
        audio = self.net.audioproj(batch["audio_windows"])  # (b, f, n, d)
        portrait = batch["reference_latents"][:1]  # (1, 4, h, w)
        self.bank.clear()
        self.bank.groups, self.bank.uncond_groups, self.bank.recording = 1, 0, True
        try:
            zero = torch.zeros(1, dtype=torch.long, device=noisy.device)
            self.net.reference_unet(portrait, zero, encoder_hidden_states=tokens[:1], return_dict=False)
        finally:
            self.bank.recording = False
        t = torch.as_tensor(t, device=noisy.device).reshape(-1).expand(b)
        return self.net.denoising_unet(noisy, t, tokens, audio, region_masks=batch.get("masks"),
                                       reference=self.bank)


def eps_dpo_loss(policy: HalloEpsDenoiser, reference: HalloEpsDenoiser, batch: dict, scheduler,
                 generator: torch.Generator, beta: float = DPO_BETA
                 ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Diffusion-DPO for the ε-prediction UNet: batch `winners`, `losers` (b, 4, f, h, w) + shared conditions
    (face_embedding (b, 512), audio_windows, reference_latents (1, 4, h, w))."""
    w = batch["winners"]
    noise = torch.randn(w.shape, generator=generator, device=generator.device).to(w)
    t = L.sample_timesteps(scheduler, w.shape[0], generator).to(w.device)
    cond = {k: (v if k == "reference_latents" else torch.cat([v, v]))
            for k, v in batch.items() if k not in ("winners", "losers")}
    return diffusion_dpo(lambda x, tt: policy(x, tt, cond), lambda x, tt: reference(x, tt, cond),
                         w, batch["losers"], noise, t, ddpm_noiser(scheduler), beta)
