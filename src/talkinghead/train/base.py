"""The contract between the trainer and a system: what `Trainer` needs from each system's training adapter.

An adapter is an `nn.Module` built from the whole stage config (`from_train_config`). It owns the trained
model as `self.net` (the module whose state dict a checkpoint holds, with the system's own parameter names,
so a stage's `train`/`freeze` patterns and the saved weights read the same), turns a batch of its dataset
into the model's inputs, and returns `(loss, logs)` from `loss(batch, generator)` with every random draw from
that generator (exact resume). Optional: `sample(batch, generator, steps)` and `target_crops(batch)` for
the sample grids. Per-system settings live in the stage YAML under `system.options` and are parsed into the
adapter's typed `Options` dataclass (unknown keys refused), so every stage file has one schema.
"""
from __future__ import annotations

from dataclasses import dataclass, field, fields

import torch
from torch import nn

from ..errors import InputError
from ..utils import select_trainable


@dataclass
class SystemConfig:
    """The model and how clips are shown to it."""

    name: str = "emo"  # which adapter trains it: train/adapters.py ADAPTERS
    size: str = "official"  # official | tiny: the model sizes (tiny: what `--smoke` and the tests train)
    unet: dict = field(default_factory=dict)  # overrides of the SD 1.5 UNet config (tiny sizes in tests)
    motion_heads: int = 8  # temporal attention heads
    crop: str = "mouth"  # "mouth": a square around the lips (learns to talk fast); "face": the whole crop
    crop_size: int = 32  # px, side of the crop the model sees
    mouth_margin: float = 2.2  # crop "mouth": side of the square / width of the lip mask (the union over the video)
    vae: str | None = None  # a local diffusers VAE folder: train in its latent space; None: in pixels
    min_snr_gamma: float | None = 5.0
    speed_layers: bool = True  # EMO's speed layers, fed the head speed from the dataset's poses
    audio_tokens: int = 20  # mel frames per video frame's audio window (set by the trainer from the data)
    model: dict = field(default_factory=dict)  # overrides of the system's model config fields
    options: dict = field(default_factory=dict)  # per-system settings, typed by the adapter's Options


@dataclass
class NoOptions:
    """A system without per-system options."""


def parse_options(cls, raw: dict | None, system: str):
    """`raw` (system.options of a stage YAML) -> an instance of the dataclass `cls`; unknown keys refused."""
    raw = dict(raw or {})
    known = {f.name for f in fields(cls)}
    unknown = sorted(set(raw) - known)
    if unknown:
        raise InputError(f"unknown {system} option(s): {unknown}",
                         f"known system.options for {system}: {sorted(known) or 'none'}")
    try:
        return cls(**raw)
    except (TypeError, ValueError) as e:
        raise InputError(f"bad {system} options: {e}", "fix system.options in the stage config") from None


class TrainSystem(nn.Module):
    """Base of the training adapters: defaults for the dataset, trainable selection and the smoke variant."""

    Options = NoOptions
    net: nn.Module

    @classmethod
    def options(cls, config):
        return parse_options(cls.Options, config.system.options, config.system.name)

    @classmethod
    def check_config(cls, config) -> None:
        """Refuse a stage config this system cannot train (InputError); called by TrainConfig.validate."""
        cls.options(config)

    @classmethod
    def make_dataset(cls, config):
        """The training clips this system reads (default: the preprocessed dataset as `TalkingClips`)."""
        from .datasets import ConditionDropout, TalkingClips

        augment = None
        if config.augment_motion_frames:
            from ..nn.motion_frame_augment import MotionFrameAugmentConfig

            augment = MotionFrameAugmentConfig()
        return TalkingClips(config.dataset, clip_frames=config.clip_frames, motion_frames=config.motion_frames,
                            audio_context=config.audio_context, size=config.frame_size,
                            dropout=ConditionDropout(**config.dropout), augment=augment, seed=config.seed,
                            split="train")

    @classmethod
    def from_train_config(cls, config, dataset) -> "TrainSystem":
        raise NotImplementedError

    @classmethod
    def smoke_overrides(cls, config):
        """`config` (already shrunk by train/smoke.py) with this system's tiny sizes."""
        return config

    def on_weights_loaded(self) -> None:
        """Called after the trainer loaded init_from into `self.net` (e.g. to snapshot a frozen reference)."""

    def select_trainable(self, train: list[str], freeze: list[str]) -> list[str]:
        """requires_grad by parameter-name patterns of `self.net` (in `train`, not in `freeze`)."""
        return select_trainable(self.net, train, freeze)

    def loss(self, batch: dict, generator: torch.Generator) -> tuple[torch.Tensor, dict]:
        raise NotImplementedError
