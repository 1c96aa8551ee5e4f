"""Stage configs outside the trainer: read a configs/train/<system>_<stage>.yaml into the one typed schema
(`TrainConfig`, checked by its system's adapter) and apply its train/freeze patterns to a model."""
from __future__ import annotations

import os

from torch import nn

from ..errors import InputError
from ..utils import select_trainable
from .trainer import TrainConfig


def load_stage_config(path: str | os.PathLike, system: str | None = None) -> TrainConfig:
    """A stage YAML as a validated TrainConfig; with `system`, refuse a config of another system."""
    cfg = TrainConfig.from_yaml(path).validate()
    if system is not None and cfg.system.name != system:
        raise InputError(f"{path} is a {cfg.system.name!r} stage, not {system!r}", f"pass a {system} stage config")
    return cfg


def apply_stage(model: nn.Module, stage: TrainConfig) -> list[str]:
    """requires_grad by the stage's patterns (in `train`, not in `freeze`) and, where the model has a
    diffusers `transformer`, its gradient checkpointing by the stage; returns the trainable names."""
    transformer = getattr(model, "transformer", None)
    if transformer is not None and hasattr(transformer, "enable_gradient_checkpointing"):
        if stage.gradient_checkpointing:
            transformer.enable_gradient_checkpointing()
        else:
            transformer.disable_gradient_checkpointing()
    return select_trainable(model, stage.train, stage.freeze)


__all__ = ["apply_stage", "load_stage_config"]
