"""The trainer: a tiny model overfits one batch, a resumed run continues bit-identically, checkpoints,
samples and curves are written, every shipped stage config is valid, and bad configs are clear errors."""
from __future__ import annotations

from pathlib import Path

import pytest
import torch
import yaml
from safetensors.torch import load_file

from talkinghead.errors import InputError
from talkinghead.train.trainer import TrainConfig, Trainer, batch_indices, train
from tests.support import CONFIGS, cli_exit_code


TINY_UNET = {"block_out_channels": [32, 32, 32, 32], "layers_per_block": 1, "attention_head_dim": 2,
             "cross_attention_dim": 16}


def _config(dataset_dir: Path, out: Path, **kw) -> TrainConfig:
    base = dict(dataset=str(dataset_dir), output_dir=str(out),
                system={"name": "emo", "crop": "mouth", "crop_size": 16, "motion_heads": 2, "unet": TINY_UNET},
                clip_frames=2, motion_frames=1, audio_context=1, batch_size=2, learning_rate=2e-3, max_steps=4,
                ema_decay=0.9, log_every=1, sample_every=1000, sample_steps=2, checkpoint_every=1000,
                progress=False, dropout={"audio": 0.0, "reference": 0.0, "motion": 0.0, "all_": 0.0})
    base.update(kw)
    return TrainConfig.from_dict(base)


def test_a_tiny_model_overfits_one_batch(dataset_dir: Path, tmp_path: Path):
    cfg = _config(dataset_dir, tmp_path / "run", fixed_noise=True, overfit_batches=1, max_steps=25,
                  learning_rate=3e-3, ema_decay=None)
    cfg.system.min_snr_gamma = None  # the raw loss, so the ratio is the fit itself
    trainer = train(cfg, resume=False)
    losses = [r["loss"] for r in trainer.history]
    assert len(losses) == 25
    first, last = losses[0], min(losses[-5:])
    assert first / last >= 10, f"loss {first:.4g} -> {last:.4g}"
    out = tmp_path / "run"
    assert (out / "loss.png").stat().st_size > 1000 and list((out / "samples").glob("step-*.png"))
    assert (out / "checkpoints" / "step-000025" / "model" / "diffusion_pytorch_model.safetensors").is_file()


def test_resume_continues_bit_identically(dataset_dir: Path, tmp_path: Path):
    straight = train(_config(dataset_dir, tmp_path / "a", max_steps=4, grad_accum=2), resume=False)
    first = train(_config(dataset_dir, tmp_path / "b", max_steps=2, grad_accum=2), resume=False)
    assert first.step == 2
    resumed = train(_config(dataset_dir, tmp_path / "b", max_steps=4, grad_accum=2), resume=True)
    assert resumed.history[:2] == first.history[:2]
    assert [r["loss"] for r in resumed.history] == [r["loss"] for r in straight.history]
    step = "checkpoints/step-000004"
    a = load_file(tmp_path / "a" / step / "model" / "diffusion_pytorch_model.safetensors")
    b = load_file(tmp_path / "b" / step / "model" / "diffusion_pytorch_model.safetensors")
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    ea = load_file(tmp_path / "a" / step / "model_ema" / "diffusion_pytorch_model.safetensors")
    eb = load_file(tmp_path / "b" / step / "model_ema" / "diffusion_pytorch_model.safetensors")
    assert ea.keys() == a.keys() and all(torch.equal(ea[k], eb[k]) for k in ea)
    assert not all(torch.equal(a[k], ea[k]) for k in a)  # the EMA weights lag the trained ones


