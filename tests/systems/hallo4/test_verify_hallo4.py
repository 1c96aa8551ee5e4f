"""`talkinghead verify hallo4` beyond what tests/systems/test_verify_all.py checks for every system: every setting
is read from the fixture's own config.json (a variant fixture written by our own run passes; changing a setting
makes it fail)."""
from __future__ import annotations

import shutil

from talkinghead.systems.hallo4.verify import verify_hallo4
from tests.support import fixture


def test_variant_fixture_settings_are_read_from_its_config(tmp_path):
    """A fixture of the same format with other steps, shift, guidance, seed and clip length, its outputs written by
    our own run (this checks the comparison mechanics and that nothing about the shipped fixture is assumed; it is
    not a second upstream run). It passes; changing a setting in its config.json makes it fail."""
    import json

    from safetensors.torch import save_file

    from talkinghead.systems.hallo4.verify import run_release

    tiny = fixture("hallo4", "hallo4_tiny")
    dst = tmp_path / "hallo4_variant"
    shutil.copytree(tiny, dst)
    config = json.loads((dst / "config.json").read_text())
    config["run"].update(sample_steps=2, sample_shift=5.0, guide_scale=4.0, base_seed=7, frame_num=5, mask_seed=5)
    (dst / "config.json").write_text(json.dumps(config))
    (dst / "io.safetensors").unlink()
    from safetensors.torch import load_file

    shipped = load_file(str(tiny / "io.safetensors"))
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
