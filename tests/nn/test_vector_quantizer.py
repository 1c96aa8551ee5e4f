"""MIDAS audio tokens: nearest-code quantization with a straight-through gradient, one token per 80 ms."""
from __future__ import annotations

import pytest
import torch

from talkinghead.nn.vector_quantizer import (
    AudioTokenizer,
    AudioTokenizerConfig,
    VectorQuantizer,
    VectorQuantizerConfig,
)


def _vq() -> VectorQuantizer:
    torch.manual_seed(0)
    vq = VectorQuantizer(VectorQuantizerConfig(codebook_size=8, dim=4))
    with torch.no_grad():
        vq.codebook.weight.normal_(generator=torch.Generator().manual_seed(0))
    return vq


def test_quantized_vectors_are_their_nearest_codes():
    vq = _vq()
    z = torch.randn(2, 5, 4, generator=torch.Generator().manual_seed(1))
    out = vq(z)
    assert out.indices.shape == (2, 5) and out.quantized.shape == z.shape
    brute = torch.cdist(z.reshape(-1, 4), vq.codebook.weight).argmin(dim=1).reshape(2, 5)
    assert torch.equal(out.indices, brute)
    assert torch.allclose(out.quantized, vq.codebook.weight[out.indices], atol=1e-6)


def test_gradients_pass_straight_through_and_reach_the_codebook():
    vq = _vq()
    z = torch.randn(3, 4, generator=torch.Generator().manual_seed(2), requires_grad=True)
    out = vq(z)
    (out.quantized.sum() + out.loss).backward()
    assert z.grad is not None and z.grad.abs().sum() > 0
    used = out.indices.unique()
    assert vq.codebook.weight.grad[used].abs().sum() > 0
    unused = torch.ones(8, dtype=torch.bool)
    unused[used] = False
    assert vq.codebook.weight.grad[unused].abs().sum() == 0


def test_training_pulls_codes_onto_the_data():
    vq = _vq()
    g = torch.Generator().manual_seed(3)
    centres = torch.randn(3, 4, generator=g) * 2
    data = centres.repeat(20, 1) + 0.05 * torch.randn(60, 4, generator=g)  # three tight clusters
    opt = torch.optim.Adam(vq.parameters(), lr=0.05)
    first = None
    for _ in range(60):
        loss = vq(data).loss
        first = loss.item() if first is None else first
        opt.zero_grad()
        loss.backward()
        opt.step()
    assert vq(data).loss.item() < 0.5 * first


def test_audio_tokenizer_makes_one_causal_token_per_80ms():
    torch.manual_seed(0)
    tok = AudioTokenizer(AudioTokenizerConfig(feature_dim=6, quantizer=VectorQuantizerConfig(codebook_size=16, dim=4)))
    feats = torch.randn(1, 24, 6, generator=torch.Generator().manual_seed(4))  # 24 x 20 ms = 6 tokens
    out = tok(feats)
    assert out.quantized.shape == (1, 6, 4) and out.indices.shape == (1, 6)
    later = feats.clone()
    later[:, 12:] = torch.randn(1, 12, 6)
    assert torch.equal(tok(later).quantized[:, :3], out.quantized[:, :3])  # tokens 0-2 read frames 0-11 only
    with pytest.raises(ValueError, match="whole number"):
        tok(feats[:, :23])
