"""Hallo3's training adapter: the CogVideoX transformer with audio and identity conditioning, trained on (clip,
audio) batches with v-prediction."""
from __future__ import annotations

import torch

from ...train import losses as L
from ...train.dit import DiTSystem


class Hallo3System(DiTSystem):
    """Hallo3 stages 1-2: v-prediction on CogVideoX latents with the identity reference network reading the
    portrait latent; the clip's own motion frames (or the portrait) as condition latents."""

    def build_net(self, config):
        from .model import HALLO3_TINY, Hallo3Model

        base = HALLO3_TINY if config.system.size == "tiny" else {}
        kw = {k: {**base.get(k, {}), **config.system.model.get(k, {})}
              for k in ("transformer_config", "audio_config", "face_config")}
        extra = {k: v for k, v in config.system.model.items() if k not in kw}
        return Hallo3Model(**kw, **extra)

    def tiny_vae_config(self):
        from .model import TINY_VAE

        return TINY_VAE

    def model_batch(self, batch: dict) -> dict:
        net = self.net
        latents = self.encode(batch["frames"])
        portrait = self.portrait_latent(batch)
        b = latents.shape[0]
        from .model import HALLO3_AUDIO, HALLO3_FACE

        tc = net.transformer.config
        ac = {**HALLO3_AUDIO, **(net.config.audio_config or {})}
        fc = {**HALLO3_FACE, **(net.config.face_config or {})}
        motion = self.encode(batch["motion_frames"]) if batch["motion_frames"].shape[1] else portrait
        keep = (~batch["drop_motion"]).to(motion.dtype).view(-1, 1, 1, 1, 1)
        return {"latents": latents, "reference_latents": portrait, "motion_latents": motion * keep,
                "text": latents.new_zeros(b, tc.max_text_seq_length, tc.text_embed_dim),  # null prompt
                "face_embedding": latents.new_zeros(b, fc["embedding_dim"]),  # no face recogniser here
                "audio_windows": self.audio_windows(batch, (ac["window"], ac["layers"], ac["channels"]))}

    def loss(self, batch, generator):
        from diffusers import CogVideoXDDIMScheduler

        from .model import COGVIDEOX_SCHEDULER

        return hallo3_loss(self.net, self.model_batch(batch), CogVideoXDDIMScheduler(**COGVIDEOX_SCHEDULER), generator)


def hallo3_loss(model, batch: dict, scheduler, generator: torch.Generator) -> tuple[torch.Tensor, dict]:
    """Hallo3's objective (CogVideoX's): v-prediction MSE of `model.predict` (`systems.hallo3.model.Hallo3Model`) at a
    random timestep; batch["latents"] (b, T', c, h, w) clean latents, the rest the model's conditions."""
    x0 = batch["latents"]
    noise = torch.randn(x0.shape, generator=generator, device=generator.device).to(x0)
    t = L.sample_timesteps(scheduler, x0.shape[0], generator).to(x0.device)
    noisy = scheduler.add_noise(x0, noise, t)
    loss = L.diffusion_loss(model.predict(noisy, t, batch), L.diffusion_target(scheduler, x0, noise, t))
    return loss, {"loss": loss.detach().item()}


# ============================================================================ Hallo4


__all__ = ["Hallo3System", "hallo3_loss"]
