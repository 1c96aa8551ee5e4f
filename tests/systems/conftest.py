"""Tiny weights for the engines that run from a weights folder, made through the same save path users get."""
from __future__ import annotations

from pathlib import Path
from typing import Callable

import pytest

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def tiny_checkpoints(tmp_path_factory, request) -> dict[str, Callable[[], list[str]]]:
    """name -> a builder that writes a tiny weights folder and returns the CLI arguments that render with it."""

    def trained(config: str) -> Callable[[], list[str]]:
        def build() -> list[str]:
            # `talkinghead train --smoke`: the stage's tiny variant, two steps, checkpoints as any run writes them
            from talkinghead.train.smoke import smoke_train
            from talkinghead.train.trainer import TrainConfig

            folder = tmp_path_factory.mktemp(Path(config).stem)
            trainer = smoke_train(TrainConfig.from_yaml(REPO / "configs" / "train" / config), folder)
            return ["--checkpoint-dir", str(trainer.out), "--size", "128", "--steps", "2"]
        return build

    def hallo3() -> list[str]:  # a tiny release in the official SAT layout (tests/conftest.py)
        return ["--checkpoint-dir", str(request.getfixturevalue("hallo3_release")), "--face-embedding",
                str(request.getfixturevalue("face_embedding_file")), "--steps", "2"]

    return {"emo": trained("emo_stage3.yaml"), "loopy": trained("loopy_stage2.yaml"), "hallo3": hallo3}
