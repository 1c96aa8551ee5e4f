"""Training adapters for Hallo (models/hallo.py) and EchoMimic v1 (models/echomimic.py): the official nets,
subclassed so their parameter names (and so stage patterns and checkpoints) stay the official ones, plus
the small pieces a training batch needs that the official training scripts get from elsewhere.

- Hallo §3.1/§3.2: reference net on [portrait, motion frames] with the face tokens; denoising UNet with
  the face locator (face-region image), image tokens and hierarchical audio attention over the lip/face/
  full masks resized to each latent level. The 512-d face embedding is all zeros in training (InsightFace
  is not available here): the image tokens are the projection's learned constant, i.e. training is
  unconditional in identity and the identity comes from the reference net alone.
- EchoMimic (editable landmark conditioning): reference net (no cross-attention) on the portrait; audio tokens through the denoising
  UNet's cross-attention (attn2) per frame; the landmark encoder (face locator) reads a 1-channel image
  of the frame's landmarks.
- Audio: `audio_feats` (wav2vec2 for Hallo, whisper for EchoMimic) when the dataset has them; otherwise
  the log-mel windows through a small trainable `mel_proj` (80 → the features' width, shared over mel
  frames) that this adapter owns and that is not part of the official checkpoints. For Hallo the projected
  mel frames of a window are average-pooled to the audio projection's window length and repeated over its
  wav2vec-layer axis; for EchoMimic each projected mel frame is one cross-attention token.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from einops import rearrange, repeat
from torch import nn

from ..errors import InputError
from ..models.echomimic import EchoMimicConfig, EchoMimicNet
from ..models.hallo import HalloConfig, HalloNet
from ..nn.reference_attention import ReferenceBank, attach_reference

MEL_BINS = 80  # log-mel features per mel frame (train/preprocess.py)
FACE_EMBEDDING = 512  # InsightFace embedding width of Hallo's image projection
N_LEVELS = 4  # latent mask levels of the UNet: /1, /2, /4, /8
BRANCHES = ("lip", "face", "full")  # channel order of the dataset's `hallo_masks`


def merge(base: dict, over: dict) -> dict:
    """`base` with `over` applied, recursing into nested dicts."""
    out = dict(base)
    for k, v in over.items():
        out[k] = merge(out[k], v) if isinstance(v, dict) and isinstance(out.get(k), dict) else v
    return out


def crop_square(images: torch.Tensor, boxes, source: int, size: int) -> torch.Tensor:
    """(b, c, S, S) images of a `source`-px frame -> (b, c, size, size) crops of each (top, left, side)
    box (given in `source` px), resized bilinearly with antialiasing."""
    scale = images.shape[-1] / source
    out = []
    for x, (top, left, side) in zip(images, boxes):
        t, l, s = int(round(top * scale)), int(round(left * scale)), max(1, int(round(side * scale)))
        out.append(F.interpolate(x[None, :, t:t + s, l:l + s], size=(size, size), mode="bilinear",
                                 antialias=True, align_corners=False)[0])
    return torch.stack(out)


class MelProjection(nn.Module):
    """Log-mel windows -> per-frame feature windows of a pretrained audio encoder's width (our stand-in when
    the dataset has no wav2vec2/whisper features): one linear layer shared by every mel frame."""

    def __init__(self, width: int):
        super().__init__()
        self.proj = nn.Linear(MEL_BINS, width)

    def forward(self, mel: torch.Tensor) -> torch.Tensor:  # (b, f, w, m, 80) -> (b, f, w, m, width)
        return self.proj(mel)


class _ReferenceTraining:
    """Shared by both adapters: fill the reference bank from `ref` (b, images, c, h, w)."""

    bank: ReferenceBank
    reference_unet: nn.Module

    def fill_bank(self, ref: torch.Tensor, tokens: torch.Tensor) -> None:
        b, images = ref.shape[:2]
        self.bank.clear()
        self.bank.groups, self.bank.uncond_groups, self.bank.recording = b, 0, True
        try:
            t = torch.zeros(b * images, device=ref.device, dtype=torch.long)
            self.reference_unet(ref.flatten(0, 1), t, encoder_hidden_states=tokens.repeat_interleave(images, 0),
                                return_dict=False)
        finally:
            self.bank.recording = False


class HalloTrainNet(HalloNet, _ReferenceTraining):
    """HalloNet + a reference bank + `mel_proj`, with `predict(noisy, t, batch)` for the trainer's System."""

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

    def predict(self, noisy: torch.Tensor, t: torch.Tensor, batch: dict) -> torch.Tensor:
        """noisy (b, c, f, h, w) -> model output; batch from System.model_batch (ref = [portrait, motion])."""
        b = noisy.shape[0]
        tokens = self.imageproj(batch["face_embedding"])  # (b, n, d)
        audio = self.audioproj(batch["audio_windows"])  # (b, f, n, d)
        audio = audio * (~batch["drop_audio"]).to(audio.dtype).view(-1, 1, 1, 1)  # dropped: zero tokens
        self.fill_bank(batch["ref"], tokens)
        t = torch.as_tensor(t, device=noisy.device).reshape(-1).expand(b)
        return self.denoising_unet(noisy, t, tokens, audio, self.face_locator(batch["location"]), batch["masks"],
                                   (1.0, 1.0, 1.0), self.bank)


