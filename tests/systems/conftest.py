"""Tiny weights for the engines that run from a weights folder, made through the same save path users get."""
from __future__ import annotations

from pathlib import Path
from typing import Callable

import pytest

from tests.support import CONFIGS, fixture


@pytest.fixture(scope="module")
def tiny_checkpoints(tmp_path_factory, request) -> dict[str, Callable[[], list[str]]]:
    """name -> a builder that writes a tiny weights folder and returns the CLI arguments that render with it."""

    def trained(config: str) -> Callable[[], list[str]]:
        def build() -> list[str]:
            # `talkinghead train --smoke`: the stage's tiny variant, two steps, checkpoints as any run writes them
            from talkinghead.train.smoke import smoke_train
            from talkinghead.train.trainer import TrainConfig

            folder = tmp_path_factory.mktemp(Path(config).stem)
            trainer = smoke_train(TrainConfig.from_yaml(CONFIGS / config), folder)
            return ["--checkpoint-dir", str(trainer.out), "--size", "128", "--steps", "2"]
        return build

    def hallo3() -> list[str]:  # a tiny release in the official SAT layout (tests/conftest.py)
        return ["--checkpoint-dir", str(request.getfixturevalue("hallo3_release")), "--face-embedding",
                str(request.getfixturevalue("face_embedding_file")), "--steps", "2"]

    def midas() -> list[str]:
        # the autoregressive stage on the latents of a trained (smoke) autoencoder, as midas_ar.yaml names it
        from dataclasses import replace

        from talkinghead.train.smoke import smoke_config, smoke_train
        from talkinghead.train.trainer import TrainConfig, train

        folder = tmp_path_factory.mktemp("midas")
        ae = smoke_train(TrainConfig.from_yaml(CONFIGS / "midas_ae3.yaml"), folder / "ae")
        config = smoke_config(TrainConfig.from_yaml(CONFIGS / "midas_ar.yaml"), folder / "ar")
        config = replace(config, system=replace(config.system, vae=str(ae.latest_checkpoint())))
        return ["--checkpoint-dir", str(train(config, resume=False).out), "--size", "128", "--steps", "2"]

    def skyreels_a1() -> list[str]:  # the tiny release of the shared reference data + a SigLIP (tests/conftest.py)
        return ["--checkpoint-dir", str(request.getfixturevalue("skyreels_a1_release")), "--steps", "2"]

    def skyreels_a2() -> list[str]:  # the tiny release of the shared reference data, an object and a background
        refs = request.getfixturevalue("reference_images")
        return ["--checkpoint-dir", str(request.getfixturevalue("skyreels_a2_release")), "--steps", "2", "--size", "80",
                *(arg for ref in refs for arg in ("--reference", str(ref)))]

    def hallo4() -> list[str]:  # a tiny release in the official layout and a skeleton video (tests/conftest.py)
        return ["--checkpoint-dir", str(request.getfixturevalue("hallo4_release")), "--pose-video",
                str(request.getfixturevalue("skeleton_video"))]

    def echomimic() -> list[str]:  # the tiny release folder of the shared reference data, as downloaded
        return ["--checkpoint-dir", str(fixture("echomimic", "echomimic_tiny")),
                "--size", "128", "--steps", "2"]

    return {"emo": trained("emo_stage3.yaml"), "loopy": trained("loopy_stage2.yaml"), "hallo3": hallo3,
            "echomimic": echomimic,
            "hallo4": hallo4, "emo2": trained("emo2_stage2.yaml"), "midas": midas, "skyreels-a1": skyreels_a1,
            "skyreels-a2": skyreels_a2}
