import pytest
import torch
import torch.nn.functional as F

from talkinghead.nn.vq_super_resolution import VQSuperResolutionConfig, VQVideoSuperResolution


def model(**overrides) -> VQVideoSuperResolution:
    torch.manual_seed(0)
    return VQVideoSuperResolution(VQSuperResolutionConfig(**overrides))


def frames(*shape, seed=0) -> torch.Tensor:
    return torch.rand(*shape, generator=torch.Generator().manual_seed(seed)) * 2 - 1


@pytest.mark.parametrize("scale", [1, 2, 4])
def test_upscales_by_scale(scale):
    m = model(scale=scale)
    grid = 16 // m.config.lq_factor
    assert m.code_logits(frames(1, 2, 3, 16, 16)).shape == (1, 2, grid, grid, m.config.codebook_size)
    out = m(frames(1, 2, 3, 16, 16))
    assert out.shape == (1, 2, 3, 16 * scale, 16 * scale)
    assert out.abs().max() <= 1.0


def test_code_grids_of_both_encoders_match():
    m = model(scale=2)  # high-quality 32x32 and low-quality 16x16 both map to an 8x8 code grid
    assert m.autoencode(frames(1, 2, 3, 32, 32)).codes.shape == (1, 2, 8, 8)
    assert m.code_logits(frames(1, 2, 3, 16, 16)).shape[2:4] == (8, 8)


def test_bad_sizes_and_configs_raise():
    with pytest.raises(ValueError):
        model(scale=2)(frames(1, 1, 3, 15, 16))
    with pytest.raises(ValueError):
        VQSuperResolutionConfig(scale=3)
    with pytest.raises(ValueError):
        VQSuperResolutionConfig(scale=8, block_channels=(16, 32, 32))
    with pytest.raises(ValueError):
        VQSuperResolutionConfig(dim=30)


def test_quantiser_returns_codebook_entries_with_straight_through_gradients():
    m = model()
    codebook = m.quantizer.embedding.weight  # (K, code_dim)
    z = torch.randn(2, m.config.code_dim, 4, 4, generator=torch.Generator().manual_seed(1), requires_grad=True)
    z_q, loss, (_, _, codes) = m.quantizer(z)

    flat = z.detach().permute(0, 2, 3, 1).reshape(-1, m.config.code_dim)
    assert torch.equal(codes.flatten(), torch.cdist(flat, codebook).argmin(1))  # nearest entry
    assert torch.allclose(z_q.permute(0, 2, 3, 1), codebook[codes], atol=1e-6)  # values are codebook rows

    (z_q * torch.arange(16.0).view(1, 1, 4, 4)).sum().backward(retain_graph=True)
    assert torch.equal(z.grad, torch.arange(16.0).view(1, 1, 4, 4).expand_as(z))  # gradient passes straight
    z.grad = None
    loss.backward()  # codebook loss pulls entries, commitment loss pulls the encoder output
    assert z.grad.abs().sum() > 0 and codebook.grad.abs().sum() > 0


def test_decode_looks_up_codes():
    m = model()
    codes = torch.randint(m.config.codebook_size, (1, 2, 4, 4), generator=torch.Generator().manual_seed(0))
    entries = m.quantizer.embedding.weight[codes].permute(0, 1, 4, 2, 3).flatten(0, 1)  # ((b f), code_dim, 4, 4)
    assert torch.allclose(m.decode(codes).flatten(0, 1), m.decoder(entries), atol=1e-5)


def test_temporal_attention_links_frames():
    m = model()
    video = frames(1, 3, 3, 16, 16)
    logits = m.code_logits(video)
    video[:, 2] = frames(1, 3, 16, 16, seed=5)  # change only the last frame
    changed = m.code_logits(video)
    assert not torch.allclose(changed[:, 0], logits[:, 0])  # frame 0 sees frame 2 through temporal attention
    assert m.code_logits(video[:, :1]).shape[1] == 1


def fit(params, loss_fn, steps: int, lr: float) -> list[float]:
    opt = torch.optim.Adam(params, lr=lr)
    losses = []
    for _ in range(steps):
        loss = loss_fn()
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    return losses


def test_stage1_autoencoder_and_codebook_train():
    m = model()
    yy, xx = torch.meshgrid(torch.linspace(-1, 1, 32), torch.linspace(-1, 1, 32), indexing="ij")
    hq = torch.stack([torch.stack([xx, yy, xx * yy]), torch.stack([yy, xx, -xx * yy])])[None]  # (1, 2, 3, 32, 32)

    def loss():
        out = m.autoencode(hq)
        return (out.sample - hq).abs().mean() + out.vq_loss

    losses = fit(m.parameters(), loss, steps=25, lr=2e-3)
    assert losses[-1] < 0.7 * losses[0]


def test_stage2_code_prediction_trains():
    m = model()
    lq, hq = frames(1, 2, 3, 16, 16), frames(1, 2, 3, 32, 32, seed=1)
    with torch.no_grad():
        target = m.autoencode(hq).codes  # (b, f, 8, 8)
    k = m.config.codebook_size
    losses = fit(
        [p for n, p in m.named_parameters() if not n.startswith(("encoder.", "decoder.", "quantizer."))],
        lambda: F.cross_entropy(m.code_logits(lq).reshape(-1, k), target.flatten()),
        steps=12,
        lr=3e-3,
    )
    assert losses[-1] < 0.6 * losses[0]
