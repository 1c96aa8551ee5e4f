"""`talkinghead verify hallo3` beyond what tests/systems/test_verify_all.py checks for every system: every size, step
and seed is read from the fixture's own files (a variant fixture of other sizes, written by our own modules, passes;
changing its seed or step count in config.json makes it fail)."""
from __future__ import annotations

import copy
import json
from pathlib import Path

import pytest
import torch

from talkinghead.systems.hallo3.model import Hallo3Model
from talkinghead.systems.hallo3.release import config_from_sat, sat_from_ours
from talkinghead.systems.hallo3.verify import run_recorded_inputs, verify_hallo3
from tests.support import fixture


@pytest.fixture(scope="module")
def tiny() -> Path:
    return fixture("hallo3", "hallo3_tiny")


def _variant(root: Path, tiny: Path) -> Path:
    """A fixture of the same format at other sizes, seeds and steps, written from our own modules: this checks the
    comparison mechanics and that nothing about the shipped fixture is assumed (not a second upstream run)."""
    config = json.loads((tiny / "config.json").read_text())
    mc = copy.deepcopy(config["model_config"])
    p = mc["network_config"]["params"]
    p.update(num_layers=3, hidden_size=48, num_attention_heads=3, time_embed_dim=24, latent_height=6, latent_width=4,
             num_frames=17)
    p["transformer_args"].update(cross_attn_hidden_size=20, face_cross_attn_hidden_size=8)
    p["modules"]["pos_embed_config"]["params"].update(text_length=5, hidden_size_head=16)
    p["modules"]["patch_embed_config"]["params"].update(text_hidden_size=12)
    mc["sampler_config"]["params"]["num_steps"] = 4
    audio = {"seq_len": 3, "blocks": 2, "channels": 4, "intermediate_dim": 8, "output_dim": 20, "context_tokens": 3}
    face = {"hidden_size": 8, "clip_embeddings_dim": 16, "clip_extra_context_tokens": 2}
    variant = {"variant": {"sample_seed": 7}, "model_config": mc, "audio_proj_args": audio, "face_proj_args": face}
    torch.manual_seed(11)
    model = Hallo3Model(**config_from_sat(mc, audio, face)).eval()
    with torch.no_grad():  # the cross layers start at zero: give them weights so they matter
        for name, t in model.named_parameters():
            if "to_out" in name and "cross_layers" in name:
                t.copy_(torch.randn_like(t) * 0.2)
    folder = root / "hallo3_variant"
    (folder / "2").mkdir(parents=True)
    (folder / "latest").write_text("2")
    torch.save({"module": sat_from_ours(model.state_dict())}, folder / "2" / "mp_rank_00_model_states.pt")
    (folder / "config.json").write_text(json.dumps(variant))
    g = torch.Generator().manual_seed(5)
    inputs = {"in.text_emb_cond": torch.randn(1, 5, 12, generator=g), "in.ref_image_latent": torch.randn(1, 1, 16, 6, 4, generator=g),
              "in.concat_first_latent": torch.randn(1, 1, 16, 6, 4, generator=g),
              "in.audio_emb": torch.randn(1, 17, 3, 2, 4, generator=g), "in.face_emb": torch.randn(1, 16, generator=g)}
    trace = run_recorded_inputs(model, variant, inputs)
    from safetensors.torch import save_file

    save_file({k: v.detach().clone().contiguous() for k, v in {**inputs, **trace}.items()}, str(folder / "io.safetensors"))
    return folder


def test_variant_fixture_of_other_sizes_passes_and_its_settings_are_read(tiny, tmp_path):
    folder = _variant(tmp_path, tiny)
    checks = verify_hallo3(folder)
    names = {c.name for c in checks}
    assert all(c.passed for c in checks), [c.line() for c in checks if not c.passed]
    assert "hallo3_variant/step0.layer2.out" in names and "hallo3_variant/s.noise_draw4" in names  # 3 layers, 4 steps
    config = json.loads((folder / "config.json").read_text())
    config["variant"]["sample_seed"] = 8
    (folder / "config.json").write_text(json.dumps(config))
    failed = {c.name for c in verify_hallo3(folder) if not c.passed}
    assert "hallo3_variant/s.initial_noise" in failed and "hallo3_variant/s.samples" in failed
    config["variant"]["sample_seed"] = 7
    config["model_config"]["sampler_config"]["params"]["num_steps"] = 3
    (folder / "config.json").write_text(json.dumps(config))
    failed = {c.name for c in verify_hallo3(folder) if not c.passed}
    assert "hallo3_variant/s.samples" in failed and "hallo3_variant/s.step3.x_in (not reproduced)" in failed
