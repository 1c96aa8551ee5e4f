"""`--engine echomimic --checkpoint-dir pretrained_weights/`: the official EchoMimic release folder -> a talking
video (audio-driven, or landmark-driven with --pose-video), through systems/echomimic/pipeline.py."""
from __future__ import annotations

import math
import warnings
from contextlib import nullcontext
from pathlib import Path
from typing import Iterator

import numpy as np
import torch
from diffusers import DDIMScheduler

from ...config import AnimateConfig
from ...errors import InputError
from ...face.video import landmark_file, video_landmarks
from ...types import Portrait, Speech
from .. import require_release_dir
from .pipeline import DEFAULT_SCHEDULER, SamplingConfig
from .release import RELEASE_URL, load_release

SIZE_MULTIPLE = 64  # latents are 1/8 of the image and the UNet halves them 3 more times
FACE_MASK_DILATION = 0.1  # infer_audio2vid.py: facemask_dilation_ratio
LANDMARK_FILE_TYPES = (".npy",)


def make_scheduler(name: str):
    from diffusers import DPMSolverMultistepScheduler

    if name == "dpm":
        cfg = {k: v for k, v in DEFAULT_SCHEDULER.items() if k not in ("clip_sample",)}
        return DPMSolverMultistepScheduler(**cfg, algorithm_type="dpmsolver++", final_sigmas_type="zero")
    return DDIMScheduler(**DEFAULT_SCHEDULER)


def face_mask(face, size: int) -> torch.Tensor:
    """(1, 1, 1, size, size) in {0, 1}: the face's landmark box grown by 10 % of its height/width on each
    side (the infer script grows its detector box the same way)."""
    x0, y0, x1, y1 = face.box
    r_pad, c_pad = int((y1 - y0) * FACE_MASK_DILATION), int((x1 - x0) * FACE_MASK_DILATION)
    rb, re, cb, ce = (int(round(v)) for v in (y0, y1, x0, x1))
    mask = torch.zeros(size, size)
    mask[max(rb - r_pad, 0):re + r_pad, max(cb - c_pad, 0):ce + c_pad] = 1.0
    return mask[None, None, None]


def driving_landmarks(path: str, fps: float, n_frames: int, face, size: int, warn: bool = True) -> np.ndarray:
    """(n_frames, points, 2|3) landmarks in output pixels from a driving video or a landmark file.

    A video's landmarks are moved and scaled so that its first frame's face box lands on the portrait's face
    box (the head keeps its motion, the face its place); a `.npy` file holds (frames, points, 2 or 3)
    coordinates already in output pixels. Shorter sources hold their last frame (with a warning)."""
    p = Path(path)
    if not p.is_file():
        raise InputError(f"{path} does not exist", "pass a driving video or a .npy landmark file", field="pose_video")
    if p.suffix.lower() in LANDMARK_FILE_TYPES:
        points = landmark_file(p).astype(np.float32)  # already in output pixels
    else:
        points = video_landmarks(p, fps, n_frames)
        x0, y0, x1, y1 = face.box
        first = points[0]
        bx0, by0 = first[:, 0].min(), first[:, 1].min()
        scale = max(x1 - x0, y1 - y0) / max(float(np.ptp(first[:, 0])), float(np.ptp(first[:, 1])), 1e-6)
        points = points.copy()
        points[..., 0] = (points[..., 0] - bx0) * scale + x0
        points[..., 1] = (points[..., 1] - by0) * scale + y0
        points[..., 2:] *= scale
    if len(points) < n_frames:
        if warn:
            warnings.warn(f"the pose source has {len(points)} frames for {n_frames} video frames; the last pose is "
                          "held to the end of the audio", stacklevel=2)
        points = np.concatenate([points, np.repeat(points[-1:], n_frames - len(points), axis=0)])
    return points[:n_frames]


def landmark_images(points: np.ndarray, size: int) -> torch.Tensor:
    """(f, points, 2|3) pixel landmarks -> (1, 3, f, size, size) in [0, 1]: the face-part contours of the
    478-point FaceMesh layout, or one 2x2 dot per point for other layouts."""
    from ...nn.landmark_guider import render_landmarks

    if points.shape[1] >= 478:
        pts = points if points.shape[-1] == 3 else np.concatenate([points, np.zeros_like(points[..., :1])], -1)
        images = render_landmarks(pts[:, :478], (size, size))
    else:
        images = np.zeros((len(points), size, size, 3), np.uint8)
        for k, frame in enumerate(points):
            for x, y in np.round(frame[:, :2]).astype(int):
                if 0 <= x < size and 0 <= y < size:
                    images[k, y:y + 2, x:x + 2] = 255
    return torch.from_numpy(images).float().div(255.0).permute(3, 0, 1, 2)[None]


