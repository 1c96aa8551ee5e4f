"""SkyReels-A1 (Qiu et al. 2025, arXiv 2502.10841): portrait animation on a CogVideoX-5B-I2V DiT.

The video latents (b, f, 16, h, w) are joined along channels with the 3D landmark guider's latents of the
rendered expression-aware landmark frames and the reference image latent (first frame, zero-padded in time, as
CogVideoX I2V), in the release's order noise | landmarks | image, so the patch embedding takes 48 channels. Identity features of the face crop
(SigLIP; the facial image-text alignment module) go through a small MLP into the text-token space and replace
the text prompt. Training: v-prediction on CogVideoX's zero-terminal-SNR DDPM schedule with the face-aware,
flow-masked loss; three stages (motion-driven, identity-preserving, joint fine-tuning) are the
configs/train/skyreels_a1_stage*.yaml files (systems/skyreels_a1/train.py trains them).
Sampling uses diffusers' UniPC with the same schedule.

Module names follow the official release where it has them: `transformer.*` is a plain diffusers
CogVideoXTransformer3DModel; the release keeps the identity MLP inside the patch embedding as
`patch_embed.pose_proj.{0,2}` (our `identity_proj.{0,2}`), and its `pose_guider/` folder is a full CogVideoX VAE
whose `encoder.*` keys load into `landmark_guider` (systems/skyreels_a1/release.py reads the release folder).
"""
from __future__ import annotations

from dataclasses import dataclass, field, fields

import torch
from diffusers import CogVideoXTransformer3DModel, UniPCMultistepScheduler
from diffusers.models.embeddings import get_3d_rotary_pos_embed
from diffusers.pipelines.cogvideo.pipeline_cogvideox import get_resize_crop_region_for_grid
from torch import nn

from ...models.checkpoints import ConfiguredModel
from ...nn.landmark_guider import CausalLandmarkGuider, LandmarkGuiderConfig
from ...sampling import denoise, guided_prediction

# CogVideoX-5B noise schedule (scheduler_config.json of the release): v-prediction, zero terminal SNR.
SCHEDULE = dict(num_train_timesteps=1000, beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear",
                prediction_type="v_prediction", rescale_betas_zero_snr=True, timestep_spacing="trailing")
TRAIN_SCHEDULER = dict(SCHEDULE, clip_sample=False, set_alpha_to_one=True)  # DDIMScheduler kwargs

# CogVideoX-5B-I2V transformer (THUDM/CogVideoX-5b-I2V transformer/config.json) widened as the release:
# 48 input channels (noise + image + landmark latents) and 729 identity tokens (SigLIP-so400m, 27 x 27).
COGVIDEOX_5B_I2V = dict(num_attention_heads=48, attention_head_dim=64, in_channels=48, out_channels=16,
                        time_embed_dim=512, text_embed_dim=4096, num_layers=42, sample_width=90, sample_height=60,
                        sample_frames=49, patch_size=2, temporal_compression_ratio=4, max_text_seq_length=729,
                        use_rotary_positional_embeddings=True, use_learned_positional_embeddings=True)
COGVIDEOX_5B_VAE = dict(block_out_channels=(128, 256, 256, 512), latent_channels=16, layers_per_block=3,
                        norm_num_groups=32, temporal_compression_ratio=4, scaling_factor=0.7)


@dataclass
class SkyReelsA1Config:
    transformer: dict = field(default_factory=lambda: dict(COGVIDEOX_5B_I2V))  # CogVideoXTransformer3DModel kwargs
    vae: dict = field(default_factory=lambda: dict(COGVIDEOX_5B_VAE))  # AutoencoderKLCogVideoX kwargs
    identity_dim: int = 1152  # SigLIP-so400m hidden size
    identity_mult: int = 3  # MLP hidden = identity_mult * identity_dim
    face_weight: float = 2.0  # α of face_aware_loss
    causal_guider: bool = True  # False: the release's pose guider (its VAE's own encode, see nn.landmark_guider)
    rope_base: tuple[int, int] | None = None  # (width, height) px the RoPE grid is fitted to; None: the sample size

    @property
    def latent_channels(self) -> int:
        return self.vae.get("latent_channels", 16)

    def guider(self) -> LandmarkGuiderConfig:
        return LandmarkGuiderConfig.from_vae_config({**self.vae, "causal": self.causal_guider})

    @classmethod
    def from_dict(cls, d: dict) -> "SkyReelsA1Config":
        return cls(**{k: v for k, v in d.items() if k in {f.name for f in fields(cls)}})


OFFICIAL = SkyReelsA1Config()
TINY = SkyReelsA1Config(
    transformer=dict(num_attention_heads=2, attention_head_dim=16, in_channels=12, out_channels=4, time_embed_dim=16,
                     text_embed_dim=16, num_layers=2, sample_width=8, sample_height=8, sample_frames=9, patch_size=2,
                     temporal_compression_ratio=4, max_text_seq_length=4, use_rotary_positional_embeddings=True),
    vae=dict(block_out_channels=(8, 16, 16), down_block_types=("CogVideoXDownBlock3D",) * 3,
             up_block_types=("CogVideoXUpBlock3D",) * 3, latent_channels=4, layers_per_block=1, norm_num_groups=4,
             temporal_compression_ratio=4, scaling_factor=0.7),
    identity_dim=12, identity_mult=2)

