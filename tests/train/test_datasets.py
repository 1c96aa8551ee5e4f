"""TalkingClips: item layout, determinism per (seed, epoch, index), reference placement, dropout flags,
Hallo2's motion-frame augmentation, the train/val split, and clear errors."""
from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from talkinghead.errors import InputError
from talkinghead.nn.motion_frame_augment import MotionFrameAugmentConfig
from talkinghead.train.datasets import ConditionDropout, TalkingClips, collate, split_videos
from talkinghead.train.preprocess import MEL_PER_FRAME, N_MELS

F, M, R = 4, 2, 2  # clip frames, motion frames, audio context


def _clips(dataset_dir: Path, **kw) -> TalkingClips:
    return TalkingClips(dataset_dir, **{"clip_frames": F, "motion_frames": M, "audio_context": R, **kw})


def test_items_have_the_documented_layout(dataset_dir: Path, synth_settings: dict):
    ds = _clips(dataset_dir)
    s = synth_settings["dataset_size"]
    index = json.loads((dataset_dir / "index.json").read_text(encoding="utf-8"))
    assert len(ds) >= sum(v["frames"] // F for v in index["videos"])  # every video cut into clips
    item = ds[len(ds) // 2]
    assert item["frames"].shape == (F, 3, s, s) and item["motion_frames"].shape == (M, 3, s, s)
    assert item["reference"].shape == (3, s, s)
    for key in ("frames", "motion_frames", "reference"):
        x = item[key]
        assert x.dtype == torch.float32 and x.min() >= -1 and x.max() <= 1 and x.std() > 0.1
    assert item["audio"].shape == (F, 2 * R + 1, MEL_PER_FRAME, N_MELS)
    assert item["masks"].shape == (3, s, s) and set(item["masks"].unique().tolist()) <= {0.0, 1.0}
    lip, face, full = item["masks"]
    assert lip.sum() > 0 and (lip <= face).all() and torch.equal(full, 1 - face)  # lip inside face, full outside
    assert item["hallo_masks"].shape == (3, 64, 64)
    assert item["landmarks"].shape == (F, 478, 3) and item["pose"].shape == (F, 3)
    assert item["speed"].shape == (F,) and item["speed_bucket"].dtype == torch.int64
    for flag in ("drop_audio", "drop_reference", "drop_motion"):
        assert item[flag].dtype == torch.bool and item[flag].dim() == 0


def test_frames_audio_and_motion_frames_line_up(dataset_dir: Path):
    ds = _clips(dataset_dir, stride=1)
    a, b = ds[3], ds[4]  # consecutive starts in the first video
    assert b["start"] == a["start"] + 1 and b["video_id"] == a["video_id"]
    assert torch.equal(a["frames"][1:], b["frames"][:-1])
    assert torch.equal(b["motion_frames"][-1], a["frames"][0])  # the frame just before b's clip
    assert torch.equal(a["audio"][1:], b["audio"][:-1])
    assert torch.equal(a["audio"][1, R], b["audio"][0, R])  # window centres are the frames themselves
    first = ds[0]
    assert first["start"] == 0
    assert torch.equal(first["motion_frames"][0], first["frames"][0])  # the first frame repeated before the start
    assert (first["audio"][0, :R] == 0).all()  # zeros before the video starts


def test_same_index_same_item_and_epochs_draw_again(dataset_dir: Path):
    ds = _clips(dataset_dir, dropout=ConditionDropout(0.5, 0.5, 0.5, 0.0))
    refs0 = [ds[i]["reference_index"] for i in range(len(ds))]
    again = _clips(dataset_dir, dropout=ConditionDropout(0.5, 0.5, 0.5, 0.0))
    for i in (0, len(ds) - 1):
        x, y = ds[i], again[i]
        for k in x:
            assert (torch.equal(x[k], y[k]) if torch.is_tensor(x[k]) else x[k] == y[k]), k
    ds.set_epoch(1)
    refs1 = [ds[i]["reference_index"] for i in range(len(ds))]
    assert refs0 != refs1  # other references in another epoch
    ds.set_epoch(0)
    assert [ds[i]["reference_index"] for i in range(len(ds))] == refs0
    flags = torch.stack([torch.stack([ds[i][k] for k in ("drop_audio", "drop_reference", "drop_motion")])
                         for i in range(len(ds))]).float()
    assert 0.2 < flags.mean() < 0.8  # p = 0.5 draws, not constant


def test_reference_is_away_from_the_clip(dataset_dir: Path):
    ds = _clips(dataset_dir)
    for i in range(len(ds)):
        item = ds[i]
        n = next(v["frames"] for v in ds.videos if v["id"] == item["video_id"])
        ref, start = item["reference_index"], item["start"]
        assert 0 <= ref < n
        if n >= 3 * F:  # room on some side: at least clip_frames away from the clip
            assert ref <= start - F or ref >= start + 2 * F - 1


def test_dropout_probabilities_one_and_zero(dataset_dir: Path):
    always = _clips(dataset_dir, dropout=ConditionDropout(0, 0, 0, all_=1.0))
    never = _clips(dataset_dir, dropout=ConditionDropout(0, 0, 0, 0))
    for i in range(0, len(always), 7):
        a, n = always[i], never[i]
        assert a["drop_audio"] and a["drop_reference"] and a["drop_motion"]
        assert not (n["drop_audio"] or n["drop_reference"] or n["drop_motion"])
        assert torch.equal(a["audio"], n["audio"])  # flags only: the tensors are never zeroed here
    with pytest.raises(ValueError, match="audio"):
        ConditionDropout(audio=1.5)


def test_motion_frame_augmentation_is_seeded_and_changes_only_motion_frames(dataset_dir: Path):
    plain = _clips(dataset_dir)
    aug = _clips(dataset_dir, augment=MotionFrameAugmentConfig(patch_size=8, drop_rate=0.5, noise_std=0.1))
    i = len(plain) // 2
    p, a, a2 = plain[i], aug[i], aug[i]
    assert torch.equal(p["frames"], a["frames"]) and torch.equal(p["reference"], a["reference"])
    assert not torch.equal(p["motion_frames"], a["motion_frames"])
    assert torch.equal(a["motion_frames"], a2["motion_frames"])  # same index, same augmentation
    zeroed = (a["motion_frames"].abs() < 0.4).float().mean()
    assert zeroed > (p["motion_frames"].abs() < 0.4).float().mean()  # dropped patches are near zero


def test_no_motion_frames_and_resizing(dataset_dir: Path):
    ds = _clips(dataset_dir, motion_frames=0, size=32)
    item = ds[0]
    assert item["motion_frames"].shape == (0, 3, 32, 32) and item["frames"].shape == (F, 3, 32, 32)
    assert item["masks"].shape == (3, 32, 32) and item["landmarks"][..., :2].max() <= 32
    batch = collate([ds[0], ds[1]])
    assert batch["frames"].shape == (2, F, 3, 32, 32) and batch["drop_audio"].shape == (2,)
    assert isinstance(batch["video_id"], list)


def test_split_holds_videos_out_whole_and_stably():
    ids = [f"video_{k}" for k in range(40)]
    train, val = split_videos(ids, 0.25)
    assert set(train) | set(val) == set(ids) and not set(train) & set(val)
    assert 3 <= len(val) <= 18  # about a quarter
    more_train, more_val = split_videos(ids + ["new_one"], 0.25)
    assert set(val) <= set(more_val)  # adding a video never moves another one across
    assert split_videos(["a", "b"], 0.1)[1]  # two videos: one is held out
    assert split_videos(["a"], 0.1) == (["a"], [])


def test_train_and_val_splits_of_a_dataset(dataset_dir: Path):
    train = _clips(dataset_dir, split="train", val_fraction=0.3)
    val = _clips(dataset_dir, split="val", val_fraction=0.3)
    tv = {v["id"] for v in train.videos}
    vv = {v["id"] for v in val.videos}
    assert tv and vv and not tv & vv and len(tv | vv) == 3


def test_bad_arguments(dataset_dir: Path, tmp_path: Path):
    with pytest.raises(InputError, match="not a preprocessed dataset"):
        TalkingClips(tmp_path)
    (tmp_path / "index.json").write_text('{"version": 99}', encoding="utf-8")
    with pytest.raises(InputError, match="format version"):
        TalkingClips(tmp_path)
    for kw in ({"clip_frames": 0}, {"motion_frames": -1}, {"split": "test"}, {"size": 4}):
        with pytest.raises(ValueError):
            _clips(dataset_dir, **kw)
    with pytest.raises(IndexError):
        _clips(dataset_dir)[10_000]
