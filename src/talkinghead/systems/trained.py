"""Render with a model trained by `talkinghead train`: the engine of the systems without released weights
(EMO, Loopy, EMO2: each subclasses `CheckpointAnimator` in its systems/<name>/engine.py; MIDAS and a trained
Hallo4 reuse `find_checkpoint`, `read_train_config` and `load_trained_net`), reading a run folder (or one of its
checkpoints/step-N folders) exactly as the trainer wrote it: the stage config rebuilds the training adapter, and
the net's `save_pretrained` folder (its EMA one when the run kept an EMA) fills the adapter's net.

The portrait is prepared as the training data was (a square face crop; masks and log-mel features made by the
same functions preprocess uses), the trained adapter builds the model's batch and samples each chunk of
`clip_frames` frames through the shared sampler, and the generated crop (the lips, or the whole face) is pasted
back into the portrait with a feathered edge. Chunks follow one another through the model's motion frames;
every chunk starts from the same seeded noise, so what changes from chunk to chunk is the audio, not the draw.
"""
from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import torch

from ..config import AnimateConfig
from ..errors import InputError
from ..models.checkpoints import (EMA_FOLDER, MODEL_FOLDER, TRAIN_CONFIG, TRAINER_STATE, load_pretrained_into,
                                  require_step)
from ..types import Portrait, Speech


def trained_step(folder: str | Path | None) -> Path | None:
    """The step folder to render when `folder` is one (it holds a model/ folder or trainer state) or is a
    run folder of `talkinghead train` (the newest of its checkpoints/step-NNNNNN); None when it is neither. A step
    folder missing a file is a CheckpointError naming each."""
    if not folder:
        return None
    root = Path(folder).expanduser()
    if (root / MODEL_FOLDER).is_dir() or (root / TRAINER_STATE).is_file():
        return require_step(root)
    steps = sorted((root / "checkpoints").glob("step-??????"))
    return require_step(steps[-1]) if steps else None


def find_checkpoint(folder: str | Path | None, engine: str) -> Path:
    """The checkpoint folder to render with: `folder` itself when it is a step folder, else the newest
    `checkpoints/step-N` inside a run folder; an InputError that says how to make one otherwise."""
    how = (f"train one first, e.g. `talkinghead train configs/train/{engine}_stage1.yaml`, "
           "then pass its output folder (or one of its checkpoints/step-N folders)")
    if not folder:
        raise InputError(f"is needed by engine {engine}, which has no released weights", how, field="checkpoint_dir")
    root = Path(folder).expanduser()
    if not root.is_dir():
        raise InputError(f"{root} is not a folder", how, field="checkpoint_dir")
    step = trained_step(root)
    if step is None:
        raise InputError(f"{root} holds no checkpoint ({TRAIN_CONFIG} + {MODEL_FOLDER}/, directly or in "
                         "checkpoints/step-N/)", how, field="checkpoint_dir")
    return step


def read_train_config(folder: Path, engine: str):
    """The stage config a step folder was trained with; an InputError when it is not one or trains another
    system than `engine`."""
    from ..train.trainer import TrainConfig

    try:
        train = TrainConfig.from_dict(json.loads((folder / TRAIN_CONFIG).read_text()))
    except (ValueError, TypeError, InputError) as e:
        raise InputError(f"{folder / TRAIN_CONFIG} is not a training config: {e}",
                         "pass a folder written by `talkinghead train`", field="checkpoint_dir") from None
    if train.system.name != engine:
        raise InputError(f"{folder} holds a {train.system.name} model, not {engine}",
                         f"use engine {train.system.name}, or a {engine} checkpoint", field="checkpoint_dir")
    return train


def load_trained_net(net, folder: Path):
    """The step folder's net weights into `net` (built from its stage config): the EMA weights when the run kept
    an EMA (what the trainer's sample grids show), else the weights as trained."""
    load_pretrained_into(net, folder / (EMA_FOLDER if (folder / EMA_FOLDER).is_dir() else MODEL_FOLDER))
    return net.requires_grad_(False)


def feathered(side: int, border: float = 0.18) -> np.ndarray:
    """(side, side) weights: 1 inside, falling smoothly to 0 over `border` of the side at the edges."""
    ramp = np.clip(np.minimum(np.arange(side), np.arange(side)[::-1]) / max(1.0, border * side), 0.0, 1.0)
    ramp = ramp * ramp * (3 - 2 * ramp)  # smoothstep
    return np.outer(ramp, ramp).astype(np.float32)


class PortraitClock:
    """What every engine tells the writer: its frame rate and size, and how many frames a speech takes."""

    config: AnimateConfig
    portrait: Portrait

    @property
    def fps(self) -> float:
        return self.config.render.fps

    @property
    def frame_size(self) -> tuple[int, int]:
        return self.portrait.size

    def n_frames(self, speech: Speech) -> int:
        return max(1, int(np.ceil(speech.duration * self.fps - 1e-9)))


