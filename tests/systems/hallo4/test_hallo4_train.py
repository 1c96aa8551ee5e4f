"""Hallo4's training on the released architecture (Hallo4WanModel): the SFT flow objective is the hand-computed
velocity MSE on frames 1.. with the reference latent kept clean in frame 0, and lowers on an overfit batch;
Diffusion-DPO is log 2 at the reference, matches a hand computation and gives no gradient for identical
videos; the DPO stage trains only the DiT blocks; the skeleton stand-in draws the landmarks; and what
`talkinghead train` writes converts to the official checkpoint names and loads through the release loader."""
from __future__ import annotations

import copy
import json
import math

import torch
import torch.nn.functional as F
from safetensors.torch import load_file

from talkinghead.systems.hallo4.model import HALLO4_TINY, Hallo4WanModel
from talkinghead.systems.hallo4.release import CHECKPOINT, CONFIG, load_dit, ours_to_official
from talkinghead.train import losses as L
from talkinghead.train.smoke import smoke_train
from talkinghead.systems.hallo4.train import draw_skeleton, hallo4_dpo_loss, hallo4_flow_loss, keypoint_indices
from talkinghead.train.trainer import TrainConfig
from talkinghead.utils import select_trainable
from tests.support import CONFIGS

FRAMES = 5  # video frames: 1 + 2 latent frames after the reference latent


def _model(seed: int = 0) -> Hallo4WanModel:
    torch.manual_seed(seed)
    return Hallo4WanModel(**HALLO4_TINY, attention_bf16=False)


def _conditions(b: int = 1, seed: int = 0) -> dict:
    g = torch.Generator().manual_seed(seed)
    a = HALLO4_TINY["audio"]
    return {"context": torch.randn(b, 3, 4096, generator=g), "vace_context": torch.randn(b, 96, 3, 4, 4, generator=g),
            "skeleton_latents": torch.randn(b, 16, FRAMES, 4, 4, generator=g),
            "audio_windows": torch.randn(b, FRAMES, a["seq_len"], a["blocks"], a["channels"], generator=g)}


def _args(inputs: dict) -> list[torch.Tensor]:
    return [inputs[k] for k in ("context", "vace_context", "skeleton_latents", "audio_windows")]


def test_flow_objective_by_hand_and_it_lowers_on_an_overfit_batch():
    model = _model()
    inputs = {"latents": torch.randn(2, 16, 3, 4, 4, generator=torch.Generator().manual_seed(5)), **_conditions(2)}
    loss, logs = hallo4_flow_loss(model, inputs, torch.Generator().manual_seed(9))
    g = torch.Generator().manual_seed(9)  # the same draws in the same order
    x0 = inputs["latents"]
    noise = torch.randn(x0.shape, generator=g)
    sigma = L.sample_flow_sigmas(2, g)
    s = sigma.view(-1, 1, 1, 1, 1)
    x_t = (1 - s) * x0 + s * noise
    x_t[:, :, 0] = x0[:, :, 0]  # the reference latent stays clean
    with torch.no_grad():
        pred = model(x_t, 1000 * sigma, *_args(inputs))
        moved = model(x_t, 1000 * sigma, *_args({**inputs, "skeleton_latents": inputs["skeleton_latents"] * 0.5}))
    expected = F.mse_loss(pred[:, :, 1:], (noise - x0)[:, :, 1:])
    assert abs(loss.item() - expected.item()) < 1e-6 and logs["loss"] == loss.item()
    assert (moved - pred).abs().max() > 1e-5  # the pose condition reaches the output
    opt = torch.optim.AdamW(model.parameters(), lr=3e-3)
    losses = []
    for _ in range(5):
        loss, logs = hallo4_flow_loss(model, inputs, torch.Generator().manual_seed(0))
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(logs["loss"])
    assert losses[-1] < 0.9 * losses[0]


def _pair(seed: int = 1) -> dict:
    g = torch.Generator().manual_seed(seed)
    ref = torch.randn(1, 16, 1, 4, 4, generator=g)
    return {"winners": torch.cat([ref, torch.randn(1, 16, 2, 4, 4, generator=g)], dim=2),
            "losers": torch.cat([ref, torch.randn(1, 16, 2, 4, 4, generator=g)], dim=2), **_conditions(1, seed)}


def test_dpo_is_log2_for_the_reference_and_matches_a_hand_computation():
    policy, beta = _model(), 50.0
    reference = copy.deepcopy(policy).requires_grad_(False)
    pair = _pair()
    loss, _, margin = hallo4_dpo_loss(policy, reference, pair, torch.Generator().manual_seed(7), beta)
    assert abs(loss.item() - math.log(2)) < 1e-6 and margin.item() == 0
    with torch.no_grad():  # move the policy away from the reference
        for p in policy.proj_out.parameters():
            p.add_(0.05 * torch.randn(p.shape, generator=torch.Generator().manual_seed(2)))
    loss, _, _ = hallo4_dpo_loss(policy, reference, pair, torch.Generator().manual_seed(7), beta)
    g = torch.Generator().manual_seed(7)
    noise = torch.randn(pair["winners"].shape, generator=g)
    sigma = L.sample_flow_sigmas(1, g)
    errs = {}
    with torch.no_grad():
        for name, model in (("model", policy), ("ref", reference)):
            for half in ("winners", "losers"):
                x0 = pair[half]
                x_t = (1 - sigma) * x0 + sigma * noise
                x_t[:, :, 0] = x0[:, :, 0]
                pred = model(x_t, 1000 * sigma, *_args(pair))
                errs[name, half] = ((pred - (noise - x0))[:, :, 1:] ** 2).mean()
    inside = -0.5 * beta * ((errs["model", "winners"] - errs["ref", "winners"])
                            - (errs["model", "losers"] - errs["ref", "losers"]))
    assert abs(loss.item() + F.logsigmoid(inside).item()) < 1e-4 and abs(loss.item() - math.log(2)) > 1e-5


