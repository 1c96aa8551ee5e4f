"""Our own weights, one way: every assembled net is a diffusers ModelMixin/ConfigMixin over its typed config, so
`save_pretrained(folder)` writes config.json + diffusion_pytorch_model.safetensors and `from_pretrained(folder)`
rebuilds the same net from that local folder, every key checked."""
from __future__ import annotations

import json

import pytest
import torch
from safetensors.torch import load_file, save_file

from talkinghead.errors import CheckpointError
from talkinghead.systems.emo.model import EMOConfig, EMONet
from talkinghead.models.unet3d import SD15_UNET
from talkinghead.systems.loopy.model import LoopyConfig, LoopyNet
from talkinghead.systems.midas.model import MidasConfig, MidasTransformer
from talkinghead.nn.loopy import AudioToLatentsConfig
from talkinghead.nn.speed import SpeedConfig
from talkinghead.nn.temporal import TemporalConfig
from talkinghead.systems.unet_adapter import TINY_MODEL
from talkinghead.systems.echomimic.train import EchoMimicTrainNet
from talkinghead.systems.hallo.train import HalloTrainNet

TINY_UNET = {**SD15_UNET, "block_out_channels": [32, 32, 32, 32], "layers_per_block": 1, "attention_head_dim": 2,
             "cross_attention_dim": 16, "sample_size": 8}
MOTION = TemporalConfig(num_attention_heads=2)

BUILDERS = {
    "emo": lambda: EMONet(EMOConfig(unet=TINY_UNET, audio_dim=8, motion=MOTION, speed=SpeedConfig(dim=128),
                                    face_locator=(16,))),
    "loopy": lambda: LoopyNet(LoopyConfig(unet=TINY_UNET, audio_dim=8, motion=MOTION,
                                          audio_to_latents=AudioToLatentsConfig(audio_dim=16, dim=16, heads=2,
                                                                                num_latents=4, time_embed_dim=128))),
    "hallo": lambda: HalloTrainNet.for_system(TINY_UNET, 2, TINY_MODEL["hallo"]),
    "echomimic": lambda: EchoMimicTrainNet.for_system(TINY_UNET, 2, TINY_MODEL["echomimic"]),
    "midas": lambda: MidasTransformer(MidasConfig.tiny()),
}


@pytest.mark.parametrize("name", BUILDERS)
def test_save_pretrained_round_trips_config_and_every_weight(name, tmp_path):
    torch.manual_seed(0)
    net = BUILDERS[name]()
    net.save_pretrained(tmp_path)
    assert {p.name for p in tmp_path.iterdir()} == {"config.json", "diffusion_pytorch_model.safetensors"}
    assert json.loads((tmp_path / "config.json").read_text())["_class_name"] == type(net).__name__
    loaded = type(net).from_pretrained(tmp_path)
    assert type(loaded.config) is type(net.config) and loaded.config == net.config
    a, b = net.state_dict(), loaded.state_dict()
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    assert not loaded.training


def test_a_submodule_named_like_a_config_field_is_the_submodule():
    net = BUILDERS["emo"]()  # EMOConfig has fields `speed` and `face_locator`; so has the net, as modules
    assert isinstance(net.speed, torch.nn.Module) and isinstance(net.face_locator, torch.nn.Module)
    assert net.config.face_locator == (16,)


def test_missing_files_and_keys_are_one_checkpoint_error(tmp_path):
    net = BUILDERS["midas"]()
    net.save_pretrained(tmp_path)
    weights = tmp_path / "diffusion_pytorch_model.safetensors"
    state = load_file(str(weights))
    dropped = sorted(state)[0]
    save_file({k: v for k, v in state.items() if k != dropped}, str(weights))
    with pytest.raises(CheckpointError, match="missing from the file") as err:
        MidasTransformer.from_pretrained(tmp_path)
    assert dropped in str(err.value)
    weights.unlink()
    (tmp_path / "config.json").unlink()
    with pytest.raises(CheckpointError) as err:
        MidasTransformer.from_pretrained(tmp_path)
    assert "config.json" in str(err.value) and "diffusion_pytorch_model.safetensors" in str(err.value)
