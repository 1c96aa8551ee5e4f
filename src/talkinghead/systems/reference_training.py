"""What the reference-net UNet training nets share (Hallo, EchoMimic) and the UNet adapter uses: config
merging, square crops of a frame batch, the log-mel stand-in for a pretrained audio encoder, filling the
reference bank from the reference images, and a forward split into its once-per-clip and per-step parts (so
sampling runs the reference net once per clip)."""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ..models.reference_video import OncePerClip
from ..nn.reference_attention import ReferenceBank


MEL_BINS = 80  # log-mel features per mel frame (train/preprocess.py)


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


class ReferenceTraining(OncePerClip):
    """Mixin of the reference-net training nets (Hallo, EchoMimic): the reference bank filled from `ref`, and
    `predict`/`predictor` from their `prepare_clip` and `denoise_prepared` (OncePerClip, as EMO, Loopy and EMO2
    sample), so sampling runs the reference net once per clip."""

    bank: ReferenceBank
    reference_unet: nn.Module

    def fill_bank(self, ref: torch.Tensor, tokens: torch.Tensor) -> None:
        """Run the reference net over `ref` (b, images, c, h, w) with `tokens` (b, n, d) and keep its features."""
        b, images = ref.shape[:2]
        self.bank.clear()
        self.bank.groups, self.bank.uncond_groups, self.bank.recording = b, 0, True
        try:
            t = torch.zeros(b * images, device=ref.device, dtype=torch.long)
            self.reference_unet(ref.flatten(0, 1), t, encoder_hidden_states=tokens.repeat_interleave(images, 0),
                                return_dict=False)
        finally:
            self.bank.recording = False
