"""SkyReels-A1 and SkyReels-A2 sampling pipelines: any length, chunk by chunk, frames yielded as they decode.

Two kinds live here. The official releases, computed as their upstream pipelines compute them (every cast, draw
and quirk; `verify skyreels-a1|skyreels-a2` compares them with reference data of the upstream code):
`sample_a1_release` / `SkyReelsA1Animator` (`--engine skyreels-a1`) and `sample_a2_release` /
`SkyReelsA2Animator` (`--engine skyreels-a2`). And the pipelines of our own trained checkpoints (the layout
`talkinghead train` writes), which follow the papers with our sampler and chunking:

A1 (portrait animation): the MotionTrack (the same controls the warp engine uses) moves the portrait's
FaceMesh landmarks; each chunk renders them to guidance frames, samples with the landmark guider, and
decodes. Chunk k > 0 is conditioned on the last frame of chunk k − 1 (the I2V image slot) and drops its
first frame, so consecutive chunks join without a repeated frame; identity tokens always come from the
portrait, which keeps identity from drifting.

A2 (multi-reference composition): subjects and a background feed both reference branches in every chunk;
chunk k > 0 also gets the last latent frame of chunk k − 1 as a continuation slot.

Only the current chunk's latents and frames live in memory. Weights come from a local folder only; a
folder with missing files is an error listing every missing file.
"""
from __future__ import annotations

import math
import threading
from collections.abc import Iterator, Sequence
from pathlib import Path

import numpy as np
import torch
from einops import rearrange
from tqdm.auto import tqdm

from ..errors import InputError, UnreadableMediaError
from ..models.checkpoints import CONFIG_FILE, WEIGHTS_FILE
from ..models.skyreels_a1 import SkyReelsA1
from ..models.skyreels_a2 import SkyReelsA2
from ..nn.landmark_guider import guidance_tensor, motion_landmarks, release_control_frames, render_landmarks
from ..nn.multi_reference import compose_subject
from ..sampling import classifier_free_guidance, denoise
from ..types import FaceAnalysis, MotionTrack, Portrait, Speech
from ..utils import resolve_device

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
        our own trained layout. The official release folder is `models.skyreels_a1.load_release` and
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
        from ..config import MotionConfig
        from ..motion.track import motion_track

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


