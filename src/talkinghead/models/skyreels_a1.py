"""SkyReels-A1 (Qiu et al. 2025, arXiv 2502.10841): portrait animation on a CogVideoX-5B-I2V DiT.

The video latents (b, f, 16, h, w) are joined along channels with the reference image latent (first frame,
zero-padded in time, as CogVideoX I2V) and the 3D landmark guider's latents of the rendered expression-aware
landmark frames, so the patch embedding takes 48 channels. Identity features of the face crop
(SigLIP; the facial image-text alignment module) go through a small MLP into the text-token space and replace
the text prompt. Training: v-prediction on CogVideoX's zero-terminal-SNR DDPM schedule with the face-aware,
flow-masked loss; three stages (motion-driven, identity-preserving, joint fine-tuning) are the
configs/train/skyreels_a1_stage*.yaml files, read by `load_stage_config` and applied by `apply_stage`.
Sampling uses diffusers' UniPC with the same schedule.

Module names follow the official release where it has them: `transformer.*` is a plain diffusers
CogVideoXTransformer3DModel; the release keeps the identity MLP inside the patch embedding as
`patch_embed.pose_proj.{0,2}` (OFFICIAL_KEY_MAP renames it to our `identity_proj.{0,2}`), and its
`pose_guider/` folder is a full CogVideoX VAE whose `encoder.*` keys load into `landmark_guider`.
"""
from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path

import numpy as np
import torch
from diffusers import CogVideoXTransformer3DModel, DDIMScheduler, UniPCMultistepScheduler
from diffusers.models.embeddings import get_3d_rotary_pos_embed
from diffusers.pipelines.cogvideo.pipeline_cogvideox import get_resize_crop_region_for_grid
from torch import nn

from ..errors import InputError
from ..nn.landmark_guider import CausalLandmarkGuider, LandmarkGuiderConfig
from ..train.losses import (diffusion_target, face_aware_loss, face_mask_from_landmarks, flow_motion_mask, resize_mask,
                            sample_timesteps)
from ..utils import select_trainable

# CogVideoX-5B noise schedule (scheduler_config.json of the release): v-prediction, zero terminal SNR.
SCHEDULE = dict(num_train_timesteps=1000, beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear",
                prediction_type="v_prediction", rescale_betas_zero_snr=True, timestep_spacing="trailing")
TRAIN_SCHEDULER = dict(SCHEDULE, clip_sample=False, set_alpha_to_one=True)  # DDIMScheduler kwargs
WEIGHTS_FILE, CONFIG_FILE = "model.safetensors", "config.json"

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

    @property
    def latent_channels(self) -> int:
        return self.vae.get("latent_channels", 16)

    def guider(self) -> LandmarkGuiderConfig:
        return LandmarkGuiderConfig.from_vae_config(self.vae)

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

OFFICIAL_KEY_MAP = {"transformer.patch_embed.pose_proj.": "identity_proj."}  # release prefix -> ours


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


def loss_masks(frames: np.ndarray, landmarks: np.ndarray | None, latent: tuple[int, int, int]
               ) -> tuple[torch.Tensor, torch.Tensor | None]:
    """The face-aware loss's weights for one clip: (F, H, W, 3) uint8 frames and optional (F, 478, >=2)
    landmarks in pixels -> motion mask (optical flow, 1..1.5) and face mask (landmark hull, 0/1), both
    (f, 1, h, w) at the latent size `latent` = (f, h, w)."""
    f, h, w = latent
    motion = resize_mask(flow_motion_mask(frames), (h, w), f)
    if landmarks is None:
        return motion, None
    face = face_mask_from_landmarks(torch.as_tensor(np.asarray(landmarks, np.float32)), frames.shape[1:3])
    return motion, resize_mask(face, (h, w), f)


