"""`--engine hallo | hallo2`: the official Hallo or Hallo2 release folder → a talking video of any length.

Clips of 16 frames are generated one after another; each starts from the last 2 frames of the previous
clip (motion frames) and is decoded and handed to the writer before the next begins, so memory stays
flat with audio length. Same inputs, outputs and bad-input handling as the warp engine.
"""
from __future__ import annotations

import itertools
import json
import threading
from contextlib import nullcontext
from pathlib import Path
from typing import Iterator

import numpy as np
import torch

from ..config import AnimateConfig
from ..errors import InputError
from ..models.checkpoints import load_vae_folder, require_files
from ..models import hallo as hallo_model
from ..models.hallo import HalloConfig
from ..types import Portrait, Speech
from ..utils import resolve_device
from .hallo import DEFAULT_SCHEDULER, HalloPipeline, SamplingConfig

SIZE_MULTIPLE = 64  # latents are 1/8 of the image and the mask pyramid halves 3 more times
RELEASE_URL = "https://huggingface.co/fudan-generative-ai/{variant}"
DTYPES = {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}
EMBEDDING_HINT = ("give the face-embedding file: a 512-value identity embedding (.npy/.npz/.txt/.safetensors) "
                  "or an ArcFace-style .onnx model that computes it (e.g. InsightFace's glintr100.onnx, which "
                  "official Hallo uses; its licence is non-commercial). See README, 'Face embedding'.")


def release_root(folder: Path) -> Path:
    """The `pretrained_models/` folder of a release checkout (or the folder itself)."""
    return folder / "pretrained_models" if (folder / "pretrained_models").is_dir() else folder


VAE_FOLDER, WAV2VEC_FOLDER = "sd-vae-ft-mse", "wav2vec/wav2vec2-base-960h"  # in pretrained_models/


def release_files(variant: str) -> dict[str, list[str]]:
    """label -> accepted paths (relative to pretrained_models/) of every file loading `variant` reads: the
    net, and the VAE's and wav2vec's own file lists under their release folders."""
    from ..audio.wav2vec import FILES as WAV2VEC_FILES
    from ..models.checkpoints import VAE_FILES

    files = {f"{variant} net": [f"{variant}/net.pth", f"{variant}/net.safetensors"]}
    for folder, parts in ((VAE_FOLDER, VAE_FILES), (WAV2VEC_FOLDER, WAV2VEC_FILES)):
        files.update({label: [f"{folder}/{name}" for name in names] for label, names in parts.items()})
    return files


def load_release(folder: str | Path, variant: str = "hallo", device: str = "cpu",
                 dtype: torch.dtype = torch.float32):
    """Load the parts of an official Hallo/Hallo2 release folder, strictly, without any download.

    Layout (as distributed): `{variant}/net.pth`, `sd-vae-ft-mse/`, `wav2vec/wav2vec2-base-960h/`,
    optionally `stable-diffusion-v1-5/unet/config.json`. A `{variant}/config.json` written by
    `HalloConfig.to_dict()` overrides the built-in official sizes (used for small test releases).
    Returns (HalloPipeline, wav2vec model, feature extractor).
    """
    from ..audio.wav2vec import load_wav2vec

    root = release_root(Path(folder))
    files = require_files(root, release_files(variant), f"{variant} ({RELEASE_URL.format(variant=variant)})")
    config = HalloConfig()
    unet_config = root / "stable-diffusion-v1-5" / "unet" / "config.json"
    if unet_config.is_file():
        config.unet = json.loads(unet_config.read_text())
    own = root / variant / "config.json"
    if own.is_file():
        config = HalloConfig.from_dict(json.loads(own.read_text()))
    key = (str(root.resolve()), variant, device, str(dtype),
           tuple((name, str(f), f.stat().st_mtime_ns, f.stat().st_size) for name, f in sorted(files.items())))
    with _CACHE_LOCK:
        parts = _CACHE.get(key)
        if parts is None:
            _CACHE.clear()  # one release in memory at a time
            net = hallo_model.load_release(files[f"{variant} net"], config)
            vae = load_vae_folder(files["VAE config"].parent)
            audio_model, extractor = load_wav2vec(files["wav2vec config"].parent, device=device)
            if (device, dtype) != ("cpu", torch.float32):
                net.to(device=device, dtype=dtype)
                vae.to(device=device, dtype=dtype)
            pipe = HalloPipeline(net, vae)  # its reference bank is attached to this net's attention layers
            pipe.net_lock = threading.Lock()
            parts = _CACHE[key] = (pipe, audio_model, extractor)
    return parts


