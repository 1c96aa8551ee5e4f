"""Training adapter of MIDAS (systems/midas/model.py, with parts in nn/dc_video_autoencoder.py): the
deep-compression video autoencoder in three stages and the autoregressive model with its diffusion head. The stage
label picks what trains: "ae1" (spatial layers on single frames), "ae2" (temporal modules on clips), "ae3"
(everything) and "ar" (the autoregressive transformer on the frozen autoencoder's latents).

The "ar" stage reads its autoencoder from `system.vae`: a run or checkpoint folder an "ae" stage wrote (its
model/ folder, as trained), or a folder `DCVideoAutoencoder.save_pretrained` wrote; `size: tiny` builds a tiny one
with seeded weights instead. Audio: Whisper features when the dataset has them at the model's width, else the
clip's log-mel frames resampled (no parameters) to the model's feature rate (4 per 80 ms token) and width.
"""
from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import torch
import torch.nn.functional as F
from einops import rearrange

from ...errors import InputError
from ...train.base import TrainSystem
from ...train.losses import flow_head_loss

AE_STAGES = ("ae1", "ae2", "ae3")
STAGES = (*AE_STAGES, "ar")


def _stage(config) -> str:
    stage = str(config.stage)
    if stage not in STAGES:
        raise InputError(f"MIDAS stages are {', '.join(STAGES)}, not {config.stage!r}",
                         "set stage: ae1, ae2 or ae3 (autoencoder) or ar (autoregressive model)")
    return stage


def ae_config(size: str, model: dict):
    from ...nn.dc_video_autoencoder import DCVideoAEConfig

    return DCVideoAEConfig.tiny(**model) if size == "tiny" else DCVideoAEConfig(**model)


def load_autoencoder(folder: str | Path):
    """A MIDAS autoencoder from a folder its save_pretrained wrote, or from the net of an "ae" stage's checkpoint
    (a checkpoints/step-NNNNNN folder, or the newest one of a run folder)."""
    from ...models.checkpoints import CONFIG_FILE, MODEL_FOLDER
    from ..trained import trained_step
    from .model import DCVideoAutoencoder

    p = Path(folder).expanduser()
    if not (p / CONFIG_FILE).is_file():
        step = trained_step(p)
        if step is None:
            raise InputError(f"system.vae {p} holds no MIDAS autoencoder", "point it at the run (or "
                             "checkpoints/step-NNNNNN) folder of a MIDAS autoencoder stage")
        p = step / MODEL_FOLDER
    return DCVideoAutoencoder.from_pretrained(p)


class MidasAutoencoder(TrainSystem):
    """Stages ae1-ae3: L1 + MSE reconstruction of the clip's frames."""

    def __init__(self, config):
        super().__init__()
        from .model import DCVideoAutoencoder

        self.net = DCVideoAutoencoder(ae_config(config.system.size, config.system.model))

    def loss(self, batch, generator):
        s = self.net.config.spatial_compression
        frames = batch["frames"]
        if frames.shape[-1] % s:
            raise InputError(f"frames of {frames.shape[-1]} px do not divide by the autoencoder's {s}x compression",
                             f"set frame_size to a multiple of {s}")
        loss, logs = reconstruction_loss(self.net, frames)
        return loss, {"loss": loss.detach().item(), **logs}


