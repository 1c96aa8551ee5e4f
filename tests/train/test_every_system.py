"""Every system's training adapter, on its tiny variant and the generated dataset: a few fixed-noise steps on
one batch lower the loss, a run stopped and resumed from its checkpoint continues bit-identically, and the step
folder's net and EMA net load alone with the net class's from_pretrained."""
from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from talkinghead.train.smoke import smoke_config
from talkinghead.train.trainer import TrainConfig, train
from tests.support import CONFIGS

# one stage per adapter path (EMO2 and MIDAS have two nets each, Hallo4 two objectives)
STAGES = ["emo_stage2", "loopy_stage2", "hallo_stage2", "hallo2_stage2", "hallo2_text", "echomimic_stage2",
          "emo2_stage1", "emo2_stage2", "hallo3_stage2", "hallo4_sft", "hallo4_dpo", "skyreels_a1_stage3",
          "skyreels_a2", "midas_ae3", "midas_ar"]
STEPS = 4


def _config(name: str, folder: Path, steps: int) -> TrainConfig:
    cfg = smoke_config(TrainConfig.from_yaml(CONFIGS / f"{name}.yaml"), folder)
    return replace(cfg, max_steps=steps, train=["*"], freeze=[], learning_rate=1e-3, fixed_noise=True,
                   overfit_batches=1, ema_decay=0.9, checkpoint_every=3, sample_every=1000, log_every=1,
                   dropout={"audio": 0.0, "reference": 0.0, "motion": 0.0, "all_": 0.0})


@pytest.mark.parametrize("name", STAGES)
def test_overfits_and_resumes_bit_identically(name: str, tmp_path: Path):
    straight = train(_config(name, tmp_path / "a", STEPS), resume=False)
    losses = [r["loss"] for r in straight.history]
    assert min(losses[-2:]) < losses[0], f"{name}: loss {losses}"
    if name.startswith("emo_"):  # EMO's face locator reads the face region and learns (zero-initialised output)
        assert straight.system.net.face_locator.conv_out.weight.abs().sum() > 0
    if name.startswith("loopy"):  # every temporal layer is Loopy's inter/intra-clip module, and it learns
        from talkinghead.nn.loopy import LoopyMotionModule

        modules = [m for m in straight.system.net.denoising_unet.modules() if isinstance(m, LoopyMotionModule)]
        assert modules and not any(type(m).__name__ == "MotionModule" for m in straight.system.net.modules())
        assert any(m.temporal.inter_clip.attn.to_out[0].weight.abs().sum() > 0 for m in modules)
    if name.startswith("echomimic"):  # its objective includes the timestep-aware spatial loss
        assert all(r["spatial"] > 0 and r["loss"] > r["latent"] for r in straight.history)
    half = train(_config(name, tmp_path / "b", STEPS // 2), resume=False)
    resumed = train(_config(name, tmp_path / "b", STEPS), resume=True)
    assert resumed.history[: STEPS // 2] == half.history
    assert [r["loss"] for r in resumed.history] == losses
    ckpt = f"checkpoints/step-{STEPS:06d}"
    for folder in ("model", "model_ema"):
        file = f"{folder}/diffusion_pytorch_model.safetensors"
        a, b = load_file(tmp_path / "a" / "run" / ckpt / file), load_file(tmp_path / "b" / "run" / ckpt / file)
        assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    net = straight.system.net
    alone = type(net).from_pretrained(tmp_path / "a" / "run" / ckpt / "model")  # the net without its adapter
    assert type(alone) is type(net) and all(torch.equal(v, net.state_dict()[k]) for k, v in alone.state_dict().items())
    ema = load_file(tmp_path / "a" / "run" / ckpt / "model_ema" / "diffusion_pytorch_model.safetensors")
    assert any(not torch.equal(ema[k], v) for k, v in net.state_dict().items())  # the EMA weights, not the net's
