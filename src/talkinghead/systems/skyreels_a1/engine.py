"""`--engine skyreels-a1`: the official SkyReels-A1 release folder -> a talking video, driven by the motion track's
landmarks and sampled as the release samples (systems/skyreels_a1/pipeline.py)."""
from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import numpy as np
import torch

from ...errors import InputError
from ...nn.landmark_guider import motion_landmarks, release_control_frames
from ...pipelines.memory import apply_memory_options, load_device
from ...types import Portrait, Speech
from .. import require_release_dir
from ..skyreels_common import ReleaseVideo, cached_release, release_pixels, release_precision
from .pipeline import face_crop, release_control, sample_a1_release
from .release import IDENTITY_TOKENS, load_release, release_root

A1_STEPS, A1_GUIDANCE = 10, 3.0  # inference.py's settings
A1_DROPPED = 2  # the release drops the first two generated frames of every clip (reference landmarks, repeat)
A1_FACE_SIZE = 512  # the release's aligned face for SigLIP
A1_BOX_MARGIN = 0.25  # face box for the landmark drawing: the landmark box grown by this share on each side


def crop_and_resize(image: np.ndarray, height: int, width: int) -> tuple[np.ndarray, np.ndarray]:
    """The release's portrait preparation: an image wider than height x width is centre-cropped to that
    aspect, a narrower one is padded with black on both sides; then resized (bicubic). Returns the image and
    the 2 x 3 affine that maps source pixels to it."""
    from PIL import Image

    ih, iw = image.shape[:2]
    if ih / iw < height / width:
        cw = int(ih / height * width)
        left = (iw - cw) // 2
        image, shift, span = image[:, left:left + cw], -left, cw
    else:
        pad = int(((width / height) * ih - iw) / 2.0)
        padded = np.zeros((ih, iw + 2 * pad, 3), np.uint8)
        padded[:, pad:pad + iw] = image
        image, shift, span = padded, pad, iw + 2 * pad
    out = np.asarray(Image.fromarray(np.ascontiguousarray(image)).resize((width, height), Image.BICUBIC))
    sx, sy = width / span, height / ih
    return out, np.array([[sx, 0, shift * sx], [0, sy, 0]])


def _move(points: np.ndarray, affine: np.ndarray) -> np.ndarray:
    out = np.array(points, np.float64, copy=True)
    out[..., :2] = out[..., :2] @ affine[:, :2].T + affine[:, 2]
    return out


def _box(points: np.ndarray, frame: tuple[int, int], margin: float = A1_BOX_MARGIN) -> tuple[int, int, int, int]:
    """A square around the landmarks grown by `margin` on each side, inside the frame (W, H)."""
    x0, y0 = points[:, :2].min(0)
    x1, y1 = points[:, :2].max(0)
    half = max(x1 - x0, y1 - y0) * (0.5 + margin)
    cx, cy = (x0 + x1) / 2, (y0 + y1) / 2
    box = (int(max(0, round(cx - half))), int(max(0, round(cy - half))),
           int(min(frame[0], round(cx + half))), int(min(frame[1], round(cy + half))))
    if box[2] - box[0] < 2 or box[3] - box[1] < 2:
        raise InputError("the face is too small at the release's frame size to draw its landmarks",
                         "use a portrait where the face fills more of the picture")
    return box


