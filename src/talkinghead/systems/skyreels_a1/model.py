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
`patch_embed.pose_proj.{0,2}` (OFFICIAL_KEY_MAP renames it to our `identity_proj.{0,2}`), and its
`pose_guider/` folder is a full CogVideoX VAE whose `encoder.*` keys load into `landmark_guider`.
"""
from __future__ import annotations

import json
import os
from dataclasses import dataclass, field, fields
from pathlib import Path

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

    def load_official_state(self, state: dict[str, torch.Tensor], guider_vae_state: dict[str, torch.Tensor] | None
                            = None) -> None:
        """Release transformer keys (prefixed `transformer.`) renamed by OFFICIAL_KEY_MAP, strict; the
        guider from the release's pose_guider VAE state when given."""
        from ...models.checkpoints import load_strict

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


# ------------------------------------------------------------------ the official release folder

RELEASE_NAME = "SkyReels-A1-5B (huggingface.co/Skywork/SkyReels-A1)"
SIGLIP_FOLDER = "siglip-so400m-patch14-384"  # the identity encoder, inside the release folder
IDENTITY_TOKENS = 729  # SigLIP so400m: 27 x 27 patches; the release's patch embedding hard-codes this count
RELEASE_ROPE_BASE = (720, 480)  # px (width, height): the release pipeline fits its RoPE grid to this size
DIFFUSERS_WEIGHTS = "diffusion_pytorch_model"
RELEASE_PARTS = ("transformer", "vae", "pose_guider")  # diffusers model folders of the release


@dataclass
class SkyReelsA1Release:
    """What the official SkyReels-A1-5B folder holds, loaded: the model (transformer + identity MLP + pose
    guider), the CogVideoX VAE, the scheduler config (CogVideoXDDIMScheduler) and, when asked for, the SigLIP
    identity encoder with its image processor."""

    model: SkyReelsA1
    vae: nn.Module
    scheduler_config: dict
    identity_encoder: nn.Module | None = None
    image_processor: object | None = None

    def scheduler(self):
        from diffusers import CogVideoXDDIMScheduler

        return CogVideoXDDIMScheduler.from_config(self.scheduler_config)


def release_root(folder: Path) -> Path:
    """`pretrained_models/SkyReels-A1-5B` of an upstream checkout, `SkyReels-A1-5B/`, or the folder itself."""
    for sub in ("pretrained_models/SkyReels-A1-5B", "SkyReels-A1-5B"):
        if (folder / sub).is_dir():
            return folder / sub
    return folder


def release_config(transformer: dict, pose_guider: dict, identity_dim: int = 1152, identity_mult: int = 3
                   ) -> SkyReelsA1Config:
    """Our config for a release's transformer/config.json and pose_guider/config.json. The release class
    ignores `max_text_seq_length` and always keeps IDENTITY_TOKENS rows for the identity tokens."""
    import inspect

    accepted = set(inspect.signature(CogVideoXTransformer3DModel.__init__).parameters) - {"self"}
    tconf = {k: v for k, v in transformer.items() if k in accepted}
    tconf["max_text_seq_length"] = IDENTITY_TOKENS
    vae = {k: v for k, v in pose_guider.items() if not k.startswith("_")}
    return SkyReelsA1Config(transformer=tconf, vae=vae, identity_dim=identity_dim, identity_mult=identity_mult,
                            causal_guider=False, rope_base=RELEASE_ROPE_BASE)


def release_state_shapes(model: SkyReelsA1) -> dict[str, tuple[int, ...]]:
    """The release transformer file's keys and shapes for `model` (the guider lives in pose_guider/)."""
    inverse = {v: k[len("transformer."):] for k, v in OFFICIAL_KEY_MAP.items()}
    out = {}
    for k, v in model.state_dict().items():
        if k.startswith("landmark_guider."):
            continue
        for ours, theirs in inverse.items():
            if k.startswith(ours):
                k = theirs + k[len(ours):]
        out[k if k.startswith("patch_embed.pose_proj.") else k[len("transformer."):]] = tuple(v.shape)
    return out


def read_weights(folder: Path, rel: str, name: str = DIFFUSERS_WEIGHTS
                     ) -> tuple[dict[str, torch.Tensor] | None, list[str]]:
    """A model folder's tensors (`{name}.safetensors`, or its index and shards), or the relative paths of what
    is missing."""
    from safetensors.torch import load_file

    single, index = folder / f"{name}.safetensors", folder / f"{name}.safetensors.index.json"
    if single.is_file():
        return load_file(str(single)), []
    if not index.is_file():
        return None, [f"{rel}/{single.name} (or {index.name} and its shards)"]
    shards = sorted(set(json.loads(index.read_text())["weight_map"].values()))
    missing = [f"{rel}/{s}" for s in shards if not (folder / s).is_file()]
    if missing:
        return None, missing
    state: dict[str, torch.Tensor] = {}
    for shard in shards:
        state.update(load_file(str(folder / shard)))
    return state, []


