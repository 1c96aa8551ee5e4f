"""SkyReels-A1 sampling: any length, chunk by chunk, frames yielded as they decode (SkyReels-A2's pipeline,
systems/skyreels_a2/pipeline.py, shares this file's image and chunking helpers).

Two kinds live here. The official release, computed as its upstream pipeline computes it (every cast, draw and
quirk; `verify skyreels-a1` compares it with reference data of the upstream code): `sample_a1_release` /
`SkyReelsA1Animator` (`--engine skyreels-a1`). And the pipeline of our own trained checkpoints (the layout
`talkinghead train` writes), which follows the paper with our sampler and chunking:

A1 (portrait animation): the MotionTrack (the same controls the warp engine uses) moves the portrait's
FaceMesh landmarks; each chunk renders them to guidance frames, samples with the landmark guider, and
decodes. Chunk k > 0 is conditioned on the last frame of chunk k − 1 (the I2V image slot) and drops its
first frame, so consecutive chunks join without a repeated frame; identity tokens always come from the
portrait, which keeps identity from drifting.

Only the current chunk's latents and frames live in memory. Weights come from a local folder only; a
folder with missing files is an error listing every missing file.
"""
from __future__ import annotations

import math
import threading
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import torch
from einops import rearrange
from tqdm.auto import tqdm

from ...errors import InputError, UnreadableMediaError
from ...models.checkpoints import CONFIG_FILE, WEIGHTS_FILE
from ...nn.landmark_guider import guidance_tensor, motion_landmarks, release_control_frames, render_landmarks
from ...sampling import denoise
from ...types import FaceAnalysis, MotionTrack, Portrait, Speech
from ...utils import resolve_device
from .model import SkyReelsA1

SIGLIP_MEAN = SIGLIP_STD = 0.5  # SigLIP image normalisation
VAE_FILES = ["config.json", "diffusion_pytorch_model.safetensors"]


def require_local(folder: str | Path, needed: dict[str, list[str]], system: str, hint: str | None = None) -> Path:
    """InputError naming every missing file (relative to `folder`) of a local weights folder."""
    folder = Path(folder)
    missing = [f"{part}/{name}" for part, names in needed.items() for name in names
               if not (folder / part / name).is_file()]
    if not folder.is_dir() or missing:
        listed = "\n".join(f"  {m}" for m in (missing or ["(the folder itself)"]))
        raise InputError(f"{folder} lacks the {system} weights:\n{listed}", hint or (
            f"put the files there (no download is attempted); `model/` is written by "
            f"{system.replace('-', '')}.save_pretrained, `vae/` is the diffusers VAE folder of the release"))
    return folder


def face_crop(image: np.ndarray, box: tuple[float, float, float, float], margin: float = 0.25) -> np.ndarray:
    """A square crop around the face box grown by `margin` of its size on each side (clipped to the image):
    what the identity encoder sees (the release feeds an aligned face crop)."""
    h, w = image.shape[:2]
    x0, y0, x1, y1 = box
    half = max(x1 - x0, y1 - y0) * (0.5 + margin)
    cx, cy = (x0 + x1) / 2, (y0 + y1) / 2
    l, t = int(max(0, round(cx - half))), int(max(0, round(cy - half)))
    r, b = int(min(w, round(cx + half))), int(min(h, round(cy + half)))
    return image[t:b, l:r]


def to_pixels(image: np.ndarray, size: tuple[int, int]) -> torch.Tensor:
    """(h, w, 3) uint8 -> (3, H, W) float in [-1, 1] at `size` (width, height)."""
    import cv2

    if image.shape[1::-1] != tuple(size):
        image = cv2.resize(image, size, interpolation=cv2.INTER_AREA)
    return torch.from_numpy(np.ascontiguousarray(image)).permute(2, 0, 1).float() / 127.5 - 1.0


