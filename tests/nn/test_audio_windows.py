import pytest
import torch

from talkinghead.nn.audio_windows import AudioCrossAttention, audio_windows


def test_windows_clamp_at_the_clip_edges():
    audio = torch.arange(4.0).view(1, 4, 1, 1)  # frame i holds the value i
    windows = audio_windows(audio, radius=1)
    assert windows.shape == (1, 4, 3, 1)
    assert windows[0, :, :, 0].tolist() == [[0, 0, 1], [0, 1, 2], [1, 2, 3], [2, 3, 3]]

    wide = audio_windows(audio, radius=2)[0, :, :, 0].tolist()
    assert wide == [[0, 0, 0, 1, 2], [0, 0, 1, 2, 3], [0, 1, 2, 3, 3], [1, 2, 3, 3, 3]]


def test_window_tokens_are_frame_major():
    audio = torch.arange(2 * 5 * 3 * 4.0).view(2, 5, 3, 4)  # (b, f, tokens, d)
    windows = audio_windows(audio, radius=2)
    assert windows.shape == (2, 5, 15, 4)
    assert torch.equal(windows[1, 3, 0:3], audio[1, 1])  # offset -2
    assert torch.equal(windows[1, 3, 6:9], audio[1, 3])  # the frame itself in the middle
    assert torch.equal(windows[1, 3, 12:15], audio[1, 4])  # offset +2 clamps to the last frame
    assert torch.equal(audio_windows(audio, radius=0), audio)
    with pytest.raises(ValueError):
        audio_windows(audio, radius=-1)


def test_cross_attention_identity_at_init_and_each_frame_reads_only_its_window():
    torch.manual_seed(0)
    layer = AudioCrossAttention(16, 12, heads=2, dim_head=8)
    x, audio = torch.randn(2, 5, 6, 16), torch.randn(2, 5, 3, 12)
    assert torch.equal(layer(x, audio_windows(audio, 1)), x)

    torch.nn.init.normal_(layer.attn.to_out[0].weight, std=0.3)
    out = layer(x, audio_windows(audio, 1))
    assert out.shape == x.shape
    louder = audio.clone()
    louder[:, 2] += 1.0  # frame 2's audio reaches frames 1, 2, 3 through the ±1 windows
    diff = (layer(x, audio_windows(louder, 1)) - out).abs().amax(dim=(0, 2, 3))
    assert (diff[1:4] > 1e-4).all() and diff[0] == 0 and diff[4] == 0
    with pytest.raises(ValueError):
        layer(x, audio_windows(audio[:, :4], 1))


def test_cross_attention_learns_to_follow_audio():
    torch.manual_seed(0)
    layer = AudioCrossAttention(16, 8, heads=2, dim_head=8)
    x, audio = torch.randn(4, 5, 6, 16), torch.randn(4, 5, 2, 8)
    target = x + audio.mean(dim=(2, 3))[..., None, None]  # each frame shifted by its own loudness
    opt = torch.optim.Adam(layer.parameters(), lr=1e-2)
    losses = []
    for _ in range(30):
        loss = (layer(x, audio_windows(audio, 2)) - target).pow(2).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert losses[-1] < 0.5 * losses[0]
