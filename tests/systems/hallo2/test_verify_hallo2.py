"""`talkinghead verify hallo2` through the real CLI, beyond what tests/systems/test_verify_all.py checks for every
system: the long-video loop fails when a weight of Hallo's net beside it changes, and every size and setting is
read from the fixture (variants written by our own modules with other sizes, seed, frame count, fidelity weight,
steps, guidance, mask rate and clip count pass through the same comparison code)."""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch

from tests.support import cli_exit_code, fixture


@pytest.fixture(scope="module")
def hallo2_dir() -> Path:
    return fixture("hallo2")


def _verify(folder: Path, capsys) -> tuple[int, str]:
    code = cli_exit_code(["verify", "hallo2", str(folder)])
    return code, capsys.readouterr().out


def test_long_video_loop_fails_with_a_changed_net_weight(hallo2_dir, tmp_path, capsys):
    """The long-video loop runs Hallo's tiny net from ../hallo beside the Hallo2 data; changing one weight
    there changes the recorded clips (and the recorded sha256 no longer matches)."""
    hallo = fixture("hallo", "hallo_tiny")
    shutil.copytree(hallo2_dir / "hallo2_long_tiny", tmp_path / "hallo2" / "hallo2_long_tiny")
    shutil.copytree(hallo, tmp_path / "hallo" / "hallo_tiny")
    net = tmp_path / "hallo" / "hallo_tiny" / "net.pth"
    state = torch.load(net, weights_only=True)
    state["audioproj.proj1.bias"] = state["audioproj.proj1.bias"] + 0.05
    torch.save(state, net)
    (net.parent / "net.safetensors").unlink()
    code, out = _verify(tmp_path / "hallo2" / "hallo2_long_tiny", capsys)
    assert code == 1
    assert "FAIL hallo2_long_tiny/net.pth sha256" in out
    assert "FAIL hallo2_long_tiny/long.clip0.audioproj_out" in out
    assert "ok   hallo2_long_tiny/long.clip0.keep_mask_u8" in out  # the mask stream does not depend on weights


# ------------------------------------------------------------------- a variant written by our own modules
VARIANT = {"img_size": 256, "nf": 32, "ch_mult": [1, 1, 2, 1, 1], "res_blocks": 2, "attn_resolutions": [16],
           "codebook_size": 24, "emb_dim": 64, "beta": 0.25}
VARIANT_TR = {"dim_embd": 48, "codebook_size": 24, "n_head": 3, "n_layers": 1, "connect_list": ["32", "64"],
              "latent_size": 256, "dim_mlp": 96}


def _write_variant(folder: Path, frames: int = 2, w: float = 0.7, seed: int = 7) -> None:
    """A fixture in the official format made with our network: other widths, levels, heads, frames, w, seed."""
    from safetensors.torch import save_file

    from talkinghead.nn.vq_super_resolution import VQSuperResolutionConfig, VQVideoSuperResolution
    from talkinghead.systems.hallo2.verify import sr_input

    config = {"vq_constructor": VARIANT, "codeformer_constructor": VARIANT_TR,
              "channels_table": {"256": 32, "128": 32, "64": 64, "32": 32, "16": 32},
              "fuse_encoder_block": {"256": 2, "128": 5, "64": 8, "32": 11, "16": 15},
              "fuse_generator_block": {"16": 6, "32": 9, "64": 12, "128": 15, "256": 18},
              "inference_call": {"w": w, "adain": True}}
    torch.manual_seed(seed)
    net = VQVideoSuperResolution(VQSuperResolutionConfig.from_reference_run(config)).eval()
    with torch.no_grad():
        net.position_emb.normal_()
        net.idx_pred_layer[1].weight.mul_(4.0)  # wide logit gaps, so float noise cannot flip a code
    folder.mkdir(parents=True)
    (folder / "config.json").write_text(json.dumps(config))
    torch.save({"params_ema": net.state_dict()}, folder / "net_g.pth")
    frames_u8 = torch.randint(0, 256, (1, frames, 3, 64, 64), dtype=torch.uint8,
                              generator=torch.Generator().manual_seed(seed))
    trace: dict = {}
    with torch.no_grad():
        out = net.restore(sr_input(frames_u8, 256), w, trace=trace)
    y = out.video
    tensors = {"in.frames_lr_u8": frames_u8, "enc.lq_feat": trace["enc.lq_feat"], "tr.logits": trace["tr.logits"],
               "tr.top_idx": trace["tr.top_idx"], "tr.layer0.out": trace["tr.layer0.out"],
               "enc.block8.out_64.crop_br16": trace["enc.block8"][..., -16:, -16:],
               "gen.fuse_32.out": trace["gen.fuse_32.out"],
               "out.x.avgpool4": torch.nn.functional.avg_pool2d(y.flatten(0, 1), 4).view(1, frames, 3, 64, 64),
               "out.x.crop_center": y[..., 112:144, 112:144], "out.x.mean_hw": y.mean((-1, -2))}
    save_file({k: v.contiguous() for k, v in tensors.items()}, str(folder / "io.safetensors"))


