"""Training adapters of the DiT systems: Hallo3 (two stages), Hallo4 (flow-matching SFT and Diffusion-DPO on
preference pairs), SkyReels-A1 (three stages) and SkyReels-A2.

Each turns dataset clips into the latents and conditions its model file documents and calls that model's
objective. Clips go through the system's video VAE (`system.vae`: a local diffusers VAE folder of the
release; `size: tiny` builds the tiny VAE of the model file with seeded weights instead); the VAE is frozen
and never saved. Stand-ins for front ends this machine does not run, each noted where it is used: the T5 /
UMT5 prompt is the null prompt (zeros), the face-recognition embedding is zeros (identity comes from the
reference latents), SigLIP identity features are pooled portrait pixels, and without wav2vec2 features in the
dataset the per-frame log-mel windows are resampled (no parameters) to the audio projection's window shape.
"""
from __future__ import annotations

import copy
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import Dataset

from ..errors import InputError
from . import losses as L
from .base import TrainSystem


def _vae_from_folder(cls, folder: str):
    p = Path(folder).expanduser()
    if not (p / "config.json").is_file():
        raise InputError(f"system.vae {p} is not a diffusers VAE folder (no config.json)",
                         "point system.vae at the release's vae/ folder, or use size: tiny")
    try:
        vae = cls.from_pretrained(str(p), local_files_only=True)
    except (OSError, ValueError, EnvironmentError) as e:
        raise InputError(f"cannot load the VAE in {p}: {e}", "point system.vae at the release's vae/ folder") from None
    return vae


def resample_mel(audio: torch.Tensor, shape: tuple[int, int, int]) -> torch.Tensor:
    """(b, f, W, m, 80) log-mel windows -> (b, f, window, layers, channels): the window axis and the flattened
    (mel frame, bin) axis bilinearly resampled to the audio projection's window and layers x channels. The
    stand-in for wav2vec2 windows when the dataset has none: no parameters, the same mapping every step."""
    b, f, w, m, d = audio.shape
    window, layers, channels = shape
    x = audio.reshape(b * f, 1, w, m * d)
    x = F.interpolate(x, size=(window, layers * channels), mode="bilinear", align_corners=False)
    return x.reshape(b, f, window, layers, channels)


def pooled_tokens(images: torch.Tensor, n: int, dim: int) -> torch.Tensor:
    """(b, 3, H, W) portraits -> (b, n, dim): the image average-pooled to ceil(sqrt n)^2 cells, the first n
    cells' RGB resampled to `dim` (a parameter-free stand-in for SigLIP identity features)."""
    side = int(np.ceil(np.sqrt(n)))
    cells = F.adaptive_avg_pool2d(images, side).flatten(2).transpose(1, 2)[:, :n]  # (b, n, 3)
    return F.interpolate(cells, size=dim, mode="linear", align_corners=False)


class DiTSystem(TrainSystem):
    """Shared by the DiT adapters: the frozen VAE, clips -> latents, the portrait latent, audio windows."""

    vae_kind = "cogvideox"  # cogvideox | wan
    frames_multiple = 4  # clip_frames must be 1 + 4k (causal 3D VAE)

    def __init__(self, config):
        super().__init__()
        self.train_config = config
        self.vae = self.build_vae(config).requires_grad_(False).eval()
        self.net = self.build_net(config)

    # ---------------------------------------------------------- construction (per system)

    def build_net(self, config) -> nn.Module:
        raise NotImplementedError

    def tiny_vae_config(self) -> dict:
        raise NotImplementedError

    def build_vae(self, config):
        from diffusers import AutoencoderKLCogVideoX, AutoencoderKLWan

        cls = AutoencoderKLWan if self.vae_kind == "wan" else AutoencoderKLCogVideoX
        if config.system.vae:
            return _vae_from_folder(cls, config.system.vae)
        if config.system.size != "tiny":
            raise InputError(f"{config.system.name} trains in its release VAE's latent space; system.vae is not set",
                             "set system.vae to the release's vae/ folder (or size: tiny for a tiny model)")
        return cls(**self.tiny_vae_config())

    @classmethod
    def from_train_config(cls, config, dataset) -> "DiTSystem":
        return cls(config)

    @classmethod
    def check_config(cls, config) -> None:
        super().check_config(config)
        if (config.clip_frames - 1) % cls.frames_multiple:
            raise InputError(f"clip_frames must be 1 + {cls.frames_multiple}k for the causal 3D VAE, "
                             f"not {config.clip_frames}", "e.g. clip_frames: 49")
        if config.motion_frames and (config.motion_frames - 1) % cls.frames_multiple:
            raise InputError(f"motion_frames must be 0 or 1 + {cls.frames_multiple}k, not {config.motion_frames}",
                             "e.g. motion_frames: 5")

    @classmethod
    def smoke_overrides(cls, config):
        return replace(config, clip_frames=5, motion_frames=1 if config.motion_frames else 0)

    # ---------------------------------------------------------- data

    @torch.no_grad()
    def encode(self, frames: torch.Tensor) -> torch.Tensor:
        """(b, T, 3, H, W) in [-1, 1] -> (b, T', c, h, w) scaled latents (the VAE's mean)."""
        x = frames.transpose(1, 2).to(self.vae.dtype)  # (b, 3, T, H, W)
        z = self.vae.encode(x).latent_dist.mode()  # (b, c, T', h, w)
        cfg = self.vae.config
        if self.vae_kind == "wan":
            mean = torch.tensor(cfg.latents_mean, dtype=z.dtype, device=z.device).view(1, -1, 1, 1, 1)
            std = torch.tensor(cfg.latents_std, dtype=z.dtype, device=z.device).view(1, -1, 1, 1, 1)
            z = (z - mean) / std
        else:
            z = z * cfg.scaling_factor
        return z.transpose(1, 2).float()

    def portrait_latent(self, batch: dict) -> torch.Tensor:
        """(b, 1, c, h, w): the reference frame as a one-frame clip."""
        return self.encode(batch["reference"][:, None])

    @staticmethod
    def audio_windows(batch: dict, shape: tuple[int, int, int]) -> torch.Tensor:
        """(b, f, window, layers, channels): wav2vec2 windows when the dataset has them in this shape,
        else the resampled log-mel windows; zeros where the audio condition is dropped."""
        feats = batch.get("audio_feats")
        if feats is not None and tuple(feats.shape[2:]) == tuple(shape):
            out = feats
        else:
            out = resample_mel(batch["audio"], shape)
        return out * (~batch["drop_audio"]).to(out.dtype).view(-1, 1, 1, 1, 1)


