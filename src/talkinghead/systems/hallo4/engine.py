"""`--engine hallo4`: the official release folder (loaded by systems/hallo4/release.py; `Hallo4Animator`) or a
`talkinghead train` run of Hallo4 (`TrainedHallo4`), rendered with the release's sampler (systems/hallo4/pipeline.py)."""
from __future__ import annotations

import math
from dataclasses import replace
from pathlib import Path

import numpy as np
import torch

from ...errors import InputError
from ...train.dit import resample_mel
from ...types import Portrait, Speech
from .. import require_release_dir
from .pipeline import (NEGATIVE_PROMPT, OFFICIAL, center_crop_width, random_mask_patches, resize_for_rectangle_crop,
                       sample_clip, vace_context)
from .release import RELEASE_URL, Hallo4Release, load_release
from .train import Hallo4System


class Hallo4Animator:
    """`--engine hallo4`: the official release driven by speech and a skeleton video (`--pose-video`, a DWPose-style
    rendering, as the official `--src_video`), clip by clip as the official script: clips of `frame_num` frames
    overlapping by one, the portrait as latent frame 0 and as the VACE reference, each later clip starting from
    the previous clip's last frame with 10 % of its 2x2 patches blanked, the same starting noise in every clip,
    UniPC with guidance 6 on the shifted sigmas (`--scheduler dpm`: DPM-Solver++ on the same sigmas), output
    cropped back to the portrait's aspect and truncated to uint8 at 25 fps."""

    def __init__(self, portrait: Portrait, config=None, warn: bool = True, load=None):
        """`load(folder, device, dtype)` gives the weights (default: an official release folder, `Hallo4Release`);
        any object with its `dit`, `latents`, `settings`, `lock`, `encode_text` and `audio_windows` renders."""
        from ...config import AnimateConfig
        from ...errors import InputError
        from ...pipelines.memory import apply_memory_options, load_device
        from ...utils import resolve_precision

        self.config = config = (config or AnimateConfig()).validate()
        d = config.diffusion
        require_release_dir(d.checkpoint_dir, "hallo4", f"download the official release ({RELEASE_URL}) and "
                            "pass its pretrained_models folder")
        if not d.pose_video:
            raise InputError("is needed by engine hallo4: the driving skeleton video (a DWPose rendering, what the "
                             "official release calls src_video)", "render the skeleton of a driving video with DWPose",
                             field="pose_video")
        device, dtype = resolve_precision(d.device, d.dtype)
        self.release = r = (load or load_release)(d.checkpoint_dir, load_device(d.cpu_offload, device), dtype)
        s = self.release.settings
        self.height, self.width = s["size_hw"]
        apply_memory_options(d, device, models=(getattr(r, "text_encoder", None), r.dit, r.latents.vae),
                             resident=(getattr(r, "audio_model", None),), vae=r.latents.vae,
                             frame_hw=(self.height, self.width), lock=r.lock)
        image = torch.from_numpy(np.array(portrait.image)).permute(2, 0, 1).float() / 255.0
        self.ref_hw = tuple(portrait.image.shape[:2])
        self.reference = resize_for_rectangle_crop(((image - 0.5) / 0.5)[:, None], self.height, self.width)
        self.skeleton = self._read_skeleton(d.pose_video)
        out_w = center_crop_width(torch.zeros(1, 1, self.height, self.width), self.ref_hw, self.height).shape[-1]
        self.out_size = (out_w, self.height)
        self.steps = d.steps or s["sample_steps"]
        self.guidance = s["guide_scale"] if d.guidance_scale is None else d.guidance_scale
        self.prompt = d.prompt or s["prompt"]
        self.seed = config.motion.seed
        self.sampler = "dpm" if d.scheduler == "dpm" else "unipc"  # "official": the release UniPC

    @staticmethod
    def _read_skeleton(path: str) -> torch.Tensor:
        """(3, T, H, W) in [-1, 1] (uint8 / 127.5 - 1), the official decoding of the skeleton video."""
        import av

        from ...errors import UnreadableMediaError

        try:
            with av.open(str(path)) as c:
                frames = [f.to_ndarray(format="rgb24") for f in c.decode(video=0)]
        except Exception as exc:  # noqa: BLE001 - any failure here is a bad input file
            raise UnreadableMediaError(f"{path} cannot be read as a skeleton video: {exc}",
                                       "pass an mp4 skeleton rendering", field="pose_video") from exc
        if not frames:
            raise UnreadableMediaError(f"{path} has no frames", "pass an mp4 skeleton rendering",
                                       field="pose_video")
        return torch.from_numpy(np.stack(frames)).permute(3, 0, 1, 2).float() / 127.5 - 1.0

    @property
    def fps(self) -> float:
        return float(self.release.settings["fps"])

    @property
    def frame_size(self) -> tuple[int, int]:
        return self.out_size

    def n_frames(self, speech: Speech) -> int:
        from ...audio.wav2vec import video_frame_count

        return min(video_frame_count(len(speech.samples), speech.sample_rate, int(self.fps)), self.skeleton.shape[1])

    @torch.no_grad()
    def frames(self, speech: Speech):
        r, s = self.release, self.release.settings
        windows, n_audio = r.audio_windows(speech, int(self.fps))
        total = min(n_audio, self.skeleton.shape[1])
        F = s["frame_num"]
        clips = max(1, math.ceil((total - 1) / (F - 1)))
        masks = torch.Generator().manual_seed(self.seed + 1)  # the official patch mask uses the unseeded global RNG
        with r.lock:
            context, negative = r.encode_text(self.prompt), r.encode_text(NEGATIVE_PROMPT)
            ref_latent = r.latents.encode(self.reference)
        emitted, last = 0, None
        for i in range(clips):
            idx = torch.arange(i * (F - 1), i * (F - 1) + F).clamp(max=total - 1)
            skel = resize_for_rectangle_crop(self.skeleton[:, idx], self.height, self.width)
            frames = torch.zeros(3, F, self.height, self.width)
            mask = torch.ones(3, F, self.height, self.width)
            if last is not None:
                frames[:, :1] = random_mask_patches(last, masks)
                mask[:, :1] = 0
            with r.lock:
                skeleton_latents = r.latents.encode_frames(skel)
                z = vace_context(r.latents, frames, mask, ref_latent)
                noise = torch.randn((ref_latent.shape[0], z.shape[1], *ref_latent.shape[2:]),
                                    generator=torch.Generator().manual_seed(self.seed))
                final = sample_clip(r.dit, noise, ref_latent, context, negative, z, skeleton_latents,
                                    windows[idx][None], self.steps, s["sample_shift"], self.guidance,
                                    s["context_scale"], sampler=self.sampler)
                video = r.latents.decode(final[:, 1:])  # (3, F, H, W)
            last = video[:, -1:]
            video = center_crop_width(video if i == 0 else video[:, 1:], self.ref_hw, self.height)
            for frame in ((video.clamp(-1, 1) + 1) / 2 * 255).to(torch.uint8).permute(1, 2, 3, 0):
                if emitted >= total:
                    return
                yield frame.cpu().numpy().copy()
                emitted += 1


