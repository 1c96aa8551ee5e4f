"""Hallo4 at a tiny config: flow-matching training lowers the loss on an overfit batch; Diffusion-DPO (one
implementation, train.losses) for the flow DiT and for an ε-prediction Hallo UNet: log 2 when the policy is
the reference, a hand-computed case, zero gradient when winner and loser are the same video; the DPO
stage YAML is real."""
from __future__ import annotations

import copy
import math
from pathlib import Path

import torch
import torch.nn.functional as F
from diffusers import DDIMScheduler

from talkinghead.models.hallo import HalloConfig, HalloNet
from talkinghead.train.stages import apply_stage, load_stage_config
from talkinghead.models.hallo4 import (HALLO4_TINY, HalloEpsDenoiser, Hallo4Model, eps_dpo_loss, flow_dpo_loss)
from talkinghead.train import losses as L

CONFIGS = Path(__file__).resolve().parents[2] / "configs" / "train"


def _model(seed: int = 0) -> Hallo4Model:
    torch.manual_seed(seed)
    model = Hallo4Model(**HALLO4_TINY)
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "motion_mod.attn.to_out" in name:
                p.copy_(torch.randn(p.shape, generator=g) * 0.1)
    return model


def _conditions(b: int = 1, seed: int = 0) -> dict:
    g = torch.Generator().manual_seed(seed)
    return {"text": torch.randn(b, 4, 16, generator=g), "audio_windows": torch.randn(b, 9, 3, 2, 8, generator=g),
            "keypoints": torch.rand(b, 9, 5, 2, generator=g), "motion_latents": torch.randn(b, 1, 4, 8, 8, generator=g)}


def test_flow_training_lowers_the_loss_and_conditions_matter():
    model = _model().train()
    batch = {"latents": torch.randn(2, 3, 4, 8, 8, generator=torch.Generator().manual_seed(5)), **_conditions(2)}
    with torch.no_grad():
        out = model.predict(batch["latents"], torch.tensor([300.0, 800.0]), batch)
        moved = model.predict(batch["latents"], torch.tensor([300.0, 800.0]),
                              {**batch, "keypoints": batch["keypoints"] * 0.5})
    assert out.shape == batch["latents"].shape and (moved - out).abs().max() > 1e-5
    opt = torch.optim.AdamW(model.parameters(), lr=3e-3)
    losses = []
    for _ in range(4):
        loss, logs = model.loss(batch, torch.Generator().manual_seed(0))
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(logs["loss"])
    assert losses[-1] < 0.9 * losses[0]


def _pair(seed: int = 1) -> dict:
    g = torch.Generator().manual_seed(seed)
    return {"winners": torch.randn(1, 3, 4, 8, 8, generator=g), "losers": torch.randn(1, 3, 4, 8, 8, generator=g),
            **_conditions(1, seed)}


def test_flow_dpo_is_log2_for_the_reference_and_matches_a_hand_computation():
    policy, beta = _model(), 50.0
    reference = copy.deepcopy(policy).requires_grad_(False)
    pair = _pair()
    loss, acc, margin = flow_dpo_loss(policy, reference, pair, torch.Generator().manual_seed(7), beta)
    assert abs(loss.item() - math.log(2)) < 1e-6
    assert margin.item() == 0
    with torch.no_grad():  # move the policy away from the reference
        for p in policy.transformer.proj_out.parameters():
            p.add_(0.05 * torch.randn(p.shape, generator=torch.Generator().manual_seed(2)))
    loss, _, _ = flow_dpo_loss(policy, reference, pair, torch.Generator().manual_seed(7), beta)
    # by hand: the same draws in the same order, then Wallace et al.'s formula
    g = torch.Generator().manual_seed(7)
    noise = torch.randn(pair["winners"].shape, generator=g)
    sigma = L.sample_flow_sigmas(1, g)
    cond = {k: torch.cat([v, v]) for k, v in pair.items() if k not in ("winners", "losers")}
    with torch.no_grad():
        errs = {}
        for name, model in (("model", policy), ("ref", reference)):
            for half, x0 in (("w", pair["winners"]), ("l", pair["losers"])):
                x_t = (1 - sigma) * x0 + sigma * noise
                pred = model.predict(torch.cat([x_t, x_t]), torch.cat([sigma, sigma]) * 1000, cond)[:1]
                errs[name, half] = ((pred - (noise - x0)) ** 2).mean()
    inside = -0.5 * beta * ((errs["model", "w"] - errs["ref", "w"]) - (errs["model", "l"] - errs["ref", "l"]))
    expected = -F.logsigmoid(inside)
    assert abs(loss.item() - expected.item()) < 1e-4 and abs(loss.item() - math.log(2)) > 1e-5


