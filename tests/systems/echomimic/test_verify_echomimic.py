"""`talkinghead verify echomimic` beyond what tests/systems/test_verify_all.py checks for every system: missing
release files are named together, and every size and setting is read from the folder (a variant with other
settings, frames, heads and image size)."""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch

from talkinghead.systems.echomimic.verify import check_fixture, verify_echomimic
from tests.support import cli_exit_code, fixture


@pytest.fixture(scope="module")
def echomimic_dir() -> Path:
    return fixture("echomimic")


def test_missing_release_files_are_named_together(echomimic_dir, tmp_path, capsys):
    dst = tmp_path / "echomimic_tiny"
    shutil.copytree(echomimic_dir / "echomimic_tiny", dst)
    (dst / "motion_module.pth").unlink()
    (dst / "face_locator.pth").unlink()
    assert cli_exit_code(["verify", "echomimic", str(dst)]) == 1
    err = capsys.readouterr().err
    assert "motion_module.pth" in err and "face_locator.pth" in err


def test_a_variant_with_other_settings_is_read_from_its_own_files(echomimic_dir, tmp_path):
    """Other seed, steps, guidance, fps, window size and overlap, motion heads, whisper depth, image size and
    frame count: the variant's outputs are recorded with our own modules (this checks that nothing about the
    shipped folder is hard-coded, not parity), differ from the shipped ones, and the verifier passes on them
    and fails when one is changed."""
    from safetensors.torch import load_file, save_file

    from talkinghead.audio.whisper import WhisperFeatures

    src = echomimic_dir / "echomimic_tiny"
    dst = tmp_path / "variant"
    shutil.copytree(src, dst)
    config = json.loads((dst / "config.json").read_text())
    config["run"].update(sampling_seed=7, num_inference_steps=2, guidance_scale=3.0, fps=25, context_frames=2,
                         context_overlap=1, video_length_requested=5)
    config["unet_additional_kwargs"]["motion_module_kwargs"]["num_attention_heads"] = 4
    (dst / "config.json").write_text(json.dumps(config))
    # a whisper checkpoint with two blocks (30 tokens per window), in the release's own format
    blob = torch.load(src / "audio_processor" / "whisper_tiny.pt", weights_only=True)
    state = dict(blob["model_state_dict"])
    state.update({k.replace("blocks.0.", "blocks.1."): v.flip(0) if v.ndim == 1 else v.flip(1)
                  for k, v in blob["model_state_dict"].items() if "blocks.0." in k})
    torch.save({"dims": {**blob["dims"], "n_audio_layer": 2}, "model_state_dict": state},
               dst / "audio_processor" / "whisper_tiny.pt")
    assert WhisperFeatures.from_openai_checkpoint(dst / "audio_processor" / "whisper_tiny.pt").n_layers == 3
    # 96 px inputs (12x12 latents, 2x2 at the UNet bottom), 5 frames of landmarks
    g = torch.Generator().manual_seed(5)
    size, frames = 96, 5
    io = load_file(str(src / "io.safetensors"))
    inputs = {
        "in.ref_image_uint8": torch.randint(0, 256, (size, size, 3), generator=g).to(torch.uint8),
        "in.face_mask_uint8": torch.zeros(size, size, dtype=torch.uint8),
        "in.latents_a": torch.randn(1, 4, 2, size // 8, size // 8, generator=g),
        "in.pose_points": torch.randint(0, size - 2, (frames, 40, 2), generator=g),
        "in.pose_colors": io["in.pose_colors"],
        "in.waveform_int16": io["in.waveform_int16"],
    }
    inputs["in.face_mask_uint8"][16:80, 24:72] = 255
    save_file(inputs, str(dst / "io.safetensors"))
    recorded: dict = {}
    check_fixture(dst, record=recorded)
    assert recorded["audio.whisper_feature"].shape[1] == 3
    assert recorded["b.videos"].shape == (1, 3, frames, size, size)
    assert "b.step_t.1" in recorded and "b.step_t.2" not in recorded
    assert recorded["b.context_idx.1.0"].tolist() == [2, 3]  # windows of 2, shifted by 2 frames per step
    assert recorded["c.context_idx.1.0"].tolist() == [3, 4]  # landmark pipeline: 3 frames per step
    save_file({**inputs, **{k: v.contiguous() for k, v in recorded.items()}}, str(dst / "io.safetensors"))
    checks = verify_echomimic(dst)
    assert checks and all(c.passed for c in checks), [c.line() for c in checks if not c.passed]
    assert {c.name.split("/")[1] for c in checks} == set(recorded)

    recorded["b.final_latents"] = recorded["b.final_latents"] + 1e-2
    save_file({**inputs, **{k: v.contiguous() for k, v in recorded.items()}}, str(dst / "io.safetensors"))
    failed = [c.name for c in verify_echomimic(dst) if not c.passed]
    assert failed == ["variant/b.final_latents"]
