"""`--engine hallo2`: Hallo2's long-duration release. Hallo's engine (systems/hallo/engine.py) with Hallo2's
long-video plan: speech encoded in 60 s segments, a share of each motion frame's background dropped before every
clip, only whole clips generated; and, with --super-resolution, its VQ video super-resolution on the frames.

A Hallo2 run of `talkinghead train` renders too (`TrainedHallo2Animator`); its text variant
(configs/train/hallo2_text.yaml) takes a prompt. The release has no text layers, so it refuses one.
"""
from __future__ import annotations

import itertools
from typing import Iterator

import numpy as np
import torch

from ...config import AnimateConfig
from ...errors import InputError
from ...types import Portrait, Speech
from ...utils import resolve_device
from ..hallo.engine import HalloAnimator
from ..trained import CheckpointAnimator
from .super_resolution import SR_FIDELITY, load_super_resolution_release, restore_video


AUDIO_SEGMENT_SECONDS = 60  # Hallo2 cuts the speech into 60 s pieces, each through wav2vec on its own


MOTION_MASK_RATE = 0.25  # Hallo2 configs/inference/long.yaml: share of motion-frame pixels dropped per clip


def mask_motion_frames(motion: torch.Tensor, region: torch.Tensor, generator: torch.Generator,
                       mask_rate: float = MOTION_MASK_RATE) -> tuple[torch.Tensor, torch.Tensor]:
    """Hallo2's motion-frame masking before every clip (its scripts/inference_long.py).

    One uniform per pixel is drawn from `generator` (the stream the clip's initial noise comes from next);
    pixels whose draw is <= mask_rate are set to 0 (mid-grey in [-1, 1]) in every motion frame and channel,
    except inside the face region (`region` (1, 3, H, W), nonzero = face), which is always kept. No noise is
    added at inference. motion (m, 3, H, W) in [-1, 1] -> (masked motion, keep (H, W) bool before the OR).
    """
    h, w = motion.shape[-2:]
    keep = torch.rand(h, w, generator=generator) > mask_rate  # (H, W)
    keep_all = keep.to(motion.device)[None, None] | (region.to(motion.device) != 0)  # (1, 3, H, W)
    return motion * keep_all.to(motion.dtype), keep


def hallo2_audio_plan(n_samples: int, sample_rate: int, fps: int, clip_length: int,
                      whole_clips: bool = False) -> tuple[list[int], int]:
    """(video frames of each 60 s segment, zero frames appended to the last one).

    Default, Hallo2's rule: only the last segment is padded, only when its own frame count is not a multiple of
    the clip length, and then by (clip_length - total % clip_length) frames of the total count (a whole clip when
    the total is a multiple). With more than one segment this either leaves a partial last clip unpadded (it is
    then not generated: the video ends before the speech) or pads a total that is already whole clips (a silent
    extra clip). `whole_clips=True` pads the total to the next whole clip, whatever the last segment holds, so
    the clips cover every audio frame and no clip is all padding."""
    from ...audio.wav2vec import video_frame_count

    step = AUDIO_SEGMENT_SECONDS * sample_rate
    lengths = [video_frame_count(min(step, n_samples - i), sample_rate, fps) for i in range(0, n_samples, step)]
    total = sum(lengths)
    if whole_clips:
        return lengths, -total % clip_length
    pad = clip_length - total % clip_length if lengths and lengths[-1] % clip_length else 0
    return lengths, pad


