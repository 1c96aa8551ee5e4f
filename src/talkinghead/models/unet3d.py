"""The video UNet of the UNet family (Hallo, Hallo2, EchoMimic, EMO, Loopy): an SD-1.5 image UNet from
upstream diffusers run per frame (frames folded into the batch), with a temporal motion module and an
optional audio-attention module after every spatial transformer. Composition, not a fork: the spatial
layers are diffusers' own; this file only adds modules and spells out the order they run in."""
from __future__ import annotations

import inspect
from dataclasses import asdict, dataclass, field

import torch
from diffusers import UNet2DConditionModel
from einops import rearrange
from torch import nn

from ..nn.audio_attention import AudioAttentionModule
from ..nn.reference_attention import ReferenceBank
from ..nn.temporal import MotionModule, TemporalConfig

N_LEVELS = 4  # mask-pyramid levels: latent size /1, /2, /4, /8

# stable-diffusion-v1-5/unet/config.json: the image UNet every system of the UNet family starts from
SD15_UNET = {
    "act_fn": "silu", "attention_head_dim": 8, "block_out_channels": [320, 640, 1280, 1280],
    "center_input_sample": False, "cross_attention_dim": 768,
    "down_block_types": ["CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "DownBlock2D"],
    "downsample_padding": 1, "flip_sin_to_cos": True, "freq_shift": 0, "in_channels": 4, "layers_per_block": 2,
    "mid_block_scale_factor": 1, "norm_eps": 1e-05, "norm_num_groups": 32, "out_channels": 4, "sample_size": 64,
    "up_block_types": ["UpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D"],
}


def image_unet(config: dict) -> UNet2DConditionModel:
    """A diffusers UNet2DConditionModel from an SD-style config dict (unknown and private keys ignored)."""
    accepted = set(inspect.signature(UNet2DConditionModel.__init__).parameters) - {"self"}
    kwargs = {k: (tuple(v) if isinstance(v, list) else v) for k, v in config.items() if k in accepted}
    return UNet2DConditionModel(**kwargs)


def reference_unet(config: dict, cross_attention: bool = True) -> UNet2DConditionModel:
    """The ReferenceNet: an image UNet whose output head is dropped (only its attention inputs are used).

    Like the official Hallo/EchoMimic reference nets it has no `conv_norm_out`/`conv_out`.
    `cross_attention=False` removes every `attn2`/`norm2` (EchoMimic's reference net has none).
    """
    unet = image_unet(config)
    unet.conv_norm_out = None
    unet.conv_out = nn.Identity()
    if not cross_attention:
        for module in unet.modules():
            if hasattr(module, "attn2") and hasattr(module, "norm2"):
                module.attn2 = None
                module.norm2 = None
    return unet


@dataclass
class VideoUNetConfig:
    """`unet` is the SD `unet/config.json`; the rest are Hallo/AnimateDiff `unet_additional_kwargs`."""

    unet: dict
    motion_module: TemporalConfig | None = field(default_factory=TemporalConfig)
    motion_module_resolutions: tuple[int, ...] = (1, 2, 4, 8)
    motion_module_mid_block: bool = True
    motion_module_decoder_only: bool = False
    audio_attention_dim: int | None = 768  # None: no audio modules (EchoMimic feeds audio through attn2)
    stack_enable_blocks_name: tuple[str, ...] = ("up", "down", "mid")  # blocks with hierarchical (3-mask) audio
    stack_enable_blocks_depth: tuple[int, ...] = (0, 1, 2, 3)
    # Official Hallo runs its denoising UNet in training mode with gradient checkpointing; on that path
    # motion frames from the reference bank are prepended before every motion module, and the motion
    # modules of the attention-free blocks (down 3, up 0) are skipped. We reproduce that path.
    motion_frames_from_reference: bool = True
    motion_in_plain_blocks: bool = False
    # Hallo2's text control: a text AdaLN in every audio-attention block, modulated by a pooled prompt embedding
    # of this width. None: no text layers (the released nets' keys).
    text_dim: int | None = None

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> "VideoUNetConfig":
        d = dict(d)
        if d.get("motion_module") is not None:
            d["motion_module"] = TemporalConfig.from_dict(d["motion_module"])
        for key in ("motion_module_resolutions", "stack_enable_blocks_name", "stack_enable_blocks_depth"):
            if key in d:
                d[key] = tuple(d[key])
        return cls(**{k: v for k, v in d.items() if k in cls.__dataclass_fields__})


class VideoUNet3D(nn.Module):
    """SD UNet + motion modules + audio modules. State-dict keys equal the official UNet3D's.

    Inputs are video tensors (b, c, f, h, w); internally frames are folded into the batch.
    """

    def __init__(self, config: VideoUNetConfig):
        super().__init__()
        self.config = config
        base = image_unet(config.unet)
        self.unet_config = base.config
        for name in ("conv_in", "time_proj", "time_embedding", "down_blocks", "mid_block", "up_blocks",
                     "conv_norm_out", "conv_act", "conv_out"):
            setattr(self, name, getattr(base, name))
        heads = self._heads()
        channels = list(base.config.block_out_channels)
        n = len(channels)
        for i, block in enumerate(self.down_blocks):
            block_in = channels[max(i - 1, 0)]
            layer_in = [block_in] + [channels[i]] * (len(block.resnets) - 1)
            self._add_modules(block, "down", i, 2 ** i, channels[i], layer_in, heads[i])
        self._add_modules(self.mid_block, "mid", N_LEVELS - 1, None, channels[-1], [channels[-1]], heads[-1])
        reversed_channels = channels[::-1]
        reversed_heads = heads[::-1]
        for i, block in enumerate(self.up_blocks):
            block_in = reversed_channels[min(i + 1, n - 1)]
            self._add_modules(block, "up", N_LEVELS - 1 - i, 2 ** (n - 1 - i), reversed_channels[i],
                              [block_in] * len(block.resnets), reversed_heads[i])

    # -- construction -------------------------------------------------------------------------------
    def _heads(self) -> list[int]:
        # diffusers naming quirk: for SD 1.x `attention_head_dim` holds the number of heads
        heads = self.unet_config.num_attention_heads or self.unet_config.attention_head_dim
        n = len(self.unet_config.block_out_channels)
        return list(heads) if isinstance(heads, (list, tuple)) else [heads] * n

    def _add_modules(self, block: nn.Module, kind: str, depth: int, resolution: int | None, out_channels: int,
                     layer_in: list[int], heads: int) -> None:
        """`depth` is Hallo's block depth (down i: i, mid: 3, up i: 3-i): it picks the mask-pyramid level
        the audio modules read and, with the block kind, whether their audio attention is hierarchical."""
        cfg = self.config
        has_attention = hasattr(block, "attentions")
        n_layers = len(block.attentions) if (kind == "mid") else len(block.resnets)
        if cfg.motion_module is not None:
            wanted = cfg.motion_module_mid_block if kind == "mid" else (
                resolution in cfg.motion_module_resolutions and not (cfg.motion_module_decoder_only and kind == "down"))
            if wanted:
                block.motion_modules = nn.ModuleList(
                    [MotionModule(out_channels, cfg.motion_module) for _ in range(n_layers)])
        if cfg.audio_attention_dim is not None and has_attention:
            hierarchical = kind in cfg.stack_enable_blocks_name and depth in cfg.stack_enable_blocks_depth
            block.audio_modules = nn.ModuleList([
                AudioAttentionModule(out_channels, c_in, heads, cfg.audio_attention_dim, depth, hierarchical,
                                     self.unet_config.norm_num_groups, cfg.text_dim)
                for c_in in layer_in[:n_layers]])

    # -- forward ------------------------------------------------------------------------------------
    def forward(self, sample: torch.Tensor, timestep: torch.Tensor | float, encoder_hidden_states: torch.Tensor,
                audio_tokens: torch.Tensor | None = None, location: torch.Tensor | None = None,
                region_masks: dict[str, list[torch.Tensor]] | None = None,
                branch_weights: tuple[float, float, float] | None = None,
                reference: ReferenceBank | None = None, added_embedding: torch.Tensor | None = None,
                text_embedding: torch.Tensor | None = None) -> torch.Tensor:
        """sample (b, 4, f, h, w) noisy latents; encoder_hidden_states (b, n, d) image tokens, or
        (b, f, n, d) per-frame tokens;
        audio_tokens (b, f, tokens, d_audio); location (b, c0, f, h, w) face-locator features added after
        conv_in; region_masks {"full"|"face"|"lip": [level 0..3 masks ((b f), h_l*w_l)]};
        branch_weights the full/face/lip weights (Hallo's motion_scale); reference the filled bank
        (its attention processors are installed by `attach_reference`); added_embedding (b, f, d_time)
        per-frame additions to the timestep embedding (EMO speed, Loopy motion latents); text_embedding (b, d_text)
        the pooled prompt embedding the text AdaLNs read (a net built with text_dim). Returns (b, 4, f, h, w)."""
        b, _, f, h, w = sample.shape
        t = torch.as_tensor(timestep, device=sample.device).reshape(-1).expand(b)
        emb = self.time_embedding(self.time_proj(t).to(sample.dtype))
        emb = emb.repeat_interleave(f, 0)
        if added_embedding is not None:
            emb = emb + rearrange(added_embedding, "b f d -> (b f) d").to(emb.dtype)
        ctx = _Context(
            emb=emb,
            # (b, n, d): one token set for every frame; (b, f, n, d): per-frame tokens (EchoMimic's audio)
            tokens=(rearrange(encoder_hidden_states, "b f n d -> (b f) n d") if encoder_hidden_states.ndim == 4
                    else encoder_hidden_states.repeat_interleave(f, 0)),
            audio=None if audio_tokens is None else rearrange(audio_tokens, "b f n c -> (b f) n c"),
            masks=region_masks, weights=branch_weights, frames=f,
            text=None if text_embedding is None else text_embedding.to(emb.dtype).repeat_interleave(f, 0),
            bank=reference if self.config.motion_frames_from_reference else None)

        x = self.conv_in(rearrange(sample, "b c f h w -> (b f) c h w"))
        if location is not None:
            x = x + rearrange(location, "b c f h w -> (b f) c h w")

        skips = [x]
        for i, block in enumerate(self.down_blocks):
            for j, resnet in enumerate(block.resnets):
                x = resnet(x, ctx.emb)
                x = self._after_resnet(block, f"down_blocks.{i}", j, x, ctx)
                skips.append(x)
            if block.downsamplers is not None:
                x = block.downsamplers[0](x)
                skips.append(x)

        block = self.mid_block
        x = block.resnets[0](x, ctx.emb)
        for j, resnet in enumerate(block.resnets[1:]):
            x = self._after_resnet(block, "mid_block", j, x, ctx)
            x = resnet(x, ctx.emb)

        for i, block in enumerate(self.up_blocks):
            for j, resnet in enumerate(block.resnets):
                x = resnet(torch.cat([x, skips.pop()], dim=1), ctx.emb)
                x = self._after_resnet(block, f"up_blocks.{i}", j, x, ctx)
            if block.upsamplers is not None:
                size = skips[-1].shape[2:] if skips else None
                x = block.upsamplers[0](x, output_size=size)

        x = self.conv_out(self.conv_act(self.conv_norm_out(x)))
        return rearrange(x, "(b f) c h w -> b c f h w", f=f)

    def _after_resnet(self, block: nn.Module, path: str, j: int, x: torch.Tensor, ctx: "_Context") -> torch.Tensor:
        """spatial transformer → audio attention → motion module, for layer j of a block."""
        attentions = getattr(block, "attentions", None)
        motion = getattr(block, "motion_modules", None)
        if attentions is None:  # attention-free block
            if motion is not None and self.config.motion_in_plain_blocks:
                x = motion[j](x, ctx.frames)
            return x
        x = attentions[j](x, encoder_hidden_states=ctx.tokens, return_dict=False)[0]
        audio = getattr(block, "audio_modules", None)
        if audio is not None and ctx.audio is not None:
            x = audio[j](x, ctx.audio, ctx.masks, ctx.weights, ctx.text)
        if motion is not None:
            x = motion[j](x, ctx.frames, ctx.motion_frames(f"{path}.attentions.{j}.transformer_blocks.0", x))
        return x


@dataclass
class _Context:
    """Per-call inputs shared by every layer, with frames folded into the batch."""

    emb: torch.Tensor
    tokens: torch.Tensor
    audio: torch.Tensor | None
    masks: dict | None
    weights: tuple | None
    frames: int
    text: torch.Tensor | None
    bank: ReferenceBank | None

    def motion_frames(self, name: str, x: torch.Tensor) -> torch.Tensor | None:
        """The reference net's features of the motion frames at this layer, (groups, c, m, h, w)."""
        if self.bank is None:
            return None
        feats = self.bank.motion_frames(name)
        if feats is None:
            return None
        return rearrange(feats, "b m (h w) c -> b c m h w", h=x.shape[-2])
