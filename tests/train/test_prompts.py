"""Per-video text prompts: a sidecar VIDEO.txt beside a video is stored in the preprocessed dataset's index and
comes out of every clip of that video (the empty prompt for a video without one), and a Hallo2 text variant
trains on them."""
from __future__ import annotations

import json
import math
import shutil
from dataclasses import replace
from pathlib import Path

from talkinghead.train.datasets import TalkingClips
from talkinghead.train.preprocess import preprocess
from tests.support import CONFIGS


def test_sidecar_prompts_reach_the_dataset_and_a_text_variant_trains_on_them(synth_dir: Path, dataset_dir: Path,
                                                                             tmp_path: Path):
    videos, dataset = tmp_path / "videos", tmp_path / "dataset"
    videos.mkdir()
    clips = sorted(synth_dir.glob("*.mp4"))
    for clip in clips:  # the same videos (so the session's shards are reused), two of them with a prompt
        (videos / clip.name).symlink_to(clip)
    (videos / clips[0].with_suffix(".txt").name).write_text("  a smiling\nperson \n", encoding="utf-8")
    (videos / clips[1].with_suffix(".txt").name).write_text("an angry person", encoding="utf-8")
    (videos / clips[2].with_suffix(".txt").name).write_text("\n", encoding="utf-8")  # no words: no prompt
    shutil.copytree(dataset_dir, dataset)
    report = preprocess(videos, dataset, size=json.loads((dataset / "index.json").read_text())["size"], workers=1,
                        progress=False)
    assert len(report.reused) == 3 and not report.skipped
    index = json.loads((dataset / "index.json").read_text())
    stored = {v["id"]: v.get("prompt") for v in index["videos"]}
    assert stored == {clips[0].stem: "a smiling person", clips[1].stem: "an angry person", clips[2].stem: None}

    data = TalkingClips(dataset, clip_frames=4, motion_frames=2, audio_context=1)
    seen = {data[i]["video_id"]: data[i]["prompt"] for i in range(len(data))}
    assert seen == {k: v or "" for k, v in stored.items()}

    from talkinghead.systems.hallo2.text import write_tiny_t5
    from talkinghead.train.smoke import smoke_config
    from talkinghead.train.trainer import TrainConfig, train

    config = smoke_config(TrainConfig.from_yaml(CONFIGS / "hallo2_text.yaml"), tmp_path / "run")
    t5 = write_tiny_t5(tmp_path / "t5")
    config = replace(config, dataset=str(dataset), frame_size=None,
                     system=replace(config.system, options={"text_encoder": str(t5)}))
    trainer = train(config, resume=False)
    assert all(math.isfinite(r["loss"]) for r in trainer.history)
    assert trainer.system.prompts._cache and set(trainer.system.prompts._cache) <= {"a smiling person", "an angry person", ""}
    assert trainer.trainable and all(".text_adaln." in name for name in trainer.trainable)


def test_a_text_encoder_is_refused_for_a_system_without_text_layers(tmp_path: Path):
    import pytest

    from talkinghead.errors import InputError
    from talkinghead.train.trainer import TrainConfig

    config = TrainConfig.from_yaml(CONFIGS / "hallo_stage2.yaml")
    with pytest.raises(InputError, match="text_encoder is for hallo2"):
        replace(config, system=replace(config.system, options={"text_encoder": str(tmp_path)})).validate()