def _max_grad(model: torch.nn.Module) -> float:
    return max(p.grad.abs().max().item() for p in model.parameters() if p.grad is not None)


def test_dpo_gives_zero_gradient_for_identical_winner_and_loser():
    policy = _model()
    reference = copy.deepcopy(policy).requires_grad_(False)
    with torch.no_grad():
        for p in policy.proj_out.parameters():
            p.mul_(1.5)
    pair = _pair()
    loss, _, _ = hallo4_dpo_loss(policy, reference, {**pair, "losers": pair["winners"].clone()},
                                 torch.Generator().manual_seed(3), 50.0)
    loss.backward()
    assert _max_grad(policy) < 1e-6
    policy.zero_grad()
    loss, _, _ = hallo4_dpo_loss(policy, reference, pair, torch.Generator().manual_seed(3), 50.0)
    loss.backward()
    assert _max_grad(policy) > 1e-6


def test_dpo_stage_trains_the_dit_blocks_only():
    cfg = TrainConfig.from_yaml(CONFIGS / "hallo4_dpo.yaml")
    assert cfg.system.name == "hallo4" and cfg.system.options["dpo_beta"] > 0 and cfg.system.options["pairs"]
    names = select_trainable(_model(), cfg.train, cfg.freeze)
    assert names and all(n.startswith("blocks.") for n in names)


def test_skeleton_draws_the_landmarks_as_dots_on_black():
    landmarks = torch.full((2, 478, 3), 20.0)
    landmarks[1, keypoint_indices(68), :2] = torch.tensor([5.0, 9.0])  # frame 1: every drawn point at x 5, y 9
    video = draw_skeleton(landmarks, 32)
    assert video.shape == (3, 2, 32, 32)
    assert video[:, 0, 20, 20].eq(1).all() and video[:, 1, 9, 5].eq(1).all()
    assert video[:, 1, 20, 20].eq(-1).all() and video[:, 0, 9, 5].eq(-1).all() and video.eq(-1).float().mean() > 0.9


def test_a_trained_checkpoint_loads_through_the_release_loader(tmp_path):
    trainer = smoke_train(TrainConfig.from_yaml(CONFIGS / "hallo4_sft.yaml"), tmp_path)
    net = trainer.system.net
    assert type(net) is Hallo4WanModel
    assert (trainer.out / "samples" / "step-000002.png").is_file()  # the sample grid, through the engine's sampler
    batch = trainer.batch([0])
    made = [trainer.system.sample(batch, torch.Generator().manual_seed(seed), 1) for seed in (1, 1, 2)]
    assert made[0].shape == batch["frames"].shape and torch.equal(made[0], made[1])
    assert not torch.equal(made[0], made[2])
    state = load_file(trainer.latest_checkpoint() / "model" / "diffusion_pytorch_model.safetensors")
    root = tmp_path / "pretrained_models"
    (root / CHECKPOINT).parent.mkdir(parents=True)
    (root / CONFIG).parent.mkdir(parents=True)
    torch.save(ours_to_official(state), root / CHECKPOINT)
    c = net.config
    (root / CONFIG).write_text(json.dumps({k: c[k] for k in ("dim", "ffn_dim", "num_heads", "num_layers", "freq_dim",
                                                             "text_len", "in_dim", "out_dim", "eps", "vace_in_dim",
                                                             "vace_layers")}))
    release = load_dit(root, audio=c.audio, attention_bf16=False)  # strict: every key, every shape
    inputs = _conditions(1, 4)
    x = torch.randn(1, 16, 3, 4, 4, generator=torch.Generator().manual_seed(6))
    with torch.no_grad():
        assert torch.equal(release(x, torch.tensor([500]), *_args(inputs)), net(x, torch.tensor([500]), *_args(inputs)))


def test_sft_starts_from_an_official_release(hallo4_release, tmp_path):
    from dataclasses import replace

    from talkinghead.train.smoke import smoke_config
    from talkinghead.systems.hallo4.train import Hallo4System
    from talkinghead.train.trainer import train

    cfg = smoke_config(TrainConfig.from_yaml(CONFIGS / "hallo4_sft.yaml"), tmp_path)
    cfg = replace(cfg, max_steps=1, system=replace(cfg.system, options={**cfg.system.options,
                                                                        "release": str(hallo4_release.parent)}))
    system = Hallo4System(cfg)
    settings = json.loads((hallo4_release / "hallo4" / "inference.json").read_text())
    official = load_dit(hallo4_release, audio=settings["audio_proj"]).state_dict()
    ours = system.net.state_dict()
    assert ours.keys() == official.keys() and all(torch.equal(ours[k], official[k]) for k in ours)
    assert system.vae.config.base_dim == settings["vae_dim"]
    trainer = train(cfg, resume=False)
    assert trainer.step == 1 and math.isfinite(trainer.history[0]["loss"])


def test_the_model_round_trips_through_save_pretrained(tmp_path):
    model = _model(3)
    model.save_pretrained(tmp_path)
    again = Hallo4WanModel.from_pretrained(tmp_path)
    assert again.config.attention_bf16 is False and again.config.audio == HALLO4_TINY["audio"]
    a, b = model.state_dict(), again.state_dict()
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
