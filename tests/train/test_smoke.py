"""`talkinghead train --config F --smoke` for every stage config under configs/: two optimiser steps of the
system's tiny variant on a generated dataset (the real shard format, read by the real TalkingClips), with a
checkpoint and the stage's own train/freeze patterns selecting a non-empty set of parameters."""
from __future__ import annotations

import math
from pathlib import Path

import pytest
import yaml
from safetensors.torch import load_file

from talkinghead.interfaces.cli import main
from talkinghead.train.datasets import TalkingClips
from talkinghead.train.smoke import SMOKE_STEPS, smoke_config, write_smoke_dataset
from talkinghead.train.trainer import TrainConfig, train

ROOT = Path(__file__).resolve().parents[2]
CONFIGS = sorted((ROOT / "configs").rglob("*.yaml"))


def test_every_shipped_stage_is_found():
    names = {p.stem for p in CONFIGS}
    for system, stages in {"emo": 3, "hallo": 2, "hallo2": 2, "echomimic": 2, "emo2": 2, "hallo3": 2, "loopy": 2,
                           "skyreels_a1": 3}.items():
        assert {f"{system}_stage{i}" for i in range(1, stages + 1)} <= names
    assert {"hallo4_sft", "hallo4_dpo", "skyreels_a2", "midas_ae1", "midas_ae2", "midas_ae3", "midas_ar"} <= names


@pytest.mark.parametrize("path", CONFIGS, ids=lambda p: p.stem)
def test_smoke_runs_every_config(path: Path, tmp_path: Path):
    cfg = TrainConfig.from_yaml(path)  # one schema: every file parses into the trainer's config
    trainer = train(smoke_config(cfg, tmp_path), resume=False)
    assert trainer.step == SMOKE_STEPS
    assert all(math.isfinite(r["loss"]) for r in trainer.history)
    assert 0 < len(trainer.trainable) <= sum(1 for _ in trainer.system.net.parameters())
    if cfg.freeze:
        assert len(trainer.trainable) < sum(1 for _ in trainer.system.net.parameters())
    ckpt = tmp_path / "run" / "checkpoints" / f"step-{SMOKE_STEPS:06d}"
    weights = load_file(ckpt / "model" / "diffusion_pytorch_model.safetensors")  # the net's save_pretrained
    assert weights.keys() == trainer.system.net.state_dict().keys()
    saved = yaml.safe_load((ckpt / "train_config.json").read_text())  # the typed stage config, beside the net
    assert saved["system"]["name"] == cfg.system.name and saved["stage"] == cfg.stage


def test_smoke_cli(tmp_path: Path, capsys):
    config = ROOT / "configs" / "train" / "loopy_stage1.yaml"
    with pytest.raises(SystemExit) as e:
        main(["train", "--config", str(config), "--smoke", "--output-dir", str(tmp_path)])
    assert e.value.code == 0
    assert "smoke run" in capsys.readouterr().err
    assert (tmp_path / "run" / "checkpoints" / f"step-{SMOKE_STEPS:06d}" / "model" / "config.json").is_file()


def test_generated_dataset_reads_as_talking_clips(tmp_path: Path):
    clips = TalkingClips(write_smoke_dataset(tmp_path), clip_frames=4, motion_frames=2, audio_context=1)
    item = clips[0]
    assert item["frames"].shape == (4, 3, 32, 32) and item["frames"].is_contiguous()
    assert item["audio"].shape[:2] == (4, 3) and item["hands"].shape == (4, 2, 21, 3)
    assert item["masks"].sum() > 0 and item["landmarks"].shape == (4, 478, 3)
    # the mouth opens and closes with the audio's loudness
    loud = item["audio"][:, 1].mean((1, 2))
    assert loud.max() - loud.min() > 0.5