def test_a_step_folder_is_the_net_as_save_pretrained_writes_it(dataset_dir: Path, tmp_path: Path):
    from talkinghead.errors import CheckpointError
    from talkinghead.systems.emo.model import EMONet
    from talkinghead.systems.trained import find_checkpoint

    trainer = train(_config(dataset_dir, tmp_path / "run", max_steps=2), resume=False)
    step = trainer.latest_checkpoint()
    assert {p.name for p in step.iterdir()} == {"model", "model_ema", "train_config.json", "optimizer.pt",
                                               "trainer.json"}
    net = EMONet.from_pretrained(step / "model")  # the net alone, without the training adapter
    assert all(torch.equal(v, trainer.system.net.state_dict()[k]) for k, v in net.state_dict().items())
    # the next stage starts from it (init_from: the step folder, or the run folder's newest step)
    for folder in (step, tmp_path / "run"):
        following = Trainer(_config(dataset_dir, tmp_path / "next", init_from=str(folder)))
        assert all(torch.equal(v, following.system.net.state_dict()[k]) for k, v in net.state_dict().items())
    (step / "model_ema" / "diffusion_pytorch_model.safetensors").unlink()
    (step / "optimizer.pt").unlink()
    with pytest.raises(CheckpointError) as err:
        Trainer(_config(dataset_dir, tmp_path / "run", max_steps=3)).resume()
    assert "model_ema/diffusion_pytorch_model.safetensors" in str(err.value) and "optimizer.pt" in str(err.value)
    for folder in (step, tmp_path / "run"):  # the engines over trained runs refuse it the same way
        with pytest.raises(CheckpointError, match="model_ema/diffusion_pytorch_model.safetensors"):
            find_checkpoint(folder, "emo")


def test_batches_are_a_pure_function_of_the_step(dataset_dir: Path, tmp_path: Path):
    cfg = _config(dataset_dir, tmp_path, batch_size=3, grad_accum=2)
    n = 10
    seen = [i for step in range(5) for micro in range(2) for i in batch_indices(step, micro, cfg, n)]
    assert sorted(seen[:n]) == list(range(n))  # the first epoch is a permutation
    assert seen[:n] != list(range(n))  # shuffled
    assert batch_indices(3, 1, cfg, n) == batch_indices(3, 1, cfg, n)


def test_stages_freeze_what_their_config_says(dataset_dir: Path, tmp_path: Path):
    t = Trainer(_config(dataset_dir, tmp_path, train=["*motion_modules*", "*audio_modules*"]))
    assert t.trainable and all("motion_modules" in n or "audio_modules" in n for n in t.trainable)
    frozen = [n for n, p in t.system.net.named_parameters() if not p.requires_grad]
    assert any(n.startswith("reference_unet.") for n in frozen)
    before = {n: p.detach().clone() for n, p in t.system.net.named_parameters()}
    t.train_step()
    after = dict(t.system.net.named_parameters())
    assert all(torch.equal(before[n], after[n]) for n in before if n not in t.trainable)  # frozen stay put
    assert any(not torch.equal(before[n], after[n]) for n in t.trainable)
    with pytest.raises(InputError, match="select no parameter"):
        Trainer(_config(dataset_dir, tmp_path, train=["nothing.*"]))


def _trainer_configs() -> list[Path]:
    """configs/train YAMLs of this trainer's systems (the DiT, MIDAS and EMO2 stage configs are read and
    tested by their own model files)."""
    out = []
    for path in sorted(CONFIGS.glob("*.yaml")):
        system = yaml.safe_load(path.read_text(encoding="utf-8")).get("system")
        if isinstance(system, dict) and system.get("name", "emo") in ("emo", "loopy", "hallo", "echomimic"):
            out.append(path)
    return out


@pytest.mark.parametrize("path", _trainer_configs(), ids=lambda p: p.stem)
def test_every_shipped_stage_config_selects_parameters(path: Path, dataset_dir: Path, tmp_path: Path):
    """Each configs/train YAML parses, and its train/freeze patterns select a non-empty, proper subset of a
    tiny model of the same system (or all of it when the stage trains everything)."""
    raw = yaml.safe_load(path.read_text(encoding="utf-8"))
    cfg = TrainConfig.from_yaml(path, {"dataset": str(dataset_dir), "output_dir": str(tmp_path),
                                       "init_from": None, "mixed_precision": "no", "progress": False})
    cfg.system.unet, cfg.system.vae, cfg.system.crop_size, cfg.system.motion_heads = TINY_UNET, None, 16, 2
    cfg.clip_frames, cfg.motion_frames = 2, min(cfg.motion_frames, 1)
    t = Trainer(cfg)
    total = sum(1 for _ in t.system.net.parameters())
    assert 0 < len(t.trainable) <= total
    if raw.get("freeze") or raw.get("train") != ["*"]:
        assert len(t.trainable) < total