# ============================================================================ Hallo3


class Hallo3System(DiTSystem):
    """Hallo3 stages 1-2: v-prediction on CogVideoX latents with the identity reference network reading the
    portrait latent; the clip's own motion frames (or the portrait) as condition latents."""

    def build_net(self, config):
        from ..models.hallo3 import HALLO3_TINY, Hallo3Model

        base = HALLO3_TINY if config.system.size == "tiny" else {}
        kw = {k: {**base.get(k, {}), **config.system.model.get(k, {})}
              for k in ("transformer_config", "audio_config", "face_config")}
        extra = {k: v for k, v in config.system.model.items() if k not in kw}
        return Hallo3Model(**kw, **extra)

    def tiny_vae_config(self):
        from ..models.hallo3 import TINY_VAE

        return TINY_VAE

    def model_batch(self, batch: dict) -> dict:
        net = self.net
        latents = self.encode(batch["frames"])
        portrait = self.portrait_latent(batch)
        b = latents.shape[0]
        from ..models.hallo3 import HALLO3_AUDIO, HALLO3_FACE

        tc = net.transformer.config
        ac = {**HALLO3_AUDIO, **(net.config.audio_config or {})}
        fc = {**HALLO3_FACE, **(net.config.face_config or {})}
        motion = self.encode(batch["motion_frames"]) if batch["motion_frames"].shape[1] else portrait
        keep = (~batch["drop_motion"]).to(motion.dtype).view(-1, 1, 1, 1, 1)
        return {"latents": latents, "reference_latents": portrait, "motion_latents": motion * keep,
                "text": latents.new_zeros(b, tc.max_text_seq_length, tc.text_embed_dim),  # null prompt
                "face_embedding": latents.new_zeros(b, fc["embedding_dim"]),  # no face recogniser here
                "audio_windows": self.audio_windows(batch, (ac["window"], ac["layers"], ac["channels"]))}

    def loss(self, batch, generator):
        from diffusers import CogVideoXDDIMScheduler

        from ..models.hallo3 import COGVIDEOX_SCHEDULER

        return hallo3_loss(self.net, self.model_batch(batch), CogVideoXDDIMScheduler(**COGVIDEOX_SCHEDULER), generator)


def hallo3_loss(model, batch: dict, scheduler, generator: torch.Generator) -> tuple[torch.Tensor, dict]:
    """Hallo3's objective (CogVideoX's): v-prediction MSE of `model.predict` (`models.hallo3.Hallo3Model`) at a
    random timestep; batch["latents"] (b, T', c, h, w) clean latents, the rest the model's conditions."""
    x0 = batch["latents"]
    noise = torch.randn(x0.shape, generator=generator, device=generator.device).to(x0)
    t = L.sample_timesteps(scheduler, x0.shape[0], generator).to(x0.device)
    noisy = scheduler.add_noise(x0, noise, t)
    loss = L.diffusion_loss(model.predict(noisy, t, batch), L.diffusion_target(scheduler, x0, noise, t))
    return loss, {"loss": loss.detach().item()}


# ============================================================================ Hallo4


@dataclass
class Hallo4Options:
    pairs: str | None = None  # preference pairs JSONL (train/preference.py); set for the DPO stage
    dpo_beta: float = 5000.0  # Diffusion-DPO's β
    release: str | None = None  # an official `pretrained_models/` folder: the DiT starts from it, its VAE encodes

    def __post_init__(self):
        if isinstance(self.dpo_beta, bool) or not isinstance(self.dpo_beta, (int, float)) or self.dpo_beta <= 0:
            raise ValueError(f"dpo_beta must be a positive number, got {self.dpo_beta!r}")


def keypoint_indices(k: int, n: int = 478) -> list[int]:
    """`k` FaceMesh points spread evenly over the mesh's index range: the skeleton stand-in for Hallo4."""
    return np.linspace(0, n - 1, k).round().astype(int).tolist()


SKELETON_POINTS = 68  # face points drawn per frame, as many as a DWPose face has


