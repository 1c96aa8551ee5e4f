"""`--engine hallo3`: the official Hallo3 release folder (SAT transformer and 3D VAE, T5, wav2vec2; loaded by
systems/hallo3/release.py) -> a talking video, sampled by systems/hallo3/pipeline.py's Hallo3Sampler."""
from __future__ import annotations

from typing import Iterator

import numpy as np
import torch

from ...errors import InputError
from ...models.text_encoders import t5_token_ids
from ...types import Portrait, Speech
from .. import require_release_dir
from .pipeline import DiTClipPipeline
from .release import RELEASE_URL, load_release

MOTION_FRAMES = 2  # frames of a clip's end that start the next one (and are dropped from its output)
MOTION_MASK_RATE = 0.1  # share of the motion frames' pixels blanked (per pixel, no face exception)
OFFICIAL_PROMPT = "A person is talking."  # used when --prompt is not given


def face_crop(image: np.ndarray, landmarks: np.ndarray, height: int, width: int) -> tuple[np.ndarray, np.ndarray]:
    """The portrait scaled to cover `width` x `height` and cropped there around the face centre; returns the
    crop and the landmarks in its pixels."""
    import cv2

    h, w = image.shape[:2]
    s = max(width / w, height / h)
    scaled = cv2.resize(image, (max(width, int(round(w * s))), max(height, int(round(h * s)))),
                        interpolation=cv2.INTER_AREA if s < 1 else cv2.INTER_CUBIC)
    pts = landmarks[:, :2] * s
    cx, cy = pts[:, 0].mean(), pts[:, 1].mean()
    left = int(np.clip(round(cx - width / 2), 0, scaled.shape[1] - width))
    top = int(np.clip(round(cy - height / 2), 0, scaled.shape[0] - height))
    return np.ascontiguousarray(scaled[top:top + height, left:left + width]), pts - [left, top]


def face_box_mask(landmarks: np.ndarray, height: int, width: int, expand: float = 1.2) -> torch.Tensor:
    """(1, 1, H, W) 0/1 mask of the face's landmark box, enlarged by `expand` (the identity reference sees the
    face only)."""
    x0, y0 = landmarks[:, 0].min(), landmarks[:, 1].min()
    x1, y1 = landmarks[:, 0].max(), landmarks[:, 1].max()
    cx, cy, hw, hh = (x0 + x1) / 2, (y0 + y1) / 2, (x1 - x0) * expand / 2, (y1 - y0) * expand / 2
    mask = torch.zeros(1, 1, height, width)
    mask[..., max(0, int(cy - hh)):min(height, int(cy + hh) + 1), max(0, int(cx - hw)):min(width, int(cx + hw) + 1)] = 1
    return mask


