"""`talkinghead verify skyreels-a2`: passes on the shipped reference data, fails when one weight is perturbed,
and the release loader holds the official key sets (full-size manifests on the meta device)."""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch

from talkinghead.interfaces.cli import main

FIXTURE = Path(__file__).resolve().parents[3] / "shared" / "fixtures" / "skyreels_a2"


@pytest.fixture(scope="module")
def a2_dir() -> Path:
    if not FIXTURE.is_dir():
        pytest.skip(f"shared reference data not found at {FIXTURE}")
    return FIXTURE


def _exit_code(argv) -> int:
    with pytest.raises(SystemExit) as exc:
        main(argv)
    return exc.value.code


def test_shipped_fixture_passes_every_check(a2_dir, capsys):
    assert _exit_code(["verify", "skyreels-a2", str(a2_dir)]) == 0
    out = capsys.readouterr().out
    assert "FAIL" not in out
    for key in ("sched.timesteps", "cond.posterior_noise", "clip.hidden_states_penultimate_2", "c.s0.cond.block.1_out",
                "c.step.2.corrected_sample", "c.frames_uint8", "b.step.2.x0_pred", "b.frames_uint8",
                "text.negative_prompt_input_ids", "(on stored inputs)"):
        assert key in out
    assert int(out.strip().splitlines()[-1].split("/")[0]) >= 90


def test_one_perturbed_weight_fails(a2_dir, tmp_path, capsys):
    from safetensors.torch import load_file, save_file

    dst = tmp_path / "skyreels_a2_tiny"
    shutil.copytree(a2_dir / "skyreels_a2_tiny", dst)
    path = dst / "transformer" / "diffusion_pytorch_model.safetensors"
    state = load_file(str(path))
    key = "blocks.1.attn2.add_v_proj.weight"  # the image (semantic reference) branch of the last block
    state[key] = state[key] + 0.05
    save_file(state, str(path))
    assert _exit_code(["verify", "skyreels-a2", str(dst)]) == 1
    failed = [line for line in capsys.readouterr().out.splitlines() if line.startswith("FAIL")]
    assert any("c.step.0.transformer_out_cond" in line for line in failed)
    # CLIP, UMT5, the VAE condition and the first block do not use that weight
    assert not any(k in line for line in failed
                   for k in ("clip.", "prompt_embeds", "cond.condition", "cond.vae_moments", "block.0_out"))


def _tsv(path: Path) -> dict[str, list[int]]:
    return {k: json.loads(s) for k, s, _ in (line.split("\t") for line in path.read_text().splitlines())}


def test_full_size_keys_equal_the_official_manifests_on_meta(a2_dir):
    from diffusers import AutoencoderKLWan, WanTransformer3DModel
    from transformers import CLIPVisionConfig, CLIPVisionModelWithProjection, UMT5Config, UMT5EncoderModel

    configs = json.loads((a2_dir / "manifests" / "skyreels_a2_configs.json").read_text())
    manifests = a2_dir / "manifests"
    with torch.device("meta"):
        transformer = WanTransformer3DModel.from_config(configs["transformer_registered_config"])
        vae = AutoencoderKLWan.from_config(configs["vae_config"])
        clip = CLIPVisionModelWithProjection(CLIPVisionConfig(**configs["image_encoder_config"]))
        umt5 = UMT5EncoderModel(UMT5Config(**configs["text_encoder_config"]))

    def shapes(m, prefix=""):
        return {(k if k.startswith(prefix) else prefix + k): list(v.shape) for k, v in m.state_dict().items()}
    assert shapes(transformer) == _tsv(manifests / "skyreels_a2_transformer.tsv")
    assert shapes(vae) == _tsv(manifests / "wan21_vae.tsv")
    official_clip = _tsv(manifests / "clip_vit_h14_image_encoder.tsv")
    ours_clip = {k if k.startswith(("vision_model.", "visual_projection")) else f"vision_model.{k}": v
                 for k, v in shapes(clip).items()}
    assert ours_clip == official_clip
    official_umt5 = _tsv(manifests / "umt5_xxl_encoder.tsv")
    assert {k: v for k, v in shapes(umt5).items() if k in official_umt5} == official_umt5


def test_release_missing_files_and_keys_are_named_at_once(a2_dir, tmp_path):
    from safetensors.torch import load_file, save_file

    from talkinghead.errors import CheckpointError
    from talkinghead.models.skyreels_a2 import load_release

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
