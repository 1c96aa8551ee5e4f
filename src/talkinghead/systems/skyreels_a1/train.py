"""SkyReels-A1's training adapter: the landmark-guided CogVideoX transformer, with its face-weighted loss masks."""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from ...train import losses as L
from ...train.dit import DiTSystem, pooled_tokens


@dataclass
class SkyReelsA1Options:
    face_weight: float = 2.0  # α of the face-aware loss


class SkyReelsA1System(DiTSystem):
    """SkyReels-A1 stages 1-3: v-prediction with the face-aware, flow-masked loss; the landmark guider reads
    the clip's landmarks drawn as the engine draws them (nn.landmark_guider.render_landmarks); identity tokens
    from the portrait (SigLIP stand-in, see module)."""

    Options = SkyReelsA1Options

    def build_net(self, config):
        from .model import OFFICIAL, TINY, SkyReelsA1, SkyReelsA1Config

        base = TINY if config.system.size == "tiny" else OFFICIAL
        d = {"transformer": {**base.transformer, **config.system.model.get("transformer", {})},
             "vae": {**base.vae, **config.system.model.get("vae", {})},
             **{k: v for k, v in config.system.model.items() if k not in ("transformer", "vae")},
             "face_weight": self.options(config).face_weight}
        d.setdefault("identity_dim", base.identity_dim)
        d.setdefault("identity_mult", base.identity_mult)
        return SkyReelsA1(SkyReelsA1Config(**d))

    def tiny_vae_config(self):
        return dict(self.net_config_vae())

    def net_config_vae(self):
        from .model import TINY

        return {**TINY.vae, **self.train_config.system.model.get("vae", {})}

    def model_batch(self, batch: dict) -> dict:
        from ...nn.landmark_guider import guidance_tensor, render_landmarks

        frames = batch["frames"]
        b, n, _, s = frames.shape[:4]
        latents = self.encode(frames)
        # the guider learns from the frames it is given at render time: depth-shaded landmark contours
        landmarks = batch["landmarks"].cpu().numpy()
        size = (frames.shape[4], frames.shape[3])  # (width, height)
        guidance = torch.cat([guidance_tensor(render_landmarks(landmarks[i], size)) for i in range(b)]
                             ).to(latents)  # (b, 3, F, S, S) in [-1, 1]
        cfg = self.net.config
        n_tokens = max(1, cfg.transformer.get("max_text_seq_length", 4))
        identity = pooled_tokens(batch["reference"], n_tokens, cfg.identity_dim)
        out = {"latents": latents, "ref_latent": self.portrait_latent(batch), "guidance": guidance,
               "identity": identity * (~batch["drop_reference"]).to(identity.dtype).view(-1, 1, 1)}
        f, h, w = latents.shape[1], latents.shape[3], latents.shape[4]
        motion, face = [], []
        pixels = ((frames.clamp(-1, 1) + 1) * 127.5).round().byte().permute(0, 1, 3, 4, 2).cpu().numpy()
        for i in range(b):
            m, fm = loss_masks(pixels[i], batch["landmarks"][i].cpu().numpy(), (f, h, w))
            motion.append(m)
            face.append(fm)
        out["motion_mask"], out["face_mask"] = torch.stack(motion).to(latents), torch.stack(face).to(latents)
        return out

    def loss(self, batch, generator):
        from diffusers import DDIMScheduler

        from .model import TRAIN_SCHEDULER

        loss = skyreels_a1_loss(self.net, self.model_batch(batch), DDIMScheduler(**TRAIN_SCHEDULER), generator)
        return loss, {"loss": loss.detach().item()}


def loss_masks(frames: np.ndarray, landmarks: np.ndarray | None, latent: tuple[int, int, int]
               ) -> tuple[torch.Tensor, torch.Tensor | None]:
    """SkyReels-A1's face-aware loss weights for one clip: (F, H, W, 3) uint8 frames and optional (F, 478, >=2)
    landmarks in pixels -> motion mask (optical flow, 1..1.5) and face mask (landmark hull, 0/1), both
    (f, 1, h, w) at the latent size `latent` = (f, h, w)."""
    f, h, w = latent
    motion = L.resize_mask(L.flow_motion_mask(frames), (h, w), f)
    if landmarks is None:
        return motion, None
    face = L.face_mask_from_landmarks(torch.as_tensor(np.asarray(landmarks, np.float32)), frames.shape[1:3])
    return motion, L.resize_mask(face, (h, w), f)


def _latent_mask(mask: torch.Tensor, f: int, h: int, w: int) -> torch.Tensor:
    """A pixel-space loss mask, (F, 1, H, W) or per sample (b, F, 1, H, W), resized to the latent grid."""
    if mask.dim() == 5:
        return torch.stack([L.resize_mask(m, (h, w), f) for m in mask])
    return L.resize_mask(mask, (h, w), f)


def skyreels_a1_loss(model, batch: dict, scheduler, generator: torch.Generator) -> torch.Tensor:
    """SkyReels-A1's objective: the face-aware, flow-masked v-prediction loss of `model.predict`
    (`systems.skyreels_a1.model.SkyReelsA1`) at a random timestep. batch["latents"] (b, f, c, h, w); optional
    `motion_mask`/`face_mask` in pixels (resized to the latents); the face weight is the model's."""
    x0 = batch["latents"]
    b, f, _, h, w = x0.shape
    noise = torch.randn(x0.shape, generator=generator, device=generator.device).to(x0)
    t = L.sample_timesteps(scheduler, b, generator).to(x0.device)
    noisy = scheduler.add_noise(x0, noise, t)
    target = L.diffusion_target(scheduler, x0, noise, t, "v_prediction")
    motion = batch.get("motion_mask")
    motion = torch.ones(f, 1, h, w) if motion is None else _latent_mask(motion, f, h, w)
    face = batch.get("face_mask")
    face = None if face is None else _latent_mask(face, f, h, w)
    return L.face_aware_loss(model.predict(noisy, t, batch), target, motion, face, model.config.face_weight)


# ============================================================================ SkyReels-A2


__all__ = ["SkyReelsA1Options", "SkyReelsA1System", "loss_masks", "skyreels_a1_loss"]