def to_frames(video: torch.Tensor) -> np.ndarray:
    """(1, 3, f, H, W) in [-1, 1] -> (f, H, W, 3) uint8."""
    v = ((video[0].float().clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8)
    return rearrange(v, "c f h w -> f h w c").cpu().numpy()


def chunk_lengths(total: int, chunk: int, overlap: int) -> list[int]:
    """Pixel-frame lengths (each 1 + 4k) of the chunks covering `total` frames when every chunk after the
    first re-uses `overlap` frames of the previous one."""
    if (chunk - 1) % 4:
        raise InputError(f"chunk_frames must be 1 + 4k, got {chunk}", "e.g. 49 (A1) or 81 (A2)")
    out, done = [], 0
    while done < total:
        need = total - done + (overlap if out else 0)
        n = min(chunk, 1 + 4 * math.ceil(max(need - 1, 0) / 4))
        out.append(n)
        done += n - (overlap if len(out) > 1 else 0)
    return out


# ------------------------------------------------------------------ SkyReels-A1 as the release samples


def release_pixels(image: np.ndarray) -> torch.Tensor:
    """(H, W, 3) uint8 -> (1, 3, H, W) float32 in [-1, 1], with the memory layout of diffusers' VideoProcessor
    (a channels-last view): the release's bf16 VAE encode is sensitive to it."""
    x = torch.from_numpy(np.asarray(image, np.float32)[None] / 255.0).permute(0, 3, 1, 2)
    return 2.0 * x - 1.0


def release_control(frames: np.ndarray) -> torch.Tensor:
    """(F, H, W, 3) uint8 landmark frames -> (1, 3, F, H, W) float32 in [-1, 1] (frames / 255, then 2x - 1)."""
    x = torch.from_numpy(np.ascontiguousarray(frames)).permute(3, 0, 1, 2)[None].float() / 255.0
    return 2.0 * x - 1.0


def release_uint8(video: torch.Tensor) -> np.ndarray:
    """(1, 3, F, H, W) decoded video -> (F, H, W, 3) uint8: clamp in the VAE's dtype, then x 255 and round in
    float32 numpy (diffusers' postprocess_video)."""
    x = (video[0] / 2 + 0.5).clamp(0, 1).permute(1, 2, 3, 0).float().cpu().numpy()
    return (x * 255).round().astype(np.uint8)


@torch.no_grad()
def sample_a1_release(model: SkyReelsA1, vae, scheduler, ref_pixels: torch.Tensor, control: torch.Tensor,
                      identity: torch.Tensor, steps: int, guidance_scale: float,
                      generator: torch.Generator | None = None, image_noise: torch.Tensor | None = None,
                      noise: torch.Tensor | None = None, trace: dict | None = None,
                      rope: tuple[torch.Tensor, torch.Tensor] | None = None) -> np.ndarray:
    """One clip the way the release's `SkyReelsA1ImagePoseToVideoPipeline` makes it, in the model's dtype:
    `ref_pixels` (1, 3, H, W) and `control` (1, 3, F, H, W) in [-1, 1], `identity` (1, 729, 1152) SigLIP
    hidden states -> (F, H, W, 3) uint8 frames.

    Order and casts as the release: identity tokens [zeros, features] (CFG guides only the identity) in the
    model dtype; the reference latent is drawn from the VAE posterior (the generator's first draw, unless
    `image_noise` is given) x scaling factor into latent frame 0; the starting noise is the second draw (or
    `noise`), made directly in the model dtype; the pose guider encodes the whole control clip once; each
    step joins noise | guidance | image channels, guides u + g (c - u) in float32 and steps the scheduler
    (CogVideoXDDIM), the result cast back to the model dtype; decode with 1 / scaling factor. `trace` gets
    every intermediate under the fixture's names."""
    from diffusers.utils.torch_utils import randn_tensor

    p = next(model.transformer.parameters())
    dtype, device = p.dtype, p.device
    record = trace.__setitem__ if trace is not None else (lambda k, v: None)
    frames = control.shape[2]
    f = (frames - 1) // model.config.guider().temporal_compression_ratio + 1

    cfg = guidance_scale > 1.0
    identity = identity.to(device)
    tokens = (torch.cat([torch.zeros_like(identity), identity]) if cfg else identity).to(dtype)
    scheduler.set_timesteps(steps, device=device)
    record("timesteps", scheduler.timesteps)

    image = ref_pixels.to(device=device, dtype=dtype).unsqueeze(2)  # (1, 3, 1, H, W)
    dist = vae.encode(image[0].unsqueeze(0)).latent_dist
    record("ref_vae_moments", dist.parameters)
    if image_noise is None:  # DiagonalGaussianDistribution.sample, with the draw kept
        image_noise = randn_tensor(dist.mean.shape, generator=generator, device=device, dtype=dist.mean.dtype)
    record("vae_sample_noise", image_noise)
    ref = dist.mean + dist.std * image_noise.to(dist.mean)
    ref = vae.config.scaling_factor * ref.to(dtype).permute(0, 2, 1, 3, 4)  # (1, 1, c, h, w)
    image_latents = torch.cat([ref, ref.new_zeros(1, f - 1, *ref.shape[2:])], dim=1)
    record("image_latents", image_latents)
    shape = (1, f, model.config.latent_channels, *ref.shape[3:])
    latents = noise.to(device=device, dtype=dtype) if noise is not None else randn_tensor(
        shape, generator=generator, device=device, dtype=dtype)
    latents = latents * scheduler.init_noise_sigma
    record("initial_latents", latents)

    guide = model.landmark_guider(control.to(device=device, dtype=dtype))  # (1, f, c, h, w)
    record("control_latents", guide.permute(0, 2, 1, 3, 4))
    n = 2 if cfg else 1
    guide, image_latents2 = torch.cat([guide] * n), torch.cat([image_latents] * n)
    if rope is None:
        rope = model.rotary(f, *ref.shape[3:], device)
    record("rope_cos", rope[0]), record("rope_sin", rope[1])

    index = {int(t): i for i, t in enumerate(scheduler.timesteps)}

    def predict(x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        i = index[int(t)]
        x = torch.cat([torch.cat([x] * n), guide, image_latents2], dim=2)
        record(f"step.{i}.latent_model_input", x)
        out = model.transformer(x, model.identity_proj(tokens), t.expand(n), image_rotary_emb=rope,
                                return_dict=False)[0]
        record(f"step.{i}.transformer_out", out)
        return out.float()

    def after(i: int, t: torch.Tensor, stepped: tuple) -> torch.Tensor:  # the release keeps latents in its dtype
        prev, original = stepped
        record(f"step.{i}.scheduler_prev_sample", prev)
        record(f"step.{i}.scheduler_pred_original_sample", original)
        record(f"step.{i}.latents_after", prev.to(dtype))
        return prev.to(dtype)

    latents = denoise(predict, scheduler, latents, guidance_scale if cfg else None,
                      on_step=lambda i, t, x, guided: record(f"step.{i}.guided", guided), after_step=after)
    record("final_latents", latents)
    z = 1 / vae.config.scaling_factor * latents.permute(0, 2, 1, 3, 4)
    record("decode_input", z)
    video = vae.decode(z).sample
    record("decoded", video)
    return release_uint8(video)


class SkyReelsA1Pipeline:
    """Portrait + MotionTrack -> frames. `identity_encoder` is a SigLIP-style vision model (transformers),
    whose last hidden states are the identity features."""

    def __init__(self, model: SkyReelsA1, vae, identity_encoder, steps: int = 10, chunk_frames: int = 49,
                 guidance_scale: float = 3.0, progress: bool = True):
        self.model, self.vae, self.identity_encoder = model.eval(), vae.eval(), identity_encoder.eval()
        self.steps, self.chunk_frames, self.progress = steps, chunk_frames, progress
        self.guidance_scale = guidance_scale
        self.scale = float(vae.config.scaling_factor)
        self.spatial = 2 ** (len(vae.config.block_out_channels) - 1)
        self.multiple = self.spatial * model.transformer.config.patch_size

    @classmethod
    def from_pretrained(cls, folder: str | Path, **kwargs) -> "SkyReelsA1Pipeline":
        """`model/` (SkyReelsA1.save_pretrained), `vae/` (AutoencoderKLCogVideoX), `siglip/` (SiglipVisionModel):
        our own trained layout. The official release folder is `systems.skyreels_a1.model.load_release` and
        `SkyReelsA1Animator`."""
        from diffusers import AutoencoderKLCogVideoX
        from transformers import SiglipVisionModel

        root = require_local(folder, {"model": [CONFIG_FILE, WEIGHTS_FILE], "vae": VAE_FILES,
                                      "siglip": ["config.json", "model.safetensors"]}, "SkyReels-A1")
        return cls(SkyReelsA1.from_pretrained(root / "model"),
                   AutoencoderKLCogVideoX.from_pretrained(str(root / "vae"), local_files_only=True),
                   SiglipVisionModel.from_pretrained(str(root / "siglip"), local_files_only=True), **kwargs)

    @staticmethod
    def motion(speech: Speech, fps: float = 25.0, config=None) -> MotionTrack:
        """The shared MotionTrack of a clip, as the warp engine builds it (MotionConfig controls apply)."""
        from ...config import MotionConfig
        from ...motion.track import motion_track

        return motion_track(speech, config or MotionConfig(), fps)

    def _dev(self, x: torch.Tensor) -> torch.Tensor:
        """Inputs made on the CPU go to the VAE's device and dtype."""
        p = next(self.vae.parameters())
        return x.to(device=p.device, dtype=p.dtype)

    @torch.no_grad()
    def identity(self, pixels: torch.Tensor) -> torch.Tensor:
        """(3, H, W) portrait in [-1, 1] -> (1, n, d) identity features."""
        size = self.identity_encoder.config.image_size
        x = torch.nn.functional.interpolate(pixels[None], size=(size, size), mode="bicubic", align_corners=False)
        x = ((x + 1) / 2 - SIGLIP_MEAN) / SIGLIP_STD
        return self.identity_encoder(pixel_values=x.to(next(self.identity_encoder.parameters()))).last_hidden_state

    @torch.no_grad()
    def encode(self, pixels: torch.Tensor) -> torch.Tensor:
        """(3, H, W) -> (1, 1, c, h, w) scaled latent (the I2V image slot)."""
        z = self.vae.encode(pixels[None, :, None]).latent_dist.mode() * self.scale  # (1, c, 1, h, w)
        return z.transpose(1, 2)

    @torch.no_grad()
    def frames(self, portrait: Portrait, face: FaceAnalysis, motion: MotionTrack, seed: int = 0
               ) -> Iterator[np.ndarray]:
        """(h, w, 3) uint8 frames, one per MotionTrack frame, at the portrait's size."""
        w, h = portrait.size
        if w % self.multiple or h % self.multiple:
            raise InputError(f"SkyReels-A1 needs a size that is a multiple of {self.multiple}, got {w}x{h}",
                             f"prepare the portrait at e.g. {self.multiple * max(1, w // self.multiple)} px")
        if len(motion) == 0:
            return
        ref = self._dev(to_pixels(portrait.image, (w, h)))
        crop = face_crop(portrait.image, face.box)
        identity = self.identity(self._dev(to_pixels(crop, crop.shape[1::-1])))
        image_latent = self.encode(ref)
        lengths = chunk_lengths(len(motion), self.chunk_frames, overlap=1)
        start = 0  # MotionTrack index of the chunk's first frame (for k > 0: the previous chunk's last)
        for k, n in enumerate(tqdm(lengths, desc="SkyReels-A1 chunks", disable=not self.progress)):
            idx = np.minimum(np.arange(start, start + n), len(motion) - 1)  # the last chunk repeats its end pose
            pts = motion_landmarks(face, [motion.frames[i] for i in idx])
            guidance = self._dev(guidance_tensor(render_landmarks(pts, (w, h))))  # (1, 3, n, h, w)
            batch = {"ref_latent": image_latent, "identity": identity, "guidance": guidance}
            latents = self.model.sample(batch, self.steps, torch.Generator().manual_seed(seed + k), self.progress,
                                        self.guidance_scale)
            video = to_frames(self.vae.decode(latents.transpose(1, 2) / self.scale).sample)  # (n, h, w, 3)
            keep = min(n, len(motion) - start)
            yield from (video[:keep] if k == 0 else video[1:keep])
            image_latent = self.encode(self._dev(to_pixels(video[keep - 1], (w, h))))
            start += n - 1


# ------------------------------------------------------------------ `--engine skyreels-a1`

A1_STEPS, A1_GUIDANCE = 10, 3.0  # inference.py's settings
A1_DROPPED = 2  # the release drops the first two generated frames of every clip (reference landmarks, repeat)
A1_FACE_SIZE = 512  # the release's aligned face for SigLIP
A1_BOX_MARGIN = 0.25  # face box for the landmark drawing: the landmark box grown by this share on each side
DTYPES = {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}


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


_A1_CACHE: dict[tuple, object] = {}
_A1_LOCK = threading.Lock()


def load_a1_release_cached(folder: str | Path, dtype: torch.dtype, device: str):
    """`load_release` once per process for the same files (a replaced file is loaded again), with a lock for
    the callers that share it."""
    from .model import load_release, release_root

    root = release_root(Path(folder))
    stats = tuple((str(p), p.stat().st_size, p.stat().st_mtime_ns) for p in sorted(root.rglob("*")) if p.is_file()) \
        if root.is_dir() else ()
    key = (str(root.resolve()), str(dtype), device, stats)
    with _A1_LOCK:
        if key not in _A1_CACHE:
            _A1_CACHE.clear()  # one release in memory at a time
            release = load_release(root, dtype, device)
            release.lock = threading.Lock()
            _A1_CACHE[key] = release
        return _A1_CACHE[key]


class SkyReelsA1Animator:
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
        if not d.checkpoint_dir:
            raise InputError("is needed by engine skyreels-a1 (its release folder)",
                             "download the SkyReels-A1-5B release (huggingface.co/Skywork/SkyReels-A1) and pass "
                             "its folder (pretrained_models/SkyReels-A1-5B)", field="checkpoint_dir")
        self.device = resolve_device(d.device)
        dtype = DTYPES[d.dtype]
        if dtype == torch.float16 and self.device == "cpu":
            raise InputError("fp16 needs a GPU", "use bf16 (the release's precision) or fp32 on a CPU", field="dtype")
        self.pose_source = d.pose_video
        if self.pose_source and not Path(self.pose_source).is_file():
            raise InputError(f"{self.pose_source} does not exist", "pass a driving video or a .npy landmark file",
                             field="pose_video")
        self.warn = warn
        self.release = load_a1_release_cached(d.checkpoint_dir, dtype, self.device)
        model = self.release.model
        tc = model.transformer.config
        spatial = 2 ** (len(model.config.vae["block_out_channels"]) - 1)
        self.size = (tc.sample_width * spatial, tc.sample_height * spatial)  # (W, H): the only size it runs at
        self.clip_frames = tc.sample_frames
        self.steps = d.steps or A1_STEPS
        self.guidance = d.guidance_scale if d.guidance_scale is not None else A1_GUIDANCE
        self.seed = config.motion.seed
        self.face = analyze(portrait, config.render.face_index, warn=warn)  # on the full-resolution portrait
        self.image, self.affine = crop_and_resize(portrait.image, self.size[1], self.size[0])
        self.ref_points = _move(self.face.landmarks, self.affine)
        self.box = _box(self.ref_points, self.size)
        self.identity = self._identity(portrait.image)

    @property
    def fps(self) -> float:
        return self.config.render.fps

    @property
    def frame_size(self) -> tuple[int, int]:
        return self.size

    def n_frames(self, speech: Speech) -> int:
        return max(1, int(round(len(speech.samples) / speech.sample_rate * self.fps)))

    @torch.no_grad()
    def _identity(self, image: np.ndarray) -> torch.Tensor:
        """(1, 729, 1152) SigLIP hidden states of the face (a square crop around it, at 512 px as the release's
        aligned face), in float32 as the release runs SigLIP."""
        import cv2

        from ...errors import CheckpointError
        from .model import IDENTITY_TOKENS

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
        from ..echomimic.engine import _video_landmarks

        path = Path(self.pose_source)
        if path.suffix.lower() == ".npy":
            try:
                points = np.load(path, allow_pickle=False)
            except (ValueError, OSError) as exc:
                raise UnreadableMediaError(f"{path} cannot be read as a landmark file ({exc})",
                                           "save a float array of shape (frames, 478, 2 or 3) with numpy.save",
                                           field="pose_video") from None
            if points.ndim != 3 or points.shape[1] != len(self.ref_points) or points.shape[2] not in (2, 3) \
                    or not len(points) or not np.isfinite(points).all():
                raise InputError(f"{path} holds an array of shape {points.shape}, not (frames, 478, 2 or 3)",
                                 "save FaceMesh landmarks (478 points) in pixels, one array per frame",
                                 field="pose_video")
        else:
            points = _video_landmarks(path, self.fps, n)
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