class CheckpointAnimator(PortraitClock):
    """Engine interface (`fps`, `frame_size`, `n_frames`, `frames`) over a trained reference-video model."""

    engine = "emo"
    guidance_scale = 1.0  # classifier-free guidance of the sampler (1: none, as the trainer's sample grids)

    def __init__(self, portrait: Portrait, config: AnimateConfig | None = None, warn: bool = True):
        from ..face.landmarks import prepare
        from ..train.preprocess import union_masks

        self.config = config = (config or AnimateConfig()).validate()
        d, r = config.diffusion, config.render
        folder = find_checkpoint(d.checkpoint_dir, self.engine)
        train = read_train_config(folder, self.engine)
        if r.crop != "face":
            raise InputError(f"must be face for engine {self.engine} (it renders the square face crop it was "
                             f"trained on), got {r.crop!r}", "use crop face", field="crop")
        self.train = train
        self.system = self.build(train).eval()
        load_trained_net(self.system.net, folder)
        self.steps = d.steps or train.sample_steps
        self.portrait, self.face = prepare(portrait, r.size, "face", r.face_index, warn=warn)
        points = np.asarray(self.face.landmarks, np.float32)
        masks, _ = union_masks(points[None], r.size)
        self.masks = torch.from_numpy(masks.astype(np.float32))  # (3, S, S) lip, face, full
        self.landmarks = torch.from_numpy(points)
        self.reference = torch.from_numpy(self.portrait.image).permute(2, 0, 1).float() / 127.5 - 1.0

    def build(self, train):
        """The trained adapter (its `net` gets the checkpoint's weights)."""
        from .unet_adapter import System

        return System(train.system)

    def audio_windows(self, speech: Speech, n: int) -> torch.Tensor:
        """(n, W, mel_per_frame, 80): each frame's log-mel and its +-audio_context neighbours, zeros outside."""
        from ..train.preprocess import log_mel

        mel = torch.from_numpy(log_mel(speech.samples, n, self.fps))  # (n, 4, 80)
        ctx = self.train.audio_context
        padded = torch.cat([torch.zeros(ctx, *mel.shape[1:]), mel, torch.zeros(ctx, *mel.shape[1:])])
        return torch.stack([padded[i:i + 2 * ctx + 1] for i in range(n)])

    def _item(self, audio: torch.Tensor, history: list[torch.Tensor]) -> dict:
        f, m = self.train.clip_frames, self.train.motion_frames
        s = self.reference.shape[-1]
        motion = ([self.reference] * (m - len(history[-m:] if m else [])) + (history[-m:] if m else []))
        return {"frames": torch.zeros(1, f, 3, s, s), "reference": self.reference[None],
                "motion_frames": (torch.stack(motion) if m else torch.zeros(0, 3, s, s))[None],
                "audio": audio[None], "masks": self.masks[None],
                "landmarks": self.landmarks[None].expand(1, f, -1, -1), "pose": torch.zeros(1, f, 3),
                **{flag: torch.tensor([False]) for flag in ("drop_audio", "drop_reference", "drop_motion")},
                **self.extra(f)}

    def extra(self, frames: int) -> dict:
        """More of a dataset item this system's batches read (none for EMO and Loopy)."""
        return {}

    @torch.no_grad()
    def frames(self, speech: Speech) -> Iterator[np.ndarray]:
        n = self.n_frames(speech)
        audio = self.audio_windows(speech, n)
        f = self.train.clip_frames
        top, left, side = self.system.crop_box(self.masks[None])[0]
        weight = torch.from_numpy(feathered(side))[None]  # (1, side, side)
        region = self.reference[:, top:top + side, left:left + side]
        history: list[torch.Tensor] = []
        for start in range(0, n, f):
            rows = torch.arange(start, start + f).clamp(max=n - 1)  # the last chunk repeats its final frame
            generator = torch.Generator().manual_seed(self.config.motion.seed)
            crops = self.system.sample(self._item(audio[rows], history), generator, self.steps,
                                       self.guidance_scale)[0]  # (f, 3, c, c)
            crops = torch.nn.functional.interpolate(crops, size=(side, side), mode="bicubic", align_corners=False)
            crops = crops - crops.mean((0, 2, 3), keepdim=True) + region.mean((1, 2), keepdim=True)[None]
            for j in range(min(f, n - start)):
                frame = self.reference.clone()
                frame[:, top:top + side, left:left + side] = weight * crops[j].clamp(-1, 1) + (1 - weight) * region
                history.append(frame)
                yield ((frame.permute(1, 2, 0) + 1) * 127.5).round().clamp(0, 255).byte().numpy()
            history = history[-max(1, self.train.motion_frames):]


__all__ = ["CheckpointAnimator", "PortraitClock", "feathered", "find_checkpoint", "load_trained_net",
           "read_train_config", "trained_step"]
