"""MIDAS deep-compression video autoencoder: causal in time, streaming equals one pass, staged training."""
from __future__ import annotations

from pathlib import Path

import pytest
import torch

from talkinghead.errors import InputError
from talkinghead.nn.causal_conv import CausalConv3d, CausalTemporalAttention, StreamCache
from talkinghead.nn.dc_video_autoencoder import DCVideoAEConfig, stage_parameters
from talkinghead.systems.midas.model import DCVideoAutoencoder
from talkinghead.systems.midas.train import reconstruction_loss
from tests.support import CONFIGS

FRAMES = 7


def _randomize(module: torch.nn.Module, seed: int = 0) -> torch.nn.Module:
    """Give the zero-initialised (identity) temporal layers random weights so they really act."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in module.parameters():
            if not p.any():
                p.copy_(0.1 * torch.randn(p.shape, generator=g))
    return module


def _ae(**overrides) -> DCVideoAutoencoder:
    torch.manual_seed(0)
    return _randomize(DCVideoAutoencoder(DCVideoAEConfig.tiny(**overrides))).eval()


def _clip(frames: int = FRAMES, seed: int = 1) -> torch.Tensor:
    return torch.rand(1, frames, 3, 16, 16, generator=torch.Generator().manual_seed(seed)) * 2 - 1


def test_paper_size_and_tiny_shapes():
    full = DCVideoAEConfig()
    assert full.spatial_compression == 64 and full.latent_channels == 128 and full.cache_frames == 5
    ae = _ae()
    z = ae.encode(_clip())
    assert z.shape == (1, FRAMES, 8, 4, 4)  # 4x spatial, no temporal compression
    assert ae.decode(z).shape == (1, FRAMES, 3, 16, 16)


@pytest.mark.parametrize("chunk", [1, 3])
def test_streaming_encode_and_decode_equal_one_pass(chunk):
    ae = _ae(cache_frames=2)  # a window shorter than the clip: old frames must leave the cache
    x = _clip()
    with torch.no_grad():
        z = ae.encode(x)
        y = ae.decode(z)
        enc, dec = ae.new_cache(), ae.new_cache()
        z_stream = torch.cat([ae.encode(x[:, i:i + chunk], enc) for i in range(0, FRAMES, chunk)], dim=1)
        y_stream = torch.cat([ae.decode(z[:, i:i + chunk], dec) for i in range(0, FRAMES, chunk)], dim=1)
    assert torch.allclose(z_stream, z, atol=1e-5), (z_stream - z).abs().max()
    assert torch.allclose(y_stream, y, atol=1e-5), (y_stream - y).abs().max()
    assert enc.held_frames() <= 2 and dec.held_frames() <= 2


def test_future_frames_change_nothing_already_encoded():
    ae = _ae()
    x = _clip()
    x2 = x.clone()
    x2[:, 4:] = -x2[:, 4:]
    with torch.no_grad():
        z, z2 = ae.encode(x), ae.encode(x2)
        y, y2 = ae.decode(z), ae.decode(z2)
    assert torch.equal(z[:, :4], z2[:, :4]) and torch.equal(y[:, :4], y2[:, :4])
    assert not torch.allclose(z[:, 4:], z2[:, 4:])


def test_causal_conv_pads_the_past_with_the_first_frame():
    torch.manual_seed(0)
    conv = CausalConv3d(2, 3, temporal_kernel=3)
    x = torch.randn(1, 2, 5, 6, 6)
    still = x[:, :, :1].expand(-1, -1, 5, -1, -1)
    with torch.no_grad():
        out, out_still = conv(x), conv(still)
    assert out.shape == (1, 3, 5, 6, 6)
    assert torch.allclose(out[:, :, 0], out_still[:, :, 0])  # frame 0 saw only copies of itself
    assert torch.allclose(out_still, out_still[:, :, :1].expand_as(out_still), atol=1e-6)
    assert not torch.allclose(out[:, :, 2], out_still[:, :, 2])


def test_temporal_attention_sees_only_its_window():
    attn = _randomize(CausalTemporalAttention(8, head_dim=4, window=2))
    x = torch.randn(1, 8, 6, 3, 3, generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        base = attn(x)
        old = x.clone()
        old[:, :, :3] = torch.randn(1, 8, 3, 3, 3)  # frames 0-2: outside frame 5's window (frames 3..5)
        near = x.clone()
        near[:, :, 3] = torch.randn(1, 8, 3, 3)
        assert torch.allclose(attn(old)[:, :, 5], base[:, :, 5], atol=1e-6)
        assert not torch.allclose(attn(near)[:, :, 5], base[:, :, 5])
        cache = StreamCache(2)
        streamed = torch.cat([attn(x[:, :, i:i + 1], cache, i) for i in range(6)], dim=2)
    assert torch.allclose(streamed, base, atol=1e-5) and cache.held_frames() == 2


def test_bad_frame_size_is_an_input_error():
    with pytest.raises(InputError, match="multiples of 4"):
        _ae().encode(torch.zeros(1, 1, 3, 10, 16))
    with pytest.raises(ValueError):
        DCVideoAEConfig(temporal_kernel=8, cache_frames=5)


def test_stage_configs_and_parameter_groups():
    from talkinghead.train.stages import load_stage_config

    stages = [load_stage_config(p, "midas") for p in sorted(CONFIGS.glob("midas_ae?.yaml"))]
    assert [s.stage for s in stages] == ["ae1", "ae2", "ae3"]
    assert stages[0].clip_frames == 1 and stages[2].clip_frames == 8
    models = [DCVideoAEConfig(**s.system.model) for s in stages]
    assert all(m.spatial_compression == 64 and m.latent_channels == 128 for m in models)
    ae = _ae()
    total = sum(p.numel() for p in ae.parameters())
    spatial = {id(p) for p in stage_parameters(ae, "spatial")}
    temporal = {id(p) for p in stage_parameters(ae, "temporal")}
    assert spatial and temporal and not spatial & temporal
    assert sum(p.numel() for p in stage_parameters(ae, "all")) == total
    names = {id(p): n for n, p in ae.named_parameters()}
    assert all("temporal_" in names[i] for i in temporal) and not any("temporal_" in names[i] for i in spatial)
    with pytest.raises(ValueError):
        stage_parameters(ae, "decoder")


def test_training_steps_lower_the_loss():
    torch.manual_seed(0)
    ae = DCVideoAutoencoder(DCVideoAEConfig.tiny(cache_frames=2)).train()
    x = _clip(4)
    opt = torch.optim.Adam(stage_parameters(ae, "all"), lr=3e-3)
    losses = []
    for _ in range(25):
        loss, _ = reconstruction_loss(ae, x)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert losses[-1] < 0.6 * losses[0], losses


def test_the_autoencoder_saves_and_loads_as_a_configured_model(tmp_path: Path):
    """save_pretrained/from_pretrained round trip (typed config, every key), and the ar stage's `system.vae` reads
    the net of an ae stage's run folder, its step folder or the save_pretrained folder alike."""
    from talkinghead.errors import CheckpointError
    from talkinghead.systems.midas.train import load_autoencoder
    from talkinghead.train.smoke import smoke_train
    from talkinghead.train.trainer import TrainConfig

    ae = _ae(cache_frames=2)
    ae.save_pretrained(tmp_path / "ae")
    back = DCVideoAutoencoder.from_pretrained(tmp_path / "ae")
    assert back.config == ae.config and isinstance(back.config, DCVideoAEConfig)
    assert torch.equal(back(_clip()), ae(_clip()))
    run = smoke_train(TrainConfig.from_yaml(CONFIGS / "midas_ae1.yaml"), tmp_path / "stage").out
    step = sorted((run / "checkpoints").glob("step-*"))[-1]
    nets = [load_autoencoder(folder) for folder in (run, step, step / "model")]
    assert all(torch.equal(n(_clip()), nets[0](_clip())) for n in nets)
    with pytest.raises(InputError, match="holds no MIDAS autoencoder"):
        load_autoencoder(tmp_path)
    (step / "model" / "config.json").unlink()
    with pytest.raises(CheckpointError, match="model/config.json"):
        load_autoencoder(run)