def trained_hallo4_folder(folder: str | Path | None) -> Path | None:
    """The checkpoint to render when `folder` holds a Hallo4 run of `talkinghead train` (or one of its
    checkpoints/step-N), None when it is something else (an official release folder)."""
    from ..trained import trained_step

    return trained_step(folder)


class TrainedHallo4:
    """A Hallo4 checkpoint written by `talkinghead train`, as `systems.hallo4.pipeline.Hallo4Animator` renders it: the
    trained `Hallo4WanModel`, the VAE it was trained in, and the inputs it was trained on (the null prompt, the
    stage's audio windows), with the official sampler settings at the trained clip length and frame size."""

    def __init__(self, folder: Path, device: str = "cpu", dtype: torch.dtype = torch.float32):
        import threading

        from ..trained import load_trained_net, read_train_config

        train = read_train_config(folder, "hallo4")
        self.train = train = replace(train, system=replace(train.system, options={
            **train.system.options, "pairs": None}))  # rendering needs no preference data
        system = Hallo4System(train)
        load_trained_net(system.net, folder)  # the EMA weights when the run kept them
        self.dit, self.latents = system.net.eval(), system.latents
        if (device, dtype) != ("cpu", torch.float32):
            for part in (self.dit, self.latents.vae):
                part.to(device=device, dtype=dtype)
        self.settings = {**OFFICIAL, "size_hw": [train.frame_size] * 2, "frame_num": train.clip_frames,
                         "sample_steps": train.sample_steps, "prompt": ""}
        self.lock = threading.Lock()

    def encode_text(self, text: str) -> torch.Tensor:
        return torch.zeros(1, self.dit.config.text_dim)  # the null prompt it was trained with

    def _audio_encoder(self):
        """The preprocess `AudioEncoder` when training read the dataset's stored features (its index names them and
        their windows have the audio projection's shape, as `DiTSystem.audio_windows` checks), else None (training
        used the log-mel stand-in). The encoder folder is looked up by name in the release folder of the run."""
        import json

        from ...train.preprocess import AudioEncoder

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
        from ...audio.wav2vec import video_frame_count
        from ...train.preprocess import log_mel

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
    folder = trained_hallo4_folder(config.diffusion.checkpoint_dir if config is not None else None)
    if folder is None:
        return Hallo4Animator(portrait, config, warn)
    if config.diffusion.prompt:
        raise InputError("is not used by a trained Hallo4 checkpoint: it was trained with the null prompt",
                         "leave it out", field="prompt")
    return Hallo4Animator(portrait, config, warn, load=lambda _folder, device, dtype: TrainedHallo4(
        folder, device, dtype))


__all__ = ["Hallo4Release", "load_release", "Hallo4Animator", "trained_hallo4_folder", "TrainedHallo4",
           "hallo4_animator"]
