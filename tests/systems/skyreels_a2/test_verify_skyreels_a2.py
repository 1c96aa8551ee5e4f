"""`talkinghead verify skyreels-a2` beyond what tests/systems/test_verify_all.py checks for every system: the
release loader holds the official key sets (full-size manifests on the meta device) and names what is missing, and
reference data of the same format with other sizes, seeds and settings passes."""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from tests.support import fixture, manifest


@pytest.fixture(scope="module")
def a2_dir() -> Path:
    return fixture("skyreels_a2")


def test_full_size_keys_equal_the_official_manifests_on_meta(a2_dir):
    from diffusers import AutoencoderKLWan, WanTransformer3DModel
    from transformers import CLIPVisionConfig, CLIPVisionModelWithProjection, UMT5Config, UMT5EncoderModel

    configs = json.loads((a2_dir / "manifests" / "skyreels_a2_configs.json").read_text())
    with torch.device("meta"):
        transformer = WanTransformer3DModel.from_config(configs["transformer_registered_config"])
        vae = AutoencoderKLWan.from_config(configs["vae_config"])
        clip = CLIPVisionModelWithProjection(CLIPVisionConfig(**configs["image_encoder_config"]))
        umt5 = UMT5EncoderModel(UMT5Config(**configs["text_encoder_config"]))

    def shapes(m, prefix=""):
        return {(k if k.startswith(prefix) else prefix + k): list(v.shape) for k, v in m.state_dict().items()}
    assert shapes(transformer) == manifest("skyreels_a2", "skyreels_a2_transformer.tsv")
    assert shapes(vae) == manifest("skyreels_a2", "wan21_vae.tsv")
    official_clip = manifest("skyreels_a2", "clip_vit_h14_image_encoder.tsv")
    ours_clip = {k if k.startswith(("vision_model.", "visual_projection")) else f"vision_model.{k}": v
                 for k, v in shapes(clip).items()}
    assert ours_clip == official_clip
    official_umt5 = manifest("skyreels_a2", "umt5_xxl_encoder.tsv")
    assert {k: v for k, v in shapes(umt5).items() if k in official_umt5} == official_umt5


def test_release_missing_files_and_keys_are_named_at_once(a2_dir, tmp_path):
    from safetensors.torch import load_file, save_file

    from talkinghead.errors import CheckpointError
    from talkinghead.systems.skyreels_a2.release import load_release

    folder = tmp_path / "Skywork" / "SkyReels-A2"
    shutil.copytree(a2_dir / "skyreels_a2_tiny", folder)
    path = folder / "transformer" / "diffusion_pytorch_model.safetensors"
    state = load_file(str(path))
    state["blocks.0.attn2.norm_added_q.weight"] = torch.ones(32)  # carried by some Wan conversions: accepted
    save_file(state, str(path))
    release = load_release(tmp_path, torch.float32)  # found below Skywork/SkyReels-A2
    assert release.transformer.rope.freqs_cos.dtype == torch.float64
    del state["proj_out.bias"]
    save_file(state, str(path))
    (folder / "image_processor" / "preprocessor_config.json").unlink()
    (folder / "text_encoder" / "model.safetensors").unlink()
    with pytest.raises(CheckpointError) as err:
        load_release(folder)
    assert "image_processor/preprocessor_config.json" in str(err.value)
    assert "text_encoder/model.safetensors" in str(err.value)
    shutil.copytree(a2_dir / "skyreels_a2_tiny" / "text_encoder", folder / "text_encoder", dirs_exist_ok=True)
    shutil.copytree(a2_dir / "skyreels_a2_tiny" / "image_processor", folder / "image_processor", dirs_exist_ok=True)
    with pytest.raises(CheckpointError, match="proj_out.bias"):
        load_release(folder)


# ----------------------------------------------------------------- a variant of the format, from our modules


def _randomise(module: torch.nn.Module, seed: int) -> None:
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in sorted(module.state_dict().items()):
            if not p.is_floating_point():
                continue
            if p.dim() == 1 or name.endswith("gamma"):
                p.copy_((0 if name.endswith("bias") else 1) + 0.1 * torch.randn(p.shape, generator=g))
            else:
                p.copy_(torch.randn(p.shape, generator=g) / np.sqrt(max(1, int(np.prod(p.shape[1:])))))
            p.copy_(p.bfloat16().float())


