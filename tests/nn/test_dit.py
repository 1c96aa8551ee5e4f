"""Shared DiT pieces on diffusers' CogVideoX: 3D RoPE (shape, hand case, relative-position property), frame
folding, conditioned blocks that start as the upstream model, the identity-reference processor, locality
of per-frame audio attention, and the motion-frame condition."""
from __future__ import annotations

import math

import pytest
import torch
from diffusers import CogVideoXTransformer3DModel
from diffusers.models.attention_processor import CogVideoXAttnProcessor2_0
from diffusers.models.embeddings import apply_rotary_emb

from talkinghead.systems.hallo3.model import TINY_TRANSFORMER
from talkinghead.nn.dit import (AudioCrossAttention, DiTConditions, FaceAttention, ReferenceFeatureBank,
                                ReferenceJointAttnProcessor, concat_motion_latents, conditioned_cogvideox,
                                conditions_kwargs, grid_crop_region, latent_frame_count,
                                rope_3d,
                                transformer_rope)


def _randomize(module: torch.nn.Module, seed: int = 0) -> None:
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in module.parameters():
            p.copy_(torch.randn(p.shape, generator=g) * 0.2)


# ------------------------------------------------------------------ 3D RoPE


def test_rope_shape_unit_rotations_and_hand_case():
    head_dim, frames, gh, gw = 16, 3, 4, 6
    cos, sin = rope_3d(head_dim, frames, gh, gw, base_grid=(gh, gw))  # grid = base grid: integer positions
    assert cos.shape == sin.shape == (frames * gh * gw, head_dim)
    torch.testing.assert_close(cos**2 + sin**2, torch.ones_like(cos))
    torch.testing.assert_close(cos[0], torch.ones(head_dim))  # token (0, 0, 0): no rotation
    dim_t = head_dim // 4  # time takes the first quarter, as interleaved (cos, cos) pairs
    for t in range(frames):
        row = t * gh * gw  # token (t, 0, 0)
        for i in range(dim_t // 2):
            expected = math.cos(t / 10000 ** (2 * i / dim_t))
            assert cos[row, 2 * i].item() == pytest.approx(expected, abs=1e-6)
            assert cos[row, 2 * i + 1].item() == pytest.approx(expected, abs=1e-6)
        torch.testing.assert_close(cos[row, dim_t:], torch.ones(head_dim - dim_t))  # h = w = 0


def test_rope_scores_depend_only_on_relative_time():
    head_dim, frames, gh, gw = 16, 4, 2, 2
    rope = rope_3d(head_dim, frames, gh, gw, base_grid=(gh, gw))
    g = torch.Generator().manual_seed(0)
    q, k = torch.randn(1, 1, 1, head_dim, generator=g), torch.randn(1, 1, 1, head_dim, generator=g)
    n = frames * gh * gw
    qr = apply_rotary_emb(q.expand(1, 1, n, head_dim), rope)[0, 0]
    kr = apply_rotary_emb(k.expand(1, 1, n, head_dim), rope)[0, 0]
    hw = gh * gw
    score = lambda a, b: (qr[a * hw] * kr[b * hw]).sum()  # noqa: E731 - tokens (a, 0, 0) and (b, 0, 0)
    torch.testing.assert_close(score(1, 0), score(2, 1))
    torch.testing.assert_close(score(3, 1), score(2, 0))
    assert not torch.allclose(score(1, 0), score(2, 0))


def test_transformer_rope_follows_the_model_config():
    model = CogVideoXTransformer3DModel(**TINY_TRANSFORMER)
    cos, _ = transformer_rope(model, 3, 8, 8)
    assert cos.shape == (3 * 4 * 4, TINY_TRANSFORMER["attention_head_dim"])
    sincos = CogVideoXTransformer3DModel(**{**TINY_TRANSFORMER, "use_rotary_positional_embeddings": False})
    assert transformer_rope(sincos, 3, 8, 8) is None


# ------------------------------------------------------------------ frames -> latent frames


def test_latent_frame_count():
    assert [latent_frame_count(t) for t in (1, 5, 9, 49)] == [1, 2, 3, 13]


# ------------------------------------------------------------------ conditioned CogVideoX


def _tiny_denoiser(seed: int = 0):
    torch.manual_seed(seed)
    dim = TINY_TRANSFORMER["num_attention_heads"] * TINY_TRANSFORMER["attention_head_dim"]
    return conditioned_cogvideox(dict(TINY_TRANSFORMER), lambda i: {
        "face_attn": FaceAttention(dim, 16, 2, 16), "audio_attn": AudioCrossAttention(dim, 16, 2, 16)})


def test_conditioned_blocks_start_as_the_upstream_model():
    ours = _tiny_denoiser()
    upstream = CogVideoXTransformer3DModel(**TINY_TRANSFORMER)
    _randomize(upstream)
    result = ours.load_state_dict(upstream.state_dict(), strict=False)
    assert not result.unexpected_keys
    assert result.missing_keys and all(".cross_layers." in k for k in result.missing_keys)
    assert ours.config.num_layers == TINY_TRANSFORMER["num_layers"] == len(ours.transformer_blocks)
    g = torch.Generator().manual_seed(1)
    x, text = torch.randn(2, 3, 8, 8, 8, generator=g), torch.randn(2, 4, 16, generator=g)
    rope = transformer_rope(upstream, 3, 8, 8)
    cond = DiTConditions(3, {"face": torch.randn(2, 2, 16, generator=g), "audio": torch.randn(2, 3, 4, 16, generator=g)})
    with torch.no_grad():
        want = upstream(x, text, torch.tensor([10, 500]), image_rotary_emb=rope, return_dict=False)[0]
        got = ours(x, text, torch.tensor([10, 500]), image_rotary_emb=rope, attention_kwargs=conditions_kwargs(cond),
                   return_dict=False)[0]
    assert want.shape == (2, 3, 4, 8, 8)
    torch.testing.assert_close(got, want)  # zero-initialised cross layers: identity
    _randomize(ours.transformer_blocks[0].cross_layers)
    with torch.no_grad():
        moved = ours(x, text, torch.tensor([10, 500]), image_rotary_emb=rope,
                     attention_kwargs=conditions_kwargs(cond), return_dict=False)[0]
    assert (moved - want).abs().max() > 1e-3


def test_face_attention_reads_its_condition_and_is_identity_without_it():
    layer = FaceAttention(32, 16, 2, 16)
    x = torch.randn(2, 12, 32)
    torch.testing.assert_close(layer(x, None), x)
    torch.testing.assert_close(layer(x, DiTConditions(3, {"face": torch.randn(2, 3, 16)})), x)  # zero output
    _randomize(layer)
    assert not torch.allclose(layer(x, DiTConditions(3, {"face": torch.randn(2, 3, 16)})), x)
    torch.testing.assert_close(layer(x, DiTConditions(3, {})), x)


def test_audio_attention_is_local_to_each_latent_frame():
    layer = AudioCrossAttention(32, 16, 2, 16)
    _randomize(layer)
    frames, tokens_per_frame = 3, 4
    x = torch.randn(1, frames * tokens_per_frame, 32)
    audio = torch.randn(1, frames, 2, 16)
    other = audio.clone()
    other[:, 1] += 1.0  # change latent frame 1's audio only
    a, b = layer(x, DiTConditions(frames, {"audio": audio})), layer(x, DiTConditions(frames, {"audio": other}))
    per_frame = (a - b).abs().view(frames, tokens_per_frame, 32).amax(dim=(1, 2))
    assert per_frame[0] == 0 and per_frame[2] == 0 and per_frame[1] > 1e-4


# ------------------------------------------------------------------ identity reference processor


def test_reference_processor_without_features_equals_cogvideox_attention():
    denoiser = _tiny_denoiser()
    _randomize(denoiser)
    attn = denoiser.transformer_blocks[0].attn1
    g = torch.Generator().manual_seed(2)
    video, text = torch.randn(2, 3 * 16, 32, generator=g), torch.randn(2, 4, 32, generator=g)
    rope = rope_3d(16, 3, 4, 4, base_grid=(4, 4))
    bank = ReferenceFeatureBank()
    ours = ReferenceJointAttnProcessor(bank, 0)(attn, video, text, image_rotary_emb=rope)
    upstream = CogVideoXAttnProcessor2_0()(attn, video, text, image_rotary_emb=rope)
    torch.testing.assert_close(ours[0], upstream[0])
    torch.testing.assert_close(ours[1], upstream[1])
    ref = torch.randn(1, 16, 32, generator=g, requires_grad=True)  # one frame of reference tokens, tiled to 2 rows
    bank.features[0] = ref
    joined = ReferenceJointAttnProcessor(bank, 0)(attn, video, text, image_rotary_emb=rope)
    assert joined[0].shape == video.shape and joined[1].shape == text.shape
    assert (joined[0] - upstream[0]).abs().max() > 1e-4
    joined[0].sum().backward()
    assert ref.grad is not None and ref.grad.abs().sum() > 0


def test_bank_tiles_to_the_denoiser_batch_and_refuses_mismatches():
    bank = ReferenceFeatureBank()
    bank.features[3] = torch.arange(2.0).view(2, 1, 1)
    assert bank.read(3, 4).flatten().tolist() == [0, 1, 0, 1]
    assert bank.read(0, 4) is None
    with pytest.raises(ValueError):
        bank.read(3, 3)


# ------------------------------------------------------------------ motion frames


def test_concat_motion_latents_puts_motion_first_then_zeros():
    noisy = torch.randn(2, 4, 3, 2, 2)
    motion = torch.randn(2, 2, 3, 2, 2)
    x = concat_motion_latents(noisy, motion)
    assert x.shape == (2, 4, 6, 2, 2)
    torch.testing.assert_close(x[:, :, :3], noisy)
    torch.testing.assert_close(x[:, :2, 3:], motion)
    assert x[:, 2:, 3:].abs().sum() == 0
    assert concat_motion_latents(noisy, None)[:, :, 3:].abs().sum() == 0
    with pytest.raises(ValueError):
        concat_motion_latents(noisy, torch.randn(2, 5, 3, 2, 2))


def test_grid_crop_region_matches_cogvideox_pipeline():
    from diffusers.pipelines.cogvideo.pipeline_cogvideox import get_resize_crop_region_for_grid

    for grid in ((30, 45), (4, 4), (60, 20), (8, 30)):
        assert grid_crop_region(*grid, (30, 45)) == get_resize_crop_region_for_grid(grid, 45, 30)
