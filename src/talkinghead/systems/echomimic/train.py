"""Training net for EchoMimic v1 (systems/echomimic/model.py): the official net, subclassed so its parameter
names (and so stage patterns and checkpoints) stay the official ones.

Editable landmark conditioning: reference net (no cross-attention) on the portrait; audio tokens through the
denoising UNet's cross-attention (attn2) per frame; the landmark encoder (face locator) reads a 1-channel image
of the frame's landmarks. Audio: whisper `audio_feats` when the dataset has them; otherwise each log-mel frame
through a small trainable `mel_proj` is one cross-attention token.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from einops import rearrange

from ...errors import InputError
from ...nn.reference_attention import ReferenceBank, attach_reference
from ..reference_training import MelProjection, ReferenceTraining, merge
from .model import EchoMimicConfig, EchoMimicNet


class EchoMimicTrainNet(EchoMimicNet, ReferenceTraining):
    """EchoMimicNet + a reference bank + `mel_proj`, with `predict(noisy, t, batch)` and `predictor(batch)`
    (ReferenceTraining).

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

    def prepare_clip(self, batch: dict, record: bool = True) -> dict:
        """Audio tokens (zero where the clip's audio is dropped) and landmark-encoder features of a batch from
        System.model_batch (ref = the portrait only); `record`: the reference net reads `ref` into the bank."""
        audio = batch["audio_tokens"] * (~batch["drop_audio"]).to(batch["audio_tokens"].dtype).view(-1, 1, 1, 1)
        if record:
            b = batch["ref"].shape[0]
            dummy = audio.new_zeros(b, 1, self.config.unet["cross_attention_dim"])  # the reference net has no attn2
            self.fill_bank(batch["ref"], dummy)
        return {"audio": audio, "location": self.face_locator(batch["location"])}

    def denoise_prepared(self, noisy: torch.Tensor, t: torch.Tensor, prepared: dict) -> torch.Tensor:
        """noisy (b, c, f, h, w) -> model output at step `t`; each frame cross-attends to its own audio tokens."""
        b = noisy.shape[0]
        audio = prepared["audio"]  # (b, f, n, d)
        t = torch.as_tensor(t, device=noisy.device).reshape(-1).expand(b)
        self._frame_tokens = rearrange(audio, "b f n d -> (b f) n d")
        try:
            return self.denoising_unet(noisy, t, audio[:, 0], location=prepared["location"], reference=self.bank)
        finally:
            self._frame_tokens = None