def hallo2_audio_embeddings(model, extractor, waveform: np.ndarray, fps: int, clip_length: int,
                            whole_clips: bool = False) -> tuple[torch.Tensor, int]:
    """Hallo2's audio embedding: each 60 s segment normalised and encoded on its own, the last one padded as
    `hallo2_audio_plan` says, concatenated. Returns ((t, layers, dim), real video frames)."""
    from ...audio.wav2vec import (encoder_hidden_states, normalize_waveform, pad_to_frames, resample_features,
                                  video_frame_count)

    sample_rate = extractor.sampling_rate
    lengths, pad = hallo2_audio_plan(len(waveform), sample_rate, fps, clip_length, whole_clips)
    step = AUDIO_SEGMENT_SECONDS * sample_rate
    param = next(model.parameters())
    embeddings = []
    with torch.no_grad():
        for i, start in enumerate(range(0, len(waveform), step)):
            normalized = normalize_waveform(extractor, waveform[start:start + step])
            n = video_frame_count(len(normalized), sample_rate, fps)
            target = n + (pad if i == len(lengths) - 1 else 0)
            signal = pad_to_frames(normalized, n, target, sample_rate // fps).to(param.device, param.dtype)[None]
            features = resample_features(model.feature_extractor(signal).transpose(1, 2), target)
            projected, _ = model.feature_projection(features)
            embeddings.append(encoder_hidden_states(model.encoder, projected)[1:].transpose(0, 1).cpu())
    return torch.cat(embeddings), sum(lengths)


class Hallo2Animator(HalloAnimator):
    """Hallo2's long-duration release (`hallo2/net.pth`, Hallo's network): its long-video loop (a quarter of
    each motion frame's background dropped before every clip, drawn from the noise's random stream; speech
    encoded in 60 s segments; only whole clips generated, padded by its rule, or with `whole_clips` to cover
    the whole speech) and, with --super-resolution, its video
    super-resolution stage (`hallo2/net_g.pth`) on the rendered frames."""

    variant = "hallo2"

    def __init__(self, portrait: Portrait, config: AnimateConfig | None = None, warn: bool = True):
        if config is not None and config.diffusion.prompt:
            raise InputError(NO_TEXT_LAYERS.format(what="the official Hallo2 release"), TEXT_VARIANT_HINT,
                             field="prompt")
        super().__init__(portrait, config, warn)
        d = self.config.diffusion
        self.sr = None
        if not d.super_resolution and (d.sr_fidelity is not None or d.sr_keep_last_frame):
            raise InputError("sets the super-resolution stage, which is off",
                             "turn super-resolution on, or leave sr-fidelity and sr-keep-last-frame out",
                             field="sr_fidelity" if d.sr_fidelity is not None else "sr_keep_last_frame")
        if d.super_resolution:
            self.sr = load_super_resolution_release(d.checkpoint_dir, resolve_device(d.device))
        self.sr_fidelity = SR_FIDELITY if d.sr_fidelity is None else float(d.sr_fidelity)

    @property
    def frame_size(self) -> tuple[int, int]:
        if self.sr is None:
            return super().frame_size
        return self.sr.config.img_size, self.sr.config.img_size  # the official network: 512

    def _generated_frames(self, speech: Speech) -> int:
        lengths, pad = hallo2_audio_plan(len(speech.samples), speech.sample_rate, int(round(self.fps)),
                                         self.sampling.clip_length, self.config.diffusion.whole_clips)
        whole = (sum(lengths) + pad) // self.sampling.clip_length * self.sampling.clip_length
        return min(sum(lengths), whole)  # a partial last clip is never generated (official `len // clip`)

    def n_frames(self, speech: Speech) -> int:
        n = self._generated_frames(speech)
        drop = self.sr is not None and not self.config.diffusion.sr_keep_last_frame
        return max(n - 1, 0) if drop else n

    def _audio_windows(self, speech: Speech, lock) -> tuple[torch.Tensor, int]:
        from ...audio.wav2vec import audio_windows

        with lock:
            emb, n_real = hallo2_audio_embeddings(self.audio_model, self.extractor, speech.samples,
                                                  int(round(self.fps)), self.sampling.clip_length,
                                                  self.config.diffusion.whole_clips)
        windows = audio_windows(emb)
        whole = windows.shape[0] // self.sampling.clip_length * self.sampling.clip_length
        return windows[:whole], min(n_real, whole)

    def _motion_frames(self, motion: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        return mask_motion_frames(motion, self.masks.face_region, generator)[0]

    def frames(self, speech: Speech) -> Iterator[np.ndarray]:
        frames = super().frames(speech)
        if self.sr is None:
            yield from frames
            return
        # video_sr.py drops the last frame before restoring (unless --sr-keep-last-frame), so the last chunk
        # holds one frame less
        yield from restore_video(self.sr, itertools.islice(frames, self.n_frames(speech)), self.sr_fidelity)


NO_TEXT_LAYERS = "is not taken by this checkpoint: {what} has no text layers"
TEXT_VARIANT_HINT = ("leave it out, or train Hallo2's text variant (`talkinghead train` with "
                     "configs/train/hallo2_text.yaml, on videos with prompts) and render from its run folder")


class TrainedHallo2Animator(CheckpointAnimator):
    """A Hallo2 run of `talkinghead train`, rendered as the trainer's sample grids are (its log-mel audio path,
    the net's masks and face locator, zero face embedding); a text variant's prompt is encoded once per video by
    the run's T5 (the folder its stage config names) and modulates every clip. Without a prompt, a text variant
    renders with the empty prompt, as videos without one were trained. `guidance_scale` (default 1: none, as the
    sample grids) guides against the clip with its audio dropped and the empty prompt, strengthening both."""

    engine = "hallo2"

    def __init__(self, portrait: Portrait, config: AnimateConfig | None = None, warn: bool = True):
        from ...train.preprocess import union_masks

        config = (config or AnimateConfig()).validate()
        _refuse_release_controls(config)
        super().__init__(portrait, config, warn)
        self.prompt = config.diffusion.prompt or ""
        if self.prompt and self.system.prompts is None:
            raise InputError(NO_TEXT_LAYERS.format(what="this Hallo2 run (trained without a text encoder)"),
                             TEXT_VARIANT_HINT, field="prompt")
        _, hallo = union_masks(np.asarray(self.face.landmarks, np.float32)[None], self.config.render.size)
        self.hallo_masks = torch.from_numpy(hallo.astype(np.float32) / 255.0)  # (3, 64, 64) lip, face, full
        if self.system.prompts is not None:
            self.system.prompts.embed(self.prompt)  # encoded here, once; every clip reuses it
            self.system.prompts.embed("")  # the unconditional branch of guidance reads the empty prompt
        if config.diffusion.guidance_scale is not None:
            self.guidance_scale = config.diffusion.guidance_scale

    def extra(self, frames: int) -> dict:
        return {"hallo_masks": self.hallo_masks[None], "prompt": [self.prompt]}


def _refuse_release_controls(config: AnimateConfig) -> None:
    """A trained run renders with the trainer's sampler and inputs: the release's own controls are refused."""
    from dataclasses import fields

    from .. import ENCODING, TRAINED

    defaults = AnimateConfig()
    for section in ("motion", "render", "diffusion"):
        for f in fields(getattr(defaults, section)):
            if f.name in TRAINED or f.name in ENCODING or f.name in ("prompt", "guidance_scale"):
                continue
            if getattr(getattr(config, section), f.name) != getattr(getattr(defaults, section), f.name):
                raise InputError("is not used by a Hallo2 run of `talkinghead train` (it renders as it was trained)",
                                 "leave it out, or render the official release", field=f.name)


def hallo2_animator(portrait: Portrait, config: AnimateConfig | None = None, warn: bool = True):
    """`--engine hallo2`: a Hallo2 run of `talkinghead train` (or one of its step folders), else the official
    release folder."""
    from ..trained import trained_step

    if config is not None and trained_step(config.diffusion.checkpoint_dir) is not None:
        return TrainedHallo2Animator(portrait, config, warn)
    return Hallo2Animator(portrait, config, warn)
