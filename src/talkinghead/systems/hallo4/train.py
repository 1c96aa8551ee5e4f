"""Hallo4's training adapter: flow-matching SFT and Diffusion-DPO on preference pairs, with the skeleton stand-in
and the preference-clip dataset."""
from __future__ import annotations

import copy
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import Dataset

from ...errors import InputError
from ...train.dit import DiTSystem


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
    from ...train import losses as L

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
    from ...train import losses as L

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
    """Hallo4 on the released architecture (`systems.hallo4.model.Hallo4WanModel`, Wan2.1-VACE with the audio and
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
        from .pipeline import WanLatents

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
        from ...train.smoke import SMOKE_SIZE

        config = super().smoke_overrides(config)
        options = {**config.system.options, "release": None}
        if cls.options(config).pairs:
            options["pairs"] = str(write_smoke_pairs(Path(config.dataset).parent / "preference", size=SMOKE_SIZE))
        return replace(config, frame_size=SMOKE_SIZE, system=replace(config.system, options=options))

    def _release(self, config) -> Path | None:
        if not self.opts.release:
            return None
        from .release import release_root

        return release_root(Path(self.opts.release).expanduser())

    def _release_settings(self, root: Path) -> dict:
        import json

        from .release import INFERENCE_FILE

        own = root / INFERENCE_FILE  # the sizes of a small (test) release
        return json.loads(own.read_text()) if own.is_file() else {}

    def build_vae(self, config):
        from .model import TINY_WAN_VAE
        from .release import VAE_FILE, load_wan_vae

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
        from .model import HALLO4_TINY, WAN_VACE_1_3B, Hallo4WanModel
        from .release import load_dit

        model = dict(config.system.model)
        model.setdefault("attention_bf16", False)  # the official bf16 rounding of q/k/v is a sampling quirk
        root = self._release(config)
        if root is not None:
            return load_dit(root, audio=self._release_settings(root).get("audio_proj"), **model)
        base = HALLO4_TINY if config.system.size == "tiny" else WAN_VACE_1_3B
        return Hallo4WanModel(**{**base, **model})

    def _audio_windows(self, batch: dict) -> torch.Tensor:
        a = self.net.config.audio
        return self.audio_windows(batch, (a["seq_len"], a["blocks"], a["channels"]))

    def _vace(self, frames: torch.Tensor, ref: torch.Tensor, continued: bool, generator: torch.Generator
              ) -> torch.Tensor:
        """The VACE context of one clip (3, F, S, S): a first clip knows nothing (zeros, mask 1); a continued clip
        knows its first frame, patch-blanked as the sampler blanks the previous clip's last frame (mask 0 there)."""
        from .pipeline import random_mask_patches, vace_context

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
        """(b, F, 3, S, S) clips made by the engine's sampler (`systems.hallo4.pipeline.sample_clip`, the official
        shift and guidance) from the batch's conditions: the clip's portrait, skeleton and audio (SFT), or the
        pair's shared conditions (DPO). For the trainer's sample grids."""
        from .pipeline import OFFICIAL, sample_clip

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
        from ...train.preference import read_pairs

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

        from ...io import load_audio
        from ...train.preprocess import log_mel

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
    from ...io import as_speech, encode_frames
    from ...train.preference import PreferencePair, write_pairs
    from ...train.smoke import SMOKE_FPS, draw_frame, mouth_opening, speech_for

    folder.mkdir(parents=True, exist_ok=True)
    opening = mouth_opening(frames, 0.0)
    for name, scale in (("winner.mp4", 1.0), ("loser.mp4", 0.2)):
        encode_frames((draw_frame(scale * o, 0.0, size, 120) for o in opening), folder / name, SMOKE_FPS,
                      audio=as_speech(speech_for(opening, 0.0)))
    pair = PreferencePair(audio="winner.mp4", winner="winner.mp4", loser="loser.mp4", winner_engine="smoke",
                          loser_engine="smoke", winner_reward=1.0, loser_reward=0.0)
    return write_pairs([pair], folder / "pairs.jsonl")


# ============================================================================ SkyReels-A1


__all__ = ["Hallo4Options", "keypoint_indices", "draw_skeleton", "hallo4_flow_loss", "hallo4_dpo_loss", "Hallo4System",
           "read_clip", "PreferenceClips", "write_smoke_pairs"]
