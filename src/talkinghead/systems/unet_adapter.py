"""The training adapter of the reference-net UNet systems: a seed model plus the glue from dataset clips to its
batches.

A `System` turns a `TalkingClips` batch into the model's inputs (crops, optional VAE latents, audio
tokens, condition dropout), computes the loss with `train.losses`, and samples frames for the grids.
The EMO-style reference video net (systems/emo/model.py), Loopy (systems/loopy/model.py), Hallo and Hallo2
(systems/hallo/model.py, through systems/hallo/train.py) and EchoMimic v1 (systems/echomimic/model.py, through
systems/echomimic/train.py) are trained here; which of their modules train in each stage is a list of name
patterns in the stage's YAML config.

Hallo2's text variant: `system.options.text_encoder` names a local T5 folder; the net then gets a text AdaLN in
every audio-attention block (its `text_dim` is the encoder's width), and each clip's prompt (the dataset's
`prompt`, empty when its video has none) is encoded once, pooled, and passed to the net with the clip; a clip
whose audio is dropped gets the empty prompt, the unconditional branch that `sample` guides against.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from diffusers import DDIMScheduler
from einops import rearrange, repeat
from torch import nn

from ..errors import InputError
from ..models.reference_video import TRAIN_SCHEDULER
from ..models.unet3d import SD15_UNET
from ..nn.loopy import AudioToLatentsConfig
from ..nn.speed import SpeedConfig, head_speed
from ..nn.temporal import TemporalConfig
from ..sampling import denoise
from ..train import losses as L
from ..train.base import SystemConfig, TrainSystem, parse_options
from .echomimic.train import EchoMimicTrainNet
from .emo.model import EMOConfig, EMONet
from .hallo.train import HalloTrainNet
from .loopy.model import LoopyConfig, LoopyNet
from .reference_training import crop_square, merge


CROPS = ("mouth", "face")
SYSTEMS = ("emo", "loopy", "hallo", "hallo2", "echomimic")
# size: tiny (smoke runs and tests): a 4-level UNet of width 32 and the non-UNet parts at matching sizes
TINY_UNET = {"block_out_channels": [32, 32, 32, 32], "layers_per_block": 1, "attention_head_dim": 2,
             "cross_attention_dim": 16}
TINY_MODEL = {
    "hallo": {"face_locator": {"block_out_channels": [4, 8]}, "image_proj": {"clip_extra_context_tokens": 2},
              "audio_proj": {"seq_len": 3, "blocks": 2, "channels": 8, "intermediate_dim": 16, "context_tokens": 4}},
    "echomimic": {"face_locator": {"block_out_channels": [4, 8]}, "audio_dim": 12},
}
TINY_MODEL["hallo2"] = TINY_MODEL["hallo"]


@dataclass
class UNetOptions:
    """system.options of the reference-net UNet systems."""

    text_encoder: str | None = None  # hallo2 only: a local T5 folder (config.json, weights, spiece.model)


class _PixelSpace:
    """The identity 'VAE' of a system trained in pixel space (no system.vae): decoding the x0 estimate for
    EchoMimic's spatial loss is then the estimate itself."""

    class config:  # noqa: N801 (mirrors a diffusers VAE's config attribute)
        scaling_factor = 1.0

    @staticmethod
    def decode(z: torch.Tensor):
        from types import SimpleNamespace

        return SimpleNamespace(sample=z)


PIXEL_SPACE = _PixelSpace()


def motion_variances(pose: torch.Tensor, landmarks: torch.Tensor, size: int) -> dict[str, torch.Tensor]:
    """Loopy's training-only queries of the audio-to-latents module, per frame of a clip:
    `head_motion` (b, f, 1), the squared deviation of the head pose (degrees, yaw/pitch/roll mean) from the
    clip's mean pose, and `expression` (b, f, 1), the mean squared deviation of the landmarks (relative to
    their per-frame centroid, in units of the frame side) from the clip's mean shape: the variances of head
    motion and of expression that the clip's frames contribute."""
    head = (pose - pose.mean(1, keepdim=True)).pow(2).mean(-1, keepdim=True)  # (b, f, 1)
    pts = landmarks[..., :2] / size
    shape = pts - pts.mean(2, keepdim=True)  # (b, f, n, 2): the face without its position
    expression = (shape - shape.mean(1, keepdim=True)).pow(2).sum(-1).mean(-1, keepdim=True)  # (b, f, 1)
    return {"head_motion": head, "expression": expression}