def load_release(folder: str | os.PathLike, dtype: torch.dtype = torch.float32, device: str | torch.device = "cpu",
                 identity_encoder: bool = True) -> SkyReelsA1Release:
    """Load the official SkyReels-A1-5B folder strictly (every key present, none left over, shapes equal),
    nothing downloaded. Layout (the upstream inference code's `pretrained_models/SkyReels-A1-5B/`):
    `transformer/`, `vae/`, `pose_guider/` (diffusers folders: config.json + diffusion_pytorch_model.safetensors
    or its sharded index), `scheduler/scheduler_config.json` and, with `identity_encoder`,
    `siglip-so400m-patch14-384/` (config.json, model.safetensors, preprocessor_config.json). Weights are cast
    to `dtype` (the release runs in bf16). One CheckpointError lists every missing file, then every key problem."""
    from diffusers import AutoencoderKLCogVideoX

    from ...errors import CheckpointError
    from ...models.checkpoints import key_report

    root = release_root(Path(folder))
    if not root.is_dir():
        raise CheckpointError(f"checkpoint folder {root} does not exist (expected the {RELEASE_NAME} folder)")
    needed = [f"{part}/config.json" for part in RELEASE_PARTS] + ["scheduler/scheduler_config.json"]
    if identity_encoder:
        needed += [f"{SIGLIP_FOLDER}/{n}" for n in ("config.json", "model.safetensors", "preprocessor_config.json")]
    missing = [n for n in needed if not (root / n).is_file()]
    states = {}
    for part in RELEASE_PARTS:
        states[part], absent = read_weights(root / part, part)
        missing += absent
    if missing:
        raise CheckpointError(f"{root} is missing files of the {RELEASE_NAME} release:\n"
                              + "\n".join(f"  {m}" for m in missing))
    configs = {part: json.loads((root / part / "config.json").read_text()) for part in RELEASE_PARTS}
    pose = states["transformer"].get("patch_embed.pose_proj.0.weight")
    hidden, identity_dim = pose.shape if pose is not None else (3 * 1152, 1152)
    config = release_config(configs["transformer"], configs["pose_guider"], identity_dim, hidden // identity_dim)
    with torch.device("meta"):  # shapes only: the file's tensors are assigned below
        model = SkyReelsA1(config)
        vae = AutoencoderKLCogVideoX.from_config(configs["vae"])
        guider_vae = AutoencoderKLCogVideoX.from_config(configs["pose_guider"])
    expected = {"transformer": release_state_shapes(model), "vae": vae.state_dict(),
                "pose_guider": guider_vae.state_dict()}
    problems = []
    for part in RELEASE_PARTS:
        shapes = {k: torch.empty(v, device="meta") if isinstance(v, tuple) else v for k, v in expected[part].items()}
        report = key_report(shapes, states[part])
        if report:
            problems.append(f"{part}/:\n" + "\n".join(f"  {line}" for line in report))
    if problems:
        raise CheckpointError(f"{root} does not match the {RELEASE_NAME} model:\n" + "\n".join(problems))
    ours = {}
    for k, v in states["transformer"].items():
        k = "transformer." + k
        for old, new in OFFICIAL_KEY_MAP.items():
            if k.startswith(old):
                k = new + k[len(old):]
        ours[k] = v
    # the pose guider runs only its encoder: the decoder half of the file is checked above, then dropped
    ours.update({f"landmark_guider.{k}": v for k, v in states["pose_guider"].items() if k.startswith("encoder.")})
    model.load_state_dict(ours, strict=True, assign=True)
    vae.load_state_dict(states["vae"], strict=True, assign=True)
    for module in (model, vae):  # nn.Module.to: diffusers' own .to warns about fp32 modules this VAE lacks
        nn.Module.to(module, device=device, dtype=dtype).eval()
    vae.enable_tiling()  # as the release's inference: at 480 x 720 the image encode and the decode go by tiles
    release = SkyReelsA1Release(model, vae, json.loads((root / "scheduler" / "scheduler_config.json").read_text()))
    if identity_encoder:
        release.identity_encoder, release.image_processor = load_siglip(root / SIGLIP_FOLDER, device)
    return release


def load_siglip(folder: Path, device: str | torch.device = "cpu"):
    """SiglipVisionModel (fp32, as the release runs it) and its SiglipImageProcessor from a local folder; a
    file holding the whole SiglipModel is fine (its text tower is not used). Missing vision keys are a
    CheckpointError."""
    from transformers import SiglipImageProcessor, SiglipVisionModel

    from ...errors import CheckpointError

    from transformers.utils import logging as hf_logging

    verbosity = hf_logging.get_verbosity()
    hf_logging.set_verbosity_error()  # the text tower's keys are expected to be left over: no table of them
    try:
        encoder, info = SiglipVisionModel.from_pretrained(str(folder), local_files_only=True,
                                                          output_loading_info=True)
    except (OSError, ValueError) as exc:
        raise CheckpointError(f"cannot load the SigLIP identity encoder from {folder}: {exc}") from exc
    finally:
        hf_logging.set_verbosity(verbosity)
    if info.get("missing_keys") or info.get("mismatched_keys"):
        keys = list(info.get("missing_keys", [])) + [str(k) for k in info.get("mismatched_keys", [])]
        raise CheckpointError(f"{folder}/model.safetensors lacks SigLIP vision keys:\n"
                              + "\n".join(f"  {k}" for k in keys[:12]))
    processor = SiglipImageProcessor.from_pretrained(str(folder), local_files_only=True)
    return encoder.to(device).eval(), processor