def _variant(folder: Path, steps=2, guidance=4.0, seed=7, frames=9, size=(32, 48), refs=2):
    """A release folder + config.json + io.safetensors in the fixture's format with other sizes, depths,
    widths, reference count, frame count, steps, guidance and seed, recorded from our pipeline."""
    from diffusers import AutoencoderKLWan, WanTransformer3DModel
    from safetensors.torch import save_file
    from transformers import CLIPVisionConfig, CLIPVisionModelWithProjection, UMT5Config, UMT5EncoderModel

    from talkinghead.systems.skyreels_a2.release import load_release
    from talkinghead.systems.skyreels_a2.pipeline import sample_a2_release
    from talkinghead.systems.skyreels_a2.verify import _record_first_step, references

    tiny = fixture("skyreels_a2", "skyreels_a2_tiny")
    for part in ("tokenizer", "image_processor"):
        shutil.copytree(tiny / part, folder / part)
    transformer = WanTransformer3DModel(patch_size=(1, 2, 2), num_attention_heads=1, attention_head_dim=16,
                                        in_channels=36, out_channels=16, text_dim=16, freq_dim=64, ffn_dim=32,
                                        num_layers=3, cross_attn_norm=True, qk_norm="rms_norm_across_heads",
                                        eps=1e-6, image_dim=24, added_kv_proj_dim=16, rope_max_seq_len=64)
    vae = AutoencoderKLWan(base_dim=4, z_dim=16)
    clip = CLIPVisionModelWithProjection(CLIPVisionConfig(hidden_size=24, intermediate_size=32, num_hidden_layers=2,
                                                          num_attention_heads=2, image_size=28, patch_size=14,
                                                          projection_dim=8))
    text = UMT5EncoderModel(UMT5Config(vocab_size=176, d_model=16, d_kv=8, d_ff=32, num_heads=2, num_layers=1,
                                       feed_forward_proj="gated-gelu", dense_act_fn="gelu_new"))
    for k, module in enumerate((transformer, vae, clip, text)):
        _randomise(module, seed + k)
    transformer.save_pretrained(folder / "transformer")
    vae.save_pretrained(folder / "vae")
    clip.save_pretrained(folder / "image_encoder")
    text.save_pretrained(folder / "text_encoder")
    processor = json.loads((tiny / "image_processor" / "preprocessor_config.json").read_text())
    processor.update(size={"shortest_edge": 28}, crop_size={"height": 28, "width": 28})
    (folder / "image_processor" / "preprocessor_config.json").write_text(json.dumps(processor))
    height, width = size
    config = {"run": {"height": height, "width": width, "num_frames": frames, "num_inference_steps": steps,
                      "guidance_scale": guidance, "generator": f"torch.Generator('cpu').manual_seed({seed})"},
              "inputs": {"prompt": "A man is holding a teddy bear.", "negative_prompt": "blurred details, ugly"}}
    (folder / "config.json").write_text(json.dumps(config))
    g = torch.Generator().manual_seed(seed)
    io = {f"in.ref_image_{i}_uint8": torch.randint(0, 256, (20 + 6 * i, 30 - 4 * i, 3), generator=g,
                                                   dtype=torch.uint8) for i in range(refs)}
    vae_images, clip_images = references(io, config, height, width)
    for prefix, dtype in (("c", torch.float32), ("b", torch.bfloat16)):
        release = load_release(folder, dtype)
        trace: dict = {}
        handles = _record_first_step(release.transformer, trace) if prefix == "c" else []
        frames_out = sample_a2_release(release, vae_images, clip_images, config["inputs"]["prompt"],
                                       config["inputs"]["negative_prompt"], frames, steps, guidance,
                                       generator=torch.Generator().manual_seed(seed), trace=trace)
        for h in handles:
            h.remove()
        trace["frames_uint8"] = torch.from_numpy(frames_out)
        for key, value in trace.items():
            shared = key.startswith(("prep.", "clip.", "text.", "cond.", "init.", "sched."))
            if shared and prefix == "c":
                io[key] = value
            elif not shared:
                io[f"{prefix}.{key}"] = value
    save_file({k: v.detach().contiguous().clone() for k, v in io.items()}, str(folder / "io.safetensors"))
    return folder


def test_a_variant_with_other_sizes_seeds_and_settings_passes(a2_dir, tmp_path):
    from talkinghead.systems.skyreels_a2.verify import verify_skyreels_a2

    folder = _variant(tmp_path / "variant")
    checks = verify_skyreels_a2(folder)
    names = {c.name.split("/", 1)[1] for c in checks}
    assert {"c.step.1.corrected_sample", "b.step.1.x0_pred", "c.s0.cond.block.2_out", "cond.condition",
            "clip.hidden_states_penultimate_1", "b.frames_uint8"} <= names
    assert not any(n.startswith(("c.step.2", "clip.hidden_states_penultimate_2")) for n in names)
    assert all(c.passed for c in checks), [c.line() for c in checks if not c.passed]
    config = json.loads((folder / "config.json").read_text())
    config["run"]["generator"] = "torch.Generator('cpu').manual_seed(8)"
    (folder / "config.json").write_text(json.dumps(config))
    failed = {c.name.split("/", 1)[1] for c in verify_skyreels_a2(folder) if not c.passed}
    assert {"init.latents", "cond.posterior_noise"} <= failed
