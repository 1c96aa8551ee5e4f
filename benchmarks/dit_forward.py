"""Forward time and peak memory per frame of the DiT systems: tiny configs on the CPU always, official
sizes only when CUDA is available ("skipped: no GPU" otherwise). Prints numbers, never asserts on time.

    .venv/bin/python benchmarks/dit_forward.py                # tiny on CPU (+ official on a GPU)
    .venv/bin/python benchmarks/dit_forward.py --repeats 5 --systems hallo3

Adding a system is one `Entry(...)` line in SYSTEMS: its model class (diffusers ModelMixin + ConfigMixin,
built from keyword overrides), an inputs function, the tiny and official overrides and clip sizes.
"""
from __future__ import annotations

import argparse
import gc
import os
import threading
import time
from dataclasses import dataclass
from typing import Callable

import torch

from talkinghead.systems.skyreels_a1 import model as a1
from talkinghead.systems.skyreels_a2 import model as a2
from talkinghead.systems.hallo3.model import HALLO3_TINY, Hallo3Model
from talkinghead.systems.hallo4.model import HALLO4_TINY, Hallo4WanModel
from talkinghead.nn.dit import latent_frame_count

VAE_SPATIAL = 8  # px per latent pixel (CogVideoX and Wan VAEs)
PAGE = os.sysconf("SC_PAGE_SIZE")


@dataclass
class Entry:
    name: str
    model: type
    inputs: Callable[[torch.nn.Module, int, int, int], tuple]  # (model, frames, height px, width px) -> call args
    tiny: dict
    official: dict
    tiny_clip: tuple[int, int, int]  # frames, height, width in pixels
    official_clip: tuple[int, int, int]
    build: Callable[[type, object], torch.nn.Module] = lambda cls, config: cls(**config)  # (class, config) -> model
    forward: Callable[[torch.nn.Module, tuple], object] = lambda model, args: model(*args)


def _dims(model, frames: int, height: int, width: int):
    c = model.transformer.config
    return latent_frame_count(frames, c.temporal_compression_ratio), c.out_channels, height // VAE_SPATIAL, \
        width // VAE_SPATIAL, c.text_embed_dim


def hallo3_inputs(model, frames, height, width):
    f, c, h, w, d = _dims(model, frames, height, width)
    a = model.audio_proj
    window, layers, channels = 5, 12, 768
    if a.proj1.in_features != window * layers * channels:  # tiny
        window, layers, channels = 3, 2, 8
    r = lambda *s: torch.randn(*s, device=model.device, dtype=model.dtype)  # noqa: E731
    return (r(1, f, c, h, w), torch.tensor([500], device=model.device), r(1, 16, d), r(1, model.face_proj.proj.in_features),
            r(1, frames, window, layers, channels), r(1, 1, c, h, w), r(1, 1, c, h, w))


def hallo4_inputs(model, frames, height, width):
    """The reference latent and the clip's latents (b, 16, 1 + f, h, w), t, the prompt, the VACE context,
    per-frame skeleton latents and audio windows."""
    cfg = model.config
    f, h, w = latent_frame_count(frames, 4), height // VAE_SPATIAL, width // VAE_SPATIAL
    a = cfg.audio
    r = lambda *s: torch.randn(*s, device=model.device, dtype=model.dtype)  # noqa: E731
    return (r(1, cfg.in_dim, 1 + f, h, w), torch.tensor([500], device=model.device), r(1, 16, cfg.text_dim),
            r(1, cfg.vace_in_dim, 1 + f, h, w), r(1, cfg.in_dim, frames, h, w),
            r(1, frames, a["seq_len"], a["blocks"], a["channels"]))


def skyreels_a1_inputs(model, frames, height, width):
    """Noisy latents (b, f, c, h, w), t, and the batch: portrait latent, landmark guidance frames, SigLIP tokens."""
    cfg = model.config
    f = latent_frame_count(frames, cfg.transformer.get("temporal_compression_ratio", 4))
    scale = 2 ** (len(cfg.vae["block_out_channels"]) - 1)  # the guider's spatial compression (8 at full size)
    c, h, w = cfg.latent_channels, height // scale, width // scale
    p = next(model.parameters())
    r = lambda *s: torch.randn(*s, device=p.device, dtype=p.dtype)  # noqa: E731
    batch = {"ref_latent": r(1, 1, c, h, w), "guidance": r(1, 3, frames, height, width).clamp(-1, 1),
             "identity": r(1, 729 if cfg.identity_dim == 1152 else 4, cfg.identity_dim)}
    return r(1, f, c, h, w), torch.tensor([500], device=p.device), batch


