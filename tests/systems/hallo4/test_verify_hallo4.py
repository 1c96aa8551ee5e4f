"""`talkinghead verify hallo4`: passes on the shipped reference data (the release layout through our loaders and
the official inference replayed), fails when one DiT weight is perturbed while the stages it does not reach
still pass, and refuses a folder that is not reference data."""
from __future__ import annotations

import shutil
from pathlib import Path

import pytest
import torch

from talkinghead.systems.hallo4.verify import verify_hallo4
from tests.support import cli_exit_code

FIXTURES = Path(__file__).resolve().parents[4] / "shared" / "fixtures" / "hallo4"


@pytest.fixture(scope="module")
def fixtures() -> Path:
    if not FIXTURES.is_dir():
        pytest.skip(f"shared reference data not found at {FIXTURES}")
    return FIXTURES


def test_shipped_fixture_passes_every_check(fixtures, capsys):
    assert cli_exit_code(["verify", "hallo4", str(fixtures)]) == 0
    out = capsys.readouterr().out
    assert "FAIL" not in out and out.strip().splitlines()[-1] == "112/112 outputs within tolerance"
    for key in ("w.audio_windows", "p.ref_image", "b.vace_context", "a.cond.blocks.0.condition_cross_attn.out",
                "c.step.2.latents_after", "c.motion_frame_masked", "out.frames_uint8"):
        assert f"hallo4_tiny/{key} " in out


def test_one_perturbed_weight_fails(fixtures, tmp_path):
    dst = tmp_path / "hallo4_tiny"
    shutil.copytree(FIXTURES / "hallo4_tiny", dst)
    path = dst / "hallo4" / "model_weight.ckpt"
    state = torch.load(path, weights_only=True)
    key = "blocks.3.audio_cross_attn.o.weight"
    state[key] = state[key] + 0.5 * torch.randn(state[key].shape, generator=torch.Generator().manual_seed(0))
    path.unlink()
    torch.save(state, path)
    checks = {c.name.split("/", 1)[1]: c for c in verify_hallo4(dst)}
    assert not checks["a.cond.blocks.3.out"].passed and not checks["b.step.0.noise_pred_cond"].passed
    for key in ("a.cond.blocks.2.out", "w.audio_windows", "p.ref_image", "b.vace_context", "b.skeleton_latents"):
        assert checks[key].passed, key


def test_not_a_fixture_folder_is_a_clear_error(tmp_path, capsys):
    assert cli_exit_code(["verify", "hallo4", str(tmp_path)]) == 2
    assert "holds no Hallo4 reference data" in capsys.readouterr().err


def test_variant_fixture_settings_are_read_from_its_config(fixtures, tmp_path):
    """A fixture of the same format with other steps, shift, guidance, seed and clip length, its outputs written by
    our own run (this checks the comparison mechanics and that nothing about the shipped fixture is assumed; it is
    not a second upstream run). It passes; changing a setting in its config.json makes it fail."""
    import json

    from safetensors.torch import save_file

    from talkinghead.systems.hallo4.verify import run_release

    dst = tmp_path / "hallo4_variant"
    shutil.copytree(FIXTURES / "hallo4_tiny", dst)
    config = json.loads((dst / "config.json").read_text())
    config["run"].update(sample_steps=2, sample_shift=5.0, guide_scale=4.0, base_seed=7, frame_num=5, mask_seed=5)
    (dst / "config.json").write_text(json.dumps(config))
    (dst / "io.safetensors").unlink()
    from safetensors.torch import load_file

    shipped = load_file(str(FIXTURES / "hallo4_tiny" / "io.safetensors"))
    inputs = {k: v for k, v in shipped.items() if k.startswith("in.")}
    save_file(inputs, str(dst / "io.safetensors"))
    ours, _ = run_release(dst)  # later clips' motion frames come from run.mask_seed (5 here)
    save_file({**inputs, **{k: v.clone().contiguous() for k, v in ours.items()}}, str(dst / "io.safetensors"))
    checks = verify_hallo4(dst)
    assert all(c.passed for c in checks), [c.line() for c in checks if not c.passed]
    names = {c.name.split("/", 1)[1] for c in checks}
    assert "b.step.1.latents_after" in names and "b.step.2.latents_after" not in names  # 2 steps
    assert "d.decoded" in names  # 5-frame clips: 17 frames -> 4 clips
    config["run"]["guide_scale"] = 5.0
    (dst / "config.json").write_text(json.dumps(config))
    failed = {c.name.split("/", 1)[1] for c in verify_hallo4(dst) if not c.passed}
    assert "b.step.0.guided" in failed and "out.video" in failed
