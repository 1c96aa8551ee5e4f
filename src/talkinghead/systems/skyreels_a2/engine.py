"""`--engine skyreels-a2`: the official SkyReels-A2 release folder -> a video composed from the portrait (and any
--reference images) and the prompt, sampled as the release samples (systems/skyreels_a2/pipeline.py)."""
from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import numpy as np
import torch

from ...errors import InputError
from ...pipelines.memory import apply_memory_options, load_device
from ...types import Portrait, Speech
from .. import require_release_dir
from ..skyreels_common import ReleaseVideo, cached_release, release_precision
from .pipeline import A2_CLIP_SIZE, A2_REPEAT, crop_to_aspect, pad_to_aspect, sample_a2_release
from .release import load_release, release_root

A2_STEPS, A2_GUIDANCE = 50, 5.0  # infer.py's settings
A2_FRAMES = 81  # frames per clip (infer.py)
A2_DROPPED = 12  # infer.py drops the first 12 frames of every clip (the reference slots), whatever the count
A2_SIZE = (832, 480)  # (W, H): infer.py's frame size
A2_MULTIPLE = 16  # VAE 8 x patch 2
A2_PROMPT = "A person is talking."
A2_NEGATIVE_PROMPT = (  # infer.py's negative prompt
    "Bright tones, overexposed, static, blurred details, subtitles, style, works, paintings, images, static, overall "
    "gray, worst quality, low quality, JPEG compression residue, ugly, incomplete, extra fingers, poorly drawn hands, "
    "poorly drawn faces, deformed, disfigured, misshapen limbs, fused fingers, still picture, messy background, "
    "three legs, many people in the background, walking backwards")

class SkyReelsA2Animator(ReleaseVideo):
    """`--engine skyreels-a2`: the official SkyReels-A2 folder composes the portrait (--image) with further
    reference images (--reference, in order; the last one is the background) into a video as long as the
    speech. A2 is not driven by audio: the prompt (--prompt, default "A person is talking.") says what happens.

    As infer.py: subjects are padded with white to the frame's aspect and the background centre-cropped; each
    is padded to a white square for CLIP; clips of 81 frames with 50 UniPC steps (flow shift 8; `--scheduler dpm`:
    DPM-Solver++ on the same sigmas) at guidance 5.0 against infer.py's negative prompt; the first 12 frames of each clip are dropped (69 new frames;
    --exact-reference-frames drops only the reference slots' 1 + 4 (n - 1), fixing that bug). Clips
    follow one another from one generator, each composed afresh from the references. Frames are 832 x 480
    unless --size sets another width (the height keeps 480 : 832, both multiples of 16)."""

    def __init__(self, portrait: Portrait, config=None, warn: bool = True):
        from ...config import AnimateConfig, RenderConfig
        from ...io import load_image

        self.config = config = (config or AnimateConfig()).validate()
        d, r = config.diffusion, config.render
        require_release_dir(d.checkpoint_dir, "skyreels-a2", "download the SkyReels-A2 release "
                            "(huggingface.co/Skywork/SkyReels-A2) and pass its folder")
        if not d.reference:
            raise InputError("is needed by engine skyreels-a2, which composes the image with one or more references",
                             "add a reference image (an object, then a background; the last one is the background)",
                             field="reference")
        self.device, dtype = release_precision(d)
        images = [portrait.image] + [load_image(p, field="reference").image for p in d.reference]
        width = A2_SIZE[0] if r.size == RenderConfig.size else r.size
        width = max(A2_MULTIPLE, int(round(width / A2_MULTIPLE)) * A2_MULTIPLE)
        height = max(A2_MULTIPLE, int(round(width * A2_SIZE[1] / A2_SIZE[0] / A2_MULTIPLE)) * A2_MULTIPLE)
        self.size = (width, height)
        self.vae_images = [pad_to_aspect(img, height, width) for img in images[:-1]] + [
            crop_to_aspect(images[-1], height, width)]
        self.clip_images = [pad_to_aspect(img, A2_CLIP_SIZE, A2_CLIP_SIZE) for img in images]
        self.steps = d.steps or A2_STEPS
        self.guidance = d.guidance_scale if d.guidance_scale is not None else A2_GUIDANCE
        self.prompt = d.prompt or A2_PROMPT
        self.seed = config.motion.seed
        self.sampler = "dpm" if d.scheduler == "dpm" else "unipc"  # "official": the release UniPC
        # infer.py drops 12 frames whatever the count; the option drops exactly the reference slots' frames
        self.dropped = 1 + A2_REPEAT * (len(images) - 1) if d.exact_reference_frames else A2_DROPPED
        if self.dropped >= A2_FRAMES:
            raise InputError(f"holds too many images: with the portrait, {len(images)} fill a whole "
                             f"{A2_FRAMES}-frame clip", f"use at most {(A2_FRAMES - 2) // A2_REPEAT} reference images",
                             field="reference")
        self.release = release = cached_release(load_release, release_root(Path(d.checkpoint_dir)), dtype,
                                                load_device(d.cpu_offload, self.device))
        apply_memory_options(d, self.device, models=(release.text_encoder, release.image_encoder, release.transformer,
                                                     release.vae), vae=release.vae, frame_hw=(height, width),
                             lock=release.lock)

    def frames(self, speech: Speech) -> Iterator[np.ndarray]:
        n = self.n_frames(speech)
        per_clip = A2_FRAMES - self.dropped
        generator = torch.Generator(self.device).manual_seed(self.seed)
        release = self.release
        for start in range(0, n, per_clip):
            with release.lock:
                video = sample_a2_release(release, self.vae_images, self.clip_images, self.prompt, A2_NEGATIVE_PROMPT,
                                          A2_FRAMES, self.steps, self.guidance, generator=generator,
                                          sampler=self.sampler)
            yield from video[self.dropped:self.dropped + min(per_clip, n - start)]
