"""`talkinghead verify hallo`: passes on the shipped reference data, fails when one tensor is perturbed."""
from __future__ import annotations

import shutil

import pytest
import torch

from talkinghead.systems.hallo.verify import verify_hallo
from tests.support import cli_exit_code


def test_shipped_fixture_passes_every_check(hallo_dir, capsys):
    root = hallo_dir
    assert cli_exit_code(["verify", "hallo", str(root)]) == 0
    out = capsys.readouterr().out
    assert "FAIL" not in out
    # the three kinds of outputs are all compared: forward pass, sampling run, audio front end
    for key in ("a.model_out_cfg_batch", "b.videos", "b.final_latents", "a.ref_bank.mid_block",
                "out.audio_windows", "clip0_audioproj_tokens_tiny_net"):
        assert key in out
    n_ok = out.strip().splitlines()[-1].split("/")[0]
    assert int(n_ok) >= 40


def test_one_perturbed_weight_fails(hallo_dir, tmp_path, capsys):
    src = hallo_dir / "hallo_tiny"
    dst = tmp_path / "hallo_tiny"
    dst.mkdir()
    for name in ("config.json", "io.safetensors", "vae_tiny.safetensors"):
        shutil.copy(src / name, dst / name)
    state = torch.load(src / "net.pth", weights_only=True)
    key = "denoising_unet.up_blocks.1.audio_modules.0.transformer_blocks.0.attn2_2.to_v.weight"
    state[key] = state[key] + 0.05
    torch.save(state, dst / "net.pth")
    assert cli_exit_code(["verify", "hallo", str(dst)]) == 1
    out = capsys.readouterr().out
    failed = [line for line in out.splitlines() if line.startswith("FAIL")]
    assert any("model_out_cfg_batch" in line for line in failed)
    # projections and the face locator do not use that weight and still match
    assert not any("imageproj" in line or "face_locator" in line for line in failed)


def test_perturbed_reference_output_fails(hallo_dir, tmp_path):
    from safetensors.torch import load_file, save_file

    src = hallo_dir / "hallo_tiny"
    dst = tmp_path / "hallo_tiny"
    shutil.copytree(src, dst)
    (dst / "io.safetensors").unlink()
    io = load_file(str(src / "io.safetensors"))
    io["a.face_locator_out"] = io["a.face_locator_out"] + 1e-3
    save_file(io, str(dst / "io.safetensors"))
    checks = {c.name: c for c in verify_hallo(dst)}
    assert not checks["hallo_tiny/a.face_locator_out"].passed
    assert checks["hallo_tiny/a.model_out_cfg_batch"].passed


def test_not_a_fixture_folder_is_a_clear_error(tmp_path, capsys):
    assert cli_exit_code(["verify", "hallo", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert "holds no Hallo reference data" in err and "how to fix" in err


def test_missing_vae_is_named(hallo_dir, tmp_path, capsys):
    src = hallo_dir / "hallo_tiny"
    dst = tmp_path / "hallo_tiny"
    shutil.copytree(src, dst)
    (dst / "vae_tiny.safetensors").unlink()
    assert cli_exit_code(["verify", "hallo", str(dst)]) == 1
    assert "vae_tiny.safetensors" in capsys.readouterr().err