class Hallo3Animator:
    """`--engine hallo3`: the official release, clip by clip as its long-video script runs it (README of the
    reference data, §4.10): clips of 4k+1 frames (49 at the official size) that re-use the previous clip's last 2
    frames (audio windows too; zeros before the first clip), the motion frames masked per pixel, placed after the
    portrait and encoded as the first latent frame of the image condition; the identity reference network sees the
    face-masked portrait once per clip; the official sampler (50 steps, guidance 3.5) and the same random stream
    for noise and masks. Frames are the release's fixed size (the learned positions fix it: 480 x 720)."""

    def __init__(self, portrait: Portrait, config=None, warn: bool = True):
        from ...config import AnimateConfig
        from ...face.embedding import EMBEDDING_HINT, make_embedder
        from ...face.landmarks import analyze
        from ...pipelines.memory import apply_memory_options, load_device
        from ...types import Portrait as P
        from ...utils import resolve_precision

        self.config = config = (config or AnimateConfig()).validate()
        d = config.diffusion
        require_release_dir(d.checkpoint_dir, "hallo3", f"download the official release ({RELEASE_URL}) and "
                            "pass its pretrained_models folder")
        if not d.face_embedding:
            raise InputError("is needed by engine hallo3 (the face's identity)", EMBEDDING_HINT, field="face_embedding")
        device, dtype = resolve_precision(d.device, d.dtype)
        self.release = r = load_release(d.checkpoint_dir, load_device(d.cpu_offload, device), dtype)
        tc = self.release.model.transformer.config
        scale = 2 ** (len(self.release.vae.config.block_out_channels) - 1)
        self.height, self.width = tc.sample_height * scale, tc.sample_width * scale
        apply_memory_options(d, device, models=(r.text_encoder, r.model, r.vae), resident=(r.audio_model,),
                             vae=r.vae, frame_hw=(self.height, self.width), lock=r.lock)
        self.clip_frames = tc.sample_frames
        face = analyze(portrait, face_index=config.render.face_index, warn=warn)  # at the photo's resolution
        self.embedding = torch.from_numpy(np.asarray(make_embedder(d.face_embedding).embed(portrait, face),
                                                     np.float32))[None]
        image, landmarks = face_crop(portrait.image, face.landmarks, self.height, self.width)
        self.portrait = P(image, portrait.source)
        self.face_mask = face_box_mask(landmarks, self.height, self.width)
        self.steps = d.steps or 50
        self.guidance = 3.5 if d.guidance_scale is None else d.guidance_scale
        self.prompt = getattr(d, "prompt", None) or OFFICIAL_PROMPT
        self.seed = config.motion.seed

    @property
    def fps(self) -> float:
        return self.config.render.fps

    @property
    def frame_size(self) -> tuple[int, int]:
        return self.width, self.height

    def n_frames(self, speech: Speech) -> int:
        from ...audio.wav2vec import video_frame_count

        return video_frame_count(len(speech.samples), speech.sample_rate, int(round(self.fps)))

    @torch.no_grad()
    def text_tokens(self) -> torch.Tensor:
        r = self.release
        ids = t5_token_ids(r.tokenizer, self.prompt, r.text_length)
        p = next(r.text_encoder.parameters())
        return r.text_encoder(input_ids=ids.to(p.device)).last_hidden_state

    @torch.no_grad()
    def frames(self, speech: Speech) -> Iterator[np.ndarray]:
        """(H, W, 3) uint8 frames, clip by clip."""
        from ...audio.wav2vec import audio_windows, hallo_audio_embeddings
        from ...pipelines.memory import execution_device, onload

        r = self.release
        model, vae = r.model, r.vae
        dev, dt = execution_device(model), next(model.parameters()).dtype
        with r.lock:
            emb, n_real = hallo_audio_embeddings(r.audio_model, r.extractor, speech.samples,
                                                 fps=int(round(self.fps)), clip_length=-1)
        windows = audio_windows(emb)  # (frames, 5, layers, dim)
        T, m = self.clip_frames, MOTION_FRAMES
        step = T - m
        generator = torch.Generator().manual_seed(self.seed)
        pipe = DiTClipPipeline.__new__(DiTClipPipeline)  # only its VAE helpers (encode/decode)
        pipe.model, pipe.vae = model, vae
        reference = torch.from_numpy(self.portrait.image).permute(2, 0, 1).float()[None] / 127.5 - 1.0  # (1, 3, H, W)
        text = self.text_tokens().to(dev, dt)
        cond_text = torch.cat([torch.zeros_like(text), text])
        face = torch.cat([self.embedding, self.embedding]).to(dev, dt)
        previous = torch.zeros((m, *windows.shape[1:]), dtype=windows.dtype)
        motion = reference.repeat(m, 1, 1, 1)  # the first clip starts from the portrait
        emitted = 0
        for start in range(0, max(n_real, 1), step):
            chunk = windows[start:start + step]
            if chunk.shape[0] < step:  # the last chunk: repeat its last frame
                chunk = torch.cat([chunk, chunk[-1:].expand(step - chunk.shape[0], *chunk.shape[1:])])
            clip_audio = torch.cat([previous, chunk])[None].to(dev, dt)  # (1, T, 5, layers, dim)
            previous = chunk[-m:]
            with r.lock:
                if start:
                    keep = (torch.rand(motion.shape, generator=generator) > MOTION_MASK_RATE).to(motion.dtype)
                    motion = motion * keep + (1 - keep) * 0.0
                image_cond = pipe.encode_video(torch.cat([reference, motion]).permute(1, 0, 2, 3)[None])[:, :1]
                ref_latent = pipe.encode_video((reference * self.face_mask)[:, :, None])
                onload(model)  # the reference network runs outside the model's forward
                model.encode_reference(ref_latent.to(dt), torch.zeros_like(text))
                c, h, w = ref_latent.shape[2:]
                noise = torch.randn((1, 1 + (T - 1) // 4, c, h, w), generator=generator).to(dev)
                audio_in = torch.cat([torch.zeros_like(clip_audio), clip_audio])
                motion_in = torch.cat([image_cond, image_cond]).to(dt)

                def predict(x, index):
                    t = torch.full((x.shape[0],), float(index), device=dev)
                    return model(x.to(dt), t, cond_text, face, audio_in, motion_in, reuse_reference=True)

                latents = r.sampler.sample(predict, noise, self.steps, self.guidance, generator)
                video = pipe.decode_latents(latents.to(dt))[0]  # (3, T, H, W) in [0, 1]
            motion = video[:, -m:].permute(1, 0, 2, 3).float().cpu() * 2 - 1
            for frame in video[:, m:].permute(1, 2, 3, 0):
                if emitted >= n_real:
                    return
                yield (frame.float().cpu().numpy() * 255.0 + 0.5).astype(np.uint8)
                emitted += 1