def _max_grad(model: torch.nn.Module) -> float:
    return max(p.grad.abs().max().item() for p in model.parameters() if p.grad is not None)


def test_flow_dpo_gives_zero_gradient_for_identical_winner_and_loser():
    policy = _model()
    reference = copy.deepcopy(policy).requires_grad_(False)
    with torch.no_grad():
        for p in policy.transformer.proj_out.parameters():
            p.mul_(1.5)
    pair = _pair()
    same = {**pair, "losers": pair["winners"].clone()}
    loss, _, _ = flow_dpo_loss(policy, reference, same, torch.Generator().manual_seed(3), 50.0)
    loss.backward()
    assert _max_grad(policy) < 1e-6
    policy.zero_grad()
    loss, _, _ = flow_dpo_loss(policy, reference, pair, torch.Generator().manual_seed(3), 50.0)
    loss.backward()
    assert _max_grad(policy) > 1e-6


TINY_UNET = {"act_fn": "silu", "attention_head_dim": 2, "block_out_channels": [32], "cross_attention_dim": 16,
             "down_block_types": ["CrossAttnDownBlock2D"], "in_channels": 4, "out_channels": 4,
             "layers_per_block": 1, "norm_num_groups": 32, "sample_size": 4,
             "up_block_types": ["CrossAttnUpBlock2D"], "flip_sin_to_cos": True, "freq_shift": 0}


def _hallo_unet(seed: int = 0) -> HalloEpsDenoiser:
    torch.manual_seed(seed)
    config = HalloConfig(
        unet=TINY_UNET,
        unet_additional_kwargs={"use_motion_module": True, "use_audio_module": True, "motion_module_resolutions": [1],
                                "motion_module_kwargs": {"num_attention_heads": 2, "norm_num_groups": 32},
                                "audio_attention_dim": 16, "stack_enable_blocks_name": [], "stack_enable_blocks_depth": []},
        image_proj={"cross_attention_dim": 16, "clip_embeddings_dim": 8, "clip_extra_context_tokens": 2},
        audio_proj={"seq_len": 3, "blocks": 2, "channels": 8, "intermediate_dim": 16, "output_dim": 16,
                    "context_tokens": 2})
    return HalloEpsDenoiser(HalloNet(config))


def _unet_pair(seed: int = 1) -> dict:
    g = torch.Generator().manual_seed(seed)
    return {"winners": torch.randn(1, 4, 2, 4, 4, generator=g), "losers": torch.randn(1, 4, 2, 4, 4, generator=g),
            "face_embedding": torch.randn(1, 8, generator=g), "audio_windows": torch.randn(1, 2, 3, 2, 8, generator=g),
            "reference_latents": torch.randn(1, 4, 4, 4, generator=g)}


def test_eps_unet_dpo_log2_at_the_reference_and_zero_gradient_for_identical_pairs():
    scheduler = DDIMScheduler(prediction_type="epsilon")
    policy = _hallo_unet()
    pair = _unet_pair()
    reference = copy.deepcopy(policy).requires_grad_(False)
    loss, acc, margin = eps_dpo_loss(policy, reference, pair, scheduler, torch.Generator().manual_seed(4), 10.0)
    assert abs(loss.item() - math.log(2)) < 1e-6 and margin.item() == 0
    with torch.no_grad():
        for p in policy.net.denoising_unet.conv_out.parameters():
            p.mul_(1.5)
    same = {**pair, "losers": pair["winners"].clone()}
    loss, _, _ = eps_dpo_loss(policy, reference, same, scheduler, torch.Generator().manual_seed(4), 10.0)
    loss.backward()
    assert _max_grad(policy) < 1e-6
    policy.zero_grad()
    loss, _, _ = eps_dpo_loss(policy, reference, pair, scheduler, torch.Generator().manual_seed(4), 10.0)
    loss.backward()
    assert _max_grad(policy) > 1e-6 and abs(loss.item() - math.log(2)) > 1e-6


def test_dpo_stage_yaml_matches_the_model_stage():
    cfg = load_stage_config(CONFIGS / "hallo4_dpo.yaml")
    assert cfg.system.name == "hallo4" and cfg.system.options["dpo_beta"] > 0 and cfg.system.options["pairs"]
    assert (cfg.train, cfg.freeze) == Hallo4Model.trainable_patterns(cfg.stage)
    names = apply_stage(_model(), cfg)
    assert names and all(n.startswith("transformer.transformer_blocks.") for n in names)
