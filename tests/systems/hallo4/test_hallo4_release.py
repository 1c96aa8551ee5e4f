"""Hallo4's official release on diffusers' Wan classes: the full-size manifests of the DiT (Wan2.1-VACE + Hallo4's
audio/condition attention and projections) and of the Wan2.1 VAE map key for key, shape for shape onto our modules
on the meta device; the names map back; the loader is strict and names what is missing."""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch

from talkinghead.errors import CheckpointError
from talkinghead.systems.hallo4.model import WAN_VACE_1_3B, Hallo4WanModel
from talkinghead.systems.hallo4.release import load_dit, official_to_ours, ours_to_official, wan_vae_to_diffusers
from tests.support import FIXTURES, fixture, manifest

HALLO4 = FIXTURES / "hallo4"
TINY = HALLO4 / "hallo4_tiny"


@pytest.fixture(scope="module")
def fixtures() -> Path:
    return fixture("hallo4")


def _manifest(name: str) -> dict[str, torch.Tensor]:
    return {k: torch.empty(shape, device="meta") for k, shape in manifest("hallo4", name).items()}


def test_full_size_dit_manifest_maps_onto_every_parameter_on_meta(fixtures):
    official = _manifest("hallo4_model_weight.tsv")
    assert len(official) == 1996
    with torch.device("meta"):
        model = Hallo4WanModel(**WAN_VACE_1_3B)
    ours, mapped = model.state_dict(), official_to_ours(official)
    assert set(mapped) == set(ours), (sorted(set(ours) - set(mapped))[:5], sorted(set(mapped) - set(ours))[:5])
    assert [k for k in ours if tuple(ours[k].shape) != tuple(mapped[k].shape)] == []
    assert set(ours_to_official(mapped)) == set(official)
    assert sum(v.numel() for v in ours.values()) == 2_770_040_256  # the manifest's element count


def test_full_size_wan_vae_manifest_maps_onto_diffusers_autoencoder_on_meta(fixtures):
    from diffusers import AutoencoderKLWan

    official = _manifest("wan21_vae.tsv")
    with torch.device("meta"):
        vae = AutoencoderKLWan()
    ours, mapped = vae.state_dict(), wan_vae_to_diffusers(official)
    assert len(official) == 194 and set(mapped) == set(ours)
    assert [k for k in ours if tuple(ours[k].shape) != tuple(mapped[k].shape)] == []


def _audio() -> dict:
    a = json.loads((TINY / "config.json").read_text())["audio_proj_ctor"]
    return {k: a[k] for k in ("seq_len", "blocks", "channels", "intermediate_dim", "context_tokens")}


def test_tiny_release_loads_strictly_and_round_trips(fixtures):
    model = load_dit(TINY, audio=_audio())
    state = torch.load(TINY / "hallo4" / "model_weight.ckpt", weights_only=True)
    back = ours_to_official(model.state_dict())
    assert set(back) == set(state) and all(torch.equal(back[k], state[k]) for k in state)


def test_missing_files_and_keys_are_named(fixtures, tmp_path):
    with pytest.raises(CheckpointError) as err:
        load_dit(tmp_path)
    assert "hallo4/model_weight.ckpt" in str(err.value) and "Wan2.1_Encoders/config.json" in str(err.value)
    shutil.copytree(TINY / "Wan2.1_Encoders", tmp_path / "Wan2.1_Encoders")
    (tmp_path / "hallo4").mkdir()
    state = torch.load(TINY / "hallo4" / "model_weight.ckpt", weights_only=True)
    del state["blocks.1.condition_cross_attn.q.weight"], state["pose_proj.norm.bias"]
    torch.save({"state_dict": state}, tmp_path / "hallo4" / "model_weight.ckpt")  # the nested form is accepted
    with pytest.raises(CheckpointError) as err:
        load_dit(tmp_path, audio=_audio())
    assert "blocks.1.condition_attn.to_q.weight" in str(err.value) and "pose_proj.norm.bias" in str(err.value)


def test_full_size_wan_t5_manifest_maps_onto_transformers_umt5_on_meta(fixtures):
    from transformers import UMT5EncoderModel

    from talkinghead.systems.hallo4.release import wan_t5_config, wan_t5_to_transformers

    official = _manifest("umt5_xxl_encoder.tsv")
    config = wan_t5_config(official)
    assert (config.num_layers, config.num_heads, config.d_kv, config.d_ff, config.vocab_size) == (24, 64, 64, 10240,
                                                                                                  256384)
    with torch.device("meta"):
        t5 = UMT5EncoderModel(config)
    ours, mapped = t5.state_dict(), wan_t5_to_transformers(official)
    assert set(mapped) == set(ours)
    assert [k for k in ours if tuple(ours[k].shape) != tuple(mapped[k].shape)] == []


def test_bf16_weights_run_with_fp32_residuals_close_to_fp32(fixtures):
    """The GPU path casts the weights (`--dtype bf16`): projections then take bf16 inputs while modulation, residual
    stream and head stay fp32, as the official autocast does; one evaluation stays close to the fp32 one."""
    from safetensors.torch import load_file

    io = load_file(str(TINY / "io.safetensors"))
    model = load_dit(TINY, audio=_audio())
    args = (io["b.step.0.latent_model_input"][None], io["a.t"], io["in.context_cond"].float()[None],
            io["b.vace_context"][None], io["b.skeleton_latents"], io["b.audio_tensor"])
    with torch.no_grad():
        fp32 = model(*args)
        assert (fp32[0] - io["a.cond.model_out"]).abs().max() < 2e-2  # the README tolerance of one evaluation
        bf16 = model.to(torch.bfloat16)(*args)
    assert bf16.dtype == torch.bfloat16
    assert (bf16.float() - fp32).abs().max() < 0.1 * fp32.abs().max()
