import pytest
import torch

from talkinghead.nn.text_adaln import TextAdaLN


def randomized(m: TextAdaLN, seed: int = 0) -> TextAdaLN:
    g = torch.Generator().manual_seed(seed)
    for p in m.parameters():
        torch.nn.init.normal_(p, std=0.3, generator=g)
    return m


def test_identity_at_init():
    torch.manual_seed(0)
    x = torch.randn(2, 3, 5, 8)
    m = TextAdaLN(8, 6)
    assert torch.equal(m(x, torch.randn(2, 6)), x)
    assert torch.equal(m(x, torch.randn(2, 3, 6)), x)


def test_prompt_modulates_per_sample_and_per_frame():
    torch.manual_seed(0)
    m = randomized(TextAdaLN(8, 6))
    x, text = torch.randn(2, 3, 5, 8), torch.randn(2, 3, 6)
    out = m(x, text)
    assert out.shape == x.shape and not torch.allclose(out, x)

    changed = text.clone()
    changed[1, 2] += 1.0  # a new prompt from frame 2 of sample 1 on
    diff = (m(x, changed) - out).abs().amax(dim=(2, 3))  # (b, f)
    assert diff[1, 2] > 1e-3
    assert torch.count_nonzero(diff) == 1

    per_sample = m(x, text[:, 0])  # one prompt per sample: the same modulation in every frame
    assert torch.allclose(per_sample, m(x, text[:, :1].expand(-1, 3, -1)))


def test_mismatched_prompt_shape_raises():
    m = TextAdaLN(8, 6)
    with pytest.raises(ValueError):
        m(torch.randn(2, 3, 5, 8), torch.randn(3, 6))
    with pytest.raises(ValueError):
        m(torch.randn(2, 3, 5, 8), torch.randn(2, 4, 6))


def test_learns_a_prompt_dependent_modulation():
    torch.manual_seed(0)
    m = TextAdaLN(8, 4)
    x, text = torch.randn(4, 10, 8), torch.randn(4, 4)
    target = x + text[:, None, :1] * torch.nn.functional.layer_norm(x, (8,))  # strength set by the prompt
    opt = torch.optim.Adam(m.parameters(), lr=3e-2)
    losses = []
    for _ in range(30):
        loss = (m(x, text) - target).pow(2).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert losses[-1] < 0.2 * losses[0]


@pytest.mark.parametrize("hierarchical", [False, True])
def test_audio_attention_with_text_layers_starts_as_the_module_without(hierarchical):
    from talkinghead.nn.audio_attention import BRANCHES, AudioAttentionModule

    torch.manual_seed(0)
    plain = AudioAttentionModule(8, 8, 2, audio_dim=6, level=0, hierarchical=hierarchical, norm_num_groups=4).eval()
    with torch.no_grad():  # the zero-initialised branch convs made non-zero, so the audio path is not a no-op
        for name, p in plain.named_parameters():
            if "zero_conv" in name:
                p.normal_(0, 0.3)
    texted = AudioAttentionModule(8, 8, 2, audio_dim=6, level=0, hierarchical=hierarchical, norm_num_groups=4,
                                  text_dim=5).eval()
    missing, unexpected = texted.load_state_dict(plain.state_dict(), strict=False)
    assert not unexpected and missing and all(".text_adaln." in k for k in missing)

    x, audio = torch.randn(3, 8, 4, 4), torch.randn(3, 7, 6)
    masks = {b: [torch.rand(3, 16)] for b in BRANCHES} if hierarchical else None
    text = torch.randn(3, 5)
    with torch.no_grad():
        assert torch.equal(texted(x, audio, masks, text=text), plain(x, audio, masks))
        randomized(texted.transformer_blocks[0].text_adaln)
        a, b = texted(x, audio, masks, text=text), texted(x, audio, masks, text=text + 1.0)
        assert not torch.allclose(a, plain(x, audio, masks)) and not torch.allclose(a, b)
        assert torch.equal(texted(x, audio, masks), plain(x, audio, masks))  # no prompt: the text layers are skipped
