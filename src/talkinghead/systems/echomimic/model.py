"""EchoMimic v1 (Chen et al. 2024, "Lifelike Audio-Driven Portrait Animations through Editable Landmark
Conditions"): a ReferenceNet without text cross-attention, a video UNet whose cross-attention reads audio
features (whisper-tiny, 384-d) instead of text, its output scaled by `audio_feature_ratio` (3.0 upstream),
and a landmark encoder (face locator on a 1-channel face-mask image, or a 3-channel landmark image for the
landmark-driven release files) whose features are added element-wise after the first conv. Loads the
official separate .pth files (reference_unet, denoising_unet + motion_module, face_locator[_pose])."""
from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch
from diffusers.models.attention import BasicTransformerBlock
from diffusers.models.attention_processor import AttnProcessor2_0

from ...models.checkpoints import ConfiguredModel, load_state_dict, load_strict, require_files
from ...models.unet3d import VideoUNet3D, VideoUNetConfig, reference_unet
from ...nn.face_locator import FaceLocator
from ...nn.temporal import TemporalConfig
from ..hallo.model import SD15_UNET

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
    # the rest of inference_v2.yaml's unet_additional_kwargs
    motion_module_resolutions: tuple[int, ...] = (1, 2, 4, 8)
    motion_module_mid_block: bool = True
    motion_module_decoder_only: bool = False
    audio_feature_ratio: float = 3.0  # the audio cross-attention output is scaled by this before the residual

    @classmethod
    def from_release_configs(cls, unet: dict, unet_additional_kwargs: dict | None = None,
                             face_locator: dict | None = None) -> "EchoMimicConfig":
        """From the base `unet/config.json` and an `unet_additional_kwargs` dict (inference_v2.yaml)."""
        extra = unet_additional_kwargs or {}
        base = cls()
        return cls(unet=dict(unet), audio_dim=extra.get("cross_attention_dim", AUDIO_DIM),
                   motion_module=dict(extra.get("motion_module_kwargs", base.motion_module)),
                   face_locator=dict(face_locator or base.face_locator),
                   motion_module_resolutions=tuple(extra.get("motion_module_resolutions", (1, 2, 4, 8))),
                   motion_module_mid_block=extra.get("motion_module_mid_block", True),
                   motion_module_decoder_only=extra.get("motion_module_decoder_only", False))

    def denoising(self) -> VideoUNetConfig:
        return VideoUNetConfig(
            unet={**self.unet, "cross_attention_dim": self.audio_dim},
            motion_module=TemporalConfig.from_dict(self.motion_module),
            motion_module_resolutions=tuple(self.motion_module_resolutions),
            motion_module_mid_block=self.motion_module_mid_block,
            motion_module_decoder_only=self.motion_module_decoder_only,
            audio_attention_dim=None,  # audio enters through attn2
            motion_frames_from_reference=False,  # EchoMimic runs the plain (eval) path
            motion_in_plain_blocks=True,
        )

    def to_dict(self) -> dict:
        return asdict(self)


class ScaledCrossAttnProcessor(AttnProcessor2_0):
    """SDPA attention whose output (after `to_out`) is multiplied by `scale`: EchoMimic's audio cross-attention."""

    def __init__(self, scale: float):
        super().__init__()
        self.scale = scale

    def __call__(self, attn, hidden_states, encoder_hidden_states=None, attention_mask=None, temb=None,
                 *args, **kwargs) -> torch.Tensor:
        return super().__call__(attn, hidden_states, encoder_hidden_states, attention_mask, temb) * self.scale


class EchoMimicNet(ConfiguredModel):
    """The three trained parts under the names of the official files.

    The denoising UNet's `attn2` layers read per-frame audio tokens, passed as `encoder_hidden_states`
    shaped (b, f, tokens, 384); their output is scaled by `config.audio_feature_ratio`.
    """

    config_class = EchoMimicConfig

    def __init__(self, config: EchoMimicConfig | None = None, **fields):
        super().__init__(config, **fields)
        config = self.config
        fl = config.face_locator
        self.reference_unet = reference_unet(config.unet, cross_attention=False)
        self.denoising_unet = VideoUNet3D(config.denoising())
        self.face_locator = FaceLocator(fl["conditioning_embedding_channels"], fl["conditioning_channels"],
                                        tuple(fl["block_out_channels"]))
        for module in self.denoising_unet.modules():
            if isinstance(module, BasicTransformerBlock) and module.attn2 is not None:
                module.attn2.set_processor(ScaledCrossAttnProcessor(config.audio_feature_ratio))


