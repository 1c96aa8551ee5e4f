"""Hallo2's video super-resolution network: official key layout, shapes, temporal coupling, stage-I quantiser."""

import pytest
import torch

from talkinghead.nn.vq_super_resolution import VQSuperResolutionConfig, VQVideoSuperResolution, adain
from tests.support import fixture

# a small network of the official block structure: 5 levels on a 128 input -> an 8x8 latent grid
SMALL = dict(img_size=128, nf=32, ch_mult=(1, 1, 2, 1, 1), attn_resolutions=(8,), codebook_size=16, emb_dim=32,
             dim_embd=32, n_head=4, n_layers=1, latent_size=64, connect_list=("16", "32"),
             fuse_encoder_block={"128": 2, "64": 5, "32": 8, "16": 11, "8": 15},
             fuse_generator_block={"8": 6, "16": 9, "32": 12, "64": 15, "128": 18})


def small(seed=0) -> VQVideoSuperResolution:
    torch.manual_seed(seed)
    net = VQVideoSuperResolution(VQSuperResolutionConfig(**SMALL)).eval()
    with torch.no_grad():
        net.position_emb.normal_()
    return net


def frames(*shape, seed=0) -> torch.Tensor:
    return torch.rand(*shape, generator=torch.Generator().manual_seed(seed)) * 2 - 1


def test_full_size_matches_the_release_manifest_on_meta():
    from talkinghead.systems.hallo2.verify import manifest_mismatches, read_manifest

    path = fixture("hallo2", "manifests", "hallo2_net_g.tsv")
    with torch.device("meta"):
        net = VQVideoSuperResolution()
    manifest = read_manifest(path)
    assert len(manifest) == 623
    assert manifest_mismatches(net, manifest) == []
    assert sum(p.numel() for p in net.parameters()) == 113_037_763


def test_restore_shapes_and_code_indices():
    net = small()
    with torch.no_grad():
        out = net.restore(frames(2, 3, 3, 128, 128), w=0.5)
    assert out.video.shape == (2, 3, 3, 128, 128)
    assert out.logits.shape == (6, 64, 16) and out.indices.shape == (6, 64)
    assert torch.equal(out.indices, out.logits.argmax(-1))


def test_frames_are_restored_jointly_and_frame_order_is_equivariant():
    net = small()
    x = frames(1, 3, 3, 128, 128)
    with torch.no_grad():
        a = net.restore(x, w=1.0).video
        changed = x.clone()
        changed[:, -1] = frames(1, 3, 128, 128, seed=5)
        b = net.restore(changed, w=1.0).video
        r = net.restore(x.flip(1), w=1.0).video
    assert (a[:, 0] - b[:, 0]).abs().max() > 0  # the last frame's input reaches frame 0 (temporal attention)
    assert torch.allclose(r.flip(1), a, atol=1e-4)  # no frame position: reversing the input reverses the output


def test_fidelity_zero_skips_the_encoder_features():
    net = small()
    x = frames(1, 2, 3, 128, 128)
    with torch.no_grad():
        out = net.restore(x, w=0.0)
        quant = adain(net.quantize.lookup(out.indices, (8, 8)), net.encode(x.flatten(0, 1))[0])
        assert torch.allclose(net.decode(quant, {}, 0.0)[None], out.video, atol=1e-5)


def test_bad_input_size_and_config_raise():
    with pytest.raises(ValueError):
        small().restore(frames(1, 1, 3, 64, 64))
    with pytest.raises(ValueError):
        VQSuperResolutionConfig(**{**SMALL, "latent_size": 100})
    with pytest.raises(ValueError):
        VQSuperResolutionConfig(**{**SMALL, "nf": 16})


def test_stage_one_quantiser_has_straight_through_gradients():
    net = small()
    codebook = net.quantize.embedding.weight
    z = torch.randn(2, 32, 4, 4, generator=torch.Generator().manual_seed(1), requires_grad=True)
    z_q, loss, codes = net.quantize(z)
    flat = z.detach().permute(0, 2, 3, 1).reshape(-1, 32)
    assert torch.equal(codes.flatten(), torch.cdist(flat, codebook).argmin(1))
    assert torch.allclose(z_q, net.quantize.lookup(codes, (4, 4)), atol=1e-6)
    (z_q * 3.0).sum().backward(retain_graph=True)
    assert torch.allclose(z.grad, torch.full_like(z, 3.0))
    z.grad = None
    loss.backward()
    assert z.grad.abs().sum() > 0 and codebook.grad.abs().sum() > 0
    recon, _, _ = net.autoencode(frames(1, 3, 128, 128))
    assert recon.shape == (1, 3, 128, 128)
