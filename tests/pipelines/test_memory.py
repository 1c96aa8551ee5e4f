"""The DiT engines' GPU memory options (pipelines/memory.py) on the CPU: offload hooks attach, detach and leave the
SkyReels-A1 release's clip bit-identical; tiled VAE encode/decode of the tiny releases' CogVideoX and Wan VAEs stays
within the difference measured for these random-weight VAEs; the CLI renders with `--vae-tiling on`, refuses
`--cpu-offload` without a GPU and refuses both options on engines that do not honour them."""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from talkinghead.pipelines.memory import (OneOnDevice, execution_device, half_frame_tiles, set_cpu_offload,
                                          set_vae_tiling)
from tests.support import cli_exit_code, fixture


def _vae(cls_name: str, *parts: str):
    import diffusers
    from safetensors.torch import load_file

    folder = fixture(*parts)
    vae = getattr(diffusers, cls_name).from_config(json.loads((folder / "config.json").read_text()))
    vae.load_state_dict(load_file(str(folder / "diffusion_pytorch_model.safetensors")))
    return vae.eval()


def _clip(height: int, width: int, frames: int = 5) -> torch.Tensor:
    """(1, 3, frames, H, W) in [-1, 1]: the astronaut portrait sliding right a pixel a frame."""
    import cv2

    from talkinghead.assets import portrait

    image = cv2.resize(portrait("astronaut"), (width, height), interpolation=cv2.INTER_AREA)
    x = torch.from_numpy(image).permute(2, 0, 1).float() / 127.5 - 1
    return torch.stack([torch.roll(x, i, dims=2) for i in range(frames)], 1)[None]


# (VAE class, its tiny release folder, frame size the tiny engine renders, measured max |d|, measured mean |d|)
VAES = [("AutoencoderKLCogVideoX", ("skyreels_a1", "skyreels_a1_tiny", "vae"), (32, 48), 0.27, 0.029),
        ("AutoencoderKLWan", ("skyreels_a2", "skyreels_a2_tiny", "vae"), (48, 80), 1.32, 0.16)]


@pytest.mark.parametrize("cls_name,parts,hw,max_diff,mean_diff", VAES, ids=["cogvideox", "wan"])
def test_tiled_encode_decode_stays_near_the_whole_frame_one(cls_name, parts, hw, max_diff, mean_diff):
    vae = _vae(cls_name, *parts)
    clip = _clip(*hw)
    with torch.no_grad():
        assert not set_vae_tiling(vae, "off", hw)
        whole = vae.decode(vae.encode(clip).latent_dist.mode()).sample
        assert not set_vae_tiling(vae, "auto", hw)  # neither Hallo3/Hallo4 nor SkyReels-A2 tile by default
        np.testing.assert_array_equal(vae.decode(vae.encode(clip).latent_dist.mode()).sample, whole)
        assert set_vae_tiling(vae, "on", hw)
        tiles = half_frame_tiles(vae, *hw)
        assert tiles["tile_sample_min_height"] < hw[0] and tiles["tile_sample_min_width"] < hw[1]  # it does tile
        tiled = vae.decode(vae.encode(clip).latent_dist.mode()).sample
    assert tiled.shape == whole.shape
    d = (tiled - whole).abs()
    # tiles of 2-5 latents normalise and see less context than the frame: with these random tiny VAEs the seams
    # show (measured: the max and mean below, rounded up 10 %); at the official sizes tiles hold 30 x 45 latents
    assert 0 < d.max() <= max_diff * 1.1 and d.mean() <= mean_diff * 1.1


def test_auto_tiling_is_the_release_default_and_a_cached_vae_is_reset():
    vae = _vae("AutoencoderKLCogVideoX", "skyreels_a1", "skyreels_a1_tiny", "vae")
    defaults = (vae.tile_sample_min_height, vae.tile_sample_min_width, vae.tile_overlap_factor_height)
    assert set_vae_tiling(vae, "on", (32, 48)) and vae.tile_sample_min_height == 16
    assert set_vae_tiling(vae, "auto", (32, 48), release_tiles=True)  # SkyReels-A1: diffusers' own tiles again
    assert (vae.tile_sample_min_height, vae.tile_sample_min_width, vae.tile_overlap_factor_height) == defaults
    assert half_frame_tiles(vae, 480, 720) == dict(tile_sample_min_height=240, tile_sample_min_width=360,
                                                   tile_overlap_factor_height=1 / 6, tile_overlap_factor_width=1 / 5)
    assert not set_vae_tiling(vae, "off", (32, 48)) and not vae.use_tiling