class SkyReelsA1(nn.Module):
    """Batches: `latents` (b, f, c, h, w) clean video latents; `ref_latent` (b, 1, c, h, w) portrait latent;
    `guidance` (b, 3, F, H, W) landmark frames in [-1, 1] with F = (f - 1) * 4 + 1 (or `guidance_latents`
    (b, f, c, h, w)); `identity` (b, n, identity_dim) identity features; for the loss optionally
    `motion_mask` / `face_mask` (f, 1, h', w') or (b, f, 1, h', w'), resized to latent size here."""

    def __init__(self, config: SkyReelsA1Config | None = None):
        super().__init__()
        self.config = config = config or SkyReelsA1Config()
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
        crops = get_resize_crop_region_for_grid(grid, tc.sample_width // p, tc.sample_height // p)
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
        x = torch.cat([noisy, image_condition(batch["ref_latent"].to(noisy), f), guide], dim=2)  # (b, f, 3c, h, w)
        tokens = self.identity_proj(batch["identity"].to(noisy))  # (b, n, text_dim)
        t = t.expand(b) if t.dim() == 0 else t
        return self.transformer(x, tokens, t, image_rotary_emb=self.rotary(f, h, w, noisy.device),
                                return_dict=False)[0]

    # -- training -------------------------------------------------------------------------------------
    def loss(self, batch: dict, scheduler: DDIMScheduler, generator: torch.Generator) -> torch.Tensor:
        """v-prediction face-aware flow-masked loss at a random timestep (explicit generator: reproducible)."""
        x0 = batch["latents"]
        b, f, _, h, w = x0.shape
        noise = torch.randn(x0.shape, generator=generator, device=generator.device).to(x0)
        t = sample_timesteps(scheduler, b, generator).to(x0.device)
        noisy = scheduler.add_noise(x0, noise, t)
        target = diffusion_target(scheduler, x0, noise, t, "v_prediction")
        motion = batch.get("motion_mask")
        motion = torch.ones(f, 1, h, w) if motion is None else self._latent_mask(motion, f, h, w)
        face = batch.get("face_mask")
        face = None if face is None else self._latent_mask(face, f, h, w)
        return face_aware_loss(self.predict(noisy, t, batch), target, motion, face, self.config.face_weight)

    @staticmethod
    def _latent_mask(mask: torch.Tensor, f: int, h: int, w: int) -> torch.Tensor:
        if mask.dim() == 5:  # (b, F, 1, H, W)
            return torch.stack([resize_mask(m, (h, w), f) for m in mask])
        return resize_mask(mask, (h, w), f)

    # -- sampling -------------------------------------------------------------------------------------
    @torch.no_grad()
    def sample(self, batch: dict, steps: int, generator: torch.Generator, progress: bool = False,
               guidance_scale: float = 1.0) -> torch.Tensor:
        """(b, f, c, h, w) latents by UniPC (v-prediction, zero terminal SNR) from seeded noise. With
        guidance_scale > 1, classifier-free guidance against zero identity features (the release samples
        with 3.0), cond and uncond batched in one forward (`cfg_velocity`)."""
        from .skyreels_a2 import cfg_velocity  # the shared CFG (batched, or one branch per rank)

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
        for t in timesteps:
            def predict(x, inputs, t=t):
                return self.predict(x, t.reshape(1).expand(x.shape[0]), inputs)
            v = cfg_velocity(predict, scheduler.scale_model_input(latents, t), cond, uncond, guidance_scale)
            latents = scheduler.step(v, t, latents, return_dict=False)[0]
        return latents

    # -- weights --------------------------------------------------------------------------------------
    def save_pretrained(self, folder: str | os.PathLike) -> Path:
        return save_model(self, folder)

    @classmethod
    def from_pretrained(cls, folder: str | os.PathLike) -> "SkyReelsA1":
        return load_model(cls, SkyReelsA1Config, folder, "SkyReels-A1")

    def load_official_state(self, state: dict[str, torch.Tensor], guider_vae_state: dict[str, torch.Tensor] | None
                            = None) -> None:
        """Release transformer keys (prefixed `transformer.`) renamed by OFFICIAL_KEY_MAP, strict; the
        guider from the release's pose_guider VAE state when given."""
        from .checkpoints import load_strict

        renamed = {}
        for k, v in state.items():
            for old, new in OFFICIAL_KEY_MAP.items():
                if k.startswith(old):
                    k = new + k[len(old):]
            renamed[k] = v
        if guider_vae_state is not None:
            self.landmark_guider.load_vae_encoder(guider_vae_state)
        renamed.update({f"landmark_guider.{k}": v for k, v in self.landmark_guider.state_dict().items()})
        load_strict(self, renamed, "SkyReels-A1 transformer")


# ------------------------------------------------------------------ weights (shared with SkyReels-A2)


def save_model(model: nn.Module, folder: str | os.PathLike) -> Path:
    """`config.json` (the typed config) + `model.safetensors` (every parameter and persistent buffer)."""
    from safetensors.torch import save_file

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    (folder / CONFIG_FILE).write_text(json.dumps(asdict(model.config), indent=1))
    save_file({k: v.detach().contiguous().cpu() for k, v in model.state_dict().items()}, str(folder / WEIGHTS_FILE))
    return folder


def load_model(cls, config_cls, folder: str | os.PathLike, name: str):
    """Inverse of `save_model`; missing files are an InputError naming each of them."""
    from safetensors.torch import load_file

    from .checkpoints import load_strict

    folder = Path(folder)
    missing = [n for n in (CONFIG_FILE, WEIGHTS_FILE) if not (folder / n).is_file()]
    if missing:
        raise InputError(f"{folder} is missing {name} weights: {', '.join(missing)}",
                         f"point to a folder written by {cls.__name__}.save_pretrained "
                         "(config.json + model.safetensors)")
    model = cls(config_cls.from_dict(json.loads((folder / CONFIG_FILE).read_text())))
    load_strict(model, load_file(str(folder / WEIGHTS_FILE)), folder / WEIGHTS_FILE)
    return model


# ------------------------------------------------------------------ training stages (shared with SkyReels-A2)


@dataclass
class DiTStageConfig:
    """One training stage of a DiT system. configs/train/skyreels_*.yaml map onto it (unknown keys refused)."""

    system: str = "skyreels_a1"  # skyreels_a1 | skyreels_a2
    size: str = "official"  # official | tiny: which config of the model file
    stage: str = "1"
    name: str = ""  # what the stage teaches, in words
    dataset: str = ""
    output_dir: str = "runs/train"
    init_from: str | None = None  # checkpoint folder of the previous stage
    train: list[str] = field(default_factory=lambda: ["*"])  # parameter-name patterns (fnmatch) that train
    freeze: list[str] = field(default_factory=list)  # ... minus these
    clip_frames: int = 49
    height: int = 480
    width: int = 720
    batch_size: int = 1
    grad_accum: int = 1
    learning_rate: float = 1e-5
    weight_decay: float = 1e-2
    max_steps: int = 1000
    mixed_precision: str = "bf16"
    gradient_checkpointing: bool = True
    face_weight: float = 2.0  # SkyReels-A1 face-aware loss α
    flow_shift: float = 3.0  # SkyReels-A2 training σ shift
    reference_dropout: float = 0.1  # SkyReels-A2: drop the references for CFG
    seed: int = 0

    @classmethod
    def from_dict(cls, d: dict, system: str | None = None) -> "DiTStageConfig":
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(d) - known)
        if unknown:
            raise InputError(f"unknown stage option(s): {unknown}", f"known: {sorted(known)}")
        cfg = cls(**d)
        if system is not None and cfg.system != system:
            raise InputError(f"this config is for {cfg.system!r}, not {system!r}", f"set system: {system}")
        if cfg.size not in ("official", "tiny"):
            raise InputError(f"size must be official or tiny, got {cfg.size!r}", "size: official")
        for name in ("clip_frames", "batch_size", "grad_accum", "max_steps"):
            v = getattr(cfg, name)
            if not isinstance(v, int) or isinstance(v, bool) or v < 1:
                raise InputError(f"{name} must be a whole number >= 1, got {v!r}", f"e.g. {name}: 1")
        return cfg


def load_stage_config(path: str | os.PathLike, system: str | None = None) -> DiTStageConfig:
    """Read a stage YAML into a DiTStageConfig; InputError for a missing file, bad YAML or unknown keys."""
    from ..config import read_yaml_options

    return DiTStageConfig.from_dict(read_yaml_options(path, "pass one of configs/train/skyreels_*.yaml"), system)


def apply_stage(model: nn.Module, stage: DiTStageConfig) -> list[str]:
    """Set requires_grad by the stage's patterns (in `train` and not in `freeze`) and the transformer's
    gradient checkpointing by `gradient_checkpointing`; returns the trainable names. Frozen modules are left
    in train mode; the caller decides eval/train, precision and the optimiser."""
    transformer = getattr(model, "transformer", None)
    if transformer is not None:
        if stage.gradient_checkpointing:
            transformer.enable_gradient_checkpointing()
        else:
            transformer.disable_gradient_checkpointing()
    return select_trainable(model, stage.train, stage.freeze)