class System(TrainSystem):
    """A reference video net (EMO, Loopy, Hallo, Hallo2, EchoMimic) trained on (crops of) dataset clips;
    v-prediction, min-SNR weighted. Hallo2 is Hallo's net trained with its motion-frame augmentation
    (the stage config's augment_motion_frames); with options.text_encoder, its text variant."""

    Options = UNetOptions

    def __init__(self, config: SystemConfig):
        super().__init__()
        if config.crop not in CROPS:
            raise InputError(f"crop must be one of {CROPS}, got {config.crop!r}", "use crop: mouth or crop: face")
        if config.size not in ("official", "tiny"):
            raise InputError(f"system.size must be official or tiny, got {config.size!r}", "size: official")
        self.config = config
        # Hallo2's text variant: a frozen T5 (not a submodule: it is neither trained nor saved with the net); a
        # subclass for another system (EMO2's video stage) reads system.options as its own Options instead
        options = parse_options(UNetOptions, config.options, config.name) if config.name in SYSTEMS else UNetOptions()
        self.prompts = self._load_prompt_encoder(options.text_encoder)
        self.vae = self._load_vae(config.vae)
        channels = 3 if self.vae is None else self.vae.config.latent_channels
        self.latent_size = config.crop_size if self.vae is None else config.crop_size // 8
        tiny = TINY_UNET if config.size == "tiny" else {}
        unet = {**SD15_UNET, "in_channels": channels, "out_channels": channels,
                "sample_size": self.latent_size, **tiny, **config.unet}
        self.net = self._build(config, unet)
        self.scheduler = DDIMScheduler(**TRAIN_SCHEDULER)

    @classmethod
    def from_train_config(cls, config, dataset) -> "System":
        probe = dataset[0]["audio"]
        config.system.audio_tokens = int(probe.shape[1] * probe.shape[2])  # mel frames per frame's window
        return cls(config.system)

    @classmethod
    def check_config(cls, config) -> None:
        options = cls.options(config)
        if options.text_encoder and config.system.name != "hallo2":
            raise InputError(f"system.options.text_encoder is for hallo2 (its text variant), not {config.system.name!r}",
                             "leave it out, or train system hallo2")

    @classmethod
    def smoke_overrides(cls, config):
        """Tiny sizes; a text variant's T5 becomes a tiny one written beside the smoke run."""
        from dataclasses import replace
        from pathlib import Path

        system = replace(config.system, crop_size=16, motion_heads=2)
        if parse_options(UNetOptions, system.options, system.name).text_encoder:
            from .hallo2.text import write_tiny_t5

            t5 = write_tiny_t5(Path(config.output_dir).parent / "text_encoder")
            system = replace(system, options={**system.options, "text_encoder": str(t5)})
        return replace(config, system=system)

    # ------------------------------------------------------------ construction

    @staticmethod
    def _load_vae(folder: str | None):
        if folder is None:
            return None
        from pathlib import Path

        from ..models.checkpoints import load_vae_folder

        vae = load_vae_folder(Path(folder))
        vae.requires_grad_(False)
        return vae.eval()

    @staticmethod
    def _load_prompt_encoder(folder: str | None):
        if not folder:
            return None
        from .hallo2.text import PromptEncoder

        return PromptEncoder(folder)

    def _build(self, config: SystemConfig, unet: dict) -> nn.Module:
        if config.model and config.name not in ("hallo", "hallo2", "echomimic"):
            raise InputError(f"system.model overrides are for hallo, hallo2 and echomimic, not {config.name!r}",
                             "size emo/loopy through system.unet and motion_heads")
        model = config.model
        if config.size == "tiny" and config.name in TINY_MODEL:
            model = merge(TINY_MODEL[config.name], config.model)
        motion = TemporalConfig(num_attention_heads=config.motion_heads)
        audio_dim = 80  # log-mel bins: each audio token is one mel frame
        time_dim = 4 * unet["block_out_channels"][0]
        if config.name == "emo":
            speed = SpeedConfig(dim=time_dim) if config.speed_layers else None
            locator = (16,) if self.vae is None else (16, 32, 64, 128)  # its output at the model's resolution
            return EMONet(EMOConfig(unet=unet, audio_dim=audio_dim, audio_radius=0, motion=motion, speed=speed,
                                    face_locator=locator))
        if config.name == "loopy":
            a2l = AudioToLatentsConfig(audio_dim=config.audio_tokens * audio_dim, dim=32, heads=2, num_latents=8,
                                       time_embed_dim=time_dim)
            return LoopyNet(LoopyConfig(unet=unet, audio_dim=audio_dim, motion=motion, audio_to_latents=a2l))
        if config.name in ("hallo", "hallo2"):
            if self.prompts is not None:
                model = merge(model, {"text_dim": self.prompts.dim})
            return HalloTrainNet.for_system(unet, config.motion_heads, model)
        if config.name == "echomimic":
            return EchoMimicTrainNet.for_system(unet, config.motion_heads, model)
        raise InputError(f"unknown system {config.name!r}", f"use system: one of {SYSTEMS}")

    # ------------------------------------------------------------ batches

    def crop_box(self, masks: torch.Tensor) -> list[tuple[int, int, int]]:
        """(top, left, side) per item: a square around the lip mask (mouth_margin x its width) or the whole frame."""
        b, _, h, w = masks.shape
        if self.config.crop == "face":
            return [(0, 0, min(h, w))] * b
        boxes = []
        for m in masks[:, 0]:
            ys, xs = torch.nonzero(m > 0.5, as_tuple=True)
            if len(ys) == 0:
                boxes.append((0, 0, min(h, w)))
                continue
            cy, cx = (ys.min() + ys.max()).item() / 2, (xs.min() + xs.max()).item() / 2
            side = int(min(min(h, w), max(8, self.config.mouth_margin * (xs.max() - xs.min() + 1).item())))
            top = int(min(max(0, round(cy - side / 2)), h - side))
            left = int(min(max(0, round(cx - side / 2)), w - side))
            boxes.append((top, left, side))
        return boxes

    def crops(self, images: torch.Tensor, boxes) -> torch.Tensor:
        """(b, n, 3, H, W) -> (b, n, 3, s, s) crops resized to crop_size."""
        out = []
        for x, (top, left, side) in zip(images, boxes):
            c = x[..., top:top + side, left:left + side]
            out.append(F.interpolate(c, size=(self.config.crop_size,) * 2, mode="bilinear", antialias=True,
                                     align_corners=False))
        return torch.stack(out)

    def encode(self, pixels: torch.Tensor) -> torch.Tensor:
        """(b, n, 3, s, s) in [-1, 1] -> model space (b, n, c, h, w)."""
        if self.vae is None:
            return pixels
        b = pixels.shape[0]
        with torch.no_grad():
            z = self.vae.encode(pixels.flatten(0, 1)).latent_dist.mean * self.vae.config.scaling_factor
        return z.unflatten(0, (b, -1))

    def decode(self, z: torch.Tensor) -> torch.Tensor:
        """(b, n, c, h, w) model space -> pixels in [-1, 1]."""
        if self.vae is None:
            return z.clamp(-1, 1)
        b = z.shape[0]
        with torch.no_grad():
            x = self.vae.decode(z.flatten(0, 1) / self.vae.config.scaling_factor).sample
        return x.unflatten(0, (b, -1)).clamp(-1, 1)

    def model_batch(self, batch: dict) -> dict:
        """Dataset clip batch -> the net's batch, with condition dropout applied (zeroed inputs)."""
        boxes = self.crop_box(batch["masks"])
        target = self.encode(self.crops(batch["frames"], boxes))  # (b, f, c, h, w)
        ref = self.encode(self.crops(batch["reference"][:, None], boxes))  # (b, 1, c, h, w)
        motion = self.encode(self.crops(batch["motion_frames"], boxes))  # (b, m, c, h, w)
        keep = lambda flag: (~flag).to(target.dtype).view(-1, *([1] * (target.dim() - 1)))  # noqa: E731
        ref = ref * keep(batch["drop_reference"])
        motion = motion * keep(batch["drop_motion"])
        audio = rearrange(batch["audio"], "b f w m d -> b f (w m) d")  # one token per mel frame
        audio = audio * (~batch["drop_audio"]).to(audio.dtype).view(-1, 1, 1, 1)
        out = {"target": rearrange(target, "b f c h w -> b c f h w"), "audio": audio}
        if self.config.name == "loopy":
            out["ref"] = ref
            out["history"] = motion
            out.update(motion_variances(batch["pose"], batch["landmarks"], batch["frames"].shape[-1]))
        elif self.config.name in ("hallo", "hallo2", "echomimic"):
            # Hallo: the reference net sees [portrait, motion frames]; EchoMimic v1 has no motion frames
            out["ref"] = torch.cat([ref, motion], dim=1) if self.config.name != "echomimic" else ref
            out["drop_audio"] = batch["drop_audio"]
            out.update(self.net.conditions(batch, boxes, self.latent_size, target.dtype))
            if self.prompts is not None:  # each clip's prompt, "" for a video without one: (b, text_dim)
                # a clip whose audio is dropped drops its prompt too, so the net learns the unconditional
                # branch that guidance subtracts (no audio, the empty prompt)
                prompts = [p if not drop else "" for p, drop in
                           zip(batch.get("prompt") or [""] * len(target), batch["drop_audio"].tolist())]
                out["text_embedding"] = self.prompts.embed_batch(prompts, target)
        else:
            out["ref"] = torch.cat([ref, motion], dim=1)
            locator = getattr(self.net, "face_locator", None)
            if locator is not None:  # EMO's face locator reads the face-region mask, cropped like the frames
                side = self.latent_size * 2 ** (len(locator.blocks) // 2)
                region = crop_square(batch["masks"][:, 1:2], boxes, batch["frames"].shape[-1], side)
                out["face_region"] = repeat(region, "b 1 h w -> b 1 f h w", f=target.shape[1]).to(target.dtype)
            if self.config.speed_layers:
                out["speed"] = head_speed(batch["pose"]).to(target.dtype)  # degrees per frame
        return out

    # ------------------------------------------------------------ training and sampling

    def loss(self, batch: dict, generator: torch.Generator) -> tuple[torch.Tensor, dict]:
        """Min-SNR-weighted v-prediction loss at a random timestep (explicit generator: reproducible)."""
        mb = self.model_batch(batch)
        x0 = mb["target"]
        noise = torch.randn(x0.shape, generator=generator).to(x0)
        t = torch.randint(0, self.scheduler.config.num_train_timesteps, (x0.shape[0],), generator=generator)
        if self.config.name == "loopy":
            mb["generator"] = generator
        noisy = self.scheduler.add_noise(x0, noise, t)
        pred = self.net.predict(noisy, t.to(x0.device), mb)
        target = L.diffusion_target(self.scheduler, x0, noise, t, "v_prediction")
        weight = None
        if self.config.min_snr_gamma:
            weight = L.min_snr_weight(L.snr(self.scheduler, t), self.config.min_snr_gamma, "v_prediction").to(x0)
        if self.config.name == "echomimic":  # EchoMimic's objective adds the timestep-aware spatial loss
            frames = rearrange(self.crops(batch["frames"], self.crop_box(batch["masks"])), "b f c h w -> b c f h w")
            loss, parts = L.timestep_aware_spatial_loss(
                self.scheduler, self.vae or PIXEL_SPACE, pred, target, noisy, t, frames, "v_prediction",
                perceptual=L.structural_loss, latent_weight=weight)
            return loss, {"loss": loss.detach().item(), "t_mean": t.float().mean().item(),
                          "latent": parts["latent"].item(), "spatial": parts["spatial"].item()}
        loss = L.diffusion_loss(pred, target, weight)
        return loss, {"loss": loss.detach().item(), "t_mean": t.float().mean().item()}

    def unconditional(self, mb: dict) -> dict:
        """The unconditional branch of classifier-free guidance for a Hallo, Hallo2 or EchoMimic model batch: the
        same clip with its audio dropped and, for Hallo2's text variant, the empty prompt: what training feeds a
        clip whose audio (and with it its prompt) is dropped. The reference images stay."""
        out = {**mb, "drop_audio": torch.ones_like(mb["drop_audio"])}
        if self.prompts is not None:
            out["text_embedding"] = self.prompts.embed_batch([""] * len(mb["drop_audio"]), mb["text_embedding"])
        return out

    @torch.no_grad()
    def sample(self, batch: dict, generator: torch.Generator, steps: int = 20,
               guidance_scale: float = 1.0) -> torch.Tensor:
        """Generate the clip's (crops of) frames from its conditions: (b, f, 3, s, s) in [-1, 1].

        The net's step-independent work (its reference net above all) runs once per call (`net.predictor`).
        `guidance_scale` > 1 (Hallo, Hallo2 and EchoMimic) guides away from `unconditional`: the audio and,
        for a text variant, the prompt are strengthened."""
        if guidance_scale != 1.0 and self.config.name not in ("hallo", "hallo2", "echomimic"):
            raise InputError(f"must be 1 for a {self.config.name} run (it is sampled without guidance), "
                             f"got {guidance_scale}", "leave it out", field="guidance_scale")
        mb = self.model_batch(batch)
        if self.config.name == "loopy":
            mb["generator"] = generator
        scheduler = DDIMScheduler(**TRAIN_SCHEDULER)
        scheduler.set_timesteps(steps)
        x = torch.randn(mb["target"].shape, generator=generator).to(mb["target"])
        if guidance_scale != 1.0:
            x = denoise(self.net.predictor(mb, self.unconditional(mb)), scheduler, x, guidance_scale)
        else:
            x = denoise(self.net.predictor(mb), scheduler, x)
        return self.decode(rearrange(x, "b c f h w -> b f c h w"))

    def target_crops(self, batch: dict) -> tuple[torch.Tensor, torch.Tensor]:
        """(reference crops (b, 3, s, s), target crops (b, f, 3, s, s)) for sample grids."""
        boxes = self.crop_box(batch["masks"])
        return self.crops(batch["reference"][:, None], boxes)[:, 0], self.crops(batch["frames"], boxes)
