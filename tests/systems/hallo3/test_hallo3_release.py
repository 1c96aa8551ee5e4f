"""Hallo3's official SAT release: the key map covers the full-size manifest on the meta device (every SAT key mapped
or listed as unused, every parameter of ours covered, shapes equal, the backbone names equal to diffusers'
converter's), the loader is strict and names what is missing, and SAT <-> ours round-trips exactly."""
from __future__ import annotations

import ast
import shutil
from pathlib import Path

import pytest
import torch

from talkinghead.errors import CheckpointError
from talkinghead.models.checkpoints import load_state_dict
from talkinghead.systems.hallo3.model import Hallo3Model
from talkinghead.systems.hallo3.release import (SAT_UNUSED_PREFIXES, SAT_UNUSED_SUFFIXES, config_from_sat,
                                                find_sat_checkpoint, load_sat_checkpoint, sat_from_ours, sat_to_ours)
from tests.support import FIXTURES, fixture, manifest

HALLO3 = FIXTURES / "hallo3"
MANIFESTS = HALLO3 / "manifests"
TINY = HALLO3 / "hallo3_tiny"
NETS = {"model.diffusion_model.": "transformer.", "ref_model.diffusion_model.": "reference_net."}


@pytest.fixture(scope="module")
def fixtures() -> Path:
    return fixture("hallo3")


def _tsv(path: Path) -> list[list[str]]:
    return [line.split("\t") for line in path.read_text().splitlines() if line]


def _meta_manifest() -> dict[str, torch.Tensor]:
    return {key: torch.empty(shape, device="meta") for key, shape in manifest("hallo3", "hallo3_sat_engine.tsv").items()}


def test_full_size_sat_manifest_maps_onto_every_parameter_on_meta(fixtures):
    sat = _meta_manifest()
    assert len(sat) == 2894
    with torch.device("meta"):
        model = Hallo3Model()  # the official sizes
    ours = model.state_dict()
    mapped, unused = sat_to_ours(sat)
    assert set(mapped) == set(ours), (sorted(set(ours) - set(mapped))[:5], sorted(set(mapped) - set(ours))[:5])
    assert [k for k in ours if tuple(ours[k].shape) != tuple(mapped[k].shape)] == []
    # every SAT key is used or listed as unused for a stated reason: T5/VAE (own files) or RoPE/absolute tables
    assert all(k.startswith(SAT_UNUSED_PREFIXES) or k.endswith(SAT_UNUSED_SUFFIXES) for k in unused)
    assert len(unused) == 220 + 436 + 2 * 3  # T5, VAE, and per transformer freqs_cos/sin + position_embeddings
    n_params = sum(v.numel() for k, v in ours.items())
    assert n_params == sum(v.numel() for k, v in sat.items() if k.startswith(tuple(NETS)) and
                           not k.endswith(SAT_UNUSED_SUFFIXES)) + 2 * 42 * 2 * 2 * 64  # + qk-LN copies in face/audio


def test_backbone_names_equal_diffusers_converter_key_map(fixtures):
    """Each row of the recorded SAT -> diffusers map (both transformers) is what our loader produces for that key."""
    rows = _tsv(MANIFESTS / "hallo3_sat_to_diffusers_keymap.tsv")[1:]
    mapped_rows = 0
    for sat_key, sat_shape, diffusers_key, diffusers_shape, _ in rows:
        out, unused = sat_to_ours({sat_key: torch.empty(ast.literal_eval(sat_shape), device="meta")})
        if diffusers_key == "-":  # dropped by the converter, or a Hallo3-only audio/face key
            assert unused == [sat_key] or "audio" in sat_key or "face" in sat_key, sat_key
            continue
        prefix = next(p for p in NETS if sat_key.startswith(p))
        target = NETS[prefix] + diffusers_key
        assert target in out, (sat_key, diffusers_key, list(out))
        assert list(out[target].shape) == ast.literal_eval(diffusers_shape)
        mapped_rows += 1
    assert mapped_rows == 2 * 1025  # both transformers hit every one of diffusers' 1025 keys