# Loaded releases, so a server or UI that renders many videos loads the weights once (models are never
# reloaded per request). The key holds every file's size and mtime: a replaced checkpoint is loaded again.
# The pipeline keeps per-call state (the reference bank its net's attention layers write and read, the
# scheduler's timesteps), so callers that share it take `pipe.net_lock` while they run it and bring their
# own scheduler; two jobs then alternate clip by clip.
_CACHE: dict[tuple, tuple] = {}
_CACHE_LOCK = threading.Lock()


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
        from ..face.embedding import make_embedder
        from ..face.landmarks import prepare
        from ..face.masks import hallo_masks

        self.config = config = (config or AnimateConfig()).validate()
        d, r = config.diffusion, config.render
        if not d.checkpoint_dir:
            raise InputError(f"is needed by engine {self.variant} (its release folder)",
                             f"download the official release ({RELEASE_URL.format(variant=self.variant)}) "
                             "and pass its pretrained_models folder", field="checkpoint_dir")
        if not d.face_embedding:
            raise InputError(f"is needed by engine {self.variant} (the face's identity)", EMBEDDING_HINT,
                             field="face_embedding")
        if r.crop != "face":
            raise InputError(f"must be face for engine {self.variant} (it renders square face crops), got {r.crop!r}",
                             "use crop face", field="crop")
        if r.size % SIZE_MULTIPLE:
            raise InputError(f"must be a multiple of {SIZE_MULTIPLE} for engine {self.variant}, got {r.size}",
                             "e.g. 512 (the official size)", field="size")
        device = resolve_device(d.device)
        dtype = DTYPES[d.dtype]
        if dtype != torch.float32 and device == "cpu":
            raise InputError(f"{d.dtype} needs a GPU", "use fp32 on a CPU", field="dtype")
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
        from ..audio.wav2vec import video_frame_count

        return video_frame_count(len(speech.samples), speech.sample_rate, int(round(self.fps)))

    def _audio_windows(self, speech: Speech, lock) -> tuple[torch.Tensor, int]:
        """(per-frame wav2vec windows (frames, 5, layers, dim) padded to whole clips, real video frames)."""
        from ..audio.wav2vec import audio_windows, hallo_audio_embeddings

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


# -- Hallo2 ---------------------------------------------------------------------------------------------------
AUDIO_SEGMENT_SECONDS = 60  # Hallo2 cuts the speech into 60 s pieces, each through wav2vec on its own
SR_CHUNK, SR_OVERLAP = 16, 4  # video_sr.py: frames per restoration, frames shared with the previous chunk
SR_FIDELITY = 0.5  # video_sr.py's default fidelity weight w


