"""MIDAS streaming sampler: streaming equals the cache-free one-shot path, the future changes nothing emitted,
memory stays flat, sampling is seeded, weights round-trip through safetensors, missing weights are named."""
from __future__ import annotations

import pytest
import torch

from talkinghead.errors import InputError
from talkinghead.nn.dc_video_autoencoder import DCVideoAEConfig
from talkinghead.systems.midas.model import DCVideoAutoencoder, MidasConfig, MidasTransformer
from talkinghead.systems.midas.pipeline import MidasPipeline, frames_to_uint8, split_chunks

CHUNKS = 4
SIDE = 8  # px: a 2x2 latent grid at 4x compression


def _randomize(module: torch.nn.Module, seed: int) -> None:
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in module.parameters():
            if not p.any():  # zero-initialised layers: give them weights so every path matters
                p.copy_(0.1 * torch.randn(p.shape, generator=g))


@pytest.fixture(scope="module")
def pipe() -> MidasPipeline:
    torch.manual_seed(0)
    ae = DCVideoAutoencoder(DCVideoAEConfig.tiny(cache_frames=2))
    # a window of one chunk (the KV cache must trim); generated frames are fed back with exposure-bias noise
    tr = MidasTransformer(MidasConfig.tiny(input_noise=0.1))
    _randomize(ae, 1)
    _randomize(tr, 2)
    return MidasPipeline(ae, tr)


def _inputs(config: MidasConfig, seed: int = 3) -> dict:
    g = torch.Generator().manual_seed(seed)
    return {"reference": torch.rand(1, 3, SIDE, SIDE, generator=g) * 2 - 1,
            "audio": torch.randn(1, CHUNKS * config.audio_features_per_chunk, config.audio.feature_dim, generator=g),
            "pose": torch.randn(1, CHUNKS * config.chunk_frames, config.pose_joints, 3, generator=g),
            "text": torch.randn(1, config.text_tokens, config.text_dim, generator=g)}


def _stream(pipe: MidasPipeline, x: dict, seed: int = 5) -> torch.Tensor:
    c = pipe.transformer.config
    poses = [x["pose"][:, i:i + c.chunk_frames] for i in range(0, x["pose"].shape[1], c.chunk_frames)]
    frames = pipe.stream(x["reference"], split_chunks(x["audio"], c), poses, x["text"],
                         torch.Generator().manual_seed(seed))
    return torch.stack(list(frames), dim=1)  # (b, n, 3, H, W)


def test_streaming_equals_one_shot(pipe):
    x = _inputs(pipe.transformer.config)
    streamed = _stream(pipe, x)
    one_shot = pipe.generate(x["reference"], x["audio"], x["pose"], x["text"], torch.Generator().manual_seed(5))
    assert streamed.shape == (1, CHUNKS * pipe.transformer.config.chunk_frames, 3, SIDE, SIDE)
    assert torch.allclose(streamed, one_shot, atol=1e-4), (streamed - one_shot).abs().max()
    assert streamed.std() > 0.01  # not a constant image
    assert frames_to_uint8(streamed).shape == (1, streamed.shape[1], SIDE, SIDE, 3)


def test_future_audio_changes_nothing_already_emitted(pipe):
    c = pipe.transformer.config
    x = _inputs(c)
    base = _stream(pipe, x)
    later = dict(x, audio=x["audio"].clone())
    a = 2 * c.audio_features_per_chunk  # chunks 2 and 3 hear other audio
    later["audio"][:, a:] = torch.randn(later["audio"][:, a:].shape)
    out = _stream(pipe, later)
    n = 2 * c.chunk_frames
    assert torch.equal(out[:, :n], base[:, :n])
    assert not torch.allclose(out[:, n:], base[:, n:])


def test_seeded_and_memory_flat(pipe):
    c = pipe.transformer.config
    x = _inputs(c)
    a, b = _stream(pipe, x, seed=7), _stream(pipe, x, seed=7)
    assert torch.equal(a, b)
    assert not torch.allclose(_stream(pipe, x, seed=8), a)
    kv, ae_frames = pipe.last_cache_sizes
    assert kv <= (c.window_chunks + 1) * c.chunk_tokens
    assert ae_frames <= pipe.autoencoder.config.cache_frames
    short = dict(x, audio=x["audio"][:, :2 * c.audio_features_per_chunk], pose=x["pose"][:, :2 * c.chunk_frames])
    _stream(pipe, short)
    assert pipe.last_cache_sizes == (kv, ae_frames)  # two chunks or four: the same memory


def test_safetensors_round_trip(pipe, tmp_path):
    x = _inputs(pipe.transformer.config)
    pipe.save_pretrained(tmp_path / "midas")
    loaded = MidasPipeline.from_pretrained(tmp_path / "midas")
    assert loaded.transformer.config == pipe.transformer.config
    for a, b in ((pipe.autoencoder, loaded.autoencoder), (pipe.transformer, loaded.transformer)):
        sa, sb = a.state_dict(), b.state_dict()
        assert sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)
    short = dict(x, audio=x["audio"][:, :pipe.transformer.config.audio_features_per_chunk])
    assert torch.equal(_stream(loaded, short), _stream(pipe, short))


def test_missing_weights_and_wrong_sizes_are_input_errors(pipe, tmp_path):
    pipe.save_pretrained(tmp_path / "partial")
    (tmp_path / "partial" / "transformer" / "diffusion_pytorch_model.safetensors").unlink()
    with pytest.raises(InputError) as err:
        MidasPipeline.from_pretrained(tmp_path / "partial")
    assert "transformer/diffusion_pytorch_model.safetensors" in str(err.value) and "autoencoder/" not in str(err.value)
    with pytest.raises(InputError) as err:
        MidasPipeline.from_pretrained(tmp_path / "nowhere")
    assert all(name in str(err.value) for name in ("autoencoder/config.json", "transformer/config.json"))
    with pytest.raises(InputError, match="resize the portrait"):
        next(pipe.stream(torch.zeros(1, 3, 16, 16), [torch.zeros(1, 12, 12)]))
