"""MIDAS conditions and frame-causal AR transformer: the mask, causality, KV-cached steps equal one pass,
and a few optimiser steps on one batch lower the loss."""
from __future__ import annotations

import pytest
import torch

from talkinghead.systems.midas.model import (
                                             PREFIX_SLOT,
                                             KVCache,
                                             MidasConfig,
                                             MidasTransformer,
                                             frame_causal_mask,
                                             )
from talkinghead.systems.midas.train import teacher_forced_loss

CHUNKS = 3


def _model(**overrides) -> MidasTransformer:
    torch.manual_seed(0)
    model = MidasTransformer(MidasConfig.tiny(**overrides)).eval()
    g = torch.Generator().manual_seed(0)
    with torch.no_grad():  # the head's zero-initialised layers get weights so its output depends on z
        for p in model.parameters():
            if not p.any():
                p.copy_(0.1 * torch.randn(p.shape, generator=g))
    return model


def _batch(config: MidasConfig, chunks: int = CHUNKS, seed: int = 1) -> dict:
    g = torch.Generator().manual_seed(seed)
    f = chunks * config.chunk_frames
    return {"reference": torch.randn(1, config.latent_channels, *config.latent_size, generator=g),
            "frames": torch.randn(1, f, config.latent_channels, *config.latent_size, generator=g),
            "audio": torch.randn(1, chunks * config.audio_features_per_chunk, config.audio.feature_dim, generator=g),
            "pose": torch.randn(1, f, config.pose_joints, 3, generator=g),
            "text": torch.randn(1, config.text_tokens, config.text_dim, generator=g)}


def _frame_conditions(model: MidasTransformer, batch: dict) -> torch.Tensor:
    cond = model.conditions(batch["audio"], batch["pose"], batch["text"]).tokens
    prefixes = model.prefixes(cond, batch["reference"])
    inputs = torch.cat([batch["reference"][:, None], batch["frames"][:, :-1]], dim=1)
    return model.frame_conditions(prefixes, inputs)  # (b, g, L, dim)


def _mask(chunk: list[int], slot: list[int], window: int) -> torch.Tensor:
    c, s = torch.tensor(chunk), torch.tensor(slot)
    return frame_causal_mask(c, s, c, s, window).int()


def test_mask_matches_a_hand_drawn_chunk_pair():
    # two chunks of [prefix, prefix, frame 1, frame 2], one token per frame
    drawn = torch.tensor([
        [1, 1, 0, 0, 0, 0, 0, 0],  # prefix sees its chunk's prefix (all its conditions + the reference)
        [1, 1, 0, 0, 0, 0, 0, 0],
        [1, 1, 1, 0, 0, 0, 0, 0],  # frame 1: prefix + itself
        [1, 1, 1, 1, 0, 0, 0, 0],  # frame 2: prefix + frame 1 + itself
        [1, 1, 1, 1, 1, 1, 0, 0],  # next chunk: the whole previous chunk, then the same pattern
        [1, 1, 1, 1, 1, 1, 0, 0],
        [1, 1, 1, 1, 1, 1, 1, 0],
        [1, 1, 1, 1, 1, 1, 1, 1]])
    assert torch.equal(_mask([0, 0, 0, 0, 1, 1, 1, 1], [0, 0, 1, 2, 0, 0, 1, 2], window=1), drawn)


def test_mask_forgets_chunks_outside_the_window():
    drawn = torch.tensor([  # three chunks of [prefix, frame], window of one chunk
        [1, 0, 0, 0, 0, 0],
        [1, 1, 0, 0, 0, 0],
        [1, 1, 1, 0, 0, 0],
        [1, 1, 1, 1, 0, 0],
        [0, 0, 1, 1, 1, 0],
        [0, 0, 1, 1, 1, 1]])
    assert torch.equal(_mask([0, 0, 1, 1, 2, 2], [0, 1, 0, 1, 0, 1], window=1), drawn)


def test_sequence_layout_and_token_counts():
    model = _model()
    c = model.config
    assert c.condition_tokens == 3 * 1 + 3 * 2 + 4 and c.prefix_tokens == c.condition_tokens + 4
    full = MidasConfig()
    assert full.condition_tokens == 6 + 60 + 256 and full.chunk_frames == 6
    batch = _batch(c, chunks=2)
    cond = model.conditions(batch["audio"], batch["pose"], batch["text"])
    assert cond.tokens.shape == (1, 2, c.condition_tokens, c.dim)
    inputs = torch.cat([batch["reference"][:, None], batch["frames"][:, :-1]], dim=1)
    tokens, chunk, slot, is_frame = model.sequence(model.prefixes(cond.tokens, batch["reference"]), inputs)
    assert tokens.shape == (1, 2 * c.chunk_tokens, c.dim)
    one = [PREFIX_SLOT] * c.prefix_tokens + [j for j in range(1, c.chunk_frames + 1) for _ in range(c.frame_tokens)]
    assert slot.tolist() == one + one and chunk.tolist() == [0] * c.chunk_tokens + [1] * c.chunk_tokens
    assert int(is_frame.sum()) == 2 * c.chunk_frames * c.frame_tokens


