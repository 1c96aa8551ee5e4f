"""`--engine hallo`: the official Hallo release folder (loaded by systems/hallo/release.py; Hallo2's engine,
systems/hallo2/engine.py, extends it) → a talking video of any length.

Clips of 16 frames are generated one after another; each starts from the last 2 frames of the previous
clip (motion frames) and is decoded and handed to the writer before the next begins, so memory stays
flat with audio length. Same inputs, outputs and bad-input handling as the warp engine.
"""
from __future__ import annotations

from contextlib import nullcontext
from typing import Iterator

import numpy as np
import torch

from ...config import AnimateConfig
from ...errors import InputError
from ...types import Portrait, Speech
from ...utils import resolve_precision
from .. import require_release_dir
from .pipeline import DEFAULT_SCHEDULER, SamplingConfig
from .release import RELEASE_URL, load_release

SIZE_MULTIPLE = 64  # latents are 1/8 of the image and the mask pyramid halves 3 more times


def _scheduler(name: str):
    from diffusers import DDIMScheduler, DPMSolverMultistepScheduler

    if name == "dpm":
        cfg = {k: v for k, v in DEFAULT_SCHEDULER.items() if k not in ("clip_sample", "set_alpha_to_one")}
        return DPMSolverMultistepScheduler(**cfg, algorithm_type="dpmsolver++", final_sigmas_type="zero")
    return DDIMScheduler(**DEFAULT_SCHEDULER)


class HalloAnimator:
    """Engine interface shared with the warp `Animator`: `fps`, `frame_size`, `n_frames`, `frames`."""

    variant = "hallo"

    def __init__(self, portrait: Portrait, config: AnimateConfig | None = None, warn: bool = True):
        from ...face.embedding import EMBEDDING_HINT, make_embedder
        from ...face.landmarks import prepare
        from ...face.masks import hallo_masks

        self.config = config = (config or AnimateConfig()).validate()
        d, r = config.diffusion, config.render
        require_release_dir(d.checkpoint_dir, self.variant, f"download the official release "
                            f"({RELEASE_URL.format(variant=self.variant)}) and pass its pretrained_models folder")
        if not d.face_embedding:
            raise InputError(f"is needed by engine {self.variant} (the face's identity)", EMBEDDING_HINT,
                             field="face_embedding")
        if r.crop != "face":
            raise InputError(f"must be face for engine {self.variant} (it renders square face crops), got {r.crop!r}",
                             "use crop face", field="crop")
        if r.size % SIZE_MULTIPLE:
            raise InputError(f"must be a multiple of {SIZE_MULTIPLE} for engine {self.variant}, got {r.size}",
                             "e.g. 512 (the official size)", field="size")
        device, dtype = resolve_precision(d.device, d.dtype)
        embedder = make_embedder(d.face_embedding)
        self.sampling = SamplingConfig(steps=d.steps or SamplingConfig.steps,
                                       guidance_scale=d.guidance_scale if d.guidance_scale is not None
                                       else SamplingConfig.guidance_scale, seed=config.motion.seed,
                                       branch_weights=tuple(SamplingConfig.branch_weights[i] if w is None else float(w)
                                                            for i, w in enumerate((d.pose_weight, d.face_weight,
                                                                                   d.lip_weight))))
        self.portrait, self.face = prepare(portrait, r.size, "face", r.face_index, warn=warn)
        self.embedding = torch.from_numpy(np.asarray(embedder.embed(self.portrait, self.face), np.float32))[None]
        self.masks = hallo_masks(self.face, r.size, self.sampling.clip_length)
        self.pipe, self.audio_model, self.extractor = load_release(d.checkpoint_dir, self.variant, device, dtype)
        self.scheduler = _scheduler(d.scheduler)  # set on the shared pipeline while this animator holds it

    @property
    def fps(self) -> float:
        return self.config.render.fps

    @property
    def frame_size(self) -> tuple[int, int]:
        return self.config.render.size, self.config.render.size

    def n_frames(self, speech: Speech) -> int:
        from ...audio.wav2vec import video_frame_count

        return video_frame_count(len(speech.samples), speech.sample_rate, int(round(self.fps)))

    def _audio_windows(self, speech: Speech, lock) -> tuple[torch.Tensor, int]:
        """(per-frame wav2vec windows (frames, 5, layers, dim) padded to whole clips, real video frames)."""
        from ...audio.wav2vec import audio_windows, hallo_audio_embeddings

        with lock:  # wav2vec's hidden states are recorded by hooks on the shared model
            emb, n_real = hallo_audio_embeddings(self.audio_model, self.extractor, speech.samples,
                                                 fps=int(round(self.fps)), clip_length=self.sampling.clip_length)
        return audio_windows(emb), n_real

    def _motion_frames(self, motion: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        """The previous clip's last frames (m, 3, H, W) as this clip sees them (Hallo: unchanged)."""
        return motion

    def frames(self, speech: Speech) -> Iterator[np.ndarray]:
        """(size, size, 3) uint8 frames, clip by clip."""
        s = self.sampling
        pipe = self.pipe
        lock = getattr(pipe, "net_lock", None) or nullcontext()
        windows, n_real = self._audio_windows(speech, lock)  # (frames, 5, layers, dim), whole clips
        reference = torch.from_numpy(self.portrait.image).permute(2, 0, 1).float()[None] / 127.5 - 1.0
        masks = {"full": self.masks.full, "face": self.masks.face, "lip": self.masks.lip}
        guidance = s.guidance_scale > 1.0
        generator = torch.Generator().manual_seed(s.seed)
        motion = reference.repeat(s.n_motion_frames, 1, 1, 1)  # the first clip starts from the portrait
        with lock:
            ref_latent = pipe.encode_images(reference)  # once per video
        h = w = self.config.render.size // 8
        emitted = 0
        for start in range(0, windows.shape[0], s.clip_length):
            clip = windows[start:start + s.clip_length][None]
            seen = self._motion_frames(motion, generator)  # drawn before the clip's noise (Hallo2)
            noise = torch.randn((1, 4, clip.shape[1], h, w), generator=generator)
            with lock:  # the pipeline (net, reference bank) is shared by every caller of this release (_CACHE)
                pipe.scheduler = self.scheduler
                cond = pipe.condition(self.embedding, clip, self.masks.face_region, masks, guidance,
                                      s.branch_weights)
                ref_latents = torch.cat([ref_latent, pipe.encode_images(seen)])
                latents = pipe.sample_clip(ref_latents, cond, noise, s.steps, s.guidance_scale)
                video = pipe.decode_latents(latents)[0]  # (3, f, H, W) in [0, 1]
            motion = video[:, -s.n_motion_frames:].permute(1, 0, 2, 3) * 2.0 - 1.0
            for frame in video.permute(1, 2, 3, 0):
                if emitted >= n_real:
                    return
                yield (frame.cpu().numpy() * 255.0 + 0.5).astype(np.uint8)
                emitted += 1