def hallo2_audio_plan(n_samples: int, sample_rate: int, fps: int, clip_length: int,
                      whole_clips: bool = False) -> tuple[list[int], int]:
    """(video frames of each 60 s segment, zero frames appended to the last one).

    Default, Hallo2's rule: only the last segment is padded, only when its own frame count is not a multiple of
    the clip length, and then by (clip_length - total % clip_length) frames of the total count (a whole clip when
    the total is a multiple). With more than one segment this either leaves a partial last clip unpadded (it is
    then not generated: the video ends before the speech) or pads a total that is already whole clips (a silent
    extra clip). `whole_clips=True` pads the total to the next whole clip, whatever the last segment holds, so
    the clips cover every audio frame and no clip is all padding."""
    from ..audio.wav2vec import video_frame_count

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
    from ..audio.wav2vec import (encoder_hidden_states, normalize_waveform, pad_to_frames, resample_features,
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
        from ..audio.wav2vec import audio_windows

        with lock:
            emb, n_real = hallo2_audio_embeddings(self.audio_model, self.extractor, speech.samples,
                                                  int(round(self.fps)), self.sampling.clip_length,
                                                  self.config.diffusion.whole_clips)
        windows = audio_windows(emb)
        whole = windows.shape[0] // self.sampling.clip_length * self.sampling.clip_length
        return windows[:whole], min(n_real, whole)

    def _motion_frames(self, motion: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        from .hallo import mask_motion_frames

        return mask_motion_frames(motion, self.masks.face_region, generator)[0]

    def frames(self, speech: Speech) -> Iterator[np.ndarray]:
        frames = super().frames(speech)
        if self.sr is None:
            yield from frames
            return
        # video_sr.py drops the last frame before restoring (unless --sr-keep-last-frame), so the last chunk
        # holds one frame less
        yield from restore_video(self.sr, itertools.islice(frames, self.n_frames(speech)), self.sr_fidelity)


def load_super_resolution_release(folder: str | Path, device: str = "cpu"):
    """`hallo2/net_g.pth` of a release folder (a `hallo2/net_g_config.json` written from
    VQSuperResolutionConfig.to_dict() overrides the official sizes, for small test releases)."""
    from ..models.hallo import load_super_resolution
    from ..nn.vq_super_resolution import VQSuperResolutionConfig

    root = release_root(Path(folder))
    files = require_files(root, {"Hallo2 super-resolution network": ["hallo2/net_g.pth", "hallo2/net_g.safetensors"]},
                          f"hallo2 ({RELEASE_URL.format(variant='hallo2')}), needed by the super-resolution stage")
    own = root / "hallo2" / "net_g_config.json"
    config = VQSuperResolutionConfig(**json.loads(own.read_text())) if own.is_file() else None
    net = load_super_resolution(files["Hallo2 super-resolution network"], config)
    # kept in fp32 whatever --dtype says: its code logits pick discrete codebook rows, and one flipped index
    # changes the output far more than any rounding
    return net.to(device=device)


def _sr_input(frames: list[np.ndarray], size: int) -> torch.Tensor:
    """RGB uint8 frames -> (1, f, 3, size, size) in [-1, 1]: (float32(u8 / 255) - 0.5) / 0.5, as video_sr.py."""
    import cv2

    batch = [f if f.shape[:2] == (size, size) else cv2.resize(f, (size, size), interpolation=cv2.INTER_LINEAR)
             for f in frames]
    x = torch.from_numpy(np.stack(batch)).permute(0, 3, 1, 2)
    return (((x.double() / 255.0).float() - 0.5) / 0.5)[None]


def restore_video(net, frames: Iterator[np.ndarray], w: float = SR_FIDELITY, chunk: int = SR_CHUNK,
                  overlap: int = SR_OVERLAP) -> Iterator[np.ndarray]:
    """video_sr.py's schedule on a frame stream: chunks of `chunk` frames, each starting `overlap` frames before
    the previous one ended and dropping those first `overlap` restored frames, so every frame is restored once
    with up to chunk - 1 neighbours. Output: (S, S, 3) uint8 (S = 512 officially), clamped to [-1, 1] and rounded."""
    size = net.config.img_size
    device = next(net.parameters()).device
    window: list[np.ndarray] = []
    first = True
    frames = iter(frames)
    while True:
        window += [f for _, f in zip(range(chunk - len(window)), frames)]
        if not window or (not first and len(window) <= overlap):
            return
        with torch.no_grad():
            out = net.restore(_sr_input(window, size).to(device), w).video[0]  # (f, 3, S, S)
        out = ((out.float().clamp(-1, 1) + 1) / 2 * 255.0).round().to(torch.uint8).permute(0, 2, 3, 1).cpu().numpy()
        for frame in out[0 if first else overlap:]:
            yield frame
        done = len(window) < chunk
        first, window = False, window[-overlap:]
        if done:
            return