class EchoMimicTrainNet(EchoMimicNet, _ReferenceTraining):
    """EchoMimicNet + a reference bank + `mel_proj`, with `predict(noisy, t, batch)`.

    The video UNet repeats one set of cross-attention tokens over the frames; EchoMimic needs each frame's
    own audio tokens there, so forward pre-hooks on the denoising UNet's spatial transformers swap in the
    per-frame tokens (the UNet itself is not changed)."""

    def __init__(self, config: EchoMimicConfig | None = None, **fields):
        super().__init__(config, **fields)
        config = self.config
        self.mel_proj = MelProjection(config.audio_dim)
        self.bank = ReferenceBank(dtype=None)
        attach_reference(self.reference_unet, self.denoising_unet, self.bank)
        self._frame_tokens: torch.Tensor | None = None
        for block in [*self.denoising_unet.down_blocks, self.denoising_unet.mid_block, *self.denoising_unet.up_blocks]:
            for attn in getattr(block, "attentions", None) or []:
                attn.register_forward_pre_hook(self._per_frame_tokens, with_kwargs=True)

    def _per_frame_tokens(self, module, args, kwargs):
        if self._frame_tokens is not None:
            kwargs = {**kwargs, "encoder_hidden_states": self._frame_tokens}
        return args, kwargs

    @classmethod
    def for_system(cls, unet: dict, motion_heads: int, model: dict) -> "EchoMimicTrainNet":
        base = EchoMimicConfig(unet=unet)
        base.face_locator["conditioning_embedding_channels"] = unet["block_out_channels"][0]
        base.motion_module["num_attention_heads"] = motion_heads
        d = merge({"face_locator": base.face_locator, "motion_module": base.motion_module,
                   "audio_dim": base.audio_dim}, model)
        return cls(EchoMimicConfig(unet=unet, **d))

    def locator_size(self, latent_size: int) -> int:
        return latent_size * 2 ** (len(self.config.face_locator["block_out_channels"]) - 1)

    def conditions(self, batch: dict, boxes, latent_size: int, dtype: torch.dtype) -> dict:
        return {"location": self.landmark_images(batch["landmarks"], boxes, self.locator_size(latent_size)),
                "audio_tokens": self.audio_tokens(batch)}

    @staticmethod
    def landmark_images(landmarks: torch.Tensor, boxes, size: int) -> torch.Tensor:
        """(b, f, 478, 3) landmarks (px of the frame) -> (b, 1, f, size, size) images: 1 at each point of the
        crop (3x3 px dots), 0 elsewhere: the landmark encoder's input."""
        b, f, n = landmarks.shape[:3]
        img = torch.zeros(b, f, size * size, device=landmarks.device)
        for i, (top, left, side) in enumerate(boxes):
            xy = (landmarks[i, :, :, :2] - torch.tensor([left, top], device=landmarks.device)) * (size / side)
            xy = xy.round().long()
            inside = ((xy >= 0) & (xy < size)).all(-1)  # (f, n)
            idx = (xy[..., 1] * size + xy[..., 0]).clamp(0, size * size - 1)
            img[i].scatter_(1, idx, inside.float())
        img = F.max_pool2d(img.view(b * f, 1, size, size), 3, stride=1, padding=1)
        return rearrange(img, "(b f) 1 h w -> b 1 f h w", b=b)

    def audio_tokens(self, batch: dict) -> torch.Tensor:
        """(b, f, tokens, audio_dim): whisper windows (W * L tokens per frame), or projected mel."""
        feats = batch.get("audio_feats")
        if feats is not None:
            if feats.shape[-1] != self.config.audio_dim:
                raise InputError(f"audio_feats are {feats.shape[-1]}-d, EchoMimic's audio attention reads "
                                 f"{self.config.audio_dim}-d (whisper-tiny)", "preprocess with whisper-tiny features")
            return rearrange(feats, "b f w l d -> b f (w l) d")
        return rearrange(self.mel_proj(batch["audio"]), "b f w m d -> b f (w m) d")

    def predict(self, noisy: torch.Tensor, t: torch.Tensor, batch: dict) -> torch.Tensor:
        """noisy (b, c, f, h, w) -> model output; batch from System.model_batch (ref = the portrait only)."""
        b, _, f = noisy.shape[:3]
        audio = batch["audio_tokens"] * (~batch["drop_audio"]).to(noisy.dtype).view(-1, 1, 1, 1)
        dummy = audio.new_zeros(b, 1, self.config.unet["cross_attention_dim"])  # the reference net has no attn2
        self.fill_bank(batch["ref"], dummy)
        t = torch.as_tensor(t, device=noisy.device).reshape(-1).expand(b)
        self._frame_tokens = rearrange(audio, "b f n d -> (b f) n d")
        try:
            return self.denoising_unet(noisy, t, audio[:, 0], location=self.face_locator(batch["location"]),
                                       reference=self.bank)
        finally:
            self._frame_tokens = None
