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

        return self.net.loss(self.model_batch(batch), CogVideoXDDIMScheduler(**COGVIDEOX_SCHEDULER), generator)


# ============================================================================ Hallo4


@dataclass
class Hallo4Options:
    pairs: str | None = None  # preference pairs JSONL (train/preference.py); set for the DPO stage
    dpo_beta: float = 5000.0  # Diffusion-DPO's β

    def __post_init__(self):
        if isinstance(self.dpo_beta, bool) or not isinstance(self.dpo_beta, (int, float)) or self.dpo_beta <= 0:
            raise ValueError(f"dpo_beta must be a positive number, got {self.dpo_beta!r}")


def keypoint_indices(k: int, n: int = 478) -> list[int]:
    """`k` FaceMesh points spread evenly over the mesh's index range: the skeleton stand-in for Hallo4."""
    return np.linspace(0, n - 1, k).round().astype(int).tolist()


class Hallo4System(DiTSystem):
    """Hallo4: rectified-flow SFT of the motion-modulated DiT on clips, or (with options.pairs) Diffusion-DPO
    on preference pairs against a frozen copy of the starting model."""

    Options = Hallo4Options

    def __init__(self, config):
        super().__init__(config)
        self.opts = self.options(config)
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
        return PreferenceClips(opts.pairs, config.clip_frames, config.frame_size or 256, config.audio_context)

    @classmethod
    def check_config(cls, config) -> None:
        super().check_config(config)
        if str(config.stage) == "dpo" and not cls.options(config).pairs:
            raise InputError("the Hallo4 DPO stage needs preference pairs",
                             "set system.options.pairs to a JSONL written by talkinghead.train.preference")

    @classmethod
    def smoke_overrides(cls, config):
        config = super().smoke_overrides(config)
        if cls.options(config).pairs:
            pairs = write_smoke_pairs(Path(config.dataset).parent / "preference")
            config = replace(config, frame_size=32, system=replace(config.system, options={
                **config.system.options, "pairs": str(pairs)}))
        return config

    def build_net(self, config):
        from ..models.hallo4 import HALLO4_TINY, Hallo4Model

        base = HALLO4_TINY if config.system.size == "tiny" else {}
        kw = {k: {**base.get(k, {}), **config.system.model.get(k, {})}
              for k in ("transformer_config", "audio_config", "skeleton_config")}
        return Hallo4Model(**kw)

    def tiny_vae_config(self):
        from ..models.hallo3 import TINY_VAE

        return TINY_VAE

    def conditions(self, batch: dict, portrait: torch.Tensor) -> dict:
        from ..models.hallo3 import HALLO3_AUDIO
        from ..models.hallo4 import HALLO4_SKELETON

        net = self.net
        tc = net.transformer.config
        ac = {**HALLO3_AUDIO, **(net.config.audio_config or {})}
        b = portrait.shape[0]
        out = {"text": portrait.new_zeros(b, tc.max_text_seq_length, tc.text_embed_dim),  # null prompt
               "audio_windows": self.audio_windows(batch, (ac["window"], ac["layers"], ac["channels"])),
               "motion_latents": portrait}
        if "landmarks" in batch:
            k = {**HALLO4_SKELETON, **(net.config.skeleton_config or {})}["keypoints"]
            size = batch["frames"].shape[-1]
            out["keypoints"] = (batch["landmarks"][:, :, keypoint_indices(k), :2] / size).clamp(0, 1)
        return out

    def loss(self, batch, generator):
        if self.reference is None:
            latents = self.encode(batch["frames"])
            portrait = self.portrait_latent(batch)
            return self.net.loss({"latents": latents, **self.conditions(batch, portrait)}, generator)
        from ..models.hallo4 import flow_dpo_loss

        winners, losers = self.encode(batch["winners"]), self.encode(batch["losers"])
        portrait = self.encode(batch["winners"][:, :1])
        cond = self.conditions(batch, portrait)
        loss, accuracy, margin = flow_dpo_loss(self.net, self.reference, {"winners": winners, "losers": losers,
                                                                         **cond}, generator, self.opts.dpo_beta)
        return loss, {"loss": loss.detach().item(), "accuracy": float(accuracy), "margin": float(margin)}


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
                             "write them with `python -m talkinghead.train.preference ratings ... -o pairs.jsonl`")
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
        return {"winners": winners, "losers": losers, "audio": mel[pick], "drop_audio": torch.tensor(False)}


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
        from ..models.skyreels_a1 import loss_masks

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

        loss = self.net.loss(self.model_batch(batch), DDIMScheduler(**TRAIN_SCHEDULER), generator)
        return loss, {"loss": loss.detach().item()}


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
        loss = self.net.loss(mb, generator, reference_dropout=opts.reference_dropout, shift=opts.flow_shift)
        return loss, {"loss": loss.detach().item()}


__all__ = ["Hallo3System", "Hallo4System", "PreferenceClips", "SkyReelsA1System", "SkyReelsA2System",
           "keypoint_indices", "pooled_tokens", "resample_mel"]