def draw_skeleton(landmarks: torch.Tensor, size: int) -> torch.Tensor:
    """(f, K, 2+) landmark pixel coordinates -> a skeleton video (3, f, size, size) in [-1, 1]: white dots on
    black, as a DWPose face rendering draws its keypoints (the stand-in for the official skeleton videos; the
    same drawing makes the `--pose-video` of a model trained here)."""
    import cv2

    points = landmarks[:, keypoint_indices(SKELETON_POINTS), :2].round().long().cpu().numpy()
    radius = max(1, round(size / 256))
    video = np.zeros((len(points), size, size), np.uint8)
    for frame, pts in zip(video, points):
        for x, y in pts:
            cv2.circle(frame, (int(x), int(y)), radius, 255, -1)
    return torch.from_numpy(video).float().div(127.5).sub(1.0)[None].expand(3, -1, -1, -1)


def _timestep(sigma: torch.Tensor) -> torch.Tensor:
    return 1000.0 * sigma  # the DiT's timestep for flow time σ (the sampler gives it int(1000σ′))


def hallo4_flow_loss(net, inputs: dict, generator: torch.Generator) -> tuple[torch.Tensor, dict]:
    """Hallo4's supervised objective: rectified flow on the sample layout the sampler uses. inputs["latents"]
    (b, 16, 1 + F', h, w) holds the reference latent in frame 0 and the clip's latents after it; frame 0 stays
    clean (the sampler re-imposes it before every call), the rest is x_t = (1−σ)x0 + σ·noise at logit-normal σ,
    and the velocity noise − x0 is regressed on frames 1.. only. The other inputs are the model's conditions
    (`context`, `vace_context`, `skeleton_latents`, `audio_windows`)."""
    from . import losses as L

    x0 = inputs["latents"]
    noise = torch.randn(x0.shape, generator=generator, device=generator.device).to(x0)
    sigma = L.sample_flow_sigmas(x0.shape[0], generator).to(x0.device)
    x_t, target = L.flow_matching_pair(x0, noise, sigma)
    x_t = torch.cat([x0[:, :, :1], x_t[:, :, 1:]], dim=2)
    pred = net(x_t, _timestep(sigma), inputs["context"], inputs["vace_context"], inputs["skeleton_latents"],
               inputs["audio_windows"])
    loss = L.diffusion_loss(pred[:, :, 1:], target[:, :, 1:])
    return loss, {"loss": loss.detach().item(), "sigma_mean": sigma.mean().item()}


