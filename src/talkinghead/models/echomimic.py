"""EchoMimic v1 (Chen et al. 2024, "Lifelike Audio-Driven Portrait Animations through Editable Landmark
Conditions"): a ReferenceNet without text cross-attention, a video UNet whose cross-attention reads audio
features (whisper-tiny, 384-d) instead of text, and a landmark encoder (face locator on a 1-channel
landmark image) whose features are added element-wise after the first conv. Loads the official separate
.pth files (reference_unet, denoising_unet + motion_module, face_locator)."""
from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path

from torch import nn

from ..nn.face_locator import FaceLocator
from ..nn.temporal import TemporalConfig
from .checkpoints import load_state_dict, load_strict, require_files
from .hallo import SD15_UNET
from .unet3d import VideoUNet3D, VideoUNetConfig, reference_unet

# lambdalabs/sd-image-variations-diffusers unet/config.json is structurally SD 1.5 (cross_attention_dim 768)
SD_IMAGE_VARIATIONS_UNET = dict(SD15_UNET)
AUDIO_DIM = 384  # whisper-tiny encoder width

# configs/inference/inference_v2.yaml: unet_additional_kwargs
ECHOMIMIC_MOTION = {"num_attention_heads": 8, "num_transformer_block": 1,
                    "attention_block_types": ["Temporal_Self", "Temporal_Self"], "temporal_position_encoding": True,
                    "temporal_position_encoding_max_len": 32, "temporal_attention_dim_div": 1}


@dataclass
class EchoMimicConfig:
    unet: dict = field(default_factory=lambda: dict(SD_IMAGE_VARIATIONS_UNET))
    audio_dim: int = AUDIO_DIM
    motion_module: dict = field(default_factory=lambda: dict(ECHOMIMIC_MOTION))
    face_locator: dict = field(default_factory=lambda: {
        "conditioning_embedding_channels": 320, "conditioning_channels": 1, "block_out_channels": [16, 32, 96, 256]})

    def denoising(self) -> VideoUNetConfig:
        return VideoUNetConfig(
            unet={**self.unet, "cross_attention_dim": self.audio_dim},
            motion_module=TemporalConfig.from_dict(self.motion_module),
            audio_attention_dim=None,  # audio enters through attn2
            motion_frames_from_reference=False,  # EchoMimic runs the plain (eval) path
            motion_in_plain_blocks=True,
        )

    def to_dict(self) -> dict:
        return asdict(self)


class EchoMimicNet(nn.Module):
    """The three trained parts under the names of the official files."""

    def __init__(self, config: EchoMimicConfig | None = None):
        super().__init__()
        self.config = config = config or EchoMimicConfig()
        fl = config.face_locator
        self.reference_unet = reference_unet(config.unet, cross_attention=False)
        self.denoising_unet = VideoUNet3D(config.denoising())
        self.face_locator = FaceLocator(fl["conditioning_embedding_channels"], fl["conditioning_channels"],
                                        tuple(fl["block_out_channels"]))

    @classmethod
    def from_release(cls, folder: Path, config: EchoMimicConfig | None = None) -> "EchoMimicNet":
        """Load the official `pretrained_weights/` folder (strict over the union of the UNet files)."""
        folder = Path(folder)
        files = require_files(folder, {
            "reference UNet": ["reference_unet.pth"],
            "denoising UNet": ["denoising_unet.pth"],
            "motion module": ["motion_module.pth"],
            "landmark encoder": ["face_locator.pth"],
        }, "EchoMimic (pretrained_weights/)")
        config = config or _config_from_folder(folder)
        net = cls(config)
        load_strict(net.reference_unet, load_state_dict(files["reference UNet"]), files["reference UNet"])
        # official loading order: the motion module first, then denoising_unet.pth on top
        unet_state = {**load_state_dict(files["motion module"]), **load_state_dict(files["denoising UNet"])}
        load_strict(net.denoising_unet, unet_state, "denoising_unet.pth + motion_module.pth")
        load_strict(net.face_locator, load_state_dict(files["landmark encoder"]), files["landmark encoder"])
        return net.eval()


def _config_from_folder(folder: Path) -> EchoMimicConfig:
    """Use the release's sd-image-variations unet config when it is there, else the built-in copy."""
    for rel in ("sd-image-variations-diffusers/unet/config.json", "unet/config.json"):
        if (folder / rel).is_file():
            return EchoMimicConfig(unet=json.loads((folder / rel).read_text()))
    return EchoMimicConfig()
