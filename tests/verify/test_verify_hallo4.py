"""`talkinghead verify hallo4`: passes on the shipped reference data (the release layout through our loaders and
the official inference replayed), fails when one DiT weight is perturbed while the stages it does not reach
still pass, and refuses a folder that is not reference data."""
from __future__ import annotations

import shutil
from pathlib import Path

import pytest
import torch

from talkinghead.interfaces.cli import main
from talkinghead.verify.hallo4 import verify_hallo4

FIXTURES = Path(__file__).resolve().parents[3] / "shared" / "fixtures" / "hallo4"


@pytest.fixture(scope="module")
def fixtures() -> Path:
    if not FIXTURES.is_dir():
        pytest.skip(f"shared reference data not found at {FIXTURES}")
    return FIXTURES


def _exit_code(argv) -> int:
    with pytest.raises(SystemExit) as exc:
        main(argv)
    return exc.value.code


def test_shipped_fixture_passes_every_check(fixtures, capsys):
    assert _exit_code(["verify", "hallo4", str(fixtures)]) == 0
    out = capsys.readouterr().out
    assert "FAIL" not in out and out.strip().splitlines()[-1] == "113/113 outputs within tolerance"
    for key in ("w.audio_windows", "p.ref_image", "b.vace_context", "a.cond.blocks.0.condition_cross_attn.out",
                "c.step.2.latents_after", "out.frames_uint8"):
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
    assert _exit_code(["verify", "hallo4", str(tmp_path)]) == 2
    assert "holds no Hallo4 reference data" in capsys.readouterr().err
