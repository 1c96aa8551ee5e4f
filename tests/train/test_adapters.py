"""Pieces of the training adapters, with hand-computed expectations: Loopy's motion variances, EMO2's
body-relative motion and keypoint median filter, the parameter-free audio stand-ins of the DiT adapters,
and the per-system options a stage config carries."""
from __future__ import annotations

import pytest
import torch

from talkinghead.errors import InputError
from talkinghead.systems.unet_adapter import motion_variances
from talkinghead.systems.hallo4.train import keypoint_indices
from talkinghead.train.dit import pooled_tokens, resample_mel
from talkinghead.systems.emo2.train import body_relative, temporal_median
from talkinghead.train.trainer import TrainConfig


def test_loopy_variances_are_zero_for_a_still_clip_and_grow_with_motion():
    pose = torch.zeros(1, 4, 3)
    landmarks = torch.rand(1, 1, 478, 3).expand(1, 4, -1, -1) * 32
    still = motion_variances(pose, landmarks, 32)
    assert still["head_motion"].shape == (1, 4, 1) and still["expression"].shape == (1, 4, 1)
    assert still["head_motion"].abs().max() == 0 and still["expression"].abs().max() < 1e-12
    pose = torch.tensor([[[0.0, 0, 0], [2.0, 0, 0], [0, 0, 0], [-2.0, 0, 0]]])
    moved = motion_variances(pose, landmarks + torch.arange(4.0).view(1, 4, 1, 1), 32)  # a shift is no expression
    assert torch.allclose(moved["head_motion"][0, :, 0], torch.tensor([0.0, 4 / 3, 0.0, 4 / 3]))
    assert moved["expression"].abs().max() < 1e-9


def test_body_relative_puts_the_shoulders_at_minus_and_plus_one_half():
    body = torch.zeros(1, 1, 12, 2)
    body[0, 0, 0], body[0, 0, 1] = torch.tensor([0.2, 0.4]), torch.tensor([0.6, 0.4])  # shoulders 0.4 apart
    body[0, 0, 2] = torch.tensor([0.2, 0.8])  # left elbow 0.4 below the left shoulder
    mask = torch.ones(1, 1, 12)
    hands = torch.zeros(1, 1, 2, 21, 3)
    hands[0, 0, 0, 0] = torch.tensor([0.4, 0.4, 0.2])
    h, b = body_relative(hands, body, mask)
    assert torch.allclose(b[0, 0, 0], torch.tensor([-0.5, 0.0]))
    assert torch.allclose(b[0, 0, 1], torch.tensor([0.5, 0.0]))
    assert torch.allclose(b[0, 0, 2], torch.tensor([-0.5, 1.0]))
    assert torch.allclose(h[0, 0, 0, 0], torch.tensor([0.0, 0.0, 0.5]))  # between the shoulders; z in widths


def test_temporal_median_removes_a_spike_and_keeps_unseen_points():
    x = torch.zeros(1, 7, 1, 2)
    x[0, 3] = 10.0
    mask = torch.ones(1, 7, 1)
    assert temporal_median(x, mask, 3).abs().max() == 0
    x[0, 2], mask[0, 2] = 99.0, 0
    out = temporal_median(x, mask, 15)  # the kernel shrinks to the clip
    assert out[0, 2, 0, 0] == 99.0 and out[0, 3, 0, 0] == 0.0


def test_audio_and_identity_stand_ins_have_the_model_shapes():
    mel = torch.randn(2, 5, 3, 4, 80)
    out = resample_mel(mel, (5, 12, 768))
    assert out.shape == (2, 5, 5, 12, 768)
    flat = torch.ones(1, 1, 3, 4, 80)
    assert torch.allclose(resample_mel(flat, (2, 2, 8)), torch.ones(1, 1, 2, 2, 8))  # a constant stays constant
    assert pooled_tokens(torch.zeros(2, 3, 32, 32), 4, 12).shape == (2, 4, 12)
    assert keypoint_indices(5) == [0, 119, 238, 358, 477]


def test_system_options_are_typed_per_system():
    base = {"dataset": "d", "stage": "1", "clip_frames": 49, "motion_frames": 0}
    cfg = TrainConfig.from_dict({**base, "system": {"name": "skyreels_a1", "options": {"face_weight": 3.0}}})
    assert cfg.validate().system.options == {"face_weight": 3.0}
    with pytest.raises(InputError, match="unknown skyreels_a1 option"):
        TrainConfig.from_dict({**base, "system": {"name": "skyreels_a1", "options": {"face": 3.0}}}).validate()
    with pytest.raises(InputError, match="1 \\+ 4k"):
        TrainConfig.from_dict({**base, "clip_frames": 48, "system": "hallo3"}).validate()
    with pytest.raises(InputError, match="preference pairs"):
        TrainConfig.from_dict({**base, "stage": "dpo", "system": "hallo4"}).validate()
    with pytest.raises(InputError, match="MIDAS stages"):
        TrainConfig.from_dict({**base, "stage": "2", "system": "midas"}).validate()
    with pytest.raises(InputError, match="unknown system"):
        TrainConfig.from_dict({**base, "system": "halo"}).validate()
    with pytest.raises(InputError, match="median_kernel"):
        TrainConfig.from_dict({**base, "stage": "2", "system": {"name": "emo2", "options": {"median_kernel": 4}}}
                              ).validate()


def test_emo2_hand_motion_skips_clips_with_too_few_hand_frames(tmp_path):
    from talkinghead.train.smoke import write_smoke_dataset
    from talkinghead.systems.emo2.train import EMO2System

    data = write_smoke_dataset(tmp_path / "ds", frames=24)  # a hand in every frame (the right one enters late)
    base = {"dataset": str(data), "stage": "1", "clip_frames": 4, "motion_frames": 0}

    def clips(share: float) -> int:
        cfg = TrainConfig.from_dict({**base, "system": {"name": "emo2", "options": {"prev_frames": 2,
                                                                                    "min_hand_frames": share}}})
        return len(EMO2System.make_dataset(cfg))

    assert clips(0.0) == clips(1.0) == 4  # one training video, 24 frames in clips of 2 + 4
    assert clips(1.01) == 0