class IdentityProjection(nn.Sequential):
    """SkyReels-A1 facial image-text alignment: identity features -> text-token space by Linear, SiLU, Linear
    (the last layer zero-initialised, so training starts from 'no identity tokens')."""

    def __init__(self, identity_dim: int, text_dim: int, mult: int = 3):
        hidden = mult * identity_dim
        super().__init__(nn.Linear(identity_dim, hidden), nn.SiLU(), nn.Linear(hidden, text_dim))
        nn.init.zeros_(self[2].weight)
        nn.init.zeros_(self[2].bias)


def image_condition(ref_latent: torch.Tensor, frames: int) -> torch.Tensor:
    """(b, 1, c, h, w) reference latent -> (b, f, c, h, w): the CogVideoX I2V image condition (zeros after frame 0)."""
    pad = ref_latent.new_zeros(ref_latent.shape[0], frames - 1, *ref_latent.shape[2:])
    return torch.cat([ref_latent, pad], dim=1)


class SkyReelsA1(ConfiguredModel):
    """Batches: `latents` (b, f, c, h, w) clean video latents; `ref_latent` (b, 1, c, h, w) portrait latent;
    `guidance` (b, 3, F, H, W) landmark frames in [-1, 1] with F = (f - 1) * 4 + 1 (or `guidance_latents`
    (b, f, c, h, w)); `identity` (b, n, identity_dim) identity features; for the loss optionally
    `motion_mask` / `face_mask` (f, 1, h', w') or (b, f, 1, h', w'), resized to latent size here."""

    config_class = SkyReelsA1Config

    def __init__(self, config: SkyReelsA1Config | None = None, **fields):
        super().__init__(config, **fields)
        config = self.config
        self.transformer = CogVideoXTransformer3DModel(**config.transformer)
        self.landmark_guider = CausalLandmarkGuider(config.guider())
        self.identity_proj = IdentityProjection(config.identity_dim, config.transformer["text_embed_dim"],
                                                config.identity_mult)

    # -- conditioning ---------------------------------------------------------------------------------
    def rotary(self, f: int, h: int, w: int, device: torch.device) -> tuple[torch.Tensor, torch.Tensor] | None:
        """CogVideoX 3D RoPE for an (f, h, w) latent grid (as diffusers' CogVideoX pipelines build it)."""
        tc = self.transformer.config
        if not tc.use_rotary_positional_embeddings:
            return None
        p = tc.patch_size
        grid = (h // p, w // p)
        if self.config.rope_base is None:
            base_w, base_h = tc.sample_width // p, tc.sample_height // p
        else:  # the release's pipeline fits the grid to 720 x 480 px whatever the size
            spatial = 2 ** (len(self.config.vae["block_out_channels"]) - 1)
            base_w, base_h = (v // (spatial * p) for v in self.config.rope_base)
        crops = get_resize_crop_region_for_grid(grid, base_w, base_h)
        return get_3d_rotary_pos_embed(tc.attention_head_dim, crops, grid, f, device=device)

    def guidance_latents(self, batch: dict) -> torch.Tensor:
        if batch.get("guidance_latents") is not None:
            return batch["guidance_latents"]
        return self.landmark_guider(batch["guidance"])  # (b, f, c, h, w)

    def predict(self, noisy: torch.Tensor, t: torch.Tensor, batch: dict) -> torch.Tensor:
        """Model output (v) for noisy latents (b, f, c, h, w) at timesteps t (b,)."""
        b, f, _, h, w = noisy.shape
        guide = self.guidance_latents(batch).to(noisy)
        if guide.shape[1] != f:
            raise ValueError(f"guidance gives {guide.shape[1]} latent frames, the clip has {f}")
        # channel order of the release: noise | landmark guidance | reference image
        x = torch.cat([noisy, guide, image_condition(batch["ref_latent"].to(noisy), f)], dim=2)  # (b, f, 3c, h, w)
        tokens = self.identity_proj(batch["identity"].to(noisy))  # (b, n, text_dim)
        t = t.expand(b) if t.dim() == 0 else t
        return self.transformer(x, tokens, t, image_rotary_emb=self.rotary(f, h, w, noisy.device),
                                return_dict=False)[0]

    # -- sampling -------------------------------------------------------------------------------------
    @torch.no_grad()
    def sample(self, batch: dict, steps: int, generator: torch.Generator, progress: bool = False,
               guidance_scale: float = 1.0) -> torch.Tensor:
        """(b, f, c, h, w) latents by UniPC (v-prediction, zero terminal SNR) from seeded noise. With
        guidance_scale > 1, classifier-free guidance against zero identity features (the release samples
        with 3.0), cond and uncond batched in one forward (`sampling.guided_prediction`)."""
        guide = self.guidance_latents(batch)  # the guider runs once, not per step
        cond = {"guidance_latents": guide, "ref_latent": batch["ref_latent"], "identity": batch["identity"]}
        uncond = {**cond, "identity": torch.zeros_like(batch["identity"])}
        b, f, _, h, w = guide.shape
        scheduler = UniPCMultistepScheduler(**SCHEDULE)
        scheduler.set_timesteps(steps, device=guide.device)
        latents = torch.randn((b, f, self.config.latent_channels, h, w), generator=generator,
                              device=generator.device).to(guide) * scheduler.init_noise_sigma
        timesteps = scheduler.timesteps
        if progress:
            from tqdm.auto import tqdm
            timesteps = tqdm(timesteps, desc="SkyReels-A1 denoise", leave=False)
        def velocity(x, t):
            def predict(z, inputs):
                return self.predict(z, t.reshape(1).expand(z.shape[0]), inputs)
            return guided_prediction(predict, scheduler.scale_model_input(x, t), cond, uncond, guidance_scale)

        return denoise(velocity, scheduler, latents, timesteps=timesteps)