class SkyReelsA2Pipeline:
    """Subjects (+ masks) and a background -> frames of `num_frames`, optionally guided by UMT5 prompt
    embeddings (`text`, (1, 512, text_dim); the null prompt otherwise)."""

    def __init__(self, model: SkyReelsA2, vae, steps: int = 50, guidance_scale: float = 5.0, chunk_frames: int = 81,
                 sampler: str = "unipc", progress: bool = True):
        self.model, self.vae = model.eval(), vae.eval()
        self.steps, self.guidance_scale, self.chunk_frames = steps, guidance_scale, chunk_frames
        self.sampler, self.progress = sampler, progress
        z = vae.config.z_dim
        self.mean = torch.tensor(vae.config.latents_mean).view(1, z, 1, 1, 1)
        self.std = torch.tensor(vae.config.latents_std).view(1, z, 1, 1, 1)

    @classmethod
    def from_pretrained(cls, folder: str | Path, **kwargs) -> "SkyReelsA2Pipeline":
        """`model/` (SkyReelsA2.save_pretrained, CLIP included) and `vae/` (AutoencoderKLWan)."""
        from diffusers import AutoencoderKLWan

        root = require_local(folder, {"model": [CONFIG_FILE, WEIGHTS_FILE], "vae": VAE_FILES}, "SkyReels-A2")
        return cls(SkyReelsA2.from_pretrained(root / "model"),
                   AutoencoderKLWan.from_pretrained(str(root / "vae"), local_files_only=True), **kwargs)

    @torch.no_grad()
    def encode(self, video: torch.Tensor) -> torch.Tensor:
        """(b, 3, f, H, W) -> normalised latents (b, c, f', h, w)."""
        p = next(self.vae.parameters())
        z = self.vae.encode(video.to(device=p.device, dtype=p.dtype)).latent_dist.mode()
        return (z - self.mean.to(z)) / self.std.to(z)

    @torch.no_grad()
    def decode(self, latents: torch.Tensor) -> np.ndarray:
        p = next(self.vae.parameters())
        return to_frames(self.vae.decode((latents * self.std.to(latents) + self.mean.to(latents)).to(p)).sample)

    def references(self, subjects: Sequence, background: np.ndarray, size: tuple[int, int]) -> torch.Tensor:
        """(1, n, 3, H, W) in [-1, 1]: each subject (an image, or (image, mask) to segment) then the background."""
        if not len(subjects):
            raise InputError("SkyReels-A2 needs at least one subject reference", "pass subjects=[image, ...]")
        imgs = [compose_subject(*s) if isinstance(s, tuple) else s for s in subjects] + [background]
        return torch.stack([to_pixels(np.asarray(i, np.uint8), size) for i in imgs])[None]

    @torch.no_grad()
    def frames(self, subjects: Sequence, background: np.ndarray, num_frames: int, size: tuple[int, int],
               text: torch.Tensor | None = None, seed: int = 0) -> Iterator[np.ndarray]:
        refs = self.references(subjects, background, size)  # (1, n, 3, H, W)
        n = self.chunk_frames  # every chunk is full length (the last one is cut): all reference slots fit
        slots = refs.shape[1] + (num_frames > n)
        if (n - 1) % 4 or (n - 1) // 4 + 1 < slots:
            raise InputError(f"chunk_frames {n} cannot hold {refs.shape[1]} references"
                             f"{' and a continuation frame' if num_frames > n else ''}",
                             f"use chunk_frames = 1 + 4k with k >= {slots - 1} (81 frames hold 21 slots)")
        ref_latents = self.encode(rearrange(refs, "1 n c h w -> n c 1 h w"))  # each reference on its own
        ref_latents = rearrange(ref_latents, "n c 1 h w -> 1 n c h w")
        clip = next(self.model.image_encoder.parameters())
        batch = {"ref_latents": ref_latents, "image_tokens": self.model.image_encoder(refs.to(clip.device)),
                 "text": text}
        extra, done = None, 0
        for k in tqdm(range(math.ceil(num_frames / n)), desc="SkyReels-A2 chunks", disable=not self.progress):
            latents = self.model.sample({**batch, "extra_latents": extra}, (n - 1) // 4 + 1, self.steps,
                                        torch.Generator().manual_seed(seed + k), self.guidance_scale,
                                        self.sampler, progress=self.progress)
            video = self.decode(latents)
            keep = min(n, num_frames - done)
            yield from video[:keep]
            done += keep
            extra = latents[:, :, -1:].transpose(1, 2)  # (1, 1, c, h, w) continuation slot


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
    from ..models.skyreels_a1 import load_release, release_root

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
        from ..config import AnimateConfig
        from ..face.landmarks import analyze

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

        from ..errors import CheckpointError
        from ..models.skyreels_a1 import IDENTITY_TOKENS

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
        from ..motion.track import motion_track

        track = motion_track(speech, self.config.motion, self.fps)
        frames = (track.frames + track.frames[-1:] * n)[:n]
        return _move(motion_landmarks(self.face, frames), self.affine)

    def _pose_landmarks(self, n: int) -> np.ndarray:
        """A driving video's (or .npy file's) landmarks retargeted onto the portrait: each frame's displacement
        from the first driving frame, scaled by the face sizes, added to the portrait's landmarks."""
        from .echomimic import _video_landmarks

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


# ------------------------------------------------------------------ SkyReels-A2 as the release samples

A2_TEXT_LEN = 512  # UMT5 tokens; the transformer reads the last 512 context tokens as text
A2_CLIP_SIZE = 512  # infer.py pads every reference to a white 512 x 512 square before the CLIP processor
A2_REPEAT = 4  # every reference after the first fills 4 pixel frames (one latent frame) of the condition video


def pad_to_aspect(image: np.ndarray, height: int, width: int, fill: int = 255) -> np.ndarray:
    """The release's subject preparation: pad the short side with `fill` (white) to the aspect height : width,
    centred, then resize (PIL bicubic)."""
    from PIL import Image

    ih, iw = image.shape[:2]
    if ih / iw < height / width:
        pad = int(((height / width) * iw - ih) / 2.0)
        canvas = np.full((ih + 2 * pad, iw, 3), fill, np.uint8)
        canvas[pad:pad + ih] = image
    else:
        pad = int(((width / height) * ih - iw) / 2.0)
        canvas = np.full((ih, iw + 2 * pad, 3), fill, np.uint8)
        canvas[:, pad:pad + iw] = image
    return np.asarray(Image.fromarray(canvas).resize((width, height), Image.BICUBIC))


def crop_to_aspect(image: np.ndarray, height: int, width: int) -> np.ndarray:
    """The release's background preparation: centre-crop to the aspect height : width, then resize (bicubic)."""
    from PIL import Image

    ih, iw = image.shape[:2]
    if ih / iw < height / width:
        cw = int(ih / height * width)
        left = (iw - cw) // 2
        image = image[:, left:left + cw]
    else:
        ch = int(iw / width * height)
        top = (ih - ch) // 2
        image = image[top:top + ch]
    return np.asarray(Image.fromarray(np.ascontiguousarray(image)).resize((width, height), Image.BICUBIC))


