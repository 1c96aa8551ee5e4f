"""MIDAS (arXiv 2508.19320) streaming inference: audio chunks in, frames out, one chunk of latency, flat memory (the
transformer's KV cache keeps `window_chunks` chunks; the autoencoder's decode cache keeps `cache_frames`)."""
from __future__ import annotations

from collections.abc import Iterable, Iterator
from pathlib import Path

import torch
from einops import rearrange

from ...errors import InputError
from ...models.checkpoints import CONFIG_FILE, WEIGHTS_FILE, find_file
from .model import DCVideoAutoencoder, KVCache, MidasConfig, MidasTransformer, PREFIX_SLOT

WEIGHTS = {  # label -> path in a MIDAS folder (our own layout: no official release exists); each part is a
    # folder its model's save_pretrained (diffusers) writes
    "autoencoder config": f"autoencoder/{CONFIG_FILE}",
    "autoencoder weights": f"autoencoder/{WEIGHTS_FILE}",
    "transformer config": f"transformer/{CONFIG_FILE}",
    "transformer weights": f"transformer/{WEIGHTS_FILE}",
}


class MidasPipeline:
    """Reference image + audio-feature chunks (+ pose, text) -> frames, streamed."""

    def __init__(self, autoencoder: DCVideoAutoencoder, transformer: MidasTransformer):
        a, t = autoencoder.config, transformer.config
        if a.latent_channels != t.latent_channels:
            raise InputError(f"autoencoder latents have {a.latent_channels} channels, transformer expects "
                             f"{t.latent_channels}", "use a matching autoencoder/transformer pair")
        self.autoencoder, self.transformer = autoencoder.eval(), transformer.eval()

    # -------------------------------------------------------------- weights

    @classmethod
    def from_pretrained(cls, folder: str | Path, device: str | torch.device = "cpu") -> "MidasPipeline":
        folder = Path(folder).expanduser()
        missing = [f"{label}: {rel}" for label, rel in WEIGHTS.items() if find_file(folder, [rel]) is None]
        if missing:
            raise InputError(f"MIDAS folder {folder} is missing " + "; ".join(missing),
                             "point to a folder written by MidasPipeline.save_pretrained (no official release "
                             "exists; train one with configs/train/midas_*.yaml)")
        ae = DCVideoAutoencoder.from_pretrained(folder / "autoencoder")
        tr = MidasTransformer.from_pretrained(folder / "transformer")
        return cls(ae.to(device), tr.to(device))

    def save_pretrained(self, folder: str | Path) -> Path:
        folder = Path(folder)
        self.autoencoder.save_pretrained(folder / "autoencoder")
        self.transformer.save_pretrained(folder / "transformer")
        return folder

    # -------------------------------------------------------------- inference

    def _reference_latent(self, reference: torch.Tensor) -> torch.Tensor:
        """(b, 3, H, W) in [-1, 1] -> (b, C, h, w), checking the size the transformer was built for."""
        z = self.autoencoder.encode(reference[:, None])[:, 0]
        if tuple(z.shape[-2:]) != self.transformer.config.latent_size:
            s = self.autoencoder.config.spatial_compression
            h, w = self.transformer.config.latent_size
            raise InputError(f"reference image is {tuple(reference.shape[-2:])} px; this model makes "
                             f"{h * s}x{w * s}", f"resize the portrait to {h * s}x{w * s}")
        return z

    def _noise(self, like: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        return torch.randn(like.shape, generator=generator, device=generator.device).to(like.device, like.dtype)

    def _feedback(self, latent: torch.Tensor, generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
        """A generated frame as the next slot's input: noised to `input_noise` (exposure bias), and its level."""
        s = self.transformer.config.input_noise
        level = latent.new_full((latent.shape[0], 1), s)
        if s > 0:
            latent = self.transformer.noised(latent[:, None], level, generator)[:, 0]
        return latent, level

    @torch.no_grad()
    def stream(self, reference: torch.Tensor, audio_chunks: Iterable[torch.Tensor],
               pose_chunks: Iterable[torch.Tensor | None] | None = None, text: torch.Tensor | None = None,
               generator: torch.Generator | None = None, steps: int | None = None) -> Iterator[torch.Tensor]:
        """Yield frames (b, 3, H, W) in [-1, 1] one at a time. Each audio chunk is (b, A, feat) Whisper-style
        features (A = config.audio_features_per_chunk); a chunk's frames come as soon as it arrives."""
        c, tr = self.transformer.config, self.transformer
        generator = generator or torch.Generator().manual_seed(0)
        ref = self._reference_latent(reference)
        kv, decode_cache = KVCache(c.layers), self.autoencoder.new_cache()
        previous, level, previous_pose = ref, ref.new_zeros(ref.shape[0], 1), None
        poses = iter(pose_chunks) if pose_chunks is not None else None
        for k, audio in enumerate(audio_chunks):
            pose = next(poses, None) if poses is not None else None
            cond = tr.conditions(audio, pose, text, previous_pose).tokens[:, 0]
            previous_pose = pose[:, -1] if pose is not None else None
            kv.trim(k - c.window_chunks)  # chunk k sees chunks k-window..k only
            tr.run(tr.prefix(cond, ref), torch.full((c.prefix_tokens,), k),
                   torch.full((c.prefix_tokens,), PREFIX_SLOT), kv)
            for j in range(1, c.chunk_frames + 1):
                z = tr.run(tr.frame_inputs(previous[:, None], j, level), torch.full((c.frame_tokens,), k),
                           torch.full((c.frame_tokens,), j), kv)
                latent = tr.sample_frame(z, self._noise(ref, generator), steps)
                previous, level = self._feedback(latent, generator)
                yield self.autoencoder.decode(latent[:, None], decode_cache)[:, 0]
        self.last_cache_sizes = (len(kv), decode_cache.held_frames())

    @torch.no_grad()
    def generate(self, reference: torch.Tensor, audio: torch.Tensor, pose: torch.Tensor | None = None,
                 text: torch.Tensor | None = None, generator: torch.Generator | None = None,
                 steps: int | None = None) -> torch.Tensor:
        """One-shot reference path, no caches: every frame recomputes the whole masked sequence and the
        autoencoder decodes all latents at the end. (b, n*F, 3, H, W) for audio (b, n*A, feat). Equals `stream`."""
        c, tr = self.transformer.config, self.transformer
        generator = generator or torch.Generator().manual_seed(0)
        ref = self._reference_latent(reference)
        prefixes = tr.prefixes(tr.conditions(audio, pose, text).tokens, ref)  # (b, n, P, dim)
        latents, inputs, levels = [], [ref[:, None]], [ref.new_zeros(ref.shape[0], 1)]
        for g in range(prefixes.shape[1] * c.chunk_frames):
            k = g // c.chunk_frames
            z = tr.frame_conditions(prefixes[:, :k + 1], torch.cat(inputs, dim=1), torch.cat(levels, dim=1))[:, -1]
            latents.append(tr.sample_frame(z, self._noise(ref, generator), steps))
            fed, level = self._feedback(latents[-1], generator)
            inputs.append(fed[:, None])
            levels.append(level)
        latents = torch.stack(latents, dim=1)  # (b, g, C, h, w)
        return self.autoencoder.decode(latents)


def split_chunks(features: torch.Tensor, config: MidasConfig) -> list[torch.Tensor]:
    """(b, n*A, feat) features -> n chunks of (b, A, feat) (a partial last chunk is dropped)."""
    a = config.audio_features_per_chunk
    return [features[:, i:i + a] for i in range(0, features.shape[1] - a + 1, a)]


def frames_to_uint8(frames: torch.Tensor) -> torch.Tensor:
    """(..., 3, H, W) in [-1, 1] -> (..., H, W, 3) uint8."""
    return rearrange(((frames.clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8), "... c h w -> ... h w c")