def hallo4_dpo_loss(policy, reference, inputs: dict, generator: torch.Generator, beta: float
                    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Diffusion-DPO (Wallace et al. 2023) on Hallo4's flow objective: `winners` and `losers` (b, 16, 1 + F', h, w)
    in the sample layout (the shared reference latent in frame 0) are noised with the same noise and σ, the policy's
    and the frozen reference's per-sample velocity errors on frames 1.. go through `dpo_errors` and
    `diffusion_dpo_loss`. The conditions (`context`, `vace_context`, `skeleton_latents`, `audio_windows`, batch b)
    are shared by both halves. Returns (loss, implicit accuracy, reward margin)."""
    from . import losses as L

    w, lo = inputs["winners"], inputs["losers"]
    noise = torch.randn(w.shape, generator=generator, device=generator.device).to(w)
    sigma = L.sample_flow_sigmas(w.shape[0], generator).to(w.device)
    x0, noise, sigma = torch.cat([w, lo]), torch.cat([noise, noise]), torch.cat([sigma, sigma])
    x_t, target = L.flow_matching_pair(x0, noise, sigma)
    x_t = torch.cat([x0[:, :, :1], x_t[:, :, 1:]], dim=2)
    cond = [torch.cat([inputs[k], inputs[k]]) for k in ("context", "vace_context", "skeleton_latents", "audio_windows")]
    err_w, err_l = L.dpo_errors(policy(x_t, _timestep(sigma), *cond)[:, :, 1:], target[:, :, 1:])
    with torch.no_grad():
        ref_w, ref_l = L.dpo_errors(reference(x_t, _timestep(sigma), *cond)[:, :, 1:], target[:, :, 1:])
    return L.diffusion_dpo_loss(err_w, err_l, ref_w, ref_l, beta)


class Hallo4System(DiTSystem):
    """Hallo4 on the released architecture (`models.hallo4_wan.Hallo4WanModel`, Wan2.1-VACE with the audio and
    pose cross-attention), trained on the inputs its sampler gives it: the portrait's latent as frame 0, the VACE
    context of a first clip (nothing known) or of a continued clip (its first frame known, 10 % of its 2x2 patches
    blanked, as the sampler passes the previous clip's last frame), per-frame VAE latents of a skeleton video
    (the clip's FaceMesh points drawn by `draw_skeleton`), wav2vec2 windows (or the log-mel stand-in) zeroed where
    the audio is dropped (the unconditional branch's input), and the null prompt (T5 is not run here).
    SFT is rectified flow; with options.pairs, Diffusion-DPO on preference pairs against a frozen copy of the
    starting model, with a blank skeleton (the pairs carry no pose) and a first-clip context shared by both videos.
    options.release starts the DiT from an official release and encodes with its VAE."""

    Options = Hallo4Options
    vae_kind = "wan"

    def __init__(self, config):
        self.opts = self.options(config)
        super().__init__(config)
        from ..pipelines.hallo4_wan import WanLatents

        self.latents = WanLatents(self.vae)
        self.net.gradient_checkpointing = bool(config.gradient_checkpointing)  # the trainer leaves the net to us
        self.reference = None
        if self.opts.pairs:
            self.on_weights_loaded()

    def on_weights_loaded(self) -> None:
        """The DPO reference is the policy as it starts (after init_from), frozen."""
        if self.opts.pairs:
            self.reference = copy.deepcopy(self.net).requires_grad_(False).eval()

    @classmethod
    def make_dataset(cls, config):
        opts = cls.options(config)
        if not opts.pairs:
            return super().make_dataset(config)
        return PreferenceClips(opts.pairs, config.clip_frames, config.frame_size, config.audio_context)

    @classmethod
    def check_config(cls, config) -> None:
        super().check_config(config)
        if str(config.stage) == "dpo" and not cls.options(config).pairs:
            raise InputError("the Hallo4 DPO stage needs preference pairs",
                             "set system.options.pairs to a JSONL written by `talkinghead prefer`")
        if not config.frame_size or config.frame_size % 16:
            raise InputError(f"Hallo4 trains and renders at one frame size, a multiple of 16; got {config.frame_size}",
                             "set frame_size, e.g. frame_size: 512")

    @classmethod
    def smoke_overrides(cls, config):
        from .smoke import SMOKE_SIZE

        config = super().smoke_overrides(config)
        options = {**config.system.options, "release": None}
        if cls.options(config).pairs:
            options["pairs"] = str(write_smoke_pairs(Path(config.dataset).parent / "preference", size=SMOKE_SIZE))
        return replace(config, frame_size=SMOKE_SIZE, system=replace(config.system, options=options))

    def _release(self, config) -> Path | None:
        if not self.opts.release:
            return None
        root = Path(self.opts.release).expanduser()
        return root / "pretrained_models" if (root / "pretrained_models").is_dir() else root

    def _release_settings(self, root: Path) -> dict:
        import json

        from ..pipelines.hallo4_wan import INFERENCE_FILE

        own = root / INFERENCE_FILE  # the sizes of a small (test) release
        return json.loads(own.read_text()) if own.is_file() else {}

    def build_vae(self, config):
        from ..models.hallo4_wan import TINY_WAN_VAE, VAE_FILE, load_wan_vae

        root = self._release(config)
        if root is not None:
            return load_wan_vae(root / VAE_FILE, self._release_settings(root).get("vae_dim", 96))
        if config.system.vae and Path(config.system.vae).suffix == ".pth":  # the release's own VAE file
            return load_wan_vae(Path(config.system.vae).expanduser())
        if config.system.vae or config.system.size != "tiny":
            return super().build_vae(config)
        from diffusers import AutoencoderKLWan

        with torch.random.fork_rng():  # the same tiny VAE for every run of a seed, and for the engine
            torch.manual_seed(config.seed)
            return AutoencoderKLWan(**TINY_WAN_VAE)

    def build_net(self, config):
        from ..models.hallo4_wan import HALLO4_TINY, WAN_VACE_1_3B, Hallo4WanModel, load_release_dit

        model = dict(config.system.model)
        model.setdefault("attention_bf16", False)  # the official bf16 rounding of q/k/v is a sampling quirk
        root = self._release(config)
        if root is not None:
            return load_release_dit(root, audio=self._release_settings(root).get("audio_proj"), **model)
        base = HALLO4_TINY if config.system.size == "tiny" else WAN_VACE_1_3B
        return Hallo4WanModel(**{**base, **model})

    def _audio_windows(self, batch: dict) -> torch.Tensor:
        a = self.net.config.audio
        return self.audio_windows(batch, (a["seq_len"], a["blocks"], a["channels"]))

    def _vace(self, frames: torch.Tensor, ref: torch.Tensor, continued: bool, generator: torch.Generator
              ) -> torch.Tensor:
        """The VACE context of one clip (3, F, S, S): a first clip knows nothing (zeros, mask 1); a continued clip
        knows its first frame, patch-blanked as the sampler blanks the previous clip's last frame (mask 0 there)."""
        from ..pipelines.hallo4_wan import random_mask_patches, vace_context

        known, mask = torch.zeros_like(frames), torch.ones_like(frames)
        if continued:
            known[:, :1] = random_mask_patches(frames[:, :1], generator)
            mask[:, :1] = 0
        return vace_context(self.latents, known, mask, ref)

    def inputs(self, batch: dict, generator: torch.Generator) -> dict:
        """A `TalkingClips` batch -> the model's SFT inputs (see `hallo4_flow_loss`)."""
        lat = self.latents
        frames = batch["frames"].transpose(1, 2)  # (b, 3, F, S, S)
        size = frames.shape[-1]
        continued = (~batch["drop_motion"]).tolist() if self.train_config.motion_frames else [False] * len(frames)
        latents, vace, skeleton = [], [], []
        for i, clip in enumerate(frames):
            ref = lat.encode(batch["reference"][i][:, None])  # (16, 1, h, w)
            latents.append(torch.cat([ref, lat.encode(clip)], dim=1))
            vace.append(self._vace(clip, ref, continued[i], generator))
            skeleton.append(lat.encode_frames(draw_skeleton(batch["landmarks"][i], size)))
        latents = torch.stack(latents)
        return {"latents": latents, "vace_context": torch.stack(vace), "skeleton_latents": torch.cat(skeleton),
                "context": latents.new_zeros(len(latents), 1, self.net.config.text_dim),  # the null prompt
                "audio_windows": self._audio_windows(batch)}

    def pair_inputs(self, batch: dict) -> dict:
        """A `PreferenceClips` batch -> the DPO inputs (see `hallo4_dpo_loss`)."""
        lat = self.latents
        winners, losers = batch["winners"].transpose(1, 2), batch["losers"].transpose(1, 2)  # (b, 3, F, S, S)
        out = {"winners": [], "losers": [], "vace_context": [], "skeleton_latents": []}
        blank = torch.full_like(winners[0], -1.0)  # a skeleton video without points
        for w, lo in zip(winners, losers):
            ref = lat.encode(w[:, :1])  # the pair's portrait: the winner's first frame
            out["winners"].append(torch.cat([ref, lat.encode(w)], dim=1))
            out["losers"].append(torch.cat([ref, lat.encode(lo)], dim=1))
            out["vace_context"].append(self._vace(w, ref, False, None))
            out["skeleton_latents"].append(lat.encode_frames(blank))
        out = {k: torch.cat(v) if k == "skeleton_latents" else torch.stack(v) for k, v in out.items()}
        out["context"] = out["winners"].new_zeros(len(winners), 1, self.net.config.text_dim)
        out["audio_windows"] = self._audio_windows(batch)
        return out

    def loss(self, batch, generator):
        if self.reference is None:
            return hallo4_flow_loss(self.net, self.inputs(batch, generator), generator)
        loss, accuracy, margin = hallo4_dpo_loss(self.net, self.reference, self.pair_inputs(batch), generator,
                                                 self.opts.dpo_beta)
        return loss, {"loss": loss.detach().item(), "accuracy": float(accuracy), "margin": float(margin)}

    @torch.no_grad()
    def sample(self, batch: dict, generator: torch.Generator, steps: int = 20) -> torch.Tensor:
        """(b, F, 3, S, S) clips made by the engine's sampler (`pipelines.hallo4_wan.sample_clip`, the official
        shift and guidance) from the batch's conditions: the clip's portrait, skeleton and audio (SFT), or the
        pair's shared conditions (DPO). For the trainer's sample grids."""
        from ..pipelines.hallo4_wan import OFFICIAL, sample_clip

        pair = self.reference is not None
        inputs = self.pair_inputs(batch) if pair else self.inputs(batch, generator)
        first = inputs["winners" if pair else "latents"]
        null = first.new_zeros(1, self.net.config.text_dim)
        out = []
        for i in range(len(first)):
            ref = first[i, :, :1]
            noise = torch.randn(first[i].shape, generator=generator, device=generator.device).to(first)
            final = sample_clip(self.net, noise, ref, null, null, inputs["vace_context"][i],
                                inputs["skeleton_latents"][i:i + 1], inputs["audio_windows"][i:i + 1], steps,
                                OFFICIAL["sample_shift"], OFFICIAL["guide_scale"])
            out.append(self.latents.decode(final[:, 1:]).transpose(0, 1))  # (F, 3, S, S)
        return torch.stack(out)

    def target_crops(self, batch: dict) -> tuple[torch.Tensor, torch.Tensor]:
        """The grid's reference (b, 3, S, S) and ground truth (b, F, 3, S, S): the portrait and the clip, or the
        pair's portrait and its preferred video."""
        if self.reference is not None:
            return batch["winners"][:, 0], batch["winners"]
        return batch["reference"], batch["frames"]


# ---------------------------------------------------------------------------- rendering a trained Hallo4


def trained_hallo4_folder(folder: str | Path | None) -> Path | None:
    """The checkpoint to render when `folder` holds a Hallo4 run of `talkinghead train` (or one of its
    checkpoints/step-N), None when it is something else (an official release folder)."""
    from .engine import CHECKPOINT_FILES

    if not folder:
        return None
    root = Path(folder).expanduser()
    if all((root / f).is_file() for f in CHECKPOINT_FILES):
        return root
    steps = sorted(s for s in (root / "checkpoints").glob("step-*") if all((s / f).is_file() for f in CHECKPOINT_FILES))
    return steps[-1] if steps else None


class TrainedHallo4:
    """A Hallo4 checkpoint written by `talkinghead train`, as `pipelines.hallo4_wan.Hallo4Animator` renders it: the
    trained `Hallo4WanModel`, the VAE it was trained in, and the inputs it was trained on (the null prompt, the
    stage's audio windows), with the official sampler settings at the trained clip length and frame size."""

    def __init__(self, folder: Path, device: str = "cpu", dtype: torch.dtype = torch.float32):
        import json
        import threading

        from safetensors.torch import load_file

        from ..models.checkpoints import load_strict
        from ..pipelines.hallo4_wan import OFFICIAL
        from .trainer import TrainConfig

        try:
            train = TrainConfig.from_dict(json.loads((folder / "config.json").read_text()))
        except (ValueError, TypeError) as e:
            raise InputError(f"{folder / 'config.json'} is not a training config: {e}",
                             "pass a folder written by `talkinghead train`") from None
        if train.system.name != "hallo4":
            raise InputError(f"{folder} holds a {train.system.name} model, not hallo4",
                             f"use engine {train.system.name}, or a hallo4 checkpoint", field="checkpoint_dir")
        self.train = train = replace(train, system=replace(train.system, options={
            **train.system.options, "pairs": None}))  # rendering needs no preference data
        system = Hallo4System(train)
        load_strict(system.net, load_file(str(folder / "model.safetensors")), folder / "model.safetensors")
        self._use_ema(system, folder)
        self.dit, self.latents = system.net.eval(), system.latents
        if (device, dtype) != ("cpu", torch.float32):
            for part in (self.dit, self.latents.vae):
                part.to(device=device, dtype=dtype)
        self.settings = {**OFFICIAL, "size_hw": [train.frame_size] * 2, "frame_num": train.clip_frames,
                         "sample_steps": train.sample_steps, "prompt": ""}
        self.lock = threading.Lock()

    def _use_ema(self, system: "Hallo4System", folder: Path) -> None:
        """The EMA weights over the stage's trainable parameters, as the other trained engines render them."""
        from safetensors.torch import load_file

        if not (folder / "ema.safetensors").is_file():
            return
        system.select_trainable(self.train.train, self.train.freeze)
        params = [p for p in system.parameters() if p.requires_grad]  # the trainer's order
        shadow = load_file(str(folder / "ema.safetensors"))
        if len(shadow) == len(params) and all(shadow[f"shadow.{i}"].shape == p.shape for i, p in enumerate(params)):
            with torch.no_grad():
                for i, p in enumerate(params):
                    p.copy_(shadow[f"shadow.{i}"])
        system.requires_grad_(False)

    def encode_text(self, text: str) -> torch.Tensor:
        return torch.zeros(1, self.dit.config.text_dim)  # the null prompt it was trained with

    def _audio_encoder(self):
        """The preprocess `AudioEncoder` when training read the dataset's stored features (its index names them and
        their windows have the audio projection's shape, as `DiTSystem.audio_windows` checks), else None (training
        used the log-mel stand-in). The encoder folder is looked up by name in the release folder of the run."""
        import json

        from .preprocess import AudioEncoder

        index = Path(self.train.dataset).expanduser() / "index.json"
        feats = json.loads(index.read_text()).get("audio_feats") if index.is_file() else None
        a = self.dit.config.audio
        if not feats or (2 * self.train.audio_context + 1, feats["layers"], feats["dim"]) != (
                a["seq_len"], a["blocks"], a["channels"]):
            return None
        root = self.train.system.options.get("release")
        root = Path(root).expanduser() if root else None
        root = root / "pretrained_models" if root is not None and (root / "pretrained_models").is_dir() else root
        for folder in ([root / "wav2vec" / feats["model"], root / feats["model"]] if root is not None else []):
            if (folder / "config.json").is_file():
                return AudioEncoder(folder)
        raise InputError(f"was trained on {feats['kind']} features of {feats['model']}, which its release folder "
                         f"({root}) does not hold", f"put {feats['model']}/ under the release's wav2vec/ folder",
                         field="checkpoint_dir")

    def audio_windows(self, speech, fps: int) -> tuple[torch.Tensor, int]:
        """(n, window, layers, channels) per video frame of `speech`, as training made them, and n: each frame's
        ±audio_context frames of the dataset's stored wav2vec2/whisper features (zeros outside), or of log-mel
        resampled to the projection's window shape (`resample_mel`) when the dataset had none."""
        from ..audio.wav2vec import video_frame_count
        from .preprocess import log_mel

        n = max(1, video_frame_count(len(speech.samples), speech.sample_rate, fps))
        if not hasattr(self, "encoder"):
            self.encoder = self._audio_encoder()
        if self.encoder is not None:
            per_frame = torch.from_numpy(self.encoder(speech.samples, n, fps).astype(np.float32))  # (n, L, D)
        else:
            per_frame = torch.from_numpy(log_mel(speech.samples, n, fps))  # (n, mel_per_frame, 80)
        ctx = self.train.audio_context
        zeros = per_frame.new_zeros(ctx, *per_frame.shape[1:])
        padded = torch.cat([zeros, per_frame, zeros])
        windows = torch.stack([padded[i:i + 2 * ctx + 1] for i in range(n)])  # (n, W, ...)
        if self.encoder is not None:
            return windows, n
        a = self.dit.config.audio
        return resample_mel(windows[None], (a["seq_len"], a["blocks"], a["channels"]))[0], n


def hallo4_animator(portrait, config=None, warn: bool = True):
    """`--engine hallo4`: an official release folder, or a Hallo4 run written by `talkinghead train`."""
    from ..pipelines.hallo4_wan import Hallo4Animator

    folder = trained_hallo4_folder(config.diffusion.checkpoint_dir if config is not None else None)
    if folder is None:
        return Hallo4Animator(portrait, config, warn)
    if config.diffusion.prompt:
        raise InputError("is not used by a trained Hallo4 checkpoint: it was trained with the null prompt",
                         "leave it out", field="prompt")
    return Hallo4Animator(portrait, config, warn, load=lambda _folder, device, dtype: TrainedHallo4(
        folder, device, dtype))


def _square(rgb: np.ndarray, size: int) -> np.ndarray:
    import cv2

    h, w = rgb.shape[:2]
    s = min(h, w)
    crop = rgb[(h - s) // 2:(h - s) // 2 + s, (w - s) // 2:(w - s) // 2 + s]
    return cv2.resize(crop, (size, size), interpolation=cv2.INTER_AREA)


def read_clip(path: str | Path, frames: int, size: int) -> np.ndarray:
    """The first `frames` frames of a video, centre-square-cropped and resized: (frames, size, size, 3) uint8
    (the last frame repeated when the video is shorter)."""
    import av

    out = []
    try:
        with av.open(str(path)) as container:
            for frame in container.decode(video=0):
                out.append(_square(frame.to_ndarray(format="rgb24"), size))
                if len(out) == frames:
                    break
    except (OSError, av.error.FFmpegError) as e:
        raise InputError(f"cannot read the video {path}: {e}", "check the paths in the preference pairs") from None
    if not out:
        raise InputError(f"{path} has no video frames", "check the paths in the preference pairs")
    out += [out[-1]] * (frames - len(out))
    return np.stack(out)


class PreferenceClips(Dataset):
    """Diffusion-DPO pairs from a JSONL of train/preference.py: per pair, the first `clip_frames` frames of
    the winner and the loser video (b, F, 3, S, S) in [-1, 1], and the log-mel windows of the pair's audio
    at the winner's frame rate, as `TalkingClips` gives them. Items are deterministic per index."""

    def __init__(self, pairs: str | Path, clip_frames: int, size: int, audio_context: int):
        from .preference import read_pairs

        p = Path(pairs).expanduser()
        if not p.is_file():
            raise InputError(f"preference pairs {p} not found",
                             "write them with `talkinghead prefer ratings RATINGS.csv -o pairs.jsonl`")
        self.root = p.parent
        self.pairs = read_pairs(p)
        self.clip_frames, self.size, self.audio_context = clip_frames, size, audio_context
        self._items: dict[int, dict] = {}

    def __len__(self) -> int:
        return len(self.pairs)

    def _path(self, name: str) -> Path:
        q = Path(name).expanduser()
        return q if q.is_absolute() else self.root / q

    def __getitem__(self, index: int) -> dict:
        if index not in self._items:  # decoded once: a pair's item never changes
            self._items[index] = self._load(index)
        return self._items[index]

    def _load(self, index: int) -> dict:
        import av

        from ..io import load_audio
        from .preprocess import log_mel

        pair = self.pairs[index]
        f, s, r = self.clip_frames, self.size, self.audio_context
        pix = lambda a: torch.from_numpy(a).permute(0, 3, 1, 2).float() / 127.5 - 1.0  # noqa: E731
        winners = pix(read_clip(self._path(pair.winner), f, s))
        losers = pix(read_clip(self._path(pair.loser), f, s))
        with av.open(str(self._path(pair.winner))) as c:
            fps = float(c.streams.video[0].average_rate or 25)
        mel = log_mel(load_audio(self._path(pair.audio), max_seconds=None).samples, f + 2 * r, fps)
        mel = torch.from_numpy(np.concatenate([np.zeros_like(mel[:r]), mel[:f + r]])) if r else torch.from_numpy(mel)
        pick = torch.arange(f)[:, None] + torch.arange(2 * r + 1)[None]
        return {"winners": winners, "losers": losers, "audio": mel[pick],
                **{flag: torch.tensor(False) for flag in ("drop_audio", "drop_reference", "drop_motion")}}


def write_smoke_pairs(folder: Path, frames: int = 9, size: int = 32) -> Path:
    """Two generated videos with speech and a pairs JSONL ranking one above the other (smoke runs)."""
    from ..io import as_speech, encode_frames
    from .preference import PreferencePair, write_pairs
    from .smoke import SMOKE_FPS, draw_frame, mouth_opening, speech_for

    folder.mkdir(parents=True, exist_ok=True)
    opening = mouth_opening(frames, 0.0)
    for name, scale in (("winner.mp4", 1.0), ("loser.mp4", 0.2)):
        encode_frames((draw_frame(scale * o, 0.0, size, 120) for o in opening), folder / name, SMOKE_FPS,
                      audio=as_speech(speech_for(opening, 0.0)))
    pair = PreferencePair(audio="winner.mp4", winner="winner.mp4", loser="loser.mp4", winner_engine="smoke",
                          loser_engine="smoke", winner_reward=1.0, loser_reward=0.0)
    return write_pairs([pair], folder / "pairs.jsonl")


# ============================================================================ SkyReels-A1


@dataclass
class SkyReelsA1Options:
    face_weight: float = 2.0  # α of the face-aware loss


class SkyReelsA1System(DiTSystem):
    """SkyReels-A1 stages 1-3: v-prediction with the face-aware, flow-masked loss; the landmark guider reads
    the clip's landmarks drawn as dots; identity tokens from the portrait (SigLIP stand-in, see module)."""

    Options = SkyReelsA1Options

    def build_net(self, config):
        from ..models.skyreels_a1 import OFFICIAL, TINY, SkyReelsA1, SkyReelsA1Config

        base = TINY if config.system.size == "tiny" else OFFICIAL
        d = {"transformer": {**base.transformer, **config.system.model.get("transformer", {})},
             "vae": {**base.vae, **config.system.model.get("vae", {})},
             **{k: v for k, v in config.system.model.items() if k not in ("transformer", "vae")},
             "face_weight": self.options(config).face_weight}
        d.setdefault("identity_dim", base.identity_dim)
        d.setdefault("identity_mult", base.identity_mult)
        return SkyReelsA1(SkyReelsA1Config(**d))

    def tiny_vae_config(self):
        return dict(self.net_config_vae())

    def net_config_vae(self):
        from ..models.skyreels_a1 import TINY

        return {**TINY.vae, **self.train_config.system.model.get("vae", {})}

    def model_batch(self, batch: dict) -> dict:
        from .systems_hallo import EchoMimicTrainNet

        frames = batch["frames"]
        b, n, _, s = frames.shape[:4]
        latents = self.encode(frames)
        boxes = [(0, 0, s)] * b
        dots = EchoMimicTrainNet.landmark_images(batch["landmarks"], boxes, s)  # (b, 1, F, S, S) in {0, 1}
        guidance = (dots * 2 - 1).expand(-1, 3, -1, -1, -1)
        cfg = self.net.config
        n_tokens = max(1, cfg.transformer.get("max_text_seq_length", 4))
        identity = pooled_tokens(batch["reference"], n_tokens, cfg.identity_dim)
        out = {"latents": latents, "ref_latent": self.portrait_latent(batch), "guidance": guidance,
               "identity": identity * (~batch["drop_reference"]).to(identity.dtype).view(-1, 1, 1)}
        f, h, w = latents.shape[1], latents.shape[3], latents.shape[4]
        motion, face = [], []
        pixels = ((frames.clamp(-1, 1) + 1) * 127.5).round().byte().permute(0, 1, 3, 4, 2).cpu().numpy()
        for i in range(b):
            m, fm = loss_masks(pixels[i], batch["landmarks"][i].cpu().numpy(), (f, h, w))
            motion.append(m)
            face.append(fm)
        out["motion_mask"], out["face_mask"] = torch.stack(motion).to(latents), torch.stack(face).to(latents)
        return out

    def loss(self, batch, generator):
        from diffusers import DDIMScheduler

        from ..models.skyreels_a1 import TRAIN_SCHEDULER

        loss = skyreels_a1_loss(self.net, self.model_batch(batch), DDIMScheduler(**TRAIN_SCHEDULER), generator)
        return loss, {"loss": loss.detach().item()}


def loss_masks(frames: np.ndarray, landmarks: np.ndarray | None, latent: tuple[int, int, int]
               ) -> tuple[torch.Tensor, torch.Tensor | None]:
    """SkyReels-A1's face-aware loss weights for one clip: (F, H, W, 3) uint8 frames and optional (F, 478, >=2)
    landmarks in pixels -> motion mask (optical flow, 1..1.5) and face mask (landmark hull, 0/1), both
    (f, 1, h, w) at the latent size `latent` = (f, h, w)."""
    f, h, w = latent
    motion = L.resize_mask(L.flow_motion_mask(frames), (h, w), f)
    if landmarks is None:
        return motion, None
    face = L.face_mask_from_landmarks(torch.as_tensor(np.asarray(landmarks, np.float32)), frames.shape[1:3])
    return motion, L.resize_mask(face, (h, w), f)


def _latent_mask(mask: torch.Tensor, f: int, h: int, w: int) -> torch.Tensor:
    """A pixel-space loss mask, (F, 1, H, W) or per sample (b, F, 1, H, W), resized to the latent grid."""
    if mask.dim() == 5:
        return torch.stack([L.resize_mask(m, (h, w), f) for m in mask])
    return L.resize_mask(mask, (h, w), f)


def skyreels_a1_loss(model, batch: dict, scheduler, generator: torch.Generator) -> torch.Tensor:
    """SkyReels-A1's objective: the face-aware, flow-masked v-prediction loss of `model.predict`
    (`models.skyreels_a1.SkyReelsA1`) at a random timestep. batch["latents"] (b, f, c, h, w); optional
    `motion_mask`/`face_mask` in pixels (resized to the latents); the face weight is the model's."""
    x0 = batch["latents"]
    b, f, _, h, w = x0.shape
    noise = torch.randn(x0.shape, generator=generator, device=generator.device).to(x0)
    t = L.sample_timesteps(scheduler, b, generator).to(x0.device)
    noisy = scheduler.add_noise(x0, noise, t)
    target = L.diffusion_target(scheduler, x0, noise, t, "v_prediction")
    motion = batch.get("motion_mask")
    motion = torch.ones(f, 1, h, w) if motion is None else _latent_mask(motion, f, h, w)
    face = batch.get("face_mask")
    face = None if face is None else _latent_mask(face, f, h, w)
    return L.face_aware_loss(model.predict(noisy, t, batch), target, motion, face, model.config.face_weight)


# ============================================================================ SkyReels-A2


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
        from ..models.skyreels_a2 import OFFICIAL, TINY, SkyReelsA2, SkyReelsA2Config

        base = TINY if config.system.size == "tiny" else OFFICIAL
        d = {k: {**getattr(base, k), **config.system.model.get(k, {})} for k in ("transformer", "vae", "clip")}
        d.update({k: v for k, v in config.system.model.items() if k not in d})
        return SkyReelsA2(SkyReelsA2Config.from_dict({**base.__dict__, **d}))

    def tiny_vae_config(self):
        from ..models.skyreels_a2 import TINY

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
    """SkyReels-A2's objective: rectified-flow velocity MSE of `model.forward_cond` (`models.skyreels_a2.SkyReelsA2`)
    at logit-normal σ (shifted by `shift`, default the model's train_shift); with probability
    `reference_dropout` a sample trains unconditionally (what CFG needs). Randomness only from `generator`."""
    from ..models.skyreels_a2 import TIMESTEP_SCALE

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


__all__ = ["Hallo3System", "Hallo4System", "TrainedHallo4", "draw_skeleton", "hallo4_animator", "hallo4_dpo_loss",
           "hallo4_flow_loss", "trained_hallo4_folder", "PreferenceClips", "SkyReelsA1System", "SkyReelsA2System",
           "hallo3_loss", "keypoint_indices", "loss_masks", "pooled_tokens", "resample_mel", "skyreels_a1_loss",
           "skyreels_a2_loss"]