def load_release(folder: str | Path, config: EchoMimicConfig | None = None, landmarks: bool = False) -> EchoMimicNet:
    """Load the official `pretrained_weights/` folder (strict over the union of the UNet files).

    `landmarks=True` loads the landmark-driven set: `face_locator_pose.pth` (3-channel landmark images)
    and, where the folder has them, `reference_unet_pose.pth`, `denoising_unet_pose.pth` and
    `motion_module_pose.pth` (the plain files otherwise, as the architecture is the same). The face
    locator's sizes are read from its file; the rest from `config`, else the folder (see `_config_from_folder`).
    """
    folder = Path(folder)
    suffix = "_pose" if landmarks else ""

    def names(stem: str, required_pose: bool = False) -> list[str]:
        if not landmarks:
            return [f"{stem}.pth"]
        return [f"{stem}_pose.pth"] if required_pose else [f"{stem}_pose.pth", f"{stem}.pth"]

    files = require_files(folder, {
        "reference UNet": names("reference_unet"),
        "denoising UNet": names("denoising_unet"),
        "motion module": names("motion_module"),
        "landmark encoder": names("face_locator", required_pose=True),
    }, f"EchoMimic{' (landmark-driven)' if suffix else ''} (pretrained_weights/)")
    config = config or _config_from_folder(folder)
    locator_state = load_state_dict(files["landmark encoder"])
    config.face_locator = face_locator_sizes(locator_state, config.face_locator)
    net = EchoMimicNet(config)
    load_strict(net.reference_unet, load_state_dict(files["reference UNet"]), files["reference UNet"])
    # official loading order: the motion module first, then denoising_unet.pth on top
    unet_state = {**load_state_dict(files["motion module"]), **load_state_dict(files["denoising UNet"])}
    load_strict(net.denoising_unet, unet_state, "denoising_unet.pth + motion_module.pth")
    load_strict(net.face_locator, locator_state, files["landmark encoder"])
    return net.eval()


def face_locator_sizes(state: dict[str, torch.Tensor], default: dict) -> dict:
    """FaceLocator constructor sizes read from its weights (conv_in, blocks.N, conv_out); `default` if absent."""
    if "conv_in.weight" not in state or "conv_out.weight" not in state:
        return dict(default)
    widths = [state["conv_in.weight"].shape[0]]
    i = 1
    while f"blocks.{i}.weight" in state:
        widths.append(state[f"blocks.{i}.weight"].shape[0])
        i += 2
    return {"conditioning_embedding_channels": int(state["conv_out.weight"].shape[0]),
            "conditioning_channels": int(state["conv_in.weight"].shape[1]), "block_out_channels": widths}


RUN_CONFIG = "config.json"  # optional: {"unet_additional_kwargs": ...} overriding inference_v2.yaml's values


def _config_from_folder(folder: Path) -> EchoMimicConfig:
    """The release's sd-image-variations unet config when it is there (else the built-in SD copy), with
    `unet_additional_kwargs` from a `config.json` in the folder when it has them (else inference_v2.yaml's)."""
    unet = dict(SD_IMAGE_VARIATIONS_UNET)
    for rel in ("sd-image-variations-diffusers/unet/config.json", "unet/config.json"):
        if (folder / rel).is_file():
            unet = json.loads((folder / rel).read_text())
            break
    extra = None
    if (folder / RUN_CONFIG).is_file():
        extra = json.loads((folder / RUN_CONFIG).read_text()).get("unet_additional_kwargs")
    if extra is None:
        return EchoMimicConfig(unet=unet)
    return EchoMimicConfig.from_release_configs(unet, extra)
