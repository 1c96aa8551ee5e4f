"""SkyReels-A2's training adapter: the Wan2.1 composition transformer, trained on reference images and clips."""
from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from ...train import losses as L
from ...train.dit import DiTSystem


@dataclass
class SkyReelsA2Options:
    flow_shift: float = 3.0  # σ shift of training (480p)
    reference_dropout: float = 0.1  # share of samples trained without references (for CFG)


class SkyReelsA2System(DiTSystem):
    """SkyReels-A2: flow matching on Wan latents with the portrait as the one reference (its VAE latent in the
    spatial branch, its CLIP tokens in the semantic branch)."""

    Options = SkyReelsA2Options
    vae_kind = "wan"

    def build_net(self, config):
        from .model import OFFICIAL, TINY, SkyReelsA2, SkyReelsA2Config

        base = TINY if config.system.size == "tiny" else OFFICIAL
        d = {k: {**getattr(base, k), **config.system.model.get(k, {})} for k in ("transformer", "vae", "clip")}
        d.update({k: v for k, v in config.system.model.items() if k not in d})
        return SkyReelsA2(SkyReelsA2Config.from_dict({**base.__dict__, **d}))

    def tiny_vae_config(self):
        from .model import TINY

        return {**TINY.vae, **self.train_config.system.model.get("vae", {})}

    def loss(self, batch, generator):
        opts = self.options(self.train_config)
        mb = {"latents": self.encode(batch["frames"]).transpose(1, 2),  # Wan layout (b, c, f, h, w)
              "ref_latents": self.portrait_latent(batch),  # (b, 1, c, h, w): one reference, the portrait
              "ref_images": batch["reference"][:, None]}  # the semantic branch resizes for CLIP itself
        loss = skyreels_a2_loss(self.net, mb, generator, reference_dropout=opts.reference_dropout,
                                shift=opts.flow_shift)
        return loss, {"loss": loss.detach().item()}


def skyreels_a2_loss(model, batch: dict, generator: torch.Generator, reference_dropout: float = 0.0,
                     shift: float | None = None) -> torch.Tensor:
    """SkyReels-A2's objective: rectified-flow velocity MSE of `model.forward_cond`
    (`systems.skyreels_a2.model.SkyReelsA2`) at logit-normal σ (shifted by `shift`, default the model's
    train_shift); with probability `reference_dropout` a sample trains unconditionally (what CFG needs).
    Randomness only from `generator`."""
    from .model import TIMESTEP_SCALE

    x0 = batch["latents"]
    b = x0.shape[0]
    noise = torch.randn(x0.shape, generator=generator, device=generator.device).to(x0)
    sigma = L.sample_flow_sigmas(b, generator, shift=model.config.train_shift if shift is None else shift).to(x0)
    noisy, target = L.flow_matching_pair(x0, noise, sigma)
    cond = model.conditions(batch, x0.shape[2])
    if reference_dropout > 0:
        keep = (torch.rand(b, generator=generator, device=generator.device) >= reference_dropout).to(x0)
        cond = {k: v * keep.view(-1, *([1] * (v.dim() - 1))) for k, v in cond.items()}
    return F.mse_loss(model.forward_cond(noisy, sigma * TIMESTEP_SCALE, cond).float(), target.float())


__all__ = ["SkyReelsA2Options", "SkyReelsA2System", "skyreels_a2_loss"]