class EchoMimicAnimator:
    """Engine interface shared with the warp `Animator`: `fps`, `frame_size`, `n_frames`, `frames`.

    Audio-driven by default (a face mask from the portrait's landmarks); landmark-driven with
    `--pose-video` (a driving video or a .npy landmark file), which loads the release's `_pose` files.
    """

    def __init__(self, portrait: Portrait, config: AnimateConfig | None = None, warn: bool = True):
        from ...face.landmarks import prepare
        from ...utils import resolve_precision

        self.config = config = (config or AnimateConfig()).validate()
        d, r = config.diffusion, config.render
        self.warn = warn
        require_release_dir(d.checkpoint_dir, "echomimic", f"download the official release ({RELEASE_URL}) "
                            "and pass its pretrained_weights folder")
        if r.crop != "face":
            raise InputError(f"must be face for engine echomimic (it renders square face crops), got {r.crop!r}",
                             "use crop face", field="crop")
        if r.size % SIZE_MULTIPLE:
            raise InputError(f"must be a multiple of {SIZE_MULTIPLE} for engine echomimic, got {r.size}",
                             "e.g. 512 (the official size)", field="size")
        device, dtype = resolve_precision(d.device, d.dtype)
        self.pose_source = d.pose_video
        if self.pose_source and not Path(self.pose_source).is_file():
            raise InputError(f"{self.pose_source} does not exist", "pass a driving video or a .npy landmark file",
                             field="pose_video")
        defaults = SamplingConfig()
        self.sampling = SamplingConfig(
            steps=d.steps or defaults.steps,
            guidance_scale=d.guidance_scale if d.guidance_scale is not None else defaults.guidance_scale,
            fps=r.fps, seed=config.motion.seed, landmarks=bool(self.pose_source),
            average_without_guidance=d.average_windows, window_batch=d.window_batch)
        self.portrait, self.face = prepare(portrait, r.size, "face", r.face_index, warn=warn)
        self.pipe, self.whisper = load_release(d.checkpoint_dir, self.sampling.landmarks, device, dtype)
        self.scheduler = make_scheduler(d.scheduler)  # set on the shared pipeline while this animator holds it

    @property
    def fps(self) -> float:
        return self.config.render.fps

    @property
    def frame_size(self) -> tuple[int, int]:
        return self.config.render.size, self.config.render.size

    def n_frames(self, speech: Speech) -> int:
        return math.ceil(len(speech.samples) / speech.sample_rate * self.fps)

    def frames(self, speech: Speech) -> Iterator[np.ndarray]:
        """(size, size, 3) uint8 frames. The whole video is sampled at once (windows overlap across it, as
        officially), then decoded and handed out frame by frame."""
        from ...audio.whisper import audio_windows, int16_waveform

        s, pipe, size = self.sampling, self.pipe, self.config.render.size
        lock = getattr(pipe, "net_lock", None) or nullcontext()
        n_out = self.n_frames(speech)
        with lock:
            features = self.whisper.features(int16_waveform(speech.samples))
        windows = audio_windows(features, s.fps)  # one more window or two than frames, as officially
        total = max(windows.shape[0], n_out)
        windows = torch.cat([windows, windows[-1:].expand(total - windows.shape[0], -1, -1)])
        if s.landmarks:
            points = driving_landmarks(self.pose_source, s.fps, total, self.face, size, self.warn)
            condition = landmark_images(points, size)
        else:
            condition = face_mask(self.face, size)
        generator = torch.Generator().manual_seed(s.seed)
        noise = pipe.initial_latents((1, 4, total, size // 8, size // 8), generator, s.clamp_noise)
        with lock:  # the pipeline (net, reference bank, scheduler) is shared by every caller of this release
            pipe.scheduler = self.scheduler
            ref_latents = pipe.encode_reference(self.portrait.image)
            location = pipe.location(condition)
            latents = pipe.sample(ref_latents, windows[None].to(pipe.dtype), location, noise, s)
        for i in range(n_out):
            with lock:
                frame = pipe.decode_latents(latents[:, :, i:i + 1])[0, :, 0]
            yield (frame.permute(1, 2, 0).cpu().numpy() * 255.0 + 0.5).astype(np.uint8)
