"""Hallo3 sampling (Hallo4 has its own, systems/hallo4/pipeline.py): long videos as clips of
`clip_frames` frames; the first clip is conditioned on the portrait's 3D-VAE latent, every later one on the
latents of the previous clip's last `motion_frames` frames (Hallo3 §3.4), denoised with audio
classifier-free guidance, decoded, and yielded clip by clip so memory stays flat with audio length.

    pipe = Hallo3Pipeline.from_pretrained(local_folder)  # transformer/ + vae/, never downloaded
    for chunk in pipe(portrait, face_embedding, audio_windows, text_tokens):  # (f, H, W, 3) uint8
        writer.write(chunk)
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from types import SimpleNamespace
from typing import Iterator

import numpy as np
import torch
from diffusers import AutoencoderKLCogVideoX, CogVideoXDDIMScheduler
from tqdm.auto import tqdm

from ...errors import InputError
from ...sampling import denoise
from ...types import Portrait, Speech
from .model import COGVIDEOX_SCHEDULER, Hallo3Model

WEIGHT_FILES = ("diffusion_pytorch_model.safetensors",)


@dataclass
class DiTSamplingConfig:
    steps: int = 50
    guidance_scale: float = 3.5  # audio classifier-free guidance (1: off)
    clip_frames: int = 49  # video frames per clip, 1 + 4k (CogVideoX: 49 -> 13 latent frames)
    motion_frames: int = 5  # last frames of a clip that condition the next one, 1 + 4k (ours: 2 latent frames)
    seed: int = 42
    progress: bool = True

    def validate(self) -> "DiTSamplingConfig":
        for name in ("clip_frames", "motion_frames"):
            v = getattr(self, name)
            if v < 1 or (v - 1) % 4:
                raise InputError(f"{name} must be 1 + 4k for the causal 3D VAE, got {v}", "use 5, 9, 13, ..., 49")
        if self.motion_frames >= self.clip_frames:
            raise InputError(f"motion_frames ({self.motion_frames}) must be fewer than clip_frames "
                             f"({self.clip_frames})", "lower motion_frames")
        if self.steps < 1:
            raise InputError(f"steps must be at least 1, got {self.steps}", "use e.g. 50")
        return self


def check_release(folder: Path, parts: dict[str, str]) -> None:
    """InputError listing every missing file of a diffusers-style release folder (part -> subfolder)."""
    folder = Path(folder)
    missing = []
    for part, sub in parts.items():
        d = folder / sub
        if not (d / "config.json").is_file():
            missing.append(f"{sub}/config.json ({part})")
        if not any((d / name).is_file() for name in WEIGHT_FILES):
            missing.append(f"{sub}/{WEIGHT_FILES[0]} ({part})")
    if missing:
        raise InputError(f"{folder} is missing local weights: " + ", ".join(missing),
                         "nothing is downloaded: save the model with save_pretrained() into that folder "
                         "(transformer/, vae/) or point to the folder that holds them")


class DiTClipPipeline:
    """Clip loop shared by the DiT systems. Subclasses define `model_output` (the guided prediction for one
    step) and may prepare per-clip state in `begin_clip`. Per-frame conditions have the frame axis at 1."""

    guided_keys: tuple[str, ...] = ("audio_windows",)  # zeroed in the unconditional half
    model_class: type  # the system's model (diffusers ModelMixin), saved in the folder's transformer/
    model_name: str  # how missing-file messages name it

    @classmethod
    def from_pretrained(cls, folder: str | Path):
        """A local folder (never a hub id) with transformer/ (the model's save_pretrained) and vae/
        (AutoencoderKLCogVideoX); one InputError lists whatever is missing."""
        folder = Path(folder)
        check_release(folder, {cls.model_name: "transformer", "CogVideoX 3D VAE": "vae"})
        model = cls.model_class.from_pretrained(folder / "transformer", local_files_only=True)
        vae = AutoencoderKLCogVideoX.from_pretrained(folder / "vae", local_files_only=True)
        return cls(model, vae)

    def __init__(self, model, vae: AutoencoderKLCogVideoX, scheduler):
        self.model = model.eval()
        self.vae = vae.eval()
        self.scheduler = scheduler

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    @property
    def dtype(self) -> torch.dtype:
        return next(self.model.parameters()).dtype

    # -- pixels <-> latents -------------------------------------------------------------------------
    @torch.no_grad()
    def encode_video(self, pixels: torch.Tensor) -> torch.Tensor:
        """(b, 3, T, H, W) in [-1, 1] -> scaled latents (b, T', c, h, w) (the distribution's mode)."""
        z = self.vae.encode(pixels.to(self.device, self.vae.dtype)).latent_dist.mode()
        return (z * self.vae.config.scaling_factor).permute(0, 2, 1, 3, 4).to(self.dtype)

    @torch.no_grad()
    def decode_latents(self, latents: torch.Tensor) -> torch.Tensor:
        """(b, T', c, h, w) scaled latents -> (b, 3, T, H, W) in [0, 1]."""
        z = latents.permute(0, 2, 1, 3, 4).to(self.vae.dtype) / self.vae.config.scaling_factor
        return (self.vae.decode(z).sample.float() / 2 + 0.5).clamp(0, 1)

    # -- hooks --------------------------------------------------------------------------------------
    def begin_clip(self, cond: dict, reference_latents: torch.Tensor) -> None:
        """Per-clip work done once, before the denoising steps."""

    def model_output(self, x: torch.Tensor, t: torch.Tensor, cond: dict, motion: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    # -- sampling -----------------------------------------------------------------------------------
    def guided_conditions(self, cond: dict, guidance: bool) -> dict:
        """[unconditional, conditional] rows: the guided conditions zeroed in the first half."""
        if not guidance:
            return cond
        return {k: (torch.cat([torch.zeros_like(v) if k in self.guided_keys else v, v]) if torch.is_tensor(v) else v)
                for k, v in cond.items()}

    @torch.no_grad()
    def sample_clip(self, cond: dict, motion: torch.Tensor, shape: tuple, config: DiTSamplingConfig,
                    generator: torch.Generator, bar=None) -> torch.Tensor:
        """Denoise one clip of latents `shape` (1, T', c, h, w) from seeded noise."""
        guidance = config.guidance_scale != 1.0
        cond = self.guided_conditions(cond, guidance)
        motion = torch.cat([motion, motion]) if guidance else motion
        self.scheduler.set_timesteps(config.steps, device=self.device)
        latents = torch.randn(shape, generator=generator, dtype=torch.float32).to(self.device)
        latents = latents * getattr(self.scheduler, "init_noise_sigma", 1.0)
        def predict(latents: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
            x = torch.cat([latents, latents]) if guidance else latents
            if hasattr(self.scheduler, "scale_model_input"):
                x = self.scheduler.scale_model_input(x, t)
            return self.model_output(x.to(self.dtype), t, cond, motion).float()

        return denoise(predict, self.scheduler, latents, config.guidance_scale if guidance else None,
                       progress=bar.update if bar is not None else None)

    def generate(self, reference: torch.Tensor, per_frame: dict[str, torch.Tensor], static: dict,
                 config: DiTSamplingConfig) -> Iterator[np.ndarray]:
        """Yield (f, H, W, 3) uint8 chunks, one per clip, covering every frame of the `per_frame` conditions.
        `reference` (1, 3, H, W) in [-1, 1]; `per_frame` tensors (1, N, ...); `static` tensors (1, ...)."""
        config.validate()
        total = next(iter(per_frame.values())).shape[1]
        T, n = config.clip_frames, config.motion_frames
        clips = 1 + math.ceil(max(0, total - T) / (T - n))
        generator = torch.Generator().manual_seed(config.seed)
        ref_latents = self.encode_video(reference[:, :, None])  # (1, 1, c, h, w)
        _, _, c, h, w = ref_latents.shape
        shape = (1, 1 + (T - 1) // 4, c, h, w)
        motion, emitted = ref_latents, 0
        with tqdm(total=clips * config.steps, disable=not config.progress, desc=type(self).__name__,
                  unit="step") as bar:
            while emitted < total:
                first = emitted == 0
                start = 0 if first else emitted - n  # conditions' frame index of the clip's frame 0
                idx = torch.arange(start, start + T).clamp(max=total - 1)  # past the end: repeat the last frame
                cond = {**static, **{k: v[:, idx] for k, v in per_frame.items()}}
                self.begin_clip(cond, ref_latents)
                latents = self.sample_clip(cond, motion, shape, config, generator, bar)
                pixels = self.decode_latents(latents)  # (1, 3, T, H, W)
                keep = pixels[0, :, (0 if first else n):][:, : total - emitted]  # (3, f, H, W)
                yield (keep.permute(1, 2, 3, 0) * 255).round().to(torch.uint8).cpu().numpy()
                emitted += keep.shape[1]
                motion = self.encode_video(pixels[:, :, -n:] * 2 - 1)  # (1, m, c, h, w)


class Hallo3Sampler:
    """The official Hallo3 sampler (SAT's `VPSDEDPMPP2MSampler` with zero-terminal-SNR DDPM discretisation and
    `DynamicCFG`), reproduced with its behaviours:
    - timestep indices `linspace(999, 0, n, endpoint=False)` (3 steps: 999, 666, 333); the sampler's √ᾱ are the
      scaled-linear table at those indices rescaled to zero terminal SNR *over that subset*, then 1 appended;
    - the denoiser snaps √ᾱ to the nearest of the full 1000-entry rescaled table for its skip/out scalings
      (v-prediction: x0 = a·x − √(1−a²)·v) and gets the integer index as its timestep;
    - the guidance scale is a constant (`guidance_scale`, 3.5 in the release: its cosine schedule is overwritten);
    - a middle step draws noise for the first-order update and again for the second-order one it uses (two draws),
      the first step one draw, the last step none (it returns the prediction).
    Noise comes from `generator` in that order, so seeding it as the official seed gives the official draws."""

    def __init__(self, num_train_timesteps: int = 1000, beta_start: float = 0.00085, beta_end: float = 0.012,
                 shift_scale: float = 1.0):
        betas = torch.linspace(beta_start ** 0.5, beta_end ** 0.5, num_train_timesteps, dtype=torch.float64) ** 2
        ac = torch.cumprod(1.0 - betas, dim=0)
        self.alphas_cumprod = ac / (shift_scale + (1.0 - shift_scale) * ac)  # float64, index order
        self.num_train_timesteps = num_train_timesteps
        self.table = torch.flip(self._rescaled(torch.arange(num_train_timesteps)), (0,))  # the denoiser's √ᾱ

    def _rescaled(self, idx: torch.Tensor) -> torch.Tensor:
        """Zero-terminal-SNR √ᾱ (float32) of ascending indices `idx`, rescaled over that subset."""
        a = self.alphas_cumprod[idx].to(torch.float32).sqrt()
        a0, at = a[0].clone(), a[-1].clone()
        return (a - at) * (a0 / (a0 - at))

    def schedule(self, steps: int) -> tuple[torch.Tensor, torch.Tensor]:
        """(timestep indices, descending; √ᾱ per step with 1 appended)."""
        idx = np.linspace(self.num_train_timesteps - 1, 0, steps, endpoint=False).astype(int)[::-1].copy()
        alphas = torch.flip(self._rescaled(torch.from_numpy(idx)), (0,))
        return torch.from_numpy(idx[::-1].copy()), torch.cat([alphas, alphas.new_ones(1)])

    def snap(self, alpha: torch.Tensor) -> torch.Tensor:
        table = self.table.to(alpha.device)
        return table[(alpha.reshape(-1)[:, None] - table[None]).abs().argmin(dim=1)].reshape(alpha.shape)

    def denoised(self, model_out: torch.Tensor, x: torch.Tensor, alpha: torch.Tensor) -> torch.Tensor:
        """x0 from the network's v-prediction at √ᾱ = `alpha` (snapped to the table)."""
        a = self.snap(alpha)
        return model_out * (-((1 - a ** 2) ** 0.5)) + x * a

    @torch.no_grad()
    def sample(self, predict, x: torch.Tensor, steps: int, guidance_scale: float, generator: torch.Generator,
               trace: dict | None = None, bar=None) -> torch.Tensor:
        """Denoise `x` (the initial noise). `predict(x_batch, index)` returns the network output for the CFG batch
        [unconditional, conditional] (or one row when `guidance_scale` is 1)."""
        timesteps, alphas = self.schedule(steps)
        guidance = guidance_scale != 1.0
        steps_ = timesteps.tolist()
        position = {index: i for i, index in enumerate(steps_)}
        state = {"old": None, "draws": 0}

        def noise():
            z = torch.randn(x.shape, generator=generator, dtype=torch.float32).to(x.device)
            if trace is not None:
                trace[f"s.noise_draw{state['draws']}"] = z
            state["draws"] += 1
            return z

        def denoised_rows(x: torch.Tensor, index: int) -> torch.Tensor:
            """x0 of every CFG row: the sampler guides denoised samples, not network outputs."""
            i = position[index]
            cur, nxt = alphas[i], alphas[i + 1]
            xb = torch.cat([x, x]) if guidance else x
            if trace is not None:
                trace[f"s.step{i}.x_in"] = x
                trace[f"s.step{i}.alpha_cumprod_sqrt"] = torch.stack([cur, nxt])
                trace[f"step{i}.den_alpha_cumprod_sqrt"] = cur.expand(xb.shape[0])
            out = predict(xb, index).float()
            den = self.denoised(out, xb.float(), cur.to(x.device))
            if trace is not None:
                trace.update({f"step{i}.model_out": out, f"step{i}.den_out": den})
            return den

        def step(den: torch.Tensor, index: int, x: torch.Tensor, return_dict: bool = False) -> tuple:
            """DPM-Solver++(2M) SDE update from the guided x0 (the last step returns x0 itself)."""
            i = position[index]
            if i == len(steps_) - 1:
                return (den,)
            cur, nxt = alphas[i], alphas[i + 1]
            lam = lambda a: ((a ** 2) / (1 - a ** 2)) ** 0.5  # noqa: E731
            lamb, lamb_next = lam(cur).log(), lam(nxt).log()
            h = lamb_next - lamb
            m1 = ((1 - nxt ** 2) / (1 - cur ** 2)) ** 0.5 * (-h).exp()
            m2 = (-2 * h).expm1() * nxt
            m_noise = (1 - nxt ** 2) ** 0.5 * (1 - (-2 * h).exp()) ** 0.5
            x_new = m1 * x - m2 * den + m_noise * noise()
            if state["old"] is not None and float(nxt) >= 1e-14:
                r = (lamb - lam(alphas[i - 1]).log()) / h
                den_d = (1 + 1 / (2 * r)) * den - (1 / (2 * r)) * state["old"]
                x_new = m1 * x - m2 * den_d + m_noise * noise()
            state["old"] = den
            return (x_new,)

        def guided(i, index, x, den):
            if trace is not None:
                trace[f"s.step{i}.denoised_guided"] = den

        def after(i, index, stepped):
            if trace is not None:
                trace[f"s.step{i}.x_out"] = stepped[0]
            return stepped[0]

        return denoise(denoised_rows, SimpleNamespace(step=step), x, guidance_scale if guidance else None,
                       timesteps=steps_, on_step=guided, after_step=after,
                       progress=bar.update if bar is not None else None)


class Hallo3Pipeline(DiTClipPipeline):
    """Hallo3 sampling: the identity reference network runs once per clip; audio CFG."""

    model_class, model_name = Hallo3Model, "Hallo3 model"

    def __init__(self, model: Hallo3Model, vae: AutoencoderKLCogVideoX,
                 scheduler: CogVideoXDDIMScheduler | None = None):
        super().__init__(model, vae, scheduler or CogVideoXDDIMScheduler(**COGVIDEOX_SCHEDULER))

    def begin_clip(self, cond: dict, reference_latents: torch.Tensor) -> None:
        self.model.encode_reference(reference_latents, cond["text"])

    def model_output(self, x: torch.Tensor, t: torch.Tensor, cond: dict, motion: torch.Tensor) -> torch.Tensor:
        return self.model(x, t, cond["text"], cond.get("face_embedding"), cond.get("audio_windows"), motion,
                          reuse_reference=True)

    def __call__(self, reference: torch.Tensor, face_embedding: torch.Tensor, audio_windows: torch.Tensor,
                 text: torch.Tensor, config: DiTSamplingConfig | None = None) -> Iterator[np.ndarray]:
        """reference (1, 3, H, W) in [-1, 1]; face_embedding (1, 512); audio_windows (1, N, window, layers,
        channels) for N output frames; text (1, L, text_embed_dim). Yields (f, H, W, 3) uint8 per clip."""
        dev, dt = self.device, self.dtype
        static = {"text": text.to(dev, dt), "face_embedding": face_embedding.to(dev, dt)}
        return self.generate(reference, {"audio_windows": audio_windows.to(dev, dt)}, static,
                             (config or DiTSamplingConfig()).validate())


# ------------------------------------------------------------------ `--engine hallo3`: the official release

RELEASE_URL = "https://huggingface.co/fudan-generative-ai/hallo3"
T5_DIR, WAV2VEC_DIR = "t5-v1_1-xxl", "wav2vec/wav2vec2-base-960h"
MOTION_FRAMES = 2  # frames of a clip's end that start the next one (and are dropped from its output)
MOTION_MASK_RATE = 0.1  # share of the motion frames' pixels blanked (per pixel, no face exception)
OFFICIAL_PROMPT = "A person is talking."  # used when --prompt is not given


@dataclass
class Hallo3Release:
    """The loaded parts of a release: our model (SAT weights), the CogVideoX 3D VAE, T5, wav2vec2."""

    model: Hallo3Model
    vae: AutoencoderKLCogVideoX
    text_encoder: object
    tokenizer: object
    audio_model: object
    extractor: object
    sampler: "Hallo3Sampler"
    text_length: int
    lock: object


def load_release(folder: str | Path, device: str = "cpu", dtype: torch.dtype = torch.float32) -> Hallo3Release:
    """The parts of an official Hallo3 `pretrained_models/` folder, strictly, from local files only:
    `hallo3/latest` + `hallo3/<n>/mp_rank_00_model_states.pt` (SAT), `cogvideox-5b-i2v-sat/vae/3d-vae.pt`,
    `t5-v1_1-xxl/` (transformers T5 encoder + tokenizer), `wav2vec/wav2vec2-base-960h/`. A small (test) release
    may add `hallo3/config.json` (the SAT model config and projection sizes, as the reference data's) and
    `cogvideox-5b-i2v-sat/vae/config.json` (AutoencoderKLCogVideoX sizes); the official sizes apply otherwise.
    One CheckpointError lists every missing file."""
    import json
    import threading

    import sentencepiece
    from transformers import T5EncoderModel

    from ...audio.wav2vec import load_wav2vec
    from ...models.checkpoints import require_files
    from .model import SAT_CHECKPOINT, SAT_VAE_FILE, config_from_sat, load_sat_checkpoint, load_sat_vae

    root = Path(folder)
    root = root / "pretrained_models" if (root / "pretrained_models").is_dir() else root
    latest = root / "hallo3" / "latest"  # the SAT tracker file names the iteration folder of the checkpoint
    iteration = latest.read_text().strip() if latest.is_file() else "<iteration>"
    files = require_files(root, {"SAT tracker file": ["hallo3/latest"],
                                 "Hallo3 model (SAT)": [f"hallo3/{iteration}/{SAT_CHECKPOINT}"],
                                 "CogVideoX 3D VAE (SAT)": [SAT_VAE_FILE], "T5 encoder": [f"{T5_DIR}/config.json"],
                                 "T5 tokenizer": [f"{T5_DIR}/spiece.model"],
                                 "wav2vec2": [f"{WAV2VEC_DIR}/config.json"]}, f"Hallo3 ({RELEASE_URL})")
    checkpoint = files.pop("Hallo3 model (SAT)")
    files.pop("SAT tracker file")
    key = (str(root.resolve()), device, str(dtype), tuple((str(f), f.stat().st_mtime_ns, f.stat().st_size)
                                                          for f in (checkpoint, *files.values())))
    with _CACHE_LOCK:
        if key in _CACHE:
            return _CACHE[key]
        _CACHE.clear()  # one release in memory at a time
        own = root / "hallo3" / "config.json"
        config = json.loads(own.read_text()) if own.is_file() else None
        model = Hallo3Model(**config_from_sat(config["model_config"], config.get("audio_proj_args"),
                                              config.get("face_proj_args"))) if config else Hallo3Model()
        load_sat_checkpoint(model, checkpoint)
        vae_config = files["CogVideoX 3D VAE (SAT)"].parent / "config.json"
        vae = load_sat_vae(files["CogVideoX 3D VAE (SAT)"],
                           json.loads(vae_config.read_text()) if vae_config.is_file() else None)
        t5_dir = files["T5 encoder"].parent
        tokenizer = sentencepiece.SentencePieceProcessor(model_file=str(files["T5 tokenizer"]))
        text_encoder = T5EncoderModel.from_pretrained(str(t5_dir), local_files_only=True).eval()
        audio_model, extractor = load_wav2vec(files["wav2vec2"].parent, device=device)
        params = (config or {}).get("model_config", {}).get("sampler_config", {}).get("params", {})
        disc = params.get("discretization_config", {}).get("params", {})
        if (device, dtype) != ("cpu", torch.float32):
            for part in (model, vae, text_encoder):
                part.to(device=device, dtype=dtype)
        release = Hallo3Release(model.eval(), vae, text_encoder, tokenizer, audio_model, extractor,
                                Hallo3Sampler(shift_scale=disc.get("shift_scale", 1.0)),
                                model.transformer.config.max_text_seq_length, threading.Lock())
        _CACHE[key] = release
        return release


_CACHE: dict[tuple, Hallo3Release] = {}  # loaded once per process (a server renders many videos)
_CACHE_LOCK = __import__("threading").Lock()


def t5_token_ids(sp, text: str, length: int) -> torch.Tensor:
    """(1, length) T5 input ids as the official text conditioner makes them (T5's sentencepiece pieces, truncated,
    then end-of-sequence, then padding to `length`), read with sentencepiece itself."""
    eos, pad = sp.eos_id(), max(sp.pad_id(), 0)
    ids = list(sp.encode(text))[: length - 1] + [eos]
    return torch.tensor([ids + [pad] * (length - len(ids))], dtype=torch.long)


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
        from ...face.embedding import make_embedder
        from ...face.landmarks import analyze
        from ...types import Portrait as P
        from ...utils import resolve_device
        from ..hallo.engine import DTYPES, EMBEDDING_HINT

        self.config = config = (config or AnimateConfig()).validate()
        d = config.diffusion
        if not d.checkpoint_dir:
            raise InputError("is needed by engine hallo3 (its release folder)",
                             f"download the official release ({RELEASE_URL}) and pass its pretrained_models folder",
                             field="checkpoint_dir")
        if not d.face_embedding:
            raise InputError("is needed by engine hallo3 (the face's identity)", EMBEDDING_HINT, field="face_embedding")
        device, dtype = resolve_device(d.device), DTYPES[d.dtype]
        if dtype != torch.float32 and device == "cpu":
            raise InputError(f"{d.dtype} needs a GPU", "use fp32 on a CPU", field="dtype")
        self.release = load_release(d.checkpoint_dir, device, dtype)
        tc = self.release.model.transformer.config
        scale = 2 ** (len(self.release.vae.config.block_out_channels) - 1)
        self.height, self.width = tc.sample_height * scale, tc.sample_width * scale
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

        r = self.release
        model, vae = r.model, r.vae
        dev, dt = next(model.parameters()).device, next(model.parameters()).dtype
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
