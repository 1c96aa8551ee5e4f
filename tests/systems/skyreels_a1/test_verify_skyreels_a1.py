"""`talkinghead verify skyreels-a1` beyond what tests/systems/test_verify_all.py checks for every system: it passes
on reference data of the same format with other sizes, seeds, depths, frame counts, steps and guidance (made here
by our own reproduction, which checks that nothing about the shipped data is built in)."""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import torch

from talkinghead.systems.skyreels_a1.verify import verify_skyreels_a1
from tests.support import fixture


def _randomise(module: torch.nn.Module, seed: int) -> None:
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in sorted(module.state_dict().items()):
            if p.dim() == 1:
                p.copy_((1 if name.endswith("weight") else 0) + 0.1 * torch.randn(p.shape, generator=g))
            else:
                p.copy_(torch.randn(p.shape, generator=g) / np.sqrt(np.prod(p.shape[1:])))
            p.copy_(p.bfloat16().float())  # representable in bf16, as the release files


def _variant(folder: Path, steps=2, guidance=2.0, seed=11, frames=9, latent=(4, 6), layers=3, blocks=(4, 8, 16)):
    """A release folder + config.json + io.safetensors in the fixture's format, recorded from our pipeline."""
    from diffusers import AutoencoderKLCogVideoX
    from safetensors.torch import save_file

    from talkinghead.systems.skyreels_a1.model import SkyReelsA1
    from talkinghead.systems.skyreels_a1.pipeline import release_control, sample_a1_release
    from talkinghead.systems.skyreels_a1.release import load_release, release_config
    from talkinghead.systems.skyreels_common import release_pixels

    h, w = latent
    tconf = dict(num_attention_heads=1, attention_head_dim=16, in_channels=48, out_channels=16, time_embed_dim=8,
                 text_embed_dim=8, num_layers=layers, sample_width=w, sample_height=h, sample_frames=frames,
                 patch_size=2, use_rotary_positional_embeddings=True, use_learned_positional_embeddings=True)
    vconf = dict(block_out_channels=blocks, down_block_types=["CogVideoXDownBlock3D"] * len(blocks),
                 up_block_types=["CogVideoXUpBlock3D"] * len(blocks), latent_channels=16, layers_per_block=1,
                 norm_num_groups=2, temporal_compression_ratio=4, scaling_factor=0.6)
    model = SkyReelsA1(release_config(tconf, vconf))
    _randomise(model, seed + 1)
    state = {k[len("transformer."):]: v for k, v in model.state_dict().items() if k.startswith("transformer.")}
    state.update({f"patch_embed.pose_proj.{k}": v for k, v in model.identity_proj.state_dict().items()})
    (folder / "transformer").mkdir(parents=True)
    save_file({k: v.bfloat16().contiguous() for k, v in state.items()},
              str(folder / "transformer" / "diffusion_pytorch_model.safetensors"))
    (folder / "transformer" / "config.json").write_text(json.dumps(dict(model.transformer.config)))
    for part, s in (("vae", seed + 2), ("pose_guider", seed + 3)):
        vae = AutoencoderKLCogVideoX(**vconf)
        _randomise(vae, s)
        torch.nn.Module.to(vae, torch.bfloat16).save_pretrained(folder / part)
    shutil.copytree(fixture("skyreels_a1", "skyreels_a1_tiny", "scheduler"), folder / "scheduler")
    run = {"num_inference_steps": steps, "guidance_scale": guidance,
           "generator": f"torch.Generator('cpu').manual_seed({seed})"}
    (folder / "config.json").write_text(json.dumps({"run": run}))

    spatial = 2 ** (len(blocks) - 1)
    g = torch.Generator().manual_seed(seed)
    io = {"in.ref_image_uint8": torch.randint(0, 256, (h * spatial, w * spatial, 3), generator=g, dtype=torch.uint8),
          "in.control_frames_uint8": torch.randint(0, 256, (frames, h * spatial, w * spatial, 3), generator=g,
                                                   dtype=torch.uint8),
          "in.siglip_last_hidden_state": torch.randn(1, 729, 1152, generator=g).bfloat16()}
    pixels, control = release_pixels(io["in.ref_image_uint8"].numpy()), release_control(
        io["in.control_frames_uint8"].numpy())
    bf16 = load_release(folder, torch.bfloat16, identity_encoder=False)
    trace: dict = {}
    io["b.frames_uint8"] = torch.from_numpy(sample_a1_release(
        bf16.model, bf16.vae, bf16.scheduler(), pixels, control, io["in.siglip_last_hidden_state"], steps, guidance,
        generator=torch.Generator().manual_seed(seed), trace=trace))
    io.update({f"b.{k}": v for k, v in trace.items() if not k.startswith("step.") or k.endswith(
        ("transformer_out", "guided", "latents_after"))})
    fp32 = load_release(folder, torch.float32, identity_encoder=False)
    trace = {}
    io["c.frames_uint8"] = torch.from_numpy(sample_a1_release(
        fp32.model, fp32.vae, fp32.scheduler(), pixels, control, io["in.siglip_last_hidden_state"].float(), steps,
        guidance, image_noise=io["b.vae_sample_noise"].float(), noise=io["b.initial_latents"].float(), trace=trace))
    io.update({f"c.{k}": v for k, v in trace.items() if k.startswith("step.") and k.endswith(
        ("transformer_out", "guided", "latents_after"))})
    io["c.final_latents"] = trace["final_latents"]
    io["a.control_latents"], io["a.image_latents"] = trace["control_latents"], trace["image_latents"]
    io["a.guided"] = trace["step.0.guided"]
    save_file({k: v.contiguous().clone() for k, v in io.items()}, str(folder / "io.safetensors"))
    return folder


def test_a_variant_with_other_sizes_seeds_and_settings_passes(tmp_path):
    folder = _variant(tmp_path / "variant")
    checks = verify_skyreels_a1(folder)
    names = {c.name.split("/", 1)[1] for c in checks}
    assert {"b.step.1.guided", "c.step.1.latents_after", "b.frames_uint8", "a.control_latents"} <= names
    assert not any(n.startswith("b.step.2") for n in names)  # two steps, read from config.json
    assert all(c.passed for c in checks), [c.line() for c in checks if not c.passed]
    # the same folder with another seed in config.json no longer matches its recorded noise
    config = json.loads((folder / "config.json").read_text())
    config["run"]["generator"] = "torch.Generator('cpu').manual_seed(12)"
    (folder / "config.json").write_text(json.dumps(config))
    failed = {c.name.split("/", 1)[1] for c in verify_skyreels_a1(folder) if not c.passed}
    assert {"b.vae_sample_noise", "b.initial_latents"} <= failed
