"""Hallo's wav2vec2 audio front end: parity with the official code's fixture, windows, padding, loading errors."""
from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file, save_file

from talkinghead.audio.wav2vec import (
    audio_windows,
    hallo_audio_embeddings,
    load_wav2vec,
    pad_to_frames,
    padded_frame_count,
    video_frame_count,
)
from talkinghead.errors import CheckpointError, MissingFilesError
from talkinghead.verify.audio import check_audio_fixture
from tests.support import fixture

SAMPLES_PER_FRAME = 640  # 16 kHz / 25 fps
MODEL_FILES = ("config.json", "preprocessor_config.json", "model.safetensors")


@pytest.fixture(scope="module")
def audio_fixture() -> Path:
    return fixture("hallo", "hallo_audio_tiny")


@pytest.fixture(scope="module")
def tiny_model(audio_fixture: Path):
    return load_wav2vec(audio_fixture)


def copy_model(src: Path, dst: Path, skip: str = "") -> Path:
    dst.mkdir()
    for name in MODEL_FILES:
        if name != skip:
            shutil.copy(src / name, dst / name)
    return dst


# ------------------------------------------------------------------------------------------- parity


def test_every_fixture_check_passes(audio_fixture: Path):
    checks = check_audio_fixture(audio_fixture)
    names = {check.name for check in checks}
    assert {"w2v.hidden_states_all", "out.audio_emb", "out.audio_windows", "out.audio_length"} <= names
    assert len(checks) == 11
    failed = [check.line() for check in checks if not check.passed]
    assert not failed, "\n".join(failed)


def test_model_is_in_eval_mode(tiny_model):
    model, _ = tiny_model
    assert not model.training


# ------------------------------------------------------------------------------------------ windows


def test_audio_windows_clamp_at_the_edges():
    emb = torch.arange(3.0).reshape(3, 1, 1)  # (t=3, layers=1, dim=1) holding 0, 1, 2
    windows = audio_windows(emb, radius=2)
    assert windows.shape == (3, 5, 1, 1)
    expected = torch.tensor([[0, 0, 0, 1, 2], [0, 0, 1, 2, 2], [0, 1, 2, 2, 2]], dtype=torch.float32)
    assert torch.equal(windows[..., 0, 0], expected)


def test_audio_windows_radius_zero_is_identity():
    emb = torch.randn(4, 2, 3)
    assert torch.equal(audio_windows(emb, radius=0)[:, 0], emb)


# ------------------------------------------------------------------------------------------ padding


def test_frame_count_rounds_up():
    assert video_frame_count(32480, 16000, 25) == 51  # 50.75 frames
    assert video_frame_count(32000, 16000, 25) == 50


def test_padding_to_whole_clips():
    assert padded_frame_count(51, 16) == 64
    assert padded_frame_count(64, 16) == 64  # already whole clips: unchanged
    assert padded_frame_count(51, -1) == 51  # clip_length <= 0: no padding
    assert padded_frame_count(51, 0) == 51


def test_pad_appends_zero_frames():
    signal = torch.ones(32480)
    padded = pad_to_frames(signal, 51, 64, SAMPLES_PER_FRAME)
    assert padded.shape == (32480 + 13 * SAMPLES_PER_FRAME,)  # 40800, as in the fixture
    assert torch.equal(padded[:32480], signal) and not padded[32480:].any()


def test_exact_multiple_of_a_clip_is_not_padded(tiny_model):
    model, extractor = tiny_model
    waveform = np.random.default_rng(0).standard_normal(32 * SAMPLES_PER_FRAME).astype(np.float32)  # 2 clips
    emb, length = hallo_audio_embeddings(model, extractor, waveform, fps=25, clip_length=16)
    assert length == 32 and emb.shape == (32, 2, 32)  # (t, layers, dim)


def test_short_audio_is_padded_to_one_clip(tiny_model):
    model, extractor = tiny_model
    waveform = np.random.default_rng(1).standard_normal(5 * SAMPLES_PER_FRAME).astype(np.float32)
    emb, length = hallo_audio_embeddings(model, extractor, waveform, fps=25, clip_length=16)
    assert length == 5 and emb.shape == (16, 2, 32)


# ------------------------------------------------------------------------------------------ loading


@pytest.mark.parametrize("absent", MODEL_FILES)
def test_missing_file_is_named(audio_fixture: Path, tmp_path: Path, absent: str):
    folder = copy_model(audio_fixture, tmp_path / "w2v", skip=absent)
    with pytest.raises(MissingFilesError) as error:
        load_wav2vec(folder)
    assert error.value.missing == [absent if absent != "model.safetensors" else "model.safetensors or pytorch_model.bin"]
    assert error.value.missing[0] in str(error.value)


def test_wrong_key_is_named(audio_fixture: Path, tmp_path: Path):
    folder = copy_model(audio_fixture, tmp_path / "w2v")
    state = load_file(str(folder / "model.safetensors"))
    state["feature_projection.proj.bias"] = state.pop("feature_projection.projection.bias")
    save_file(state, str(folder / "model.safetensors"))
    with pytest.raises(CheckpointError) as error:
        load_wav2vec(folder)
    assert "feature_projection.projection.bias" in str(error.value)  # missing
    assert "feature_projection.proj.bias" in str(error.value)  # unexpected


def test_legacy_weight_norm_names_are_loaded(audio_fixture: Path, tiny_model):
    state = load_file(str(audio_fixture / "model.safetensors"))
    assert "encoder.pos_conv_embed.conv.weight_g" in state  # the fixture uses the legacy spelling
    conv = tiny_model[0].encoder.pos_conv_embed.conv
    v = state["encoder.pos_conv_embed.conv.weight_v"]
    expected = state["encoder.pos_conv_embed.conv.weight_g"] * v / v.norm(dim=(0, 1), keepdim=True)
    torch.testing.assert_close(conv.weight, expected)


def test_task_checkpoint_in_bin_format(audio_fixture: Path, tmp_path: Path, tiny_model):
    """A Wav2Vec2ForCTC-style pytorch_model.bin (wav2vec2.* keys + lm_head) loads to the same model."""
    folder = copy_model(audio_fixture, tmp_path / "w2v", skip="model.safetensors")
    state = {f"wav2vec2.{key}": value for key, value in load_file(str(audio_fixture / "model.safetensors")).items()}
    state |= {"lm_head.weight": torch.zeros(32, 32), "lm_head.bias": torch.zeros(32)}
    torch.save(state, folder / "pytorch_model.bin")
    model, _ = load_wav2vec(folder)
    reference = tiny_model[0].state_dict()
    for key, value in model.state_dict().items():
        assert torch.equal(value, reference[key]), key


def test_wrong_shape_is_a_checkpoint_error(audio_fixture: Path, tmp_path: Path):
    folder = copy_model(audio_fixture, tmp_path / "w2v")
    state = load_file(str(folder / "model.safetensors"))
    state["feature_projection.projection.bias"] = torch.zeros(33)
    save_file(state, str(folder / "model.safetensors"))
    with pytest.raises(CheckpointError, match="feature_projection.projection.bias"):
        load_wav2vec(folder)