def skyreels_a2_inputs(model, frames, height, width):
    """Noisy latents (b, c, f, h, w), t, and the conditions of two references (CLIP tokens included)."""
    cfg = model.config
    f = latent_frame_count(frames, 4)
    c, h, w = cfg.latent_channels, height // VAE_SPATIAL, width // VAE_SPATIAL
    clip_px = cfg.clip.get("image_size", 224)
    p = next(model.parameters())
    r = lambda *s: torch.randn(*s, device=p.device, dtype=p.dtype)  # noqa: E731
    with torch.no_grad():
        cond = model.conditions({"ref_latents": r(1, 2, c, h, w), "ref_images": r(1, 2, 3, clip_px, clip_px)}, f)
    return r(1, c, f, h, w), torch.tensor([500.0], device=p.device), cond


def _a1(model, args):
    return model.predict(*args)


def _a2(model, args):
    return model.forward_cond(*args)


def _build_config(cls, config):
    return cls(config)


SYSTEMS = [
    Entry("hallo3", Hallo3Model, hallo3_inputs, HALLO3_TINY, {}, (9, 32, 32), (49, 480, 720)),
    Entry("hallo4", Hallo4WanModel, hallo4_inputs, HALLO4_TINY, {}, (9, 32, 32), (81, 480, 832)),
    Entry("skyreels_a1", a1.SkyReelsA1, skyreels_a1_inputs, a1.TINY, a1.OFFICIAL, (9, 16, 16), (49, 480, 720),
          _build_config, _a1),
    Entry("skyreels_a2", a2.SkyReelsA2, skyreels_a2_inputs, a2.TINY, a2.OFFICIAL, (9, 32, 32), (81, 480, 832),
          _build_config, _a2),
]


class PeakRSS:
    """Peak resident memory above the start, sampled every 2 ms in a thread (CPU runs)."""

    def __enter__(self):
        self.base = self.peak = self._rss()
        self.running = True
        self.thread = threading.Thread(target=self._watch, daemon=True)
        self.thread.start()
        return self

    def __exit__(self, *exc):
        self.running = False
        self.thread.join()

    @staticmethod
    def _rss() -> int:
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * PAGE

    def _watch(self):
        while self.running:
            self.peak = max(self.peak, self._rss())
            time.sleep(0.002)

    @property
    def used(self) -> int:
        return self.peak - self.base


def measure(entry: Entry, config: dict, clip: tuple[int, int, int], device: str, dtype: torch.dtype,
            repeats: int) -> dict:
    torch.manual_seed(0)
    default = torch.get_default_dtype()
    torch.set_default_dtype(dtype)  # build in the benchmark dtype: official sizes never exist in float32
    try:
        with torch.device(device):
            model = entry.build(entry.model, config).eval()
    finally:
        torch.set_default_dtype(default)
    params = sum(p.numel() for p in model.parameters())
    frames, height, width = clip
    args = entry.inputs(model, frames, height, width)
    sync = torch.cuda.synchronize if device == "cuda" else (lambda: None)
    with torch.no_grad():
        entry.forward(model, args)  # warm-up
        sync()
        if device == "cuda":
            torch.cuda.reset_peak_memory_stats()
            base = torch.cuda.memory_allocated()
        times = []
        with PeakRSS() as rss:
            for _ in range(repeats):
                t0 = time.perf_counter()
                entry.forward(model, args)
                sync()
                times.append(time.perf_counter() - t0)
    peak = (torch.cuda.max_memory_allocated() - base) if device == "cuda" else rss.used
    del model, args
    gc.collect()
    if device == "cuda":
        torch.cuda.empty_cache()
    best = min(times)
    return {"params_M": params / 1e6, "forward_s": best, "ms_per_frame": 1000 * best / frames,
            "peak_MiB_per_frame": peak / 2**20 / frames, "peak_MiB": peak / 2**20}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--systems", default=",".join(e.name for e in SYSTEMS))
    a = ap.parse_args(argv)
    wanted = set(a.systems.split(","))
    header = f"{'system':<12} {'size':<9} {'device':<6} {'clip (f,h,w)':<15} {'params M':>9} {'fwd s':>8} " \
             f"{'ms/frame':>9} {'peak MiB':>9} {'MiB/frame':>10}"
    print(header)
    print("-" * len(header))
    cuda = torch.cuda.is_available()
    for entry in (e for e in SYSTEMS if e.name in wanted):
        rows = [("tiny", entry.tiny, entry.tiny_clip, "cpu", torch.float32)]
        if cuda:
            rows.append(("official", entry.official, entry.official_clip, "cuda", torch.bfloat16))
        for size, config, clip, device, dtype in rows:
            r = measure(entry, config, clip, device, dtype, a.repeats)
            print(f"{entry.name:<12} {size:<9} {device:<6} {str(clip):<15} {r['params_M']:>9.2f} "
                  f"{r['forward_s']:>8.3f} {r['ms_per_frame']:>9.2f} {r['peak_MiB']:>9.1f} "
                  f"{r['peak_MiB_per_frame']:>10.2f}")
        if not cuda:
            print(f"{entry.name:<12} official  skipped: no GPU")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
