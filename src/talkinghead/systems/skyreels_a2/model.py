"""SkyReels-A2 (Fei et al. 2025, arXiv 2504.02436): compose anything — multi-reference video on a Wan2.1-14B-I2V DiT.

Each reference (segmented subjects, then a background) feeds two branches (nn/multi_reference.py): a
semantic one (CLIP penultimate tokens -> the transformer's image-condition MLP -> keys/values of the
decoupled image cross-attention) and a spatial one (VAE latents along frames, zero-padded, with a frame
mask, joined to the noisy latents along channels: 16 + 4 + 16 = 36 patch-embedding channels). Training is
rectified flow (`flow_matching_pair`); only cross-attention, the patch embedding and the image-condition
encoder train (configs/train/skyreels_a2.yaml). Sampling: diffusers' UniPC in flow mode (Wan's default),
or FlowMatchEulerDiscreteScheduler, with classifier-free guidance.

The official release folder loads with `systems.skyreels_a2.release.load_release` (diffusers' Wan classes and
transformers' CLIP/UMT5, key for key) and samples with `systems.skyreels_a2.pipeline.sample_a2_release`, which
reproduces the release's pipeline.

Design note: parallelism across GPUs (what the official release does with xDiT/xfuser, and what we do)
- CFG parallelism: the conditional and unconditional branches are independent forwards of the same
  weights. `sampling.guided_prediction` runs them as one batch of 2b on one device ("batch"), or, when
  torch.distributed is initialised with 2 ranks, one branch per rank followed by one all_gather ("ranks"):
  each step then costs one forward of batch b per GPU and a (b, c, f, h, w) exchange. Implemented.
- Context (sequence) parallelism: a 14B DiT at 480p x 81 frames sees 32,760 video tokens; Ulysses
  splits the sequence across ranks and swaps to a head split (all-to-all) around each attention, ring
  attention passes K/V blocks around the ranks. Both need an attention processor that wraps diffusers'
  Wan attention with the collective calls (diffusers' `ContextParallelConfig` / `enable_parallelism`
  in recent releases); RoPE and the frame mask are per token, so the sequence split is exact. Not done
  here: it needs multi-GPU tests.
- VAE parallelism: the Wan VAE is causal in time with a feature cache, so time cannot be split freely;
  decode splits space into overlapping tiles (diffusers' `enable_tiling`) and sends tiles to ranks, then
  blends the overlaps. On one device we use the pipeline's per-chunk decode, which already keeps memory flat.
"""
from __future__ import annotations

from dataclasses import dataclass, field, fields
from typing import Literal

import torch
from diffusers import FlowMatchEulerDiscreteScheduler, UniPCMultistepScheduler, WanTransformer3DModel
from transformers import CLIPVisionConfig, CLIPVisionModel

from ...models.checkpoints import ConfiguredModel
from ...nn.multi_reference import SemanticReferenceBranch, spatial_condition
from ...sampling import denoise, guided_prediction

TEXT_LEN = 512  # UMT5 tokens; diffusers' Wan attention takes everything before the last 512 as image tokens
TIMESTEP_SCALE = 1000.0  # Wan timestep = 1000 σ

# Wan2.1-I2V-14B transformer (Wan-AI/Wan2.1-I2V-14B-480P-Diffusers transformer/config.json).
WAN_14B_I2V = dict(patch_size=(1, 2, 2), num_attention_heads=40, attention_head_dim=128, in_channels=36,
                   out_channels=16, text_dim=4096, freq_dim=256, ffn_dim=13824, num_layers=40, cross_attn_norm=True,
                   qk_norm="rms_norm_across_heads", eps=1e-6, image_dim=1280, added_kv_proj_dim=5120,
                   rope_max_seq_len=1024)
WAN_VAE = dict(base_dim=96, z_dim=16, dim_mult=[1, 2, 4, 4], num_res_blocks=2, temperal_downsample=[False, True, True])
# open-clip xlm-roberta-large-vit-huge-14 image tower, as Wan I2V uses it (penultimate hidden states, 257 x 1280)
CLIP_VIT_H14 = dict(hidden_size=1280, intermediate_size=5120, num_hidden_layers=32, num_attention_heads=16,
                    image_size=224, patch_size=14, projection_dim=1024, hidden_act="gelu")


@dataclass
class SkyReelsA2Config:
    transformer: dict = field(default_factory=lambda: dict(WAN_14B_I2V))  # WanTransformer3DModel kwargs
    vae: dict = field(default_factory=lambda: dict(WAN_VAE))  # AutoencoderKLWan kwargs
    clip: dict = field(default_factory=lambda: dict(CLIP_VIT_H14))  # CLIPVisionConfig kwargs
    mask_channels: int = 4  # Wan I2V frame-mask channels (= the VAE's temporal compression)
    train_shift: float = 3.0  # σ shift for training (480p)
    sample_shift: float = 3.0  # flow shift for sampling (Wan: 3.0 at 480p, 5.0 at 720p)

    @property
    def latent_channels(self) -> int:
        return self.transformer["out_channels"]

    @classmethod
    def from_dict(cls, d: dict) -> "SkyReelsA2Config":
        d = {k: v for k, v in d.items() if k in {f.name for f in fields(cls)}}
        if "transformer" in d and isinstance(d["transformer"].get("patch_size"), list):
            d["transformer"] = {**d["transformer"], "patch_size": tuple(d["transformer"]["patch_size"])}
        return cls(**d)


