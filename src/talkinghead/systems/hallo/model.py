"""Hallo (Xu et al. 2024, "Hierarchical Audio-Driven Visual Synthesis for Portrait Image Animation"):
ReferenceNet + video UNet with hierarchical audio attention and motion modules, a face locator, and
projections of a face embedding and wav2vec audio windows, named so that the official `net.pth` loads key for key
(systems/hallo/release.py)."""
from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field

from ...models.checkpoints import ConfiguredModel
from ...models.unet3d import SD15_UNET, VideoUNet3D, VideoUNetConfig, reference_unet
from ...nn.face_locator import FaceLocator
from ...nn.projections import AudioProjection, ImageProjection
from ...nn.temporal import TemporalConfig

# configs/inference/default.yaml: unet_additional_kwargs of the official release
HALLO_UNET_ADDITIONAL = {
    "use_inflated_groupnorm": True, "unet_use_cross_frame_attention": False, "unet_use_temporal_attention": False,
    "use_motion_module": True, "use_audio_module": True, "motion_module_resolutions": [1, 2, 4, 8],
    "motion_module_mid_block": True, "motion_module_decoder_only": False, "motion_module_type": "Vanilla",
    "motion_module_kwargs": {"num_attention_heads": 8, "num_transformer_block": 1,
                             "attention_block_types": ["Temporal_Self", "Temporal_Self"],
                             "temporal_position_encoding": True, "temporal_position_encoding_max_len": 32,
                             "temporal_attention_dim_div": 1},
    "audio_attention_dim": 768, "stack_enable_blocks_name": ["up", "down", "mid"],
    "stack_enable_blocks_depth": [0, 1, 2, 3],
}


@dataclass
class HalloConfig:
    """Every size of the Hallo net, in the official constructor-argument names."""

    unet: dict = field(default_factory=lambda: dict(SD15_UNET))
    unet_additional_kwargs: dict = field(default_factory=lambda: json.loads(json.dumps(HALLO_UNET_ADDITIONAL)))
    face_locator: dict = field(default_factory=lambda: {
        "conditioning_embedding_channels": 320, "conditioning_channels": 3, "block_out_channels": [16, 32, 64, 128]})
    image_proj: dict = field(default_factory=lambda: {
        "cross_attention_dim": 768, "clip_embeddings_dim": 512, "clip_extra_context_tokens": 4})
    audio_proj: dict = field(default_factory=lambda: {
        "seq_len": 5, "blocks": 12, "channels": 768, "intermediate_dim": 512, "output_dim": 768, "context_tokens": 32})
    # Hallo2's text variant: the width of the pooled prompt embedding (the T5 encoder's d_model) that a text AdaLN
    # in every audio-attention block reads. None: the released architecture, whose keys `net.pth` holds.
    text_dim: int | None = None

    def denoising(self) -> VideoUNetConfig:
        extra = self.unet_additional_kwargs
        return VideoUNetConfig(
            unet=self.unet,
            motion_module=TemporalConfig.from_dict(extra["motion_module_kwargs"]) if extra.get("use_motion_module") else None,
            motion_module_resolutions=tuple(extra.get("motion_module_resolutions", (1, 2, 4, 8))),
            motion_module_mid_block=extra.get("motion_module_mid_block", True),
            motion_module_decoder_only=extra.get("motion_module_decoder_only", False),
            audio_attention_dim=extra.get("audio_attention_dim") if extra.get("use_audio_module") else None,
            stack_enable_blocks_name=tuple(extra.get("stack_enable_blocks_name") or ()),
            stack_enable_blocks_depth=tuple(extra.get("stack_enable_blocks_depth") or ()),
            text_dim=self.text_dim,
        )

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> "HalloConfig":
        return cls(**{k: v for k, v in d.items() if k in cls.__dataclass_fields__})

    @classmethod
    def from_reference_run(cls, d: dict) -> "HalloConfig":
        """From a reference-data `config.json` (the hallo reference data's */config.json layout)."""
        unet = d.get("reference_unet2d_config_json_input") or d["reference_unet2d_config"]
        return cls(unet=unet, unet_additional_kwargs=d["unet_additional_kwargs"], face_locator=d["face_locator"],
                   image_proj=d["image_proj"], audio_proj=d["audio_proj"])


class HalloNet(ConfiguredModel):
    """The five trained parts, named and ordered as the official `Net` (so `net.pth` loads strictly)."""

    config_class = HalloConfig

    def __init__(self, config: HalloConfig | None = None, **fields):
        super().__init__(config, **fields)
        config = self.config
        fl, ip, ap = config.face_locator, config.image_proj, config.audio_proj
        self.reference_unet = reference_unet(config.unet)
        self.denoising_unet = VideoUNet3D(config.denoising())
        self.face_locator = FaceLocator(fl["conditioning_embedding_channels"], fl.get("conditioning_channels", 3),
                                        tuple(fl.get("block_out_channels", (16, 32, 64, 128))))
        self.imageproj = ImageProjection(ip["cross_attention_dim"], ip["clip_embeddings_dim"],
                                         ip["clip_extra_context_tokens"])
        self.audioproj = AudioProjection(ap["seq_len"], ap["blocks"], ap["channels"], ap["intermediate_dim"],
                                         ap["output_dim"], ap["context_tokens"])
