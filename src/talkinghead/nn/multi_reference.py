"""SkyReels-A2 (arXiv 2504.02436) multi-reference composition: the semantic branch (each reference through a CLIP image
encoder; the tokens of all references feed the DiT's decoupled image cross-attention after its MLP) and
the spatial branch (each reference's 3D-VAE latent placed along frames, zero-padded to the clip length,
with a frame mask, joined to the noisy latents along channels).

References are each segmented subject (pasted on a white canvas, `compose_subject`) plus one separate
background image, in that order; the order is kept in both branches so subject k is slot k.
"""
from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)  # OpenAI/OpenCLIP image normalisation
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)
SUBJECT_FILL = 255  # segmented subjects sit on white, as in A2's training data


def compose_subject(image: np.ndarray, mask: np.ndarray, fill: int = SUBJECT_FILL) -> np.ndarray:
    """(h, w, 3) uint8 image and (h, w) mask (bool or 0..1 float, soft edges allowed) -> the subject on a
    plain `fill` canvas, (h, w, 3) uint8."""
    if mask.shape != image.shape[:2]:
        raise ValueError(f"mask {mask.shape} does not match the image {image.shape[:2]}")
    m = np.clip(mask.astype(np.float32), 0.0, 1.0)[..., None]
    return np.round(image.astype(np.float32) * m + fill * (1.0 - m)).astype(np.uint8)


class SemanticReferenceBranch(nn.Module):
    """(b, n, 3, H, W) references in [-1, 1] -> (b, n * T, d): the image encoder's penultimate hidden states
    of every reference, concatenated in reference order (Wan I2V reads CLIP's penultimate layer). The MLP
    that maps these to the DiT width is the transformer's image-condition encoder (Wan's
    `condition_embedder.image_embedder`), kept there so released weights load without renaming."""

    def __init__(self, clip: nn.Module, image_size: int | None = None):
        super().__init__()
        self.clip = clip
        self.image_size = image_size or clip.config.image_size
        self.register_buffer("mean", torch.tensor(CLIP_MEAN).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(CLIP_STD).view(1, 3, 1, 1), persistent=False)

    def preprocess(self, images: torch.Tensor) -> torch.Tensor:
        """(m, 3, H, W) in [-1, 1] -> CLIP input (m, 3, s, s): bicubic resize, CLIP normalisation."""
        x = F.interpolate(images.float(), size=(self.image_size, self.image_size), mode="bicubic", align_corners=False)
        x = ((x + 1.0) / 2.0).clamp(0.0, 1.0)
        return (x - self.mean) / self.std

    def forward(self, refs: torch.Tensor) -> torch.Tensor:
        b, n = refs.shape[:2]
        x = self.preprocess(refs.flatten(0, 1)).to(next(self.clip.parameters()).dtype)
        hidden = self.clip(pixel_values=x, output_hidden_states=True).hidden_states[-2]  # (b n, T, d)
        return hidden.reshape(b, n * hidden.shape[1], hidden.shape[2])


def spatial_condition(ref_latents: torch.Tensor, frames: int, mask_channels: int = 4,
                      extra: torch.Tensor | None = None) -> torch.Tensor:
    """Spatial branch: (b, n, c, h, w) reference latents -> (b, mask_channels + c, frames, h, w).

    Latent frame k < n holds reference k (its mask channels are 1); the rest are zeros (mask 0). `extra`
    (b, e, c, h, w) latents follow the references with mask 1 (e.g. the last frame of the previous chunk
    of a long video). Channel order is Wan I2V's: [mask, latents]."""
    slots = ref_latents if extra is None else torch.cat([ref_latents, extra.to(ref_latents)], dim=1)
    b, n, c, h, w = slots.shape
    if n > frames:
        raise ValueError(f"{n} references do not fit in {frames} latent frames")
    lat = torch.cat([slots, slots.new_zeros(b, frames - n, c, h, w)], dim=1).transpose(1, 2)  # (b, c, f, h, w)
    mask = slots.new_zeros(b, mask_channels, frames, h, w)
    mask[:, :, :n] = 1.0
    return torch.cat([mask, lat], dim=1)