OFFICIAL = SkyReelsA2Config()
TINY = SkyReelsA2Config(
    transformer=dict(patch_size=(1, 2, 2), num_attention_heads=2, attention_head_dim=12, in_channels=12, out_channels=4,
                     text_dim=16, freq_dim=16, ffn_dim=32, num_layers=2, cross_attn_norm=True,
                     qk_norm="rms_norm_across_heads", eps=1e-6, image_dim=16, added_kv_proj_dim=24,
                     rope_max_seq_len=64),
    vae=dict(base_dim=8, z_dim=4, dim_mult=[1, 2, 2], num_res_blocks=1, temperal_downsample=[True, True],
             latents_mean=[0.0] * 4, latents_std=[1.0] * 4),
    clip=dict(hidden_size=16, intermediate_size=32, num_hidden_layers=2, num_attention_heads=2, image_size=32,
              patch_size=8, projection_dim=16, hidden_act="gelu"))

CfgMode = Literal["auto", "batch", "serial", "ranks"]


class SkyReelsA2(ConfiguredModel):
    """Batches: `latents` (b, c, f, h, w) clean video latents (Wan layout); `ref_latents` (b, n, c, h, w) VAE
    latents of the references (normalised like the video latents); `ref_images` (b, n, 3, H, W) the same
    references in [-1, 1] for CLIP (or `image_tokens` (b, n T, d) already encoded); `text` (b, 512, text_dim)
    UMT5 prompt embeddings (zeros, the null prompt, when absent); for sampling optionally `negative_text`
    (the unconditional branch's prompt, the null prompt otherwise)."""

    config_class = SkyReelsA2Config

    def __init__(self, config: SkyReelsA2Config | None = None, **fields):
        super().__init__(config, **fields)
        config = self.config
        self.transformer = WanTransformer3DModel(**config.transformer)
        self.image_encoder = SemanticReferenceBranch(CLIPVisionModel(CLIPVisionConfig(**config.clip)))

    # -- conditioning ---------------------------------------------------------------------------------
    def null_text(self, b: int, like: torch.Tensor) -> torch.Tensor:
        return like.new_zeros(b, TEXT_LEN, self.config.transformer["text_dim"])

    def conditions(self, batch: dict, frames: int) -> dict:
        """The per-sample condition tensors the transformer reads: spatial latents, image tokens, text."""
        refs = batch["ref_latents"]
        b = refs.shape[0]
        tokens = batch.get("image_tokens")
        if tokens is None:
            tokens = self.image_encoder(batch["ref_images"])
        text = batch.get("text")
        return {"spatial": spatial_condition(refs, frames, self.config.mask_channels, batch.get("extra_latents")),
                "image_tokens": tokens.to(refs), "text": (self.null_text(b, refs) if text is None else text).to(refs)}

    @staticmethod
    def unconditional(cond: dict) -> dict:
        """References dropped (zero spatial latents and mask, zero image tokens) and the null prompt; the
        continuation slot of a long video stays (it is the clip's own past, not a reference)."""
        return {k: torch.zeros_like(v) for k, v in cond.items()}

    def forward_cond(self, noisy: torch.Tensor, t: torch.Tensor, cond: dict) -> torch.Tensor:
        """Velocity for noisy latents (b, c, f, h, w) at timesteps t (b,) given `conditions(...)`."""
        x = torch.cat([noisy, cond["spatial"].to(noisy)], dim=1)  # (b, c + mask + c, f, h, w)
        return self.transformer(x, t, cond["text"].to(noisy), return_dict=False,
                                encoder_hidden_states_image=cond["image_tokens"].to(noisy))[0]

    # -- sampling -------------------------------------------------------------------------------------
    def scheduler(self, sampler: Literal["unipc", "euler"] = "unipc"):
        if sampler == "unipc":
            return UniPCMultistepScheduler(prediction_type="flow_prediction", use_flow_sigmas=True,
                                           num_train_timesteps=1000, flow_shift=self.config.sample_shift)
        if sampler == "euler":
            return FlowMatchEulerDiscreteScheduler(num_train_timesteps=1000, shift=self.config.sample_shift)
        raise ValueError(f"sampler must be unipc or euler, not {sampler!r}")

    @torch.no_grad()
    def sample(self, batch: dict, frames: int, steps: int, generator: torch.Generator, guidance_scale: float = 5.0,
               sampler: Literal["unipc", "euler"] = "unipc", cfg_mode: CfgMode = "auto",
               progress: bool = False) -> torch.Tensor:
        """(b, c, frames, h, w) latents from seeded noise; `frames` counts latent frames."""
        refs = batch["ref_latents"]
        b, _, c, h, w = refs.shape
        cond = self.conditions(batch, frames)
        uncond = self.unconditional(cond)
        if batch.get("negative_text") is not None:
            uncond["text"] = batch["negative_text"].to(refs)
        if batch.get("extra_latents") is not None:  # keep the continuation frame in both branches
            uncond["spatial"] = spatial_condition(torch.zeros_like(refs), frames, self.config.mask_channels,
                                                  batch["extra_latents"])
        scheduler = self.scheduler(sampler)
        scheduler.set_timesteps(steps, device=refs.device)
        latents = torch.randn((b, c, frames, h, w), generator=generator, device=generator.device).to(refs)
        timesteps = scheduler.timesteps
        if progress:
            from tqdm.auto import tqdm
            timesteps = tqdm(timesteps, desc="SkyReels-A2 denoise", leave=False)
        def velocity(x, t):
            def predict(z, inputs):
                return self.forward_cond(z, t.reshape(1).expand(z.shape[0]).to(z), inputs)
            return guided_prediction(predict, x, cond, uncond, guidance_scale, cfg_mode)

        return denoise(velocity, scheduler, latents, timesteps=timesteps)
