"""EchoMimic v1 (Chen et al. 2024, "Lifelike Audio-Driven Portrait Animations through Editable Landmark
Conditions"): a ReferenceNet without text cross-attention, a video UNet whose cross-attention reads audio
features (whisper-tiny, 384-d) instead of text, its output scaled by `audio_feature_ratio` (3.0 upstream),
and a landmark encoder (face locator on a 1-channel face-mask image, or a 3-channel landmark image for the
landmark-driven release files) whose features are added element-wise after the first conv. Named as the
official separate .pth files, which systems/echomimic/release.py loads."""
from __future__ import annotations

from dataclasses import asdict, dataclass, field

import torch
from diffusers.models.attention import BasicTransformerBlock
from diffusers.models.attention_processor import AttnProcessor2_0

from ...models.checkpoints import ConfiguredModel
from ...models.unet3d import SD15_UNET, VideoUNet3D, VideoUNetConfig, reference_unet
from ...nn.face_locator import FaceLocator
from ...nn.temporal import TemporalConfig

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
