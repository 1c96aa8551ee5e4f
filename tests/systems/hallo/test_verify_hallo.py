"""`talkinghead verify hallo` beyond what tests/systems/test_verify_all.py checks for every system: a changed
reference output fails on its own, and a missing VAE file is named."""
from __future__ import annotations

import shutil

from talkinghead.systems.hallo.verify import verify_hallo
from tests.support import cli_exit_code


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


def test_missing_vae_is_named(hallo_dir, tmp_path, capsys):
    src = hallo_dir / "hallo_tiny"
    dst = tmp_path / "hallo_tiny"
    shutil.copytree(src, dst)
    (dst / "vae_tiny.safetensors").unlink()
    assert cli_exit_code(["verify", "hallo", str(dst)]) == 1
    assert "vae_tiny.safetensors" in capsys.readouterr().err
