"""The reference video net of EMO, Loopy and EMO2: a ReferenceNet that encodes the portrait (and motion frames)
once into a reference bank, and a video UNet whose spatial self-attention reads that bank while it denoises a
clip; v-prediction, sampled with DDIM on the training scheduler."""
from __future__ import annotations

import torch
from diffusers import DDIMScheduler

from ..nn.reference_attention import ReferenceBank, attach_reference
from ..sampling import denoise
from .checkpoints import ConfiguredModel
from .unet3d import VideoUNet3D, reference_unet

TRAIN_SCHEDULER = {"num_train_timesteps": 1000, "beta_start": 0.00085, "beta_end": 0.012, "beta_schedule": "linear",
                   "clip_sample": False, "prediction_type": "v_prediction", "rescale_betas_zero_snr": True,
                   "timestep_spacing": "trailing"}


class OncePerClip:
    """The split of a reference-net forward that lets sampling run the reference net once per clip (mixed into
    ReferenceVideoNet here and into Hallo's and EchoMimic's training nets by systems/reference_training.py).

    `prepare_clip(batch)` does the work that does not depend on the denoising step (the reference net over the
    batch's reference images into the bank, the condition encoders), `denoise_prepared(noisy, t, prepared)` the
    denoising UNet at one step. `predict` (a training forward) does both at every call; `predictor(batch)`
    prepares once per sampling call and every step reuses it: the same numbers as `predict` at each step."""

    def prepare_clip(self, batch: dict, record: bool = True) -> dict:
        """The step-independent inputs of the denoising UNet for `batch`; with `record`, the reference net's
        features of the batch's reference images are written to the bank too."""
        raise NotImplementedError

    def denoise_prepared(self, noisy: torch.Tensor, t: torch.Tensor, prepared: dict) -> torch.Tensor:
        """The denoising UNet's output for `noisy` (b, c, f, h, w) at step `t`, reading the bank."""
        raise NotImplementedError

    def predict(self, noisy: torch.Tensor, t: torch.Tensor, batch: dict) -> torch.Tensor:
        """One full forward (reference net, condition encoders, denoising UNet): what a training step
        differentiates."""
        return self.denoise_prepared(noisy, t, self.prepare_clip(batch))

    def predictor(self, batch: dict, uncond: dict | None = None):
        """`predict(noisy, t)` for one sampling call over `batch`, its step-independent work done once, here.

        With `uncond` (the same clip with its conditions dropped but the same reference images) it returns the
        unconditional and conditional outputs stacked along the batch ([uncond; cond]), what `denoise` guides;
        both branches read the one bank, so the reference net still runs once. Valid until the net records
        another batch."""
        cond = self.prepare_clip(batch)
        if uncond is None:
            return lambda noisy, t: self.denoise_prepared(noisy, t, cond)
        free = self.prepare_clip(uncond, record=False)
        return lambda noisy, t: torch.cat([self.denoise_prepared(noisy, t, free),
                                           self.denoise_prepared(noisy, t, cond)])


class ReferenceVideoNet(ConfiguredModel, OncePerClip):
    """Shared by EMO, Loopy and EMO2: reference net + video UNet and a DDIM sampler (training: `train.losses`).

    Batches: `ref` (b, 1+m, 4, h, w) latents of the portrait then m motion frames; `audio` (b, f, t, d)
    audio tokens per frame; `target` (b, 4, f, h, w) clean latents of the clip.
    """

    def __init__(self, config=None, **fields):
        """`config`: a typed config with `unet` (the SD UNet config) and `denoising()` (the video UNet's)."""
        super().__init__(config, **fields)
        config = self.config
        self.reference_unet = reference_unet(config.unet)
        self.denoising_unet = VideoUNet3D(config.denoising())
        self.bank = ReferenceBank(dtype=None)
        attach_reference(self.reference_unet, self.denoising_unet, self.bank)
        self.register_buffer("null_tokens", torch.zeros(1, 1, config.unet["cross_attention_dim"]), persistent=False)

    def frame_embedding(self, batch: dict, temb_shape: tuple[int, int]) -> torch.Tensor | None:
        return None  # per-frame additions to the timestep embedding (speed, motion latents)

    def audio_tokens(self, audio: torch.Tensor) -> torch.Tensor:
        return audio

    def location(self, batch: dict) -> torch.Tensor | None:
        return None  # guidance features added after conv_in (EMO2's pose guider; EMO and Loopy have none)

    def reference_images(self, batch: dict) -> torch.Tensor:
        """(b, n, 4, h, w) latents the reference net encodes: the portrait then the motion frames."""
        return batch["ref"]

    def record_reference(self, batch: dict) -> None:
        """Run the reference net over the batch's reference images and keep its features in the bank, where every
        denoising-UNet call reads them. They depend on the images only (the reference net sees timestep 0 and
        null text), not on the denoising step."""
        images = self.reference_images(batch)  # (b, n, 4, h, w)
        b, n = images.shape[:2]
        tokens = self.null_tokens.expand(b * n, -1, -1)
        self.bank.clear()
        self.bank.groups, self.bank.uncond_groups, self.bank.recording = b, 0, True
        try:
            self.reference_unet(images.flatten(0, 1), torch.zeros(b * n, device=images.device, dtype=torch.long),
                                encoder_hidden_states=tokens, return_dict=False)
        finally:
            self.bank.recording = False

    def denoise_recorded(self, noisy: torch.Tensor, t: torch.Tensor, batch: dict,
                         location: torch.Tensor | None = None) -> torch.Tensor:
        """The denoising UNet's output for `noisy` (b, 4, f, h, w) at step `t`, reading the recorded bank;
        `location`: the batch's guidance features when already computed (else computed here)."""
        b, _, f = noisy.shape[:3]
        temb_dim = self.denoising_unet.time_embedding.linear_2.out_features
        extra = self.frame_embedding(batch, (b * f, temb_dim))
        location = self.location(batch) if location is None else location
        return self.denoising_unet(noisy, t, self.null_tokens.expand(b, -1, -1), self.audio_tokens(batch["audio"]),
                                   location=location, reference=self.bank, added_embedding=extra)

    def prepare_clip(self, batch: dict, record: bool = True) -> dict:
        """The reference net's features (recorded in the bank) and the guidance encoder's (face locator, pose
        guider): neither depends on the step."""
        if record:
            self.record_reference(batch)
        return {"batch": batch, "location": self.location(batch)}

    def denoise_prepared(self, noisy: torch.Tensor, t: torch.Tensor, prepared: dict) -> torch.Tensor:
        return self.denoise_recorded(noisy, t, prepared["batch"], prepared["location"])

    @torch.no_grad()
    def sample(self, batch: dict, frames: int, steps: int, generator: torch.Generator) -> torch.Tensor:
        """(b, 4, frames, h, w) clean latents; the starting noise is drawn on the generator's device, then moved
        to the reference latents' device and dtype (the same draw whichever device the net runs on)."""
        scheduler = DDIMScheduler(**TRAIN_SCHEDULER)
        scheduler.set_timesteps(steps)
        ref = batch["ref"]
        b, _, c, h, w = ref.shape
        latents = torch.randn((b, c, frames, h, w), generator=generator, device=generator.device)
        return denoise(self.predictor(batch), scheduler, latents.to(ref.device, ref.dtype))
