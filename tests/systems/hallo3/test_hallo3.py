"""Hallo3 at a tiny config: it builds, its conditions matter, a training step lowers the loss on an overfit
batch, stage 2 trains only the audio layers, weights round-trip through safetensors with a JSON config, and
the stage YAMLs under configs/train are real and validated."""
from __future__ import annotations

import json

import pytest
import torch
from diffusers import CogVideoXDDIMScheduler

from talkinghead.errors import InputError
from talkinghead.systems.hallo3.model import COGVIDEOX_SCHEDULER, HALLO3_TINY, Hallo3Model
from talkinghead.train.stages import apply_stage, load_stage_config
from talkinghead.utils import select_trainable
from talkinghead.systems.hallo3.train import hallo3_loss
from tests.support import CONFIGS



def _model(seed: int = 0) -> Hallo3Model:
    torch.manual_seed(seed)
    model = Hallo3Model(**HALLO3_TINY)
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():  # the added layers start at zero; give them weights so every condition is live
        for name, p in model.named_parameters():
            if "cross_layers" in name and "to_out" in name:
                p.copy_(torch.randn(p.shape, generator=g) * 0.1)
    return model


def _batch(b: int = 2, seed: int = 0) -> dict:
    g = torch.Generator().manual_seed(seed)
    r = lambda *s: torch.randn(*s, generator=g)  # noqa: E731
    return {"latents": r(b, 3, 4, 8, 8), "text": r(b, 4, 16), "face_embedding": r(b, 8),
            "audio_windows": r(b, 9, 3, 2, 8), "motion_latents": r(b, 1, 4, 8, 8), "reference_latents": r(b, 1, 4, 8, 8)}


def _out(model, batch, **changes):
    batch = {**batch, **changes}
    with torch.no_grad():
        return model.predict(batch["latents"], torch.tensor([100, 700]), batch)


def test_tiny_builds_and_every_condition_matters():
    model = _model().eval()
    batch = _batch()
    out = _out(model, batch)
    assert out.shape == batch["latents"].shape and torch.isfinite(out).all()
    assert len(model.bank.features) == len(model.transformer.transformer_blocks)  # one reference entry per layer
    for key in ("face_embedding", "audio_windows", "reference_latents", "motion_latents", "text"):
        moved = _out(model, batch, **{key: batch[key] + 1.0})
        assert (moved - out).abs().max() > 1e-4, key
    without_ref = _out(model, batch, reference_latents=None)
    assert not model.bank.features and (without_ref - out).abs().max() > 1e-4


def test_training_step_lowers_the_loss_on_an_overfit_batch():
    model = _model().train()
    select_trainable(model, *Hallo3Model.trainable_patterns("1"))
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=3e-3)
    scheduler = CogVideoXDDIMScheduler(**COGVIDEOX_SCHEDULER)
    batch = _batch()
    losses = []
    for _ in range(4):
        loss, logs = hallo3_loss(model, batch, scheduler, torch.Generator().manual_seed(0))  # the same noise and t
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(logs["loss"])
    assert losses[-1] < 0.9 * losses[0]


def test_stage2_trains_only_the_audio_layers():
    model = _model().train()
    cfg = load_stage_config(CONFIGS / "hallo3_stage2.yaml")
    names = apply_stage(model, cfg)
    assert names and all("audio_attn" in n or n.startswith("audio_proj.") for n in names)
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    opt = torch.optim.SGD([p for p in model.parameters() if p.requires_grad], lr=1e-2)
    loss, _ = hallo3_loss(model, _batch(), CogVideoXDDIMScheduler(**COGVIDEOX_SCHEDULER), torch.Generator().manual_seed(1))
    loss.backward()
    opt.step()
    changed = {n for n, p in model.named_parameters() if not torch.equal(p, before[n])}
    assert changed and changed <= set(names)


@pytest.mark.parametrize("name", ["hallo3_stage1.yaml", "hallo3_stage2.yaml"])
def test_stage_yaml_matches_the_model_stage(name):
    cfg = load_stage_config(CONFIGS / name)
    assert cfg.system.name == "hallo3" and (cfg.train, cfg.freeze) == Hallo3Model.trainable_patterns(cfg.stage)
    assert (cfg.clip_frames - 1) % 4 == 0 and cfg.learning_rate > 0


def test_stage1_freezes_audio_and_trains_both_networks():
    model = _model()
    names = apply_stage(model, load_stage_config(CONFIGS / "hallo3_stage1.yaml"))
    assert any(n.startswith("reference_net.") for n in names) and any("face_attn" in n for n in names)
    assert not any("audio" in n for n in names)


def test_bad_stage_configs_are_refused(tmp_path):
    good = (CONFIGS / "hallo3_stage1.yaml").read_text()
    cases = {"unknown.yaml": good + "learnin_rate: 1\n", "frames.yaml": good.replace("clip_frames: 49", "clip_frames: 48"),
             "system.yaml": good.replace("name: hallo3", "name: emo")}
    for fname, text in cases.items():
        (tmp_path / fname).write_text(text)
        with pytest.raises(InputError):
            load_stage_config(tmp_path / fname, "hallo3")
    with pytest.raises(InputError):
        load_stage_config(tmp_path / "missing.yaml")
    with pytest.raises(InputError):
        Hallo3Model.trainable_patterns("3")
    with pytest.raises(InputError):
        select_trainable(_model(), ["nothing.*"])


def test_save_load_round_trips_through_safetensors(tmp_path):
    model = _model(seed=4).eval()
    model.save_pretrained(tmp_path)
    assert (tmp_path / "diffusion_pytorch_model.safetensors").is_file()
    config = json.loads((tmp_path / "config.json").read_text())
    assert config["transformer_config"]["num_layers"] == 2 and config["_class_name"] == "Hallo3Model"
    loaded = Hallo3Model.from_pretrained(tmp_path, local_files_only=True).eval()
    a, b = model.state_dict(), loaded.state_dict()
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    batch = _batch()
    torch.testing.assert_close(_out(loaded, batch), _out(model, batch))