class MidasAutoregressive(TrainSystem):
    """Stage ar: teacher-forced diffusion-head loss of the frame-causal transformer on the clip's latents,
    the reference frame's latents as the first slot."""

    def __init__(self, config):
        super().__init__()
        from .model import MidasConfig, MidasTransformer

        if config.system.vae:
            ae = load_autoencoder(config.system.vae)
        elif config.system.size == "tiny":
            from .model import DCVideoAutoencoder

            ae = DCVideoAutoencoder(ae_config("tiny", {}))
        else:
            raise InputError("the MIDAS ar stage trains on its autoencoder's latents; system.vae is not set",
                             "set system.vae to a checkpoint folder of the ae3 stage (or size: tiny)")
        self.ae = ae.requires_grad_(False).eval()
        model = {**config.system.model, "latent_channels": ae.config.latent_channels}
        head = {**model.get("head", {}), "latent_channels": ae.config.latent_channels}
        if config.system.size == "tiny":
            cfg = MidasConfig.tiny(**{k: v for k, v in model.items() if k != "head"})
            cfg.head = replace(cfg.head, **head)
        else:
            cfg = MidasConfig(**{**model, "head": {**head, "cond_dim": model.get("dim", MidasConfig.dim)}})
        if config.clip_frames % cfg.chunk_frames:
            raise InputError(f"clip_frames {config.clip_frames} is not a whole number of {cfg.chunk_frames}-frame "
                             "chunks", f"use a multiple of {cfg.chunk_frames}")
        self.net = MidasTransformer(cfg)

    @torch.no_grad()
    def latents(self, frames: torch.Tensor) -> torch.Tensor:
        """(b, f, 3, S, S) -> (b, f, C, h, w): frames resized to the model's latent grid times the compression."""
        h, w = self.net.config.latent_size
        s = self.ae.config.spatial_compression
        b = frames.shape[0]
        x = F.interpolate(frames.flatten(0, 1), size=(h * s, w * s), mode="bilinear", antialias=True,
                          align_corners=False)
        return self.ae.encode(x.unflatten(0, (b, -1)))

    def audio(self, batch: dict, frames: int) -> torch.Tensor:
        """(b, f * A, feature_dim) with A = feature frames per video frame."""
        cfg = self.net.config
        per_frame = cfg.audio_tokens_per_frame * cfg.audio.frames_per_token
        feats = batch.get("audio_feats")
        if feats is not None and feats.shape[-1] == cfg.audio.feature_dim:
            x = feats[:, :, feats.shape[2] // 2].flatten(1, 2)  # the frame's own window, (b, f*L, d)
        else:
            mel = batch["audio"]
            x = mel[:, :, mel.shape[2] // 2].flatten(1, 2)  # (b, f*m, 80)
        x = F.interpolate(x[:, None], size=(frames * per_frame, cfg.audio.feature_dim), mode="bilinear",
                          align_corners=False)[:, 0]
        return x * (~batch["drop_audio"]).to(x.dtype).view(-1, 1, 1)

    def loss(self, batch, generator):
        frames = self.latents(batch["frames"])
        ref = self.latents(batch["reference"][:, None])[:, 0]
        loss, logs = teacher_forced_loss(self.net, {"reference": ref, "frames": frames,
                                                    "audio": self.audio(batch, frames.shape[1])}, generator)
        return loss, {"loss": loss.detach().item(), **logs}


def reconstruction_loss(ae, frames: torch.Tensor) -> tuple[torch.Tensor, dict]:
    """The MIDAS autoencoder stages' objective (`systems.midas.model.DCVideoAutoencoder`): L1 + MSE between a
    clip and its reconstruction (the paper adds perceptual and adversarial terms)."""
    recon = ae(frames)
    l1, mse = (recon - frames).abs().mean(), F.mse_loss(recon, frames)
    return l1 + mse, {"l1": l1.item(), "mse": mse.item()}


def teacher_forced_loss(net, batch: dict, generator: torch.Generator) -> tuple[torch.Tensor, dict]:
    """MIDAS's objective for its transformer (`systems.midas.model.MidasTransformer`) and diffusion head: teacher-forced
    flow matching of every frame's latent tokens. batch: reference (b, C, h, w) and frames (b, n*F, C, h, w)
    latents, audio (b, n*A, feat), optional pose (b, n*F, J, 3) and text (b, T, text_dim). Frame inputs get
    noise of a random level up to `input_noise_max` (the reference stays clean); the audio quantizer's loss
    is added."""
    cond = net.conditions(batch["audio"], batch.get("pose"), batch.get("text"))
    ref, frames = batch["reference"], batch["frames"]
    b, g = frames.shape[:2]
    levels = net.config.input_noise_max * torch.rand(b, g, generator=generator, device=generator.device)
    levels = torch.cat([levels.new_zeros(b, 1), levels[:, 1:]], dim=1).to(frames.device)  # slot 0: the reference
    previous = net.noised(frames[:, :-1], levels[:, 1:], generator)
    inputs = torch.cat([ref[:, None], previous], dim=1)
    z = net.frame_conditions(net.prefixes(cond.tokens, ref), inputs, levels)
    x0 = rearrange(frames, "b g c h w -> (b g h w) c")
    diffusion = flow_head_loss(net.head, x0, rearrange(z, "b g l d -> (b g l) d"), generator)
    return diffusion + cond.vq_loss, {"diffusion": diffusion.item(), "vq": cond.vq_loss.item()}


class MidasSystem(TrainSystem):
    """Dispatches on the stage label (see the module docstring)."""

    @classmethod
    def check_config(cls, config) -> None:
        super().check_config(config)
        _stage(config)

    @classmethod
    def from_train_config(cls, config, dataset):
        if _stage(config) in AE_STAGES:
            return MidasAutoencoder(config)
        return MidasAutoregressive(config)

    @classmethod
    def smoke_overrides(cls, config):
        if _stage(config) == "ar":
            return replace(config, clip_frames=3)
        return config


__all__ = ["MidasAutoencoder", "MidasAutoregressive", "MidasSystem", "load_autoencoder", "reconstruction_loss",
           "teacher_forced_loss"]
