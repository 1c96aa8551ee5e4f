"""train/losses.py: each loss against a small case worked out here by direct formulas."""
import math

import cv2
import numpy as np
import pytest
import torch
from diffusers import AutoencoderKL, DDIMScheduler, DDPMScheduler, FlowMatchEulerDiscreteScheduler
from skimage.metrics import structural_similarity

from talkinghead.train import losses as L


def gen(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def hand_alphas_cumprod(beta_start=1e-4, beta_end=0.02, steps=1000) -> torch.Tensor:
    """ᾱ_t of the linear DDPM schedule, float64, computed without diffusers."""
    return torch.cumprod(1.0 - torch.linspace(beta_start, beta_end, steps, dtype=torch.float64), 0)


def tiny_vae() -> AutoencoderKL:
    """A 2-level AutoencoderKL (16 px images <-> 8 px, 4-channel latents) with seeded weights, frozen."""
    with torch.random.fork_rng():
        torch.manual_seed(0)
        vae = AutoencoderKL(in_channels=3, out_channels=3, down_block_types=("DownEncoderBlock2D",) * 2,
                            up_block_types=("UpDecoderBlock2D",) * 2, block_out_channels=(8, 8),
                            layers_per_block=1, latent_channels=4, norm_num_groups=4, sample_size=16)
    return vae.requires_grad_(False).eval()


# ------------------------------------------------------------------ targets


def test_diffusion_targets_match_hand_formulas_and_get_velocity():
    sched = DDPMScheduler()  # linear betas 1e-4..0.02, 1000 steps, epsilon
    x0 = torch.randn(2, 4, 3, 3, generator=gen(0))
    noise = torch.randn(2, 4, 3, 3, generator=gen(1))
    t = torch.tensor([10, 700])
    a = hand_alphas_cumprod()[t].float().view(2, 1, 1, 1)
    v_hand = a.sqrt() * noise - (1 - a).sqrt() * x0
    v = L.diffusion_target(sched, x0, noise, t, "v_prediction")
    assert torch.allclose(v, v_hand, atol=1e-6)
    assert torch.equal(v, sched.get_velocity(x0, noise, t))
    assert torch.equal(L.diffusion_target(sched, x0, noise, t, "epsilon"), noise)
    assert torch.equal(L.diffusion_target(sched, x0, noise, t), noise)  # config says epsilon
    assert torch.equal(L.diffusion_target(sched, x0, noise, t, "sample"), x0)
    with pytest.raises(ValueError):
        L.diffusion_target(sched, x0, noise, t, "flow")


def test_flow_matching_pair_endpoints_hand_case_and_diffusers_convention():
    x0 = torch.randn(3, 2, 4, 4, generator=gen(0))
    noise = torch.randn(3, 2, 4, 4, generator=gen(1))
    xt, target = L.flow_matching_pair(x0, noise, torch.tensor([0.0, 1.0, 0.25]))
    assert torch.equal(xt[0], x0[0])  # σ = 0: clean
    assert torch.equal(xt[1], noise[1])  # σ = 1: pure noise
    assert torch.equal(target, noise - x0)
    # hand case: x0 = 2, noise = -2, σ = 0.25 -> x_t = 0.75·2 + 0.25·(-2) = 1, target = -4
    xt1, v1 = L.flow_matching_pair(torch.full((1, 1), 2.0), torch.full((1, 1), -2.0), torch.tensor([0.25]))
    assert xt1.item() == pytest.approx(1.0) and v1.item() == pytest.approx(-4.0)
    # diffusers: scale_noise builds the same x_t, and one Euler step with v = target stays on the line
    sched = FlowMatchEulerDiscreteScheduler()
    sched.set_timesteps(10)
    i = 3
    s, s_next = sched.sigmas[i].item(), sched.sigmas[i + 1].item()
    xt, target = L.flow_matching_pair(x0, noise, torch.full((3,), s))
    assert torch.allclose(sched.scale_noise(x0, sched.timesteps[i:i + 1].repeat(3), noise), xt, atol=1e-6)
    nxt = sched.step(target, sched.timesteps[i], xt, return_dict=False)[0]
    assert torch.allclose(nxt, (1 - s_next) * x0 + s_next * noise, atol=1e-5)
    assert torch.allclose(L.flow_predicted_x0(xt, target, torch.full((3,), s)), x0, atol=1e-6)


def test_flow_sigma_sampler_seeded_schemes_and_shift():
    u = L.sample_flow_sigmas(5, gen(3), "uniform")
    assert torch.equal(u, torch.rand(5, generator=gen(3)))
    ln = L.sample_flow_sigmas(5, gen(3), "logit_normal", mean=0.5, std=2.0)
    assert torch.allclose(ln, torch.sigmoid(0.5 + 2.0 * torch.randn(5, generator=gen(3))), atol=1e-6)
    assert torch.equal(ln, L.sample_flow_sigmas(5, gen(3), "logit_normal", mean=0.5, std=2.0))
    big = L.sample_flow_sigmas(4000, gen(4), "logit_normal")
    assert ((big > 0) & (big < 1)).all() and abs(big.median().item() - 0.5) < 0.03
    shifted = L.sample_flow_sigmas(5, gen(3), "uniform", shift=3.0)
    assert torch.allclose(shifted, 3 * u / (1 + 2 * u))  # σ' = sσ / (1 + (s-1)σ)
    t = L.sample_timesteps(DDPMScheduler(), 6, gen(5))
    assert torch.equal(t, torch.randint(0, 1000, (6,), generator=gen(5)))
    with pytest.raises(ValueError):
        L.sample_flow_sigmas(2, gen(0), "cosine")


# ------------------------------------------------------------------ Min-SNR and the latent loss


def test_snr_and_min_snr_weights_at_known_values():
    t = torch.tensor([0, 250, 999])
    a = hand_alphas_cumprod()[t]
    # ᾱ is stored in float32, so 1 - ᾱ_0 = 1e-4 keeps only ~3 digits: 9997.3 against 9999.0
    assert torch.allclose(L.snr(DDPMScheduler(), t).double(), a / (1 - a), rtol=1e-3)
    s = torch.tensor([0.5, 5.0, 20.0, 0.0])
    assert torch.allclose(L.min_snr_weight(s, 5.0, "epsilon"), torch.tensor([1.0, 1.0, 0.25, 1.0]))
    assert torch.allclose(L.min_snr_weight(s, 5.0, "v_prediction"), torch.tensor([1 / 3, 5 / 6, 5 / 21, 0.0]))
    assert torch.allclose(L.min_snr_weight(s, 5.0, "sample"), torch.tensor([0.5, 5.0, 5.0, 0.0]))
    assert torch.allclose(L.min_snr_weight(s, 1.0, "epsilon"), torch.tensor([1.0, 0.2, 0.05, 1.0]))


def test_diffusion_loss_hand_case_weight_mask_and_grad():
    pred = torch.tensor([[1.0, 3.0], [0.0, 0.0]], requires_grad=True)
    target = torch.tensor([[0.0, 0.0], [2.0, 0.0]])
    # per-sample MSE: (1 + 9)/2 = 5 and 4/2 = 2
    assert L.diffusion_loss(pred, target).item() == pytest.approx(3.5)
    assert L.diffusion_loss(pred, target, torch.tensor([0.5, 2.0])).item() == pytest.approx((2.5 + 4.0) / 2)
    mask = torch.tensor([[1.0, 0.0], [1.0, 1.0]])  # sample 0 keeps 1² / 1, sample 1 keeps 4 / 2
    assert L.diffusion_loss(pred, target, mask=mask).item() == pytest.approx(1.5)
    loss = L.diffusion_loss(pred, target, torch.tensor([0.5, 2.0]), mask)
    loss.backward()
    # d/dp of mean_b w_b Σ m (p-y)² / Σ m: sample 0: 0.5·2·1/1/2; sample 1: 2·2·(-2)/2/2
    assert torch.allclose(pred.grad, torch.tensor([[0.5, 0.0], [-2.0, 0.0]]))


# ------------------------------------------------------------------ EchoMimic spatial loss


def test_predicted_x0_is_exact_for_true_noise_and_true_velocity():
    x0 = torch.randn(3, 4, 2, 8, 8, generator=gen(0))  # (b, c, f, h, w)
    noise = torch.randn(3, 4, 2, 8, 8, generator=gen(1))
    t = torch.tensor([0, 500, 999])
    ddpm = DDPMScheduler()
    xt = ddpm.add_noise(x0, noise, t)
    assert torch.allclose(L.predicted_x0(ddpm, xt, noise, t, "epsilon"), x0, atol=2e-3)
    assert torch.allclose(L.predicted_x0(ddpm, xt, noise, t)[:2], x0[:2], atol=1e-5)
    ddim = DDIMScheduler(prediction_type="v_prediction")
    xt = ddim.add_noise(x0, noise, t)
    v = ddim.get_velocity(x0, noise, t)
    assert torch.allclose(L.predicted_x0(ddim, xt, v, t), x0, atol=1e-5)
    assert torch.equal(L.predicted_x0(ddim, xt, x0, t, "sample"), x0)
    half = L.predicted_x0(ddim, xt.bfloat16(), v.bfloat16(), t)  # mixed precision: computed in float32
    assert half.dtype == torch.float32 and torch.allclose(half, x0, atol=0.05)


def test_spatial_weight_endpoints():
    w = L.spatial_weight(torch.tensor([0, 500, 1000]), 1000)
    assert w[0].item() == 1.0
    assert w[1].item() == pytest.approx(math.cos(math.pi / 4))
    assert abs(w[2].item()) < 1e-6


def _spatial_case():
    """Video latents (b=2, c=4, f=2, 8, 8) at t = 0 and 500, the true noise as the ε prediction, and the
    clean decoded frames (b, 3, f, 16, 16)."""
    sched, vae = DDPMScheduler(), tiny_vae()
    x0 = torch.randn(2, 4, 2, 8, 8, generator=gen(0))
    noise = torch.randn(2, 4, 2, 8, 8, generator=gen(1))
    t = torch.tensor([0, 500])
    with torch.no_grad():
        clean = vae.decode(x0.transpose(1, 2).flatten(0, 1) / vae.config.scaling_factor).sample
    clean = clean.view(2, 2, 3, 16, 16).transpose(1, 2)  # (b, 3, f, H, W)
    return sched, vae, x0, noise, t, sched.add_noise(x0, noise, t), clean


def test_timestep_aware_spatial_loss_hand_case_with_perceptual():
    sched, vae, x0, noise, t, xt, clean = _spatial_case()
    frames = clean + 0.1  # per frame: MSE 0.01, L1 0.1
    pred = noise.clone().requires_grad_(True)
    l1 = lambda x, y: (x - y).abs().flatten(1).mean(1)  # noqa: E731
    total, parts = L.timestep_aware_spatial_loss(sched, vae, pred, noise, xt, t, frames, "epsilon",
                                                 perceptual=l1, spatial_scale=0.5)
    w = torch.tensor([1.0, math.cos(math.pi / 4)])
    assert parts["latent"].item() == 0.0
    assert torch.allclose(parts["w_t"], w)
    assert total.item() == pytest.approx(0.5 * (0.11 * w).mean().item(), rel=1e-4)  # 0.0469463
    total.backward()
    assert torch.isfinite(pred.grad).all() and pred.grad.abs().sum() > 0
    # only frame 1 decoded: frame 0 carrying a different error must not count
    frames2 = frames.clone()
    frames2[:, :, 0] += 0.4
    sub, _ = L.timestep_aware_spatial_loss(sched, vae, noise, noise, xt, t, frames2, "epsilon", perceptual=l1,
                                           spatial_scale=0.5, frame_index=torch.tensor([1]))
    assert sub.item() == pytest.approx(total.item(), rel=1e-4)
    # the latent term adds with weight: pred = noise + 0.2 gives latent MSE 0.04 (times Min-SNR-like w)
    off, parts = L.timestep_aware_spatial_loss(sched, vae, noise + 0.2, noise, xt, t[:1].repeat(2), frames,
                                               "epsilon", perceptual=l1, spatial_scale=0.0,
                                               latent_weight=torch.tensor([1.0, 3.0]))
    assert off.item() == pytest.approx(0.04 * 2.0, rel=1e-4)


def test_timestep_aware_spatial_loss_ssim_fallback_warns_and_matches_skimage():
    sched, vae, x0, noise, t, xt, clean = _spatial_case()
    frames = clean + 0.1
    pred = noise.clone().requires_grad_(True)
    with pytest.warns(UserWarning, match="L1 \\+ \\(1 - SSIM\\)"):
        total, _ = L.timestep_aware_spatial_loss(sched, vae, pred, noise, xt, t, frames, "epsilon")
    expected = 0.0
    for b, w in enumerate([1.0, math.cos(math.pi / 4)]):
        per_frame = [0.01 + 0.1 + 1 - structural_similarity(
            frames[b, :, f].double().numpy(), clean[b, :, f].double().numpy(), channel_axis=0,
            gaussian_weights=True, sigma=1.5, use_sample_covariance=False, data_range=2.0) for f in range(2)]
        expected += w * np.mean(per_frame) / 2
    assert total.item() == pytest.approx(expected, rel=1e-3)
    total.backward()
    assert torch.isfinite(pred.grad).all() and pred.grad.abs().sum() > 0


def test_spatial_loss_on_image_latents_with_v_prediction():
    sched, vae = DDIMScheduler(prediction_type="v_prediction"), tiny_vae()
    x0 = torch.randn(2, 4, 8, 8, generator=gen(0))
    noise = torch.randn(2, 4, 8, 8, generator=gen(1))
    t = torch.tensor([250, 750])
    xt, v = sched.add_noise(x0, noise, t), sched.get_velocity(x0, noise, t)
    with torch.no_grad():
        frames = vae.decode(x0 / vae.config.scaling_factor).sample - 0.3  # MSE 0.09
    zero = lambda x, y: torch.zeros(x.shape[0])  # noqa: E731
    total, _ = L.timestep_aware_spatial_loss(sched, vae, v, v, xt, t, frames, perceptual=zero)
    w = torch.cos(t.float() * math.pi / 2000)
    assert total.item() == pytest.approx((0.09 * w).mean().item(), rel=1e-4)


def test_ssim_matches_skimage_and_structural_loss_hand_case():
    rng = np.random.default_rng(0)
    x = cv2.GaussianBlur(rng.random((24, 20, 3)), (5, 5), 1.0)
    y = np.clip(x + 0.08 * rng.standard_normal(x.shape), 0, 1)
    ref = structural_similarity(x, y, channel_axis=-1, gaussian_weights=True, sigma=1.5,
                                use_sample_covariance=False, data_range=1.0)
    tx, ty = (torch.from_numpy(a).permute(2, 0, 1)[None] for a in (x, y))
    assert L.ssim(tx, ty, data_range=1.0).item() == pytest.approx(ref, abs=1e-9)
    assert L.ssim(tx, tx, data_range=1.0).item() == pytest.approx(1.0)
    # constant images 0 and 0.5, range 2: SSIM = C1 / (0.25 + C1), C1 = (0.01·2)² -> loss 0.5 + 1 - SSIM
    c1 = (0.01 * 2) ** 2
    zeros, halves = torch.zeros(1, 3, 12, 12), torch.full((1, 3, 12, 12), 0.5, requires_grad=True)
    loss = L.structural_loss(halves, zeros)
    assert loss.item() == pytest.approx(0.5 + 1 - c1 / (0.25 + c1), rel=1e-5)  # 1.4984026
    loss.sum().backward()
    assert torch.isfinite(halves.grad).all() and halves.grad.abs().sum() > 0
    with pytest.raises(ValueError):
        L.ssim(torch.zeros(1, 1, 8, 8), torch.zeros(1, 1, 8, 8))


# ------------------------------------------------------------------ SkyReels-A1 flow-masked loss


def square_frame(x: int) -> np.ndarray:
    """64x64 RGB frame, grey background, a 16 px light square at column x."""
    im = np.full((64, 64, 3), 40, np.uint8)
    cv2.rectangle(im, (x, 24), (x + 15, 39), (230, 200, 180), -1)
    return im


def test_flow_motion_mask_still_is_one_moving_square_above_one():
    frames = np.stack([square_frame(10), square_frame(10), square_frame(14)])  # still, then 4 px right
    m = L.flow_motion_mask(frames)
    assert m.shape == (3, 1, 64, 64) and m.dtype == torch.float32
    assert torch.equal(m[1], torch.ones(1, 64, 64))  # still pair: exactly 1
    assert torch.equal(m[0], m[1])  # frame 0 takes frame 1's mask
    assert m[2].max().item() == pytest.approx(1.5)  # the fastest pixel of the pair
    assert (m[2, 0, 24:40, 14:30] > 1).float().mean() > 0.5  # on the square where it now is
    assert m[2, 0, :8, :8].eq(1).all() and m[2, 0, -8:, -8:].eq(1).all()  # far background still
    assert m.min() >= 1 and m.max() <= 1.5
    # raw pixels: a 4 px motion is far below the 127.5 px the formula needs to leave 1
    assert torch.equal(L.flow_motion_mask(frames, normalize=False), torch.ones(3, 1, 64, 64))
    assert torch.equal(L.flow_motion_mask(frames[:1]), torch.ones(1, 1, 64, 64))
    # the floor: with a 64 px floor the 4 px motion maps to at most 4/64·255 ≈ 16 < 127.5 -> all 1
    assert torch.equal(L.flow_motion_mask(frames, floor_px=64.0), torch.ones(3, 1, 64, 64))


def test_resize_mask_area_average_and_time():
    m = torch.ones(4, 1, 64, 64)
    m[:, :, 8:16, 8:16] = 1.5  # exactly latent pixel (1, 1) at stride 8
    m[:, :, 0:4, 0:8] = 1.5  # half of latent pixel (0, 0)
    m[2:] = 1.0
    r = L.resize_mask(m, (8, 8))
    assert r.shape == (4, 1, 8, 8)
    assert r[0, 0, 1, 1].item() == pytest.approx(1.5) and r[0, 0, 0, 0].item() == pytest.approx(1.25)
    assert r[0, 0, 4, 4].item() == 1.0
    rt = L.resize_mask(m, (8, 8), frames=2)  # frames (0, 1) and (2, 3) averaged
    assert rt.shape == (2, 1, 8, 8)
    assert rt[0, 0, 1, 1].item() == pytest.approx(1.5) and rt[1, 0, 1, 1].item() == pytest.approx(1.0)
    assert L.resize_mask(m, (128, 128)).shape == (4, 1, 128, 128)


def test_face_mask_from_landmarks_fills_hull():
    pts = torch.tensor([[[2.0, 2.0], [5.0, 2.0], [5.0, 5.0], [2.0, 5.0], [3.0, 3.0]]])  # (f=1, n=5, 2)
    m = L.face_mask_from_landmarks(pts, (8, 8))
    expected = torch.zeros(1, 1, 8, 8)
    expected[..., 2:6, 2:6] = 1
    assert torch.equal(m, expected)


def test_face_aware_loss_hand_case_and_grad():
    pred = torch.ones(1, 1, 1, 2, 2, requires_grad=True)  # (b, f, c, h, w), target 0: squared error 1
    target = torch.zeros(1, 1, 1, 2, 2)
    motion = torch.tensor([[[[1.0, 1.5], [1.0, 1.0]]]])  # (f, 1, h, w)
    face = torch.tensor([[[[0.0, 0.0], [1.0, 0.0]]]])
    assert L.face_aware_loss(pred, target, motion).item() == pytest.approx(4.5 / 4)
    loss = L.face_aware_loss(pred, target, motion, face, face_weight=2.0)  # W = [[1, 1.5], [2, 1]]
    assert loss.item() == pytest.approx(5.5 / 4)
    loss.backward()
    assert torch.allclose(pred.grad, 2 * torch.tensor([[1.0, 1.5], [2.0, 1.0]]).view(1, 1, 1, 2, 2) / 4)
    two = torch.cat([pred.detach(), 2 * pred.detach()])  # errors 1 and 4; per-sample weights 1 and 0.5
    batched = L.face_aware_loss(two, torch.zeros_like(two), motion[None].repeat(2, 1, 1, 1, 1),
                                weight=torch.tensor([1.0, 0.5]))
    assert batched.item() == pytest.approx((4.5 / 4 + 0.5 * 4 * 4.5 / 4) / 2)


# ------------------------------------------------------------------ Diffusion-DPO


def test_dpo_identical_errors_give_log2():
    e = torch.tensor([0.3, 0.1, 0.7])
    loss, acc, margin = L.diffusion_dpo_loss(e, e + 0.2, e, e + 0.2, beta=5000.0)
    assert loss.item() == pytest.approx(math.log(2))
    assert acc.item() == 0.0 and margin.item() == 0.0


def test_dpo_hand_case_and_winner_improvement():
    ew = torch.tensor([0.1, 0.3], requires_grad=True)
    el = torch.tensor([0.3, 0.2], requires_grad=True)
    ref = torch.tensor([0.2, 0.2])
    loss, acc, margin = L.diffusion_dpo_loss(ew, el, ref, ref, beta=10.0)
    # logits: -5·((0.1-0.2) - (0.3-0.2)) = 1; -5·((0.3-0.2) - (0.2-0.2)) = -0.5
    expected = (math.log1p(math.exp(-1.0)) + math.log1p(math.exp(0.5))) / 2  # 0.64367
    assert loss.item() == pytest.approx(expected, rel=1e-6)
    assert acc.item() == 0.5 and margin.item() == pytest.approx(0.25)
    loss.backward()
    assert (ew.grad > 0).all() and (el.grad < 0).all()  # lower winner / higher loser error helps
    better, _, _ = L.diffusion_dpo_loss(ew.detach() - 0.05, el.detach(), ref, ref, beta=10.0)
    assert better.item() < loss.item()


def test_dpo_errors_serve_epsilon_and_flow_targets_with_grad():
    x0 = torch.randn(4, 2, 4, 4, generator=gen(0))  # [w, w, l, l]
    noise = torch.randn(4, 2, 4, 4, generator=gen(1))
    sigma = torch.tensor([0.3, 0.6, 0.3, 0.6])
    xt, target = L.flow_matching_pair(x0, noise, sigma)
    ref_pred = target + 0.1 * torch.randn(4, 2, 4, 4, generator=gen(2))
    pred = ref_pred.clone().requires_grad_(True)
    ew, el = L.dpo_errors(pred, target)
    assert torch.allclose(torch.cat([ew, el]), ((pred - target) ** 2).mean((1, 2, 3)))
    rw, rl = L.dpo_errors(ref_pred, target)
    loss, _, _ = L.diffusion_dpo_loss(ew, el, rw, rl, beta=100.0)
    assert loss.item() == pytest.approx(math.log(2), rel=1e-6)  # model == reference
    loss.backward()
    assert pred.grad[:2].abs().sum() > 0 and pred.grad[2:].abs().sum() > 0
    # the same errors on ε targets: per-sample MSE, the flow target plays no special role
    eps_w, eps_l = L.dpo_errors(noise + 0.5, noise)
    assert torch.allclose(eps_w, torch.full((2,), 0.25)) and torch.allclose(eps_l, torch.full((2,), 0.25))
    with pytest.raises(ValueError):
        L.dpo_errors(pred[:3], target[:3])