def test_pose_enters_as_velocities():
    model = _model()
    batch = _batch(model.config)
    moved = batch["pose"] + torch.tensor([3.0, -1.0, 0.5])  # the same motion, elsewhere
    a = model.conditions(batch["audio"], batch["pose"]).tokens
    b = model.conditions(batch["audio"], moved).tokens
    assert torch.allclose(a, b, atol=1e-5)


def test_future_conditions_and_frames_change_nothing_earlier():
    model = _model()
    c = model.config
    batch = _batch(c)
    with torch.no_grad():
        base = _frame_conditions(model, batch)
        later_audio = dict(batch, audio=batch["audio"].clone())
        later_audio["audio"][:, 2 * c.audio_features_per_chunk:] = torch.randn(1, c.audio_features_per_chunk, 12)
        out = _frame_conditions(model, later_audio)
        assert torch.equal(out[:, :2 * c.chunk_frames], base[:, :2 * c.chunk_frames])
        assert not torch.allclose(out[:, 2 * c.chunk_frames:], base[:, 2 * c.chunk_frames:])
        later_frames = dict(batch, frames=batch["frames"].clone())
        later_frames["frames"][:, 4:] += 1.0  # frames 4.. feed slots 5..
        out = _frame_conditions(model, later_frames)
        assert torch.equal(out[:, :5], base[:, :5]) and not torch.allclose(out[:, 5:], base[:, 5:])
        # a chunk's conditions are seen by all its frames: the last frame's audio reaches the first frame
        last_audio = dict(batch, audio=batch["audio"].clone())
        last_audio["audio"][:, c.audio_features_per_chunk - 4:c.audio_features_per_chunk] = torch.randn(1, 4, 12)
        out = _frame_conditions(model, last_audio)
        assert not torch.allclose(out[:, 0], base[:, 0])


def test_kv_cached_steps_equal_one_pass():
    model = _model()  # window of one chunk: the cache must drop chunk 0 before chunk 2
    c = model.config
    batch = _batch(c)
    with torch.no_grad():
        base = _frame_conditions(model, batch)
        cond = model.conditions(batch["audio"], batch["pose"], batch["text"]).tokens
        cache, outs = KVCache(c.layers), []
        inputs = torch.cat([batch["reference"][:, None], batch["frames"][:, :-1]], dim=1)
        for k in range(CHUNKS):
            cache.trim(k - c.window_chunks)
            model.run(model.prefix(cond[:, k], batch["reference"]), torch.full((c.prefix_tokens,), k),
                      torch.zeros(c.prefix_tokens, dtype=torch.long), cache)
            for j in range(1, c.chunk_frames + 1):
                g = k * c.chunk_frames + j - 1
                outs.append(model.run(model.frame_inputs(inputs[:, g:g + 1], j), torch.full((c.frame_tokens,), k),
                                      torch.full((c.frame_tokens,), j), cache))
            assert len(cache) <= (c.window_chunks + 1) * c.chunk_tokens
    assert torch.allclose(torch.stack(outs, dim=1), base, atol=1e-5)


def test_config_checks():
    with pytest.raises(ValueError, match="heads"):
        MidasConfig.tiny(dim=30)
    with pytest.raises(ValueError, match="cond_dim"):
        MidasConfig.tiny(dim=64)


def test_training_steps_lower_the_loss():
    torch.manual_seed(0)
    model = MidasTransformer(MidasConfig.tiny(input_noise_max=0.3)).train()  # noisy teacher-forced inputs
    batch = _batch(model.config, chunks=2)
    opt = torch.optim.Adam(model.parameters(), lr=2e-3)
    losses = []
    for _ in range(30):
        loss, parts = teacher_forced_loss(model, batch, torch.Generator().manual_seed(0))  # the same noise each step
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert set(parts) == {"diffusion", "vq"}
    assert losses[-1] < 0.6 * losses[0], losses


def test_exposure_bias_noise_on_frame_inputs():
    model = _model()
    c = model.config
    x = torch.randn(2, 3, c.latent_channels, *c.latent_size, generator=torch.Generator().manual_seed(4))
    levels = torch.tensor([[0.0, 0.5, 1.0], [0.0, 0.0, 0.0]])
    a = model.noised(x, levels, torch.Generator().manual_seed(5))
    b = model.noised(x, levels, torch.Generator().manual_seed(5))
    assert torch.equal(a, b) and torch.equal(a[1], x[1]) and torch.equal(a[0, 0], x[0, 0])
    pure = torch.randn(x.shape, generator=torch.Generator().manual_seed(5))
    assert torch.allclose(a[0, 2], pure[0, 2]) and torch.allclose(a[0, 1], 0.5 * x[0, 1] + 0.5 * pure[0, 1])
    clean = model.frame_inputs(x[:1], 1, torch.zeros(1, 3))
    told = model.frame_inputs(x[:1], 1, torch.full((1, 3), 0.5))  # the model is told how noisy its inputs are
    assert not torch.allclose(clean, told)
