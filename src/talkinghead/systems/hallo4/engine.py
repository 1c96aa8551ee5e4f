"""`--engine hallo4`: the official release (systems/hallo4/pipeline.py) or a `talkinghead train` run of Hallo4,
rendered with the release's sampler."""
from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import numpy as np
import torch

from ...errors import InputError
from ...train.dit import resample_mel
from .train import Hallo4System


def trained_hallo4_folder(folder: str | Path | None) -> Path | None:
    """The checkpoint to render when `folder` holds a Hallo4 run of `talkinghead train` (or one of its
    checkpoints/step-N), None when it is something else (an official release folder)."""
    from ..trained import CHECKPOINT_FILES

    if not folder:
        return None
    root = Path(folder).expanduser()
    if all((root / f).is_file() for f in CHECKPOINT_FILES):
        return root
    steps = sorted(s for s in (root / "checkpoints").glob("step-*") if all((s / f).is_file() for f in CHECKPOINT_FILES))
    return steps[-1] if steps else None


class TrainedHallo4:
    """A Hallo4 checkpoint written by `talkinghead train`, as `systems.hallo4.pipeline.Hallo4Animator` renders it: the
    trained `Hallo4WanModel`, the VAE it was trained in, and the inputs it was trained on (the null prompt, the
    stage's audio windows), with the official sampler settings at the trained clip length and frame size."""

    def __init__(self, folder: Path, device: str = "cpu", dtype: torch.dtype = torch.float32):
        import json
        import threading

        from safetensors.torch import load_file

        from ...models.checkpoints import load_strict
        from .pipeline import OFFICIAL
        from ...train.trainer import TrainConfig

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
    from .pipeline import Hallo4Animator

    folder = trained_hallo4_folder(config.diffusion.checkpoint_dir if config is not None else None)
    if folder is None:
        return Hallo4Animator(portrait, config, warn)
    if config.diffusion.prompt:
        raise InputError("is not used by a trained Hallo4 checkpoint: it was trained with the null prompt",
                         "leave it out", field="prompt")
    return Hallo4Animator(portrait, config, warn, load=lambda _folder, device, dtype: TrainedHallo4(
        folder, device, dtype))


__all__ = ["trained_hallo4_folder", "TrainedHallo4", "hallo4_animator"]
