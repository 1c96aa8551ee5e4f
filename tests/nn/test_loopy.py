import pytest
import torch

from talkinghead.nn.loopy import (
    AudioToLatents,
    AudioToLatentsConfig,
    ClipTemporalAttention,
    LoopyTemporalModule,
    TemporalSegmentModule,
    temporal_segment_indices,
)


def gen(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def fit(params, loss_fn, steps: int = 30, lr: float = 1e-2) -> list[float]:
    opt = torch.optim.Adam(params, lr=lr)
    losses = []
    for _ in range(steps):
        loss = loss_fn()
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    return losses


# ---- temporal segment module ----


def test_segment_sampling_hand_case_stride4_expand2():
    # 20 motion frames, 19 the newest: segments of 4, 8 and (truncated) 16 frames going back in time
    assert temporal_segment_indices(20, stride=4, expand=2) == [3, 7, 9, 11, 13, 15, 16, 17, 18, 19]
    # a full third segment: 28 frames -> 4 frames each from segments of 4, 8, 16 frames
    assert temporal_segment_indices(28, 4, 2) == [3, 7, 11, 15, 17, 19, 21, 23, 24, 25, 26, 27]


def test_segment_sampling_edge_cases():
    assert temporal_segment_indices(0, 4, 2) == []
    assert temporal_segment_indices(3, 4, 2) == [0, 1, 2]  # shorter than one segment: keep everything
    assert temporal_segment_indices(5, 4, 2) == [0, 1, 2, 3, 4]  # the 1-frame second segment still gives one
    assert temporal_segment_indices(9, 3, 1) == list(range(9))  # no expansion: every frame
    indices = temporal_segment_indices(124, 4, 2)  # 4 + 8 + 16 + 32 + 64 frames -> 20 abstract frames
    assert len(indices) == 20 and indices[0] == 15 and indices[-1] == 123
    with pytest.raises(ValueError):
        temporal_segment_indices(10, 0, 2)


def test_segment_module_gathers_frames_along_time():
    motion = torch.arange(20.0).view(1, 20, 1, 1, 1).expand(2, 20, 4, 3, 3)  # (b, m, c, h, w), value = frame
    abstract = TemporalSegmentModule(stride=4, expand=2)(motion)
    assert abstract.shape == (2, 10, 4, 3, 3)
    assert abstract[1, :, 2, 1, 1].tolist() == [3, 7, 9, 11, 13, 15, 16, 17, 18, 19]


# ---- inter / intra-clip temporal layers ----


def randomized(module: torch.nn.Module, seed: int = 0) -> torch.nn.Module:
    for p in module.parameters():
        torch.nn.init.normal_(p, std=0.3, generator=gen(seed))
    return module


def test_temporal_layers_are_identity_at_init():
    torch.manual_seed(0)
    x, motion = torch.randn(2, 4, 6, 16), torch.randn(2, 3, 6, 16)
    assert torch.equal(ClipTemporalAttention(16, 2, 8, max_frames=8)(x, motion), x)
    assert torch.equal(ClipTemporalAttention(16, 2, 8, max_frames=8)(x), x)
    assert torch.equal(LoopyTemporalModule(16, 2, 8, max_motion_frames=4, max_frames=4)(x, motion), x)


def test_inter_clip_layer_reads_motion_frames_and_keeps_positions_apart():
    torch.manual_seed(0)
    layer = randomized(ClipTemporalAttention(16, 2, 8, max_frames=8))
    x, motion = torch.randn(2, 4, 6, 16), torch.randn(2, 3, 6, 16)
    out = layer(x, motion)
    assert out.shape == x.shape

    other = motion.clone()
    other[:, :, 2] = torch.randn(2, 3, 16, generator=gen(1))  # other motion at spatial position 2 only
    diff = (layer(x, other) - out).abs().amax(dim=(0, 1, 3))  # per position
    assert diff[2] > 1e-3 and torch.count_nonzero(diff) == 1  # attention runs along time at each position

    assert not torch.allclose(layer(x), out)  # intra-clip use: the same layer without motion frames
    with pytest.raises(ValueError):
        layer(x, torch.randn(2, 5, 6, 16))  # 5 + 4 frames > max_frames


def test_temporal_module_learns_to_copy_the_last_motion_frame():
    torch.manual_seed(0)
    module = LoopyTemporalModule(16, 2, 8, max_motion_frames=4, max_frames=4)
    x, motion = torch.randn(4, 4, 3, 16), torch.randn(4, 3, 3, 16)
    target = x + motion[:, -1:]  # continuity with the previous clip
    losses = fit(module.parameters(), lambda: (module(x, motion) - target).pow(2).mean())
    assert losses[-1] < 0.5 * losses[0]


# ---- audio-to-latents ----


def a2l_inputs(b=3, f=5, seed=0):
    g = gen(seed)
    return (
        torch.randn(b, 32, generator=g),  # temb
        torch.randn(b, f, 12, generator=g),  # audio
        torch.rand(b, f, 1, generator=g),  # head-motion variance
        torch.rand(b, f, 2, generator=g),  # expression variance
    )


def a2l(**overrides) -> AudioToLatents:
    torch.manual_seed(0)
    config = AudioToLatentsConfig(audio_dim=12, expression_dim=2, num_latents=16, dim=16, heads=2, time_embed_dim=32)
    return AudioToLatents(AudioToLatentsConfig(**{**config.__dict__, **overrides}))


def test_audio_to_latents_shape_and_identity_at_init():
    m = a2l().eval()
    temb, audio, _, _ = a2l_inputs()
    out = m(temb, audio)
    assert out.shape == (3, 5, 32)
    assert torch.equal(out, temb[:, None].expand(-1, 5, -1))  # zero-initialised expansion
    assert a2l().latents.shape == (16, 16) and AudioToLatents().latents.shape == (128, 256)


def test_inference_uses_audio_alone():
    m = randomized(a2l()).eval()
    temb, audio, head, expression = a2l_inputs()
    out = m(temb, audio)
    assert torch.equal(m(temb, audio, head, expression), out)
    assert not torch.allclose(m(temb, audio + 1.0), out)


def test_training_picks_one_condition_per_sample_with_equal_odds():
    m = randomized(a2l()).train()
    temb, audio, head, expression = a2l_inputs(b=300, f=2)
    choice = torch.randint(3, (300,), generator=gen(3))  # the draw the module makes from the same generator
    assert set(torch.bincount(choice, minlength=3).tolist()) <= set(range(80, 121))

    out = m(temb, audio, head, expression, gen(3))
    assert torch.equal(out, m(temb, audio, head, expression, gen(3)))  # fixed generator: deterministic
    moved = {
        0: m(temb, audio + 1.0, head, expression, gen(3)),
        1: m(temb, audio, head + 1.0, expression, gen(3)),
        2: m(temb, audio, head, expression + 1.0, gen(3)),
    }
    for condition, changed in moved.items():
        affected = (changed - out).abs().amax(dim=(1, 2)) > 0  # (b,)
        assert torch.equal(affected, choice == condition)

    with pytest.raises(ValueError):
        m(temb, audio)  # training needs all three conditions


def test_audio_to_latents_learns_audio_driven_motion():
    m = a2l().train()
    temb, audio, head, expression = a2l_inputs(b=4, f=5)
    target = temb[:, None] + audio[..., :1]  # the timestep embedding shifted by a per-frame audio feature

    def loss():
        # training chooses among conditions; here all three carry the same per-frame signal
        signal = audio[..., :1]
        return (m(temb, audio, signal, signal.expand(-1, -1, 2), gen(0)) - target).pow(2).mean()

    losses = fit(m.parameters(), loss, steps=40)
    assert losses[-1] < 0.5 * losses[0]
    m.eval()
    assert (m(temb, audio) - target).pow(2).mean() < losses[0]