def test_bad_configs_are_clear_errors(dataset_dir: Path, tmp_path: Path, capsys):
    with pytest.raises(InputError, match="unknown training option"):
        TrainConfig.from_dict({"dataset": "x", "lerning_rate": 1})
    with pytest.raises(InputError, match="unknown system option"):
        TrainConfig.from_dict({"dataset": "x", "system": {"nmae": "emo"}})
    with pytest.raises(InputError, match="not a preprocessed dataset"):
        Trainer(_config(tmp_path, tmp_path / "out"))
    with pytest.raises(InputError, match="batch_size"):
        _config(dataset_dir, tmp_path, batch_size=0).validate()
    with pytest.raises(InputError, match="mixed_precision"):
        _config(dataset_dir, tmp_path, mixed_precision="fp8").validate()
    bad = tmp_path / "bad.yaml"
    bad.write_text("dataset: [unclosed\n", encoding="utf-8")
    assert cli_exit_code(["train", "--config", str(bad)]) == 2
    assert "not valid YAML" in capsys.readouterr().err
    assert cli_exit_code(["train", "--config", str(tmp_path / "missing.yaml")]) == 2
    ok = tmp_path / "ok.yaml"
    ok.write_text(yaml.safe_dump({"dataset": str(tmp_path / "nowhere"), "output_dir": str(tmp_path / "o")}),
                  encoding="utf-8")
    assert cli_exit_code(["train", "--config", str(ok)]) == 2
    err = capsys.readouterr().err
    assert "preprocess" in err and "Traceback" not in err
    assert not (tmp_path / "o").exists()  # no half-made run folder


def test_cli_trains_and_resumes(dataset_dir: Path, tmp_path: Path, capsys):
    cfg = _config(dataset_dir, tmp_path / "cli", max_steps=2, checkpoint_every=1)
    path = tmp_path / "cfg.yaml"
    d = cfg.to_dict()
    path.write_text(yaml.safe_dump(d), encoding="utf-8")
    assert cli_exit_code(["train", "--config", str(path)]) == 0
    assert "trained to step 2" in capsys.readouterr().err
    assert cli_exit_code(["train", "--config", str(path), "--max-steps", "3"]) == 0  # resumes at 2
    assert "trained to step 3" in capsys.readouterr().err
    ckpts = sorted(p.name for p in (tmp_path / "cli" / "checkpoints").iterdir())
    assert ckpts == ["step-000002", "step-000003"]  # keep_checkpoints = 2


def test_gradient_checkpointing_gives_the_same_step(dataset_dir: Path, tmp_path: Path):
    """Recomputing activations in the backward pass changes memory, not the numbers."""
    rows, weights = [], []
    for on in (False, True):
        t = Trainer(_config(dataset_dir, tmp_path / str(on), gradient_checkpointing=on, ema_decay=None))
        checkpointed = [m for m in t.system.net.modules() if getattr(m, "gradient_checkpointing", False)]
        assert bool(checkpointed) == on  # the attention transformers of both nets recompute
        rows.append(t.train_step()["loss"])
        weights.append({n: p.detach().clone() for n, p in t.system.net.named_parameters()})
    assert rows[0] == pytest.approx(rows[1], rel=1e-5)
    assert all(torch.allclose(weights[0][n], weights[1][n], atol=1e-6) for n in weights[0])


def test_bf16_mixed_precision_trains_on_a_cpu(dataset_dir: Path, tmp_path: Path):
    t = Trainer(_config(dataset_dir, tmp_path, mixed_precision="bf16", ema_decay=None))
    before = {n: p.detach().clone() for n, p in t.system.net.named_parameters()}
    row = t.train_step()
    assert torch.isfinite(torch.tensor(row["loss"]))
    assert all(p.dtype == torch.float32 for p in t.system.net.parameters())  # master weights stay fp32
    assert any(not torch.equal(before[n], p) for n, p in t.system.net.named_parameters())
