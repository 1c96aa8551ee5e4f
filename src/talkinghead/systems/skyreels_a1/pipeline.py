"""SkyReels-A1 sampling: any length, chunk by chunk, frames yielded as they decode (the image helpers it shares
with SkyReels-A2 are in systems/skyreels_common.py).

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
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import torch
from tqdm.auto import tqdm

from ...errors import InputError
from ...models.checkpoints import CONFIG_FILE, WEIGHTS_FILE
from ...nn.landmark_guider import guidance_tensor, motion_landmarks, render_landmarks
from ...pipelines.memory import execution_device
from ...sampling import denoise
from ...types import FaceAnalysis, MotionTrack, Portrait, Speech
from ..skyreels_common import VAE_FILES, release_uint8, require_local, to_frames, to_pixels
from .model import SkyReelsA1


SIGLIP_MEAN = SIGLIP_STD = 0.5  # SigLIP image normalisation


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


def release_control(frames: np.ndarray) -> torch.Tensor:
    """(F, H, W, 3) uint8 landmark frames -> (1, 3, F, H, W) float32 in [-1, 1] (frames / 255, then 2x - 1)."""
    x = torch.from_numpy(np.ascontiguousarray(frames)).permute(3, 0, 1, 2)[None].float() / 255.0
    return 2.0 * x - 1.0


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

    dtype, device = next(model.transformer.parameters()).dtype, execution_device(model.transformer)
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
        prev = stepped[0]
        record(f"step.{i}.scheduler_prev_sample", prev)
        if len(stepped) > 1:  # CogVideoXDDIM also returns its x0 prediction (DPM-Solver, say, does not)
            record(f"step.{i}.scheduler_pred_original_sample", stepped[1])
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
        our own trained layout. The official release folder is `systems.skyreels_a1.release.load_release` and
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
