import math

import pytest
import torch

from talkinghead.nn.speed import (
    SpeedAttention,
    SpeedConfig,
    SpeedEmbedding,
    add_speed_to_timestep,
    encode_speed,
    head_speed,
    rotation_matrices,
    speed_bucket_index,
)


def test_rotation_matrices_are_rotations():
    angles = torch.tensor([[0.0, 0.0, 0.0], [30.0, -20.0, 10.0], [-90.0, 45.0, 180.0]])
    r = rotation_matrices(angles)
    assert r.shape == (3, 3, 3)
    assert torch.allclose(r[0], torch.eye(3))
    assert torch.allclose(r @ r.transpose(-1, -2), torch.eye(3).expand(3, 3, 3), atol=1e-6)
    assert torch.allclose(torch.linalg.det(r), torch.ones(3), atol=1e-6)


def test_head_speed_single_axis_steps():
    yaw_ramp = torch.tensor([[0.0, 0, 0], [2, 0, 0], [4, 0, 0], [7, 0, 0]])
    assert torch.allclose(head_speed(yaw_ramp), torch.tensor([2.0, 2, 2, 3]), atol=1e-3)
    assert torch.allclose(head_speed(yaw_ramp, fps=25), torch.tensor([50.0, 50, 50, 75]), atol=0.05)

    creep = torch.tensor([[0.0, 0, 0], [0, 0.05, 0], [0, 0.1, 0]])  # slow nod: float32 acos would lose it
    assert torch.allclose(head_speed(creep), torch.full((3,), 0.05), atol=1e-4)

    # a step in any one angle is a rotation by that step, whatever the other angles hold
    for axis in range(3):
        start = torch.tensor([30.0, -15.0, 8.0])
        end = start.clone()
        end[axis] += 10.0
        assert head_speed(torch.stack([start, end]))[1].item() == pytest.approx(10.0, abs=1e-2)


def test_head_speed_of_a_combined_rotation_and_batch_dims():
    step = torch.tensor([[0.0, 0, 0], [3, 4, 0]])  # small yaw + pitch: close to the Euclidean 5 degrees
    assert head_speed(step)[1].item() == pytest.approx(5.0, abs=0.05)
    still = torch.zeros(2, 4, 6, 3)
    assert torch.equal(head_speed(still), torch.zeros(2, 4, 6))
    assert torch.equal(head_speed(torch.ones(2, 1, 3)), torch.zeros(2, 1))


def test_bucket_index_and_soft_code_for_known_speeds():
    config = SpeedConfig(centers=(0.0, 1.0, 2.0), radii=(0.5, 0.5, 0.5), dim=8)
    speeds = torch.tensor([0.1, 0.9, 1.6, 5.0])
    assert speed_bucket_index(speeds, config.centers).tolist() == [0, 1, 2, 2]

    t6 = math.tanh(6.0)
    code = encode_speed(torch.tensor([1.0, 1.5]), config)  # tanh(3 * (v - c) / r)
    assert torch.allclose(code[0], torch.tensor([t6, 0.0, -t6]))
    assert torch.allclose(code[1], torch.tensor([math.tanh(9.0), math.tanh(3.0), -math.tanh(3.0)]))

    default = SpeedConfig()  # centres 0, .25, .5, 1, 2, 4 degrees per frame
    assert speed_bucket_index(torch.tensor([0.0, 0.3, 1.4, 3.5, 20.0]), default.centers).tolist() == [0, 1, 3, 5, 5]


def test_speed_embedding_and_timestep_combination():
    torch.manual_seed(0)
    emb = SpeedEmbedding(SpeedConfig(dim=16))(torch.rand(2, 5))
    assert emb.shape == (2, 5, 16)
    temb = torch.randn(2, 16)
    added = add_speed_to_timestep(temb, emb, "add")
    assert torch.allclose(added, temb[:, None] + emb)
    concat = add_speed_to_timestep(temb, emb, "concat")
    assert concat.shape == (2, 5, 32) and torch.equal(concat[:, 3, :16], temb)
    with pytest.raises(ValueError):
        add_speed_to_timestep(temb, emb, "mul")


def test_config_needs_one_positive_radius_per_centre():
    with pytest.raises(ValueError):
        SpeedConfig(centers=(0.0, 1.0), radii=(0.5,))
    with pytest.raises(ValueError):
        SpeedConfig(centers=(0.0, 1.0), radii=(0.5, 0.0))


def test_speed_attention_is_identity_at_init_and_then_follows_speed():
    torch.manual_seed(0)
    x, speed_emb = torch.randn(2, 6, 5, 16), torch.randn(2, 6, 8)
    layer = SpeedAttention(16, 8, heads=2, dim_head=8, max_frames=8)
    assert torch.equal(layer(x, speed_emb), x)

    torch.nn.init.normal_(layer.attn.to_out[0].weight, std=0.3)
    out = layer(x, speed_emb)
    faster = speed_emb.clone()
    faster[1] += 1.0
    changed = layer(x, faster)
    assert torch.equal(changed[0], out[0]) and not torch.allclose(changed[1], out[1])
    with pytest.raises(ValueError):
        layer(torch.randn(1, 9, 5, 16), torch.randn(1, 9, 8))


def test_speed_layers_learn_a_speed_dependent_shift():
    torch.manual_seed(0)
    embed = SpeedEmbedding(SpeedConfig(dim=16))
    layer = SpeedAttention(16, 16, heads=2, dim_head=8, max_frames=8)
    x = torch.randn(4, 6, 3, 16)
    speed = torch.rand(4, 6) * 4  # degrees per frame
    target = x + speed[..., None, None] / 4  # faster frames get a bigger offset
    params = [*embed.parameters(), *layer.parameters()]
    opt = torch.optim.Adam(params, lr=1e-2)
    losses = []
    for _ in range(30):
        loss = (layer(x, embed(speed)) - target).pow(2).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert losses[-1] < 0.5 * losses[0]
