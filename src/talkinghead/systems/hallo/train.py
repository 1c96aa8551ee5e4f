"""Training net for Hallo (systems/hallo/model.py): the official net, subclassed so its parameter names (and
so stage patterns and checkpoints) stay the official ones, plus the small pieces a training batch needs that the
official training scripts get from elsewhere.

- Hallo §3.1/§3.2: reference net on [portrait, motion frames] with the face tokens; denoising UNet with
  the face locator (face-region image), image tokens and hierarchical audio attention over the lip/face/
  full masks resized to each latent level. The 512-d face embedding is all zeros in training (InsightFace
  is not available here): the image tokens are the projection's learned constant, i.e. training is
  unconditional in identity and the identity comes from the reference net alone.
- Audio: `audio_feats` (wav2vec2) when the dataset has them; otherwise the log-mel windows through a small
  trainable `mel_proj` (80 -> the features' width, shared over mel frames) that this net owns and that is not
  part of the official checkpoints; the projected mel frames of a window are average-pooled to the audio
  projection's window length and repeated over its wav2vec-layer axis.
- Hallo2's text variant (config `text_dim`): the batch's pooled prompt embedding (`text_embedding`, made by the
  training adapter from each clip's prompt) modulates the text AdaLN of every audio-attention block.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from einops import rearrange, repeat

from ...errors import InputError
from ...nn.reference_attention import ReferenceBank, attach_reference
from ..reference_training import MelProjection, ReferenceTraining, crop_square, merge
from .model import HalloConfig, HalloNet


FACE_EMBEDDING = 512  # InsightFace embedding width of Hallo's image projection
N_LEVELS = 4  # latent mask levels of the UNet: /1, /2, /4, /8
BRANCHES = ("lip", "face", "full")  # channel order of the dataset's `hallo_masks`


class HalloTrainNet(HalloNet, ReferenceTraining):
    """HalloNet + a reference bank + `mel_proj`, with `predict(noisy, t, batch)` for the trainer's System and
    `predictor(batch)` for its sampler (ReferenceTraining)."""

    def __init__(self, config: HalloConfig | None = None, **fields):
        super().__init__(config, **fields)
        config = self.config
        ap = config.audio_proj
        self.mel_proj = MelProjection(ap["channels"])
        self.bank = ReferenceBank(dtype=None)
        attach_reference(self.reference_unet, self.denoising_unet, self.bank)

    @classmethod
    def for_system(cls, unet: dict, motion_heads: int, model: dict) -> "HalloTrainNet":
        """Official sizes tied to the UNet's: face-locator width = first block, image and audio tokens =
        the cross-attention width (768 and 320 in the release); `model` overrides any HalloConfig field."""
        base = HalloConfig(unet=unet)
        base.face_locator["conditioning_embedding_channels"] = unet["block_out_channels"][0]
        base.image_proj["cross_attention_dim"] = unet["cross_attention_dim"]
        base.audio_proj["output_dim"] = unet["cross_attention_dim"]
        base.unet_additional_kwargs["audio_attention_dim"] = unet["cross_attention_dim"]
        base.unet_additional_kwargs["motion_module_kwargs"]["num_attention_heads"] = motion_heads
        d = merge({k: getattr(base, k) for k in ("face_locator", "image_proj", "audio_proj",
                                                 "unet_additional_kwargs")}, model)
        return cls(HalloConfig(unet=unet, **d))

    def locator_size(self, latent_size: int) -> int:
        """Side of the face-locator input whose output is `latent_size` (1/2 per stage after the first)."""
        return latent_size * 2 ** (len(self.config.face_locator["block_out_channels"]) - 1)

    def conditions(self, batch: dict, boxes, latent_size: int, dtype: torch.dtype) -> dict:
        """Hallo's extra inputs from a dataset batch (masks cropped like the frames)."""
        b, f = batch["frames"].shape[:2]
        frame = batch["frames"].shape[-1]
        region = crop_square(batch["masks"][:, 1:2], boxes, frame, self.locator_size(latent_size))
        out = {"location": repeat(region, "b 1 h w -> b c f h w", c=self.face_locator.conv_in.in_channels, f=f),
               "masks": self.region_masks(batch["hallo_masks"], boxes, frame, latent_size, f),
               "face_embedding": torch.zeros(b, FACE_EMBEDDING, dtype=dtype, device=batch["frames"].device)}
        out["audio_windows"] = self.audio_windows(batch)
        return out

    @staticmethod
    def region_masks(hallo_masks: torch.Tensor, boxes, frame: int, latent_size: int, f: int) -> dict:
        """(b, 3, 64, 64) lip/face/full -> {branch: [((b f), h_l*w_l) per level]}, bilinear (antialiased)
        resizes to latent /1, /2, /4, /8 as face/masks.py's `mask_pyramid` does for inference."""
        crops = crop_square(hallo_masks, boxes, frame, hallo_masks.shape[-1])
        out = {}
        for i, branch in enumerate(BRANCHES):
            levels = []
            for level in range(N_LEVELS):
                side = max(1, latent_size // 2 ** level)
                m = F.interpolate(crops[:, i:i + 1], size=(side, side), mode="bilinear", antialias=True,
                                  align_corners=False)
                levels.append(repeat(m.flatten(1), "b n -> (b f) n", f=f))
            out[branch] = levels
        return out

    def audio_windows(self, batch: dict) -> torch.Tensor:
        """(b, f, seq_len, blocks, channels) for the audio projection: wav2vec2 windows, or projected mel."""
        ap = self.config.audio_proj
        want = (ap["seq_len"], ap["blocks"], ap["channels"])
        feats = batch.get("audio_feats")
        if feats is not None:
            if tuple(feats.shape[2:]) != want:
                raise InputError(f"audio_feats windows {tuple(feats.shape[2:])} do not fit Hallo's audio "
                                 f"projection {want}", "preprocess with wav2vec2 (all layers) and set "
                                 "audio_context so 2*audio_context+1 equals seq_len")
            return feats
        mel = self.mel_proj(batch["audio"])  # (b, f, w, m, c)
        b, f = mel.shape[:2]
        tokens = rearrange(mel, "b f w m c -> (b f) c (w m)")
        pooled = F.adaptive_avg_pool1d(tokens, ap["seq_len"])  # (b f, c, seq_len)
        return repeat(pooled, "(b f) c s -> b f s l c", b=b, l=ap["blocks"])

    def prepare_clip(self, batch: dict, record: bool = True) -> dict:
        """Image tokens, audio tokens (zero where the clip's audio is dropped), face-locator features, masks and
        prompt embedding of a batch from System.model_batch (ref = [portrait, motion]); `record`: the reference
        net reads `ref` with the image tokens into the bank."""
        tokens = self.imageproj(batch["face_embedding"])  # (b, n, d)
        audio = self.audioproj(batch["audio_windows"])  # (b, f, n, d)
        audio = audio * (~batch["drop_audio"]).to(audio.dtype).view(-1, 1, 1, 1)  # dropped: zero tokens
        if record:
            self.fill_bank(batch["ref"], tokens)
        return {"tokens": tokens, "audio": audio, "location": self.face_locator(batch["location"]),
                "masks": batch["masks"], "text_embedding": batch.get("text_embedding")}

    def denoise_prepared(self, noisy: torch.Tensor, t: torch.Tensor, prepared: dict) -> torch.Tensor:
        """noisy (b, c, f, h, w) -> model output at step `t`."""
        b = noisy.shape[0]
        t = torch.as_tensor(t, device=noisy.device).reshape(-1).expand(b)
        return self.denoising_unet(noisy, t, prepared["tokens"], prepared["audio"], prepared["location"],
                                   prepared["masks"], (1.0, 1.0, 1.0), self.bank,
                                   text_embedding=prepared["text_embedding"])