def clean_prompt(text: str) -> str:
    """The Wan pipelines' prompt cleaning without ftfy: HTML entities unescaped twice, whitespace collapsed."""
    import html
    import re

    return re.sub(r"\s+", " ", html.unescape(html.unescape(text)).strip()).strip()


@torch.no_grad()
def a2_prompt_embeds(release, text: str, dtype: torch.dtype, trace: dict | None = None, name: str = "prompt"
                     ) -> torch.Tensor:
    """(1, 512, d) UMT5 embeddings of `text`: the encoder runs on all 512 padded positions with the mask, then
    the rows past the real tokens are replaced by zeros (the transformer attends to those zero rows)."""
    tokens = release.tokenizer(clean_prompt(text), padding="max_length", max_length=A2_TEXT_LEN, truncation=True,
                               add_special_tokens=True, return_attention_mask=True, return_tensors="pt")
    device = next(release.text_encoder.parameters()).device
    hidden = release.text_encoder(tokens.input_ids.to(device), tokens.attention_mask.to(device)).last_hidden_state
    n = int(tokens.attention_mask.sum())
    out = torch.cat([hidden[0, :n], hidden.new_zeros(A2_TEXT_LEN - n, hidden.shape[-1])])[None].to(dtype)
    if trace is not None:
        trace[f"text.{name}_input_ids"], trace[f"text.{name}_attention_mask"] = tokens.input_ids, tokens.attention_mask
        trace[f"{name}_t5_last_hidden_state"], trace[f"{name}_embeds"] = hidden, out
    return out


@torch.no_grad()
def a2_image_embeds(release, clip_images: Sequence[np.ndarray], dtype: torch.dtype, trace: dict | None = None
                    ) -> torch.Tensor:
    """(1, n T, d): CLIP's penultimate hidden states (float32) of each reference, in order, then cast."""
    encoder = release.image_encoder
    states = []
    for i, image in enumerate(clip_images):
        pixels = release.image_processor(images=image, return_tensors="pt").pixel_values
        hidden = encoder(pixel_values=pixels.to(next(encoder.parameters())), output_hidden_states=True).hidden_states[-2]
        if trace is not None:
            trace[f"prep.clip_pixel_values_{i}"], trace[f"clip.hidden_states_penultimate_{i}"] = pixels, hidden
        states.append(hidden.to(dtype))
    return torch.cat(states, dim=1)


def a2_condition_video(images: Sequence[torch.Tensor], frames: int) -> torch.Tensor:
    """(1, 3, frames, H, W): the first reference once, each further one `A2_REPEAT` times, then zeros (mid-grey)."""
    parts = [images[0]] + [img for img in images[1:] for _ in range(A2_REPEAT)]
    if len(parts) > frames:
        raise InputError(f"{len(images)} references need at least {len(parts)} frames, got {frames}",
                         "ask for a longer clip or fewer references")
    parts += [torch.zeros_like(images[0])] * (frames - len(parts))
    return torch.cat(parts, dim=2)


