"""Our state-dict names and shapes equal the official checkpoints' (manifests made by the official code),
checked on the meta device: no full-size weights needed."""
from __future__ import annotations

import json

import pytest
import torch

from talkinghead.errors import CheckpointError
from talkinghead.models.checkpoints import key_report, load_state_dict
from talkinghead.systems.echomimic.model import EchoMimicNet
from talkinghead.systems.echomimic.release import load_net as load_echomimic_net
from talkinghead.systems.hallo.release import load_net as load_hallo_net
from talkinghead.systems.hallo.model import HalloConfig, HalloNet
from tests.support import manifest


def _shapes(module: torch.nn.Module) -> dict[str, list[int]]:
    return {k: list(v.shape) for k, v in module.state_dict().items()}


def test_hallo_full_size_equals_official_net_pth(hallo_dir):
    # `--engine hallo2` loads hallo2/net.pth into this same Net: upstream Hallo2 builds the same Net class
    # from the same configs (no Hallo2 manifest exists to check that against)
    with torch.device("meta"):
        net = HalloNet(HalloConfig())
    ours = _shapes(net)
    official = manifest("hallo", "hallo_net.tsv")
    assert ours == official
    assert len(ours) == 2656
    # module order matches the official Net (reference_unet, denoising_unet, face_locator, imageproj, audioproj)
    assert [k.split(".")[0] for k in ours][::700] == ["reference_unet", "denoising_unet", "denoising_unet",
                                                       "denoising_unet"]


def test_hallo_tiny_equals_its_manifest_and_loads_strictly(hallo_dir):
    config = HalloConfig.from_reference_run(json.loads((hallo_dir / "hallo_tiny" / "config.json").read_text()))
    net = load_hallo_net(hallo_dir / "hallo_tiny" / "net.pth", config)
    assert _shapes(net) == manifest("hallo", "hallo_tiny_net.tsv")


def test_echomimic_parts_equal_official_files(hallo_dir):
    with torch.device("meta"):
        net = EchoMimicNet()
    assert _shapes(net.reference_unet) == manifest("hallo", "echomimic_reference_unet.tsv")
    assert _shapes(net.denoising_unet) == manifest("hallo", "echomimic_denoising_unet.tsv")
    assert _shapes(net.face_locator) == manifest("hallo", "echomimic_face_locator.tsv")
    motion = {k: v for k, v in _shapes(net.denoising_unet).items() if "motion_modules" in k}
    assert motion == manifest("hallo", "echomimic_motion_module.tsv")


def test_echomimic_release_loads_and_a_missing_file_is_listed(tmp_path):
    from talkinghead.systems.echomimic.model import EchoMimicConfig

    tiny_unet = {"block_out_channels": [32, 32, 32, 32], "layers_per_block": 1, "attention_head_dim": 2,
                 "cross_attention_dim": 32, "norm_num_groups": 32, "sample_size": 8}
    config = EchoMimicConfig(unet={**EchoMimicConfig().unet, **tiny_unet}, audio_dim=16,
                             motion_module={**EchoMimicConfig().motion_module, "num_attention_heads": 2},
                             face_locator={"conditioning_embedding_channels": 32, "conditioning_channels": 1,
                                           "block_out_channels": [4, 8, 8, 16]})
    torch.manual_seed(0)
    net = EchoMimicNet(config)
    unet = net.denoising_unet.state_dict()
    torch.save(net.reference_unet.state_dict(), tmp_path / "reference_unet.pth")
    torch.save({k: v for k, v in unet.items() if "motion_modules" not in k}, tmp_path / "denoising_unet.pth")
    torch.save({k: v for k, v in unet.items() if "motion_modules" in k}, tmp_path / "motion_module.pth")
    torch.save(net.face_locator.state_dict(), tmp_path / "face_locator.pth")
    loaded = load_echomimic_net(tmp_path, config)
    for k, v in net.state_dict().items():
        assert torch.equal(loaded.state_dict()[k], v), k
    (tmp_path / "face_locator.pth").unlink()
    with pytest.raises(CheckpointError, match="face_locator.pth"):
        load_echomimic_net(tmp_path, config)


def test_key_report_lists_missing_unexpected_and_shape_changes():
    model = {"a": torch.zeros(2), "b": torch.zeros(3), "c": torch.zeros(1)}
    file = {"a": torch.zeros(2), "b": torch.zeros(4), "d": torch.zeros(1)}
    text = "\n".join(key_report(model, file))
    assert "1 keys missing from the file:\n  c" in text
    assert "1 keys in the file but not in the model:\n  d" in text
    assert "b: file [4] vs model [3]" in text
    assert key_report(model, dict(model)) == []


def test_pickles_are_loaded_weights_only(tmp_path):
    class Evil:
        def __reduce__(self):
            return (print, ("executed",))

    torch.save({"w": torch.zeros(1), "x": Evil()}, tmp_path / "bad.pth")
    with pytest.raises(CheckpointError, match="weights-only"):
        load_state_dict(tmp_path / "bad.pth")
    (tmp_path / "trunc.safetensors").write_bytes(b"\x00\x01")
    with pytest.raises(CheckpointError, match="cannot read"):
        load_state_dict(tmp_path / "trunc.safetensors")