def test_offload_hooks_attach_detach_and_keep_the_clip_bit_identical(skyreels_a1_release):
    from talkinghead.systems.skyreels_a1.release import load_release
    from talkinghead.systems.skyreels_a1.pipeline import sample_a1_release

    release = load_release(skyreels_a1_release)
    model = release.model
    tc = model.transformer.config
    h, w = tc.sample_height * 8, tc.sample_width * 8
    g = torch.Generator().manual_seed(0)
    ref = torch.rand(1, 3, h, w, generator=g) * 2 - 1
    control = torch.rand(1, 3, tc.sample_frames, h, w, generator=g) * 2 - 1
    identity = torch.randn(1, 729, 1152, generator=g)

    def clip():
        return sample_a1_release(model, release.vae, release.scheduler(), ref, control, identity, 2, 3.0,
                                 generator=torch.Generator().manual_seed(1))

    plain = clip()
    big = [release.identity_encoder, model.landmark_guider, model.transformer, release.vae]
    assert set_cpu_offload(big, "cpu", True, resident=[model.identity_proj]) == big
    hooks = [m._hf_hook for m in big]
    assert all(isinstance(h, OneOnDevice) and h.group == big for h in hooks)
    assert execution_device(model.transformer) == torch.device("cpu")
    assert set_cpu_offload(big, "cpu", True) == big and [m._hf_hook for m in big] == hooks  # placed again: kept
    np.testing.assert_array_equal(clip(), plain)
    assert set_cpu_offload(big, "cpu", False) == []
    assert not any(hasattr(m, "_hf_hook") for m in big)
    np.testing.assert_array_equal(clip(), plain)


def test_offload_hooks_leave_a_hallo4_render_bit_identical(hallo4_release, skeleton_video, short_wav):
    """The Wan engine's whole path under the hooks: umt5 and the DiT through their forwards, the Wan VAE through
    diffusers' encode/decode hook, wav2vec2 resident (on a CPU they move nothing, so this proves the call paths)."""
    from talkinghead.assets import portrait_path
    from talkinghead.config import AnimateConfig, DiffusionConfig
    from talkinghead.io.audio import load_audio
    from talkinghead.io.image import load_image
    from talkinghead.systems.hallo4.engine import Hallo4Animator

    config = AnimateConfig(diffusion=DiffusionConfig(checkpoint_dir=str(hallo4_release), pose_video=str(skeleton_video),
                                                     device="cpu"))
    animator = Hallo4Animator(load_image(portrait_path("astronaut")), config, warn=False)
    speech = load_audio(short_wav)
    plain = np.stack(list(animator.frames(speech)))
    r = animator.release
    big = [r.text_encoder, r.dit, r.latents.vae]
    try:
        set_cpu_offload(big, "cpu", True, resident=[r.audio_model])
        assert all(isinstance(m._hf_hook, OneOnDevice) for m in big)
        np.testing.assert_array_equal(np.stack(list(animator.frames(speech))), plain)
    finally:  # the release is cached for the other tests
        set_cpu_offload(big, "cpu", False)


def _a1_argv(release, wav, out, *extra):
    from talkinghead.assets import portrait_path

    return ["animate", "--engine", "skyreels-a1", "--checkpoint-dir", str(release), "--image",
            str(portrait_path("astronaut")), "--audio", str(wav), "--steps", "1", "-o", str(out), "--quiet", *extra]


def _frames(path) -> np.ndarray:
    import av

    with av.open(str(path)) as c:
        return np.stack([f.to_ndarray(format="rgb24") for f in c.decode(video=0)])


def test_cli_renders_skyreels_a1_with_vae_tiling_on_and_refuses_offload_on_a_cpu(skyreels_a1_release, short_wav,
                                                                                 tmp_path, capsys):
    from talkinghead.io import probe

    plain, tiled = tmp_path / "plain.mp4", tmp_path / "tiled.mp4"
    assert cli_exit_code(_a1_argv(skyreels_a1_release, short_wav, plain, "--lossless")) == 0
    assert cli_exit_code(_a1_argv(skyreels_a1_release, short_wav, tiled, "--lossless", "--vae-tiling", "on")) == 0
    assert probe(tiled)["n_frames"] == probe(plain)["n_frames"] == 22
    a, b = _frames(plain), _frames(tiled)
    assert a.shape == b.shape and not np.array_equal(a, b)  # the tiny frames are tiled: the seams change pixels
    out = tmp_path / "offload.mp4"
    assert cli_exit_code(_a1_argv(skyreels_a1_release, short_wav, out, "--cpu-offload", "--device", "cpu")) == 2
    err = capsys.readouterr().err
    assert "--cpu-offload" in err and "needs a GPU" in err and not out.exists()


def test_cli_renders_skyreels_a2_with_vae_tiling_on(skyreels_a2_release, reference_images, short_wav, tmp_path):
    from talkinghead.assets import portrait_path
    from talkinghead.io import probe

    out = tmp_path / "a2.mp4"
    argv = ["animate", "--engine", "skyreels-a2", "--checkpoint-dir", str(skyreels_a2_release), "--image",
            str(portrait_path("astronaut")), "--audio", str(short_wav), "--steps", "1", "--size", "80",
            "--vae-tiling", "on", "-o", str(out), "--quiet",
            *(arg for ref in reference_images for arg in ("--reference", str(ref)))]
    assert cli_exit_code(argv) == 0
    info = probe(out)
    assert (info["width"], info["height"]) == (80, 48) and info["n_frames"] == 22


@pytest.mark.parametrize("option", [["--vae-tiling", "on"], ["--cpu-offload"]])
def test_engines_without_the_options_refuse_them(option, short_wav, tmp_path, capsys):
    from talkinghead.assets import portrait_path

    out = tmp_path / "warp.mp4"
    assert cli_exit_code(["animate", "--image", str(portrait_path("astronaut")), "--audio", str(short_wav),
                          "-o", str(out), "--quiet", *option]) == 2
    err = capsys.readouterr().err
    assert option[0] in err and "skyreels-a1" in err and not out.exists()