@torch.no_grad()
def sample_a2_release(release, vae_images: Sequence[np.ndarray], clip_images: Sequence[np.ndarray], prompt: str,
                      negative_prompt: str, num_frames: int, steps: int, guidance_scale: float,
                      generator: torch.Generator | None = None, noise: torch.Tensor | None = None,
                      posterior_noise: torch.Tensor | None = None, trace: dict | None = None,
                      cfg_batch: bool = False) -> np.ndarray:
    """One clip the way the release's A2Pipeline makes it: `vae_images` (H, W, 3) uint8 references already at the
    video size (subjects padded, the background cropped), `clip_images` the same references padded to a white
    square -> (num_frames, H, W, 3) uint8.

    As the release: UMT5 prompt and negative-prompt embeddings zero-padded after the encoder; CLIP penultimate
    tokens of every reference; the starting noise is the generator's first draw (float32), the condition video
    [ref0, ref1 x4, ref2 x4, ..., zeros] is encoded as one causal video and its latent drawn from the posterior
    (second draw), normalised with the VAE's latents mean/std; a mask of 1 on the reference latent frames;
    each step two transformer calls (prompt, then negative prompt; same references), guidance in the
    transformer dtype, UniPC (flow, shift 8) on float32 latents; the decode divides by 1 / std. `cfg_batch`
    runs both guidance branches as one batch of 2 (the release's multi-GPU pipeline does; same math, float
    rounding may differ)."""
    from diffusers.utils.torch_utils import randn_tensor

    from ..models.skyreels_a2 import set_release_timesteps

    record = trace.__setitem__ if trace is not None else (lambda k, v: None)
    transformer, vae = release.transformer, release.vae
    p = next(transformer.parameters())
    dtype, device = p.dtype, p.device
    cfg = guidance_scale > 1.0
    text = a2_prompt_embeds(release, prompt, dtype, trace, "prompt")
    negative = a2_prompt_embeds(release, negative_prompt, dtype, trace, "negative_prompt") if cfg else None
    image_embeds = a2_image_embeds(release, clip_images, dtype, trace)
    record("image_embeds", image_embeds)

    scheduler = release.scheduler()
    set_release_timesteps(scheduler, steps, device)
    record("sched.timesteps", scheduler.timesteps), record("sched.sigmas", scheduler.sigmas)

    height, width = vae_images[0].shape[:2]
    temporal = 2 ** sum(vae.config.temperal_downsample)
    spatial = 2 ** (len(vae.config.dim_mult) - 1)
    f = (num_frames - 1) // temporal + 1
    shape = (1, vae.config.z_dim, f, height // spatial, width // spatial)
    latents = noise.to(device=device, dtype=torch.float32) if noise is not None else randn_tensor(
        shape, generator=generator, device=device, dtype=torch.float32)
    record("init.latents", latents)

    pixels = []
    for i, image in enumerate(vae_images):
        record(f"prep.vae_image_{i}_uint8", torch.from_numpy(np.array(image)))
        x = release_pixels(image).contiguous().unsqueeze(2)  # (1, 3, 1, H, W)
        record(f"prep.vae_image_{i}", x)
        pixels.append(x)
    video = a2_condition_video(pixels, num_frames).to(device=device, dtype=vae.dtype)
    dist = vae.encode(video).latent_dist
    record("cond.vae_moments", dist.parameters)
    if posterior_noise is None:
        posterior_noise = randn_tensor(dist.mean.shape, generator=generator, device=device, dtype=dist.mean.dtype)
    record("cond.posterior_noise", posterior_noise)
    z = dist.mean + dist.std * posterior_noise.to(dist.mean)
    mean = torch.tensor(vae.config.latents_mean).view(1, -1, 1, 1, 1).to(z)
    inv_std = 1.0 / torch.tensor(vae.config.latents_std).view(1, -1, 1, 1, 1).to(z)
    ref_latents = (z - mean) * inv_std
    mask = torch.zeros(1, temporal, f, *ref_latents.shape[3:], device=device, dtype=ref_latents.dtype)
    mask[:, :, :len(vae_images)] = 1.0  # the reference latent frames
    condition = torch.cat([mask, ref_latents], dim=1)
    record("cond.condition", condition)

    index = {int(t): i for i, t in enumerate(scheduler.timesteps)}

    def predict(latents: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        i = index[int(t)]
        x = torch.cat([latents, condition], dim=1).to(dtype)
        record(f"step.{i}.latent_model_input", x)
        timestep = t.expand(1)
        record(f"step.{i}.timestep", timestep)
        if cfg and cfg_batch:
            both = transformer(torch.cat([x, x]), timestep.expand(2), encoder_hidden_states=torch.cat([text, negative]),
                               encoder_hidden_states_image=torch.cat([image_embeds] * 2), return_dict=False)[0]
            out, uncond = both.chunk(2)
            record(f"step.{i}.transformer_out_cond", out), record(f"step.{i}.transformer_out_uncond", uncond)
            return classifier_free_guidance(uncond, out, guidance_scale)
        out = transformer(x, timestep, encoder_hidden_states=text, encoder_hidden_states_image=image_embeds,
                          return_dict=False)[0]
        record(f"step.{i}.transformer_out_cond", out)
        if not cfg:
            return out
        uncond = transformer(x, timestep, encoder_hidden_states=negative,
                             encoder_hidden_states_image=image_embeds, return_dict=False)[0]
        record(f"step.{i}.transformer_out_uncond", uncond)
        return classifier_free_guidance(uncond, out, guidance_scale)

    def after(i: int, t: torch.Tensor, stepped: tuple) -> torch.Tensor:
        record(f"step.{i}.x0_pred", scheduler.model_outputs[-1])
        if i:
            record(f"step.{i}.corrected_sample", scheduler.last_sample)
        record(f"step.{i}.latents_after", stepped[0])
        return stepped[0]

    latents = denoise(predict, scheduler, latents, on_step=lambda i, t, x, guided: record(f"step.{i}.guided", guided),
                      after_step=after)
    record("final_latents", latents)
    z = latents.to(vae.dtype) / inv_std + mean
    record("decode_input", z)
    decoded = vae.decode(z).sample
    record("decoded", decoded)
    return release_uint8(decoded)


# ------------------------------------------------------------------ `--engine skyreels-a2`

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

_A2_CACHE: dict[tuple, object] = {}


def load_a2_release_cached(folder: str | Path, dtype: torch.dtype, device: str):
    """`load_release` of SkyReels-A2 once per process for the same files, with a lock for its sharers."""
    from ..models.skyreels_a2 import load_release, release_root

    root = release_root(Path(folder))
    stats = tuple((str(p), p.stat().st_size, p.stat().st_mtime_ns) for p in sorted(root.rglob("*")) if p.is_file()) \
        if root.is_dir() else ()
    key = (str(root.resolve()), str(dtype), device, stats)
    with _A1_LOCK:
        if key not in _A2_CACHE:
            _A2_CACHE.clear()
            release = load_release(root, dtype, device)
            release.lock = threading.Lock()
            _A2_CACHE[key] = release
        return _A2_CACHE[key]


class SkyReelsA2Animator:
    """`--engine skyreels-a2`: the official SkyReels-A2 folder composes the portrait (--image) with further
    reference images (--reference, in order; the last one is the background) into a video as long as the
    speech. A2 is not driven by audio: the prompt (--prompt, default "A person is talking.") says what happens.

    As infer.py: subjects are padded with white to the frame's aspect and the background centre-cropped; each
    is padded to a white square for CLIP; clips of 81 frames with 50 UniPC steps (flow shift 8) at guidance
    5.0 against infer.py's negative prompt; the first 12 frames of each clip are dropped (69 new frames;
    --exact-reference-frames drops only the reference slots' 1 + 4 (n - 1), fixing that bug). Clips
    follow one another from one generator, each composed afresh from the references. Frames are 832 x 480
    unless --size sets another width (the height keeps 480 : 832, both multiples of 16)."""

    def __init__(self, portrait: Portrait, config=None, warn: bool = True):
        from ..config import AnimateConfig, RenderConfig
        from ..io import load_image

        self.config = config = (config or AnimateConfig()).validate()
        d, r = config.diffusion, config.render
        if not d.checkpoint_dir:
            raise InputError("is needed by engine skyreels-a2 (its release folder)",
                             "download the SkyReels-A2 release (huggingface.co/Skywork/SkyReels-A2) and pass its folder",
                             field="checkpoint_dir")
        if not d.reference:
            raise InputError("is needed by engine skyreels-a2, which composes the image with one or more references",
                             "add a reference image (an object, then a background; the last one is the background)",
                             field="reference")
        self.device = resolve_device(d.device)
        dtype = DTYPES[d.dtype]
        if dtype == torch.float16 and self.device == "cpu":
            raise InputError("fp16 needs a GPU", "use bf16 (the release's precision) or fp32 on a CPU", field="dtype")
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
        # infer.py drops 12 frames whatever the count; the option drops exactly the reference slots' frames
        self.dropped = 1 + A2_REPEAT * (len(images) - 1) if d.exact_reference_frames else A2_DROPPED
        if self.dropped >= A2_FRAMES:
            raise InputError(f"holds too many images: with the portrait, {len(images)} fill a whole "
                             f"{A2_FRAMES}-frame clip", f"use at most {(A2_FRAMES - 2) // A2_REPEAT} reference images",
                             field="reference")
        self.release = load_a2_release_cached(d.checkpoint_dir, dtype, self.device)

    @property
    def fps(self) -> float:
        return self.config.render.fps

    @property
    def frame_size(self) -> tuple[int, int]:
        return self.size

    def n_frames(self, speech: Speech) -> int:
        return max(1, int(round(len(speech.samples) / speech.sample_rate * self.fps)))

    def frames(self, speech: Speech) -> Iterator[np.ndarray]:
        n = self.n_frames(speech)
        per_clip = A2_FRAMES - self.dropped
        generator = torch.Generator(self.device).manual_seed(self.seed)
        release = self.release
        for start in range(0, n, per_clip):
            with release.lock:
                video = sample_a2_release(release, self.vae_images, self.clip_images, self.prompt, A2_NEGATIVE_PROMPT,
                                          A2_FRAMES, self.steps, self.guidance, generator=generator)
            yield from video[self.dropped:self.dropped + min(per_clip, n - start)]
