"""The loaded parts of a ReferenceNet system (Hallo, EchoMimic): the net whose reference UNet writes a reference
bank that its denoising UNet reads (Animate Anyone's ReferenceNet), the VAE and the scheduler."""
from __future__ import annotations

import torch
from diffusers import AutoencoderKL, DDIMScheduler

from ..nn.reference_attention import ReferenceBank, attach_reference


class ReferenceNetPipeline:
    """The loaded parts of a ReferenceNet system (Hallo, EchoMimic): the net with its reference bank attached
    (reference UNet writes, denoising UNet reads), the VAE and the scheduler (the system's official one unless
    another is given)."""

    default_scheduler: dict  # the system's official DDIM settings, set by each subclass

    def __init__(self, net, vae: AutoencoderKL, scheduler: DDIMScheduler | None = None,
                 bank_dtype: torch.dtype | None = torch.float16):
        self.net = net.eval()
        self.vae = vae.eval()
        self.scheduler = scheduler or DDIMScheduler(**self.default_scheduler)
        self.bank = ReferenceBank(dtype=bank_dtype)
        attach_reference(net.reference_unet, net.denoising_unet, self.bank)

    @property
    def device(self) -> torch.device:
        return next(self.net.parameters()).device

    @property
    def dtype(self) -> torch.dtype:
        return next(self.net.parameters()).dtype


__all__ = ["ReferenceNetPipeline"]