def test_tiny_checkpoint_loads_and_round_trips(fixtures):
    import json

    config = json.loads((TINY / "config.json").read_text())
    model = Hallo3Model(**config_from_sat(config["model_config"], config["audio_proj_args"], config["face_proj_args"]))
    path = find_sat_checkpoint(TINY)
    assert path == TINY / "1" / "mp_rank_00_model_states.pt"
    assert find_sat_checkpoint(TINY.parent / "hallo3_tiny") == path
    unused = load_sat_checkpoint(model, path)
    assert sorted(unused) == sorted(k for k in load_state_dict(path) if k.endswith(SAT_UNUSED_SUFFIXES))
    sat = load_state_dict(path)
    back = sat_from_ours(model.state_dict())
    assert set(back) == {k for k in sat if not k.endswith(SAT_UNUSED_SUFFIXES)}
    assert all(torch.equal(back[k], sat[k]) for k in back)
    # a raw training checkpoint may carry T5/VAE entries too: they are ignored
    extra = {**sat, "conditioner.embedders.0.transformer.shared.weight": torch.zeros(2, 2),
             "first_stage_model.decoder.conv_in.weight": torch.zeros(2)}
    mapped, unused = sat_to_ours(extra)
    assert "conditioner.embedders.0.transformer.shared.weight" in unused and set(mapped) == set(model.state_dict())


def test_missing_files_and_keys_are_named(fixtures, tmp_path):
    with pytest.raises(CheckpointError, match="latest"):
        find_sat_checkpoint(tmp_path)
    (tmp_path / "latest").write_text("7\n")
    with pytest.raises(CheckpointError, match="7/mp_rank_00_model_states.pt"):
        find_sat_checkpoint(tmp_path)
    (tmp_path / "7").mkdir()
    sat = load_state_dict(TINY / "1" / "mp_rank_00_model_states.pt")
    dropped = ["model.diffusion_model.transformer.layers.1.audio_attn.key_value.weight",
               "ref_model.diffusion_model.time_embed.0.bias"]
    torch.save({"module": {k: v for k, v in sat.items() if k not in dropped}}, tmp_path / "7" / "mp_rank_00_model_states.pt")
    import json

    config = json.loads((TINY / "config.json").read_text())
    model = Hallo3Model(**config_from_sat(config["model_config"], config["audio_proj_args"], config["face_proj_args"]))
    with pytest.raises(CheckpointError) as err:
        load_sat_checkpoint(model, find_sat_checkpoint(tmp_path))
    message = str(err.value)
    for key in ("transformer.transformer_blocks.1.cross_layers.audio_attn.attn.to_k.weight",
                "transformer.transformer_blocks.1.cross_layers.audio_attn.attn.to_v.weight",
                "reference_net.time_embedding.linear_1.bias"):
        assert key in message
    (tmp_path / "7" / "mp_rank_00_model_states.pt").write_bytes(b"not a pickle")
    with pytest.raises(CheckpointError, match="cannot read"):
        load_sat_checkpoint(model, find_sat_checkpoint(tmp_path))


def test_a_pickle_with_code_is_refused(fixtures, tmp_path):
    """weights_only: a checkpoint that would run code on load is rejected, not executed."""
    shutil.copy(TINY / "latest", tmp_path / "latest")
    (tmp_path / "1").mkdir()
    torch.save({"module": {"x": torch.zeros(1)}, "hook": shutil.rmtree}, tmp_path / "1" / "mp_rank_00_model_states.pt")
    with pytest.raises(CheckpointError, match="cannot read"):
        load_state_dict(find_sat_checkpoint(tmp_path))


def test_full_size_sat_vae_maps_onto_diffusers_cogvideox_vae_on_meta(fixtures):
    from diffusers import AutoencoderKLCogVideoX

    from talkinghead.systems.hallo3.model import COGVIDEOX_5B_VAE
    from talkinghead.systems.hallo3.release import sat_vae_from_diffusers, sat_vae_to_diffusers

    sat = {k: v for k, v in _meta_manifest().items() if k.startswith("first_stage_model.")}
    assert len(sat) == 436
    with torch.device("meta"):
        vae = AutoencoderKLCogVideoX(**COGVIDEOX_5B_VAE)
    ours, mapped = vae.state_dict(), sat_vae_to_diffusers(sat)
    assert set(mapped) == set(ours)
    assert [k for k in ours if tuple(ours[k].shape) != tuple(mapped[k].shape)] == []
    assert set(sat_vae_from_diffusers(mapped)) == {k.removeprefix("first_stage_model.") for k in sat}


def test_bf16_weights_sample_close_to_fp32(fixtures):
    """The GPU path casts the release to bf16 (`--dtype bf16`): the official sampling run stays close to fp32."""
    from safetensors.torch import load_file

    from talkinghead.systems.hallo3.verify import load_fixture_model, run_recorded_inputs

    model, config = load_fixture_model(TINY)
    io = load_file(str(TINY / "io.safetensors"))
    model.to(torch.bfloat16)
    half = {k: (v.to(torch.bfloat16) if k.startswith("in.") else v) for k, v in io.items()}
    samples = run_recorded_inputs(model, config, half)["s.samples"].float()
    assert (samples - io["s.samples"]).abs().max() < 0.05 * io["s.samples"].abs().max()