class SkyReelsA1Animator(ReleaseVideo):
    """`--engine skyreels-a1`: the official SkyReels-A1-5B folder animates the portrait, driven by our
    audio-to-motion track (the warp engine's MotionTrack moving the portrait's FaceMesh landmarks) or, with
    --pose-video, by a driving video's landmarks (or a .npy of them) retargeted onto the portrait.

    As the release: the portrait is centre-cropped or padded to the model's frame size (480 x 720 for the
    5B model) and never another; each clip is `sample_frames` control frames (the portrait's own landmarks,
    the first driving pose twice, then the next ones), drawn in the release's landmark style into the face
    box, sampled with CogVideoXDDIM (10 steps, guidance 3.0 on the SigLIP identity), and its first two frames
    dropped, so 47 new frames per clip at full size. Clips follow one another from one generator. Frames
    are made at --fps (the release makes 12 fps and interpolates other rates with FILM, not included here).
    """

    def __init__(self, portrait: Portrait, config=None, warn: bool = True):
        from ...config import AnimateConfig
        from ...face.landmarks import analyze

        self.config = config = (config or AnimateConfig()).validate()
        d = config.diffusion
        require_release_dir(d.checkpoint_dir, "skyreels-a1", "download the SkyReels-A1-5B release "
                            "(huggingface.co/Skywork/SkyReels-A1) and pass its folder (pretrained_models/SkyReels-A1-5B)")
        self.device, dtype = release_precision(d)
        self.pose_source = d.pose_video
        if self.pose_source and not Path(self.pose_source).is_file():
            raise InputError(f"{self.pose_source} does not exist", "pass a driving video or a .npy landmark file",
                             field="pose_video")
        self.warn = warn
        self.release = cached_release(load_release, release_root(Path(d.checkpoint_dir)), dtype,
                                      load_device(d.cpu_offload, self.device))
        model = self.release.model
        tc = model.transformer.config
        spatial = 2 ** (len(model.config.vae["block_out_channels"]) - 1)
        self.size = (tc.sample_width * spatial, tc.sample_height * spatial)  # (W, H): the only size it runs at
        apply_memory_options(d, self.device, models=(self.release.identity_encoder, model.landmark_guider,
                                                     model.transformer, self.release.vae),
                             resident=(model.identity_proj,), vae=self.release.vae, frame_hw=self.size[::-1],
                             release_tiles=True, lock=self.release.lock)
        self.clip_frames = tc.sample_frames
        self.steps = d.steps or A1_STEPS
        self.guidance = d.guidance_scale if d.guidance_scale is not None else A1_GUIDANCE
        self.seed = config.motion.seed
        self.face = analyze(portrait, config.render.face_index, warn=warn)  # on the full-resolution portrait
        self.image, self.affine = crop_and_resize(portrait.image, self.size[1], self.size[0])
        self.ref_points = _move(self.face.landmarks, self.affine)
        self.box = _box(self.ref_points, self.size)
        self.identity = self._identity(portrait.image)

    @torch.no_grad()
    def _identity(self, image: np.ndarray) -> torch.Tensor:
        """(1, 729, 1152) SigLIP hidden states of the face (a square crop around it, at 512 px as the release's
        aligned face), in float32 as the release runs SigLIP."""
        import cv2

        from ...errors import CheckpointError

        crop = cv2.resize(face_crop(image, self.face.box), (A1_FACE_SIZE, A1_FACE_SIZE), interpolation=cv2.INTER_AREA)
        pixels = self.release.image_processor(images=crop, return_tensors="pt").pixel_values
        encoder = self.release.identity_encoder
        hidden = encoder(pixel_values=pixels.to(next(encoder.parameters()))).last_hidden_state.float()
        if hidden.shape[1] != IDENTITY_TOKENS:
            raise CheckpointError(f"the SigLIP encoder gives {hidden.shape[1]} tokens; SkyReels-A1 takes exactly "
                                  f"{IDENTITY_TOKENS} (siglip-so400m-patch14-384 at 384 px)")
        return hidden

    def _driving(self, speech: Speech, n: int) -> np.ndarray:
        """(n, 478, 3) landmarks in output pixels, one per output frame."""
        if self.pose_source:
            return self._pose_landmarks(n)
        from ...motion.track import motion_track

        track = motion_track(speech, self.config.motion, self.fps)
        frames = (track.frames + track.frames[-1:] * n)[:n]
        return _move(motion_landmarks(self.face, frames), self.affine)

    def _pose_landmarks(self, n: int) -> np.ndarray:
        """A driving video's (or .npy file's) landmarks retargeted onto the portrait: each frame's displacement
        from the first driving frame, scaled by the face sizes, added to the portrait's landmarks."""
        from ...face.video import landmark_file, video_landmarks

        path = Path(self.pose_source)
        if path.suffix.lower() == ".npy":
            points = landmark_file(path, len(self.ref_points))  # FaceMesh points
        else:
            points = video_landmarks(path, self.fps, n)
        if len(points) < n and self.warn:
            import warnings

            warnings.warn(f"the pose source has {len(points)} frames for {n} video frames; holding its last pose",
                          stacklevel=2)
        points = np.concatenate([points, np.repeat(points[-1:], max(0, n - len(points)), 0)])[:n, :, :2]
        scale = np.ptp(self.ref_points[:, 0]) / max(float(np.ptp(points[0, :, 0])), 1e-6)
        out = np.repeat(self.ref_points[None], n, 0)
        out[..., :2] += (points - points[:1]) * scale
        return out

    def frames(self, speech: Speech) -> Iterator[np.ndarray]:
        """(H, W, 3) uint8 frames, clip by clip."""
        n = self.n_frames(speech)
        driving = self._driving(speech, n)
        per_clip = self.clip_frames - A1_DROPPED
        if per_clip < 1:
            raise InputError(f"the release's clip length {self.clip_frames} leaves no frame after dropping "
                             f"{A1_DROPPED}", "use the official SkyReels-A1-5B folder")
        release = self.release
        generator = torch.Generator(self.device).manual_seed(self.seed)
        ref_pixels = release_pixels(self.image)
        for start in range(0, n, per_clip):
            clip = driving[start:start + per_clip]
            clip = np.concatenate([clip, np.repeat(clip[-1:], per_clip - len(clip), 0)])
            points = np.concatenate([self.ref_points[None], clip[:1], clip])  # ref, first pose twice, the rest
            control = release_control(release_control_frames(points, self.box, self.size))
            with release.lock:
                video = sample_a1_release(release.model, release.vae, release.scheduler(), ref_pixels, control,
                                          self.identity, self.steps, self.guidance, generator=generator)
            yield from video[A1_DROPPED:A1_DROPPED + min(per_clip, n - start)]
