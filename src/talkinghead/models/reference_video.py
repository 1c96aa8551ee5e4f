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


class ReferenceVideoNet(ConfiguredModel):
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

    def predict(self, noisy: torch.Tensor, t: torch.Tensor, batch: dict) -> torch.Tensor:
        """One full forward (reference net, then denoising UNet): what a training step differentiates."""
        self.record_reference(batch)
        return self.denoise_recorded(noisy, t, batch)

    def predictor(self, batch: dict):
        """`predict(noisy, t)` for one sampling call over `batch`: the reference net and the guidance encoder
        (face locator, pose guider) run once, here, and every step reuses their features, which do not depend
        on the step (the same numbers as `predict` at each step). Valid until the net records another batch."""
        self.record_reference(batch)
        location = self.location(batch)
        return lambda noisy, t: self.denoise_recorded(noisy, t, batch, location)

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