def test_a_variant_fixture_with_other_sizes_passes_and_fails_when_changed(tmp_path, capsys):
    folder = tmp_path / "variant"
    _write_variant(folder)
    code, out = _verify(folder, capsys)
    assert code == 0, out
    assert "variant/out.x.crop_center" in out and "variant/enc.block8.out_64.crop_br16" in out
    state = torch.load(folder / "net_g.pth", weights_only=True)["params_ema"]
    state["fuse_convs_dict.64.scale.2.bias"] += 0.1
    torch.save({"params_ema": state}, folder / "net_g.pth")
    code, out = _verify(folder, capsys)
    assert code == 1 and "FAIL variant/out.x.crop_center" in out


def _write_long_variant(root: Path, hallo_tiny: Path, seed: int, steps: int, cfg: float, mask_rate: float,
                        clips: int) -> Path:
    """A long-video folder in the official format whose run is ours: Hallo's tiny net and inputs, other seed,
    steps, guidance, mask rate and clip count (the loop written out here from the pipeline's parts)."""
    from diffusers import DDIMScheduler
    from safetensors.torch import load_file, save_file

    from talkinghead.systems.hallo2.engine import mask_motion_frames
    from talkinghead.systems.hallo.pipeline import DEFAULT_SCHEDULER
    from talkinghead.systems.hallo.verify import BRANCHES, load_fixture_pipeline

    shutil.copytree(hallo_tiny, root / "hallo" / "hallo_tiny")
    folder = root / "hallo2" / "long_variant"
    folder.mkdir(parents=True)
    pipe, v1_config = load_fixture_pipeline(root / "hallo" / "hallo_tiny")
    scheduler = {k: v for k, v in DEFAULT_SCHEDULER.items() if k not in ("num_train_timesteps", "set_alpha_to_one")}
    pipe.scheduler = DDIMScheduler(**scheduler)
    v1 = load_file(str(hallo_tiny / "io.safetensors"))
    frames = v1["in.audio_windows"].shape[1]
    windows = torch.randn((clips * frames, *v1["in.audio_windows"].shape[2:]),
                          generator=torch.Generator().manual_seed(seed + 1))
    masks = {k: [v1[f"in.{k}_mask.{i}"] for i in range(4)] for k in BRANCHES}
    reference, region = v1["in.ref_and_motion_pixels"][0, :1], v1["in.face_region_mask"]
    io = {"in.audio_windows_all": windows}
    generator = torch.Generator().manual_seed(seed)
    motion = reference.repeat(2, 1, 1, 1)
    with torch.no_grad():
        for t in range(clips):
            masked, keep = mask_motion_frames(motion, region, generator, mask_rate)
            cond = pipe.condition(v1["in.face_emb"], windows[t * frames:(t + 1) * frames][None], region, masks,
                                  cfg > 1.0, (1.0, 1.0, 1.0))
            noise = torch.randn((1, 4, frames, 16, 16), generator=generator)
            trace: dict = {}
            latents = pipe.sample_clip(pipe.encode_images(torch.cat([reference, masked])), cond, noise, steps, cfg,
                                       trace=trace)
            video = pipe.decode_latents(latents)
            p = f"long.clip{t}."
            io.update({p + "keep_mask_u8": keep.to(torch.uint8), p + "step_in_latents.0": trace["step_in_latents.0"],
                       p + f"step_guided_out.{steps - 1}": trace[f"step_guided_out.{steps - 1}"],
                       p + "final_latents": latents, p + "videos.avgpool4": torch.nn.functional.avg_pool3d(video, (1, 4, 4))})
            motion = video[0, :, -2:].permute(1, 0, 2, 3) * 2.0 - 1.0
    save_file({k: v.contiguous() for k, v in io.items()}, str(folder / "io.safetensors"))
    run = {"n_frames": frames, "n_motion_frames": 2, "num_inference_steps": steps, "cfg_scale": cfg, "seed": seed}
    (folder / "config.json").write_text(json.dumps({
        "settings": {"clips": clips, "v1_run": run, "mask_rate": mask_rate, "n_motion_frames": 2,
                     "motion_scale": [1.0, 1.0, 1.0]},
        "scheduler_kwargs": scheduler, "weights": {}}))
    return folder


def test_a_long_video_variant_with_other_settings_passes(tmp_path, capsys):
    """Seed, steps, guidance, mask rate and clip count come from the folder's config.json."""
    hallo = fixture("hallo", "hallo_tiny")
    folder = _write_long_variant(tmp_path, hallo, seed=11, steps=2, cfg=2.0, mask_rate=0.6, clips=3)
    code, out = _verify(folder, capsys)
    assert code == 0, out
    assert "long_variant/long.clip2.step_guided_out.1 (chained)" in out
    assert "long_variant/long.clip0.keep_mask_u8" in out
