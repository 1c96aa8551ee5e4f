"""SkyReels-A2 sampling: the official release computed as its upstream pipeline computes it (`sample_a2_release`,
`SkyReelsA2Animator`: `--engine skyreels-a2`; `verify skyreels-a2` compares it with upstream reference data), and
the pipeline of our own trained checkpoints (`SkyReelsA2Pipeline`): subjects and a background feed both reference
branches in every chunk; chunk k > 0 also gets the last latent frame of chunk k - 1 as a continuation slot. Only
the current chunk's latents and frames live in memory.
"""
from __future__ import annotations

import math
from collections.abc import Iterator, Sequence
from pathlib import Path

import numpy as np
import torch
from einops import rearrange
from tqdm.auto import tqdm

from ...errors import InputError
from ...models.checkpoints import CONFIG_FILE, WEIGHTS_FILE
from ...nn.multi_reference import compose_subject
from ...pipelines.memory import execution_device
from ...sampling import classifier_free_guidance, denoise
from ..skyreels_common import VAE_FILES, release_pixels, release_uint8, require_local, to_frames, to_pixels
from .model import SkyReelsA2


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


SAMPLERS = ("unipc", "dpm")  # the release's UniPC, or DPM-Solver++ on the same schedule


def release_sampler(release, name: str, steps: int, device=None):
    """The release's UniPC with its sigmas for `steps` ("unipc", `set_release_timesteps`), or diffusers'
    DPM-Solver++ (2M, first order at the last step) for flow prediction at the release's shift ("dpm"), whose own
    flow schedule for `steps` has the same sigmas and timesteps (tests/systems/skyreels_a2 checks it)."""
    from diffusers import DPMSolverMultistepScheduler

    from .release import set_release_timesteps

    if name not in SAMPLERS:
        raise ValueError(f"sampler must be one of {SAMPLERS}, not {name!r}")
    official = release.scheduler()
    if name == "unipc":
        set_release_timesteps(official, steps, device)
        return official
    c = official.config
    dpm = DPMSolverMultistepScheduler(num_train_timesteps=c.num_train_timesteps, prediction_type="flow_prediction",
                                      use_flow_sigmas=True, flow_shift=c.flow_shift, solver_order=2,
                                      algorithm_type="dpmsolver++", lower_order_final=True, final_sigmas_type="zero")
    dpm.set_timesteps(steps, device=device)
    return dpm


@torch.no_grad()
def sample_a2_release(release, vae_images: Sequence[np.ndarray], clip_images: Sequence[np.ndarray], prompt: str,
                      negative_prompt: str, num_frames: int, steps: int, guidance_scale: float,
                      generator: torch.Generator | None = None, noise: torch.Tensor | None = None,
                      posterior_noise: torch.Tensor | None = None, trace: dict | None = None,
                      cfg_batch: bool = False, sampler: str = "unipc") -> np.ndarray:
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
    rounding may differ). `sampler` "dpm" (`--scheduler dpm`) replaces UniPC with DPM-Solver++ (2M) for flow
    matching on the same sigmas and timesteps (`release_sampler`); not the release's numbers."""
    from diffusers.utils.torch_utils import randn_tensor

    record = trace.__setitem__ if trace is not None else (lambda k, v: None)
    transformer, vae = release.transformer, release.vae
    dtype, device = next(transformer.parameters()).dtype, execution_device(transformer)
    cfg = guidance_scale > 1.0
    text = a2_prompt_embeds(release, prompt, dtype, trace, "prompt")
    negative = a2_prompt_embeds(release, negative_prompt, dtype, trace, "negative_prompt") if cfg else None
    image_embeds = a2_image_embeds(release, clip_images, dtype, trace)
    record("image_embeds", image_embeds)

    scheduler = release_sampler(release, sampler, steps, device)
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
        if i and hasattr(scheduler, "last_sample"):  # UniPC's corrected sample (DPM-Solver has no corrector)
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
