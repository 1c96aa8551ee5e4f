import pytest
import torch

from talkinghead.nn.motion_frame_augment import MotionFrameAugment, MotionFrameAugmentConfig


def augment(patch_size=4, drop_rate=0.0, noise_std=0.0) -> MotionFrameAugment:
    return MotionFrameAugment(MotionFrameAugmentConfig(patch_size, drop_rate, noise_std)).train()


def gen(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def test_no_drop_no_noise_is_identity():
    x = torch.randn(2, 3, 4, 10, 10, generator=gen())
    assert torch.equal(augment(drop_rate=0.0)(x, gen()), x)


def test_drop_all_zeroes_everything_but_the_kept_region():
    x = torch.randn(2, 3, 4, 10, 10, generator=gen()) + 5
    assert torch.count_nonzero(augment(drop_rate=1.0)(x, gen())) == 0

    keep = torch.zeros(2, 1, 1, 10, 10, dtype=torch.bool)
    keep[..., 2:5, 3:7] = True  # e.g. the face region
    out = augment(drop_rate=1.0)(x, gen(), keep=keep)
    assert torch.equal(out[..., 2:5, 3:7], x[..., 2:5, 3:7])
    assert torch.count_nonzero(out) == 2 * 3 * 4 * 3 * 4


def test_patches_are_dropped_whole_per_frame_with_partial_edge_patches():
    x = torch.ones(2, 3, 2, 10, 10)  # 10 is not a multiple of 4: edge patches are 4x2, 2x4 and 2x2
    out = augment(patch_size=4, drop_rate=0.5)(x, gen(1))
    for rows in (slice(0, 4), slice(4, 8), slice(8, 10)):
        for cols in (slice(0, 4), slice(4, 8), slice(8, 10)):
            patch = out[..., rows, cols]  # (b, f, c, ph, pw)
            assert torch.equal(patch.amin(dim=(2, 3, 4)), patch.amax(dim=(2, 3, 4)))  # all kept or all dropped
    per_frame = out[:, :, 0, ::4, ::4].flatten(2)  # one pixel per patch, (b, f, 9)
    assert len({tuple(m.tolist()) for m in per_frame.flatten(0, 1)}) > 1  # frames draw their own masks


def test_drop_rate_and_noise_std_are_met():
    x = torch.ones(4, 8, 1, 64, 64)
    dropped = 1 - augment(patch_size=2, drop_rate=0.25)(x, gen())[..., ::2, ::2].mean()
    assert abs(dropped.item() - 0.25) < 0.01  # 32768 patches

    noise = augment(noise_std=0.5)(torch.zeros(4, 8, 1, 64, 64), gen())
    assert abs(noise.std().item() - 0.5) < 0.01
    assert abs(noise.mean().item()) < 0.01


def test_fixed_generator_is_deterministic():
    x = torch.randn(2, 3, 4, 16, 16, generator=gen())
    m = augment(drop_rate=0.3, noise_std=0.1)
    assert torch.equal(m(x, gen(7)), m(x, gen(7)))
    assert not torch.equal(m(x, gen(7)), m(x, gen(8)))


def test_eval_mode_is_identity():
    x = torch.randn(2, 3, 4, 16, 16, generator=gen())
    m = augment(drop_rate=1.0, noise_std=1.0).eval()
    assert m(x, gen()) is x


@pytest.mark.parametrize(
    "kwargs", [dict(patch_size=0), dict(drop_rate=1.5), dict(drop_rate=-0.1), dict(noise_std=-1.0)]
)
def test_config_rejects_bad_values(kwargs):
    with pytest.raises(ValueError):
        MotionFrameAugmentConfig(**kwargs)
