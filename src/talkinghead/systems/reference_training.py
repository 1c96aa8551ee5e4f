"""What the reference-net UNet training nets share (Hallo, EchoMimic) and the UNet adapter uses: config
merging, square crops of a frame batch, the log-mel stand-in for a pretrained audio encoder, filling the
reference bank from the reference images, and a forward split into its once-per-clip and per-step parts (so
sampling runs the reference net once per clip)."""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

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


class ReferenceTraining:
    """Mixin of the reference-net training nets (Hallo, EchoMimic).

    A forward splits in two: `prepare_clip(batch)` does the work that does not depend on the denoising step
    (the reference net over `ref` into the bank, the condition encoders and projections), and
    `denoise_prepared(noisy, t, prepared)` runs the denoising UNet at one step. `predict` (a training forward)
    does both; `predictor(batch)` prepares once per sampling call and every step reuses it: the same numbers
    as `predict` at each step, with the reference net run once instead of once per step (the protocol of
    ReferenceVideoNet.predictor, which EMO, Loopy and EMO2 sample through)."""

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

    def prepare_clip(self, batch: dict, record: bool = True) -> dict:
        """The step-independent inputs of the denoising UNet for `batch`; with `record`, the reference net's
        features of `batch["ref"]` are written to the bank too."""
        raise NotImplementedError

    def denoise_prepared(self, noisy: torch.Tensor, t: torch.Tensor, prepared: dict) -> torch.Tensor:
        """The denoising UNet's output for `noisy` (b, c, f, h, w) at step `t`, reading the bank."""
        raise NotImplementedError

    def predict(self, noisy: torch.Tensor, t: torch.Tensor, batch: dict) -> torch.Tensor:
        """One full forward (reference net, condition encoders, denoising UNet): what a training step
        differentiates. `batch` comes from System.model_batch."""
        return self.denoise_prepared(noisy, t, self.prepare_clip(batch))

    def predictor(self, batch: dict, uncond: dict | None = None):
        """`predict(noisy, t)` for one sampling call over `batch`, its step-independent work done once, here.

        With `uncond` (the same clip with its conditions dropped, System.unconditional) it returns the
        unconditional and conditional outputs stacked along the batch ([uncond; cond]), what `denoise` guides.
        Both branches read one bank: dropping a condition keeps the reference images, so the reference net
        runs once for both. Valid until the net records another batch."""
        cond = self.prepare_clip(batch)
        if uncond is None:
            return lambda noisy, t: self.denoise_prepared(noisy, t, cond)
        free = self.prepare_clip(uncond, record=False)
        return lambda noisy, t: torch.cat([self.denoise_prepared(noisy, t, free),
                                           self.denoise_prepared(noisy, t, cond)])
