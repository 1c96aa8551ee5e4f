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

from talkinghead.models.hallo3 import HALLO3_TINY, Hallo3Model
from talkinghead.models.hallo4 import HALLO4_TINY, Hallo4Model
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
    f, c, h, w, d = _dims(model, frames, height, width)
    a = model.audio_proj
    window, layers, channels = (5, 12, 768) if a.proj1.in_features == 5 * 12 * 768 else (3, 2, 8)
    k = model.skeleton_encoder.convs[0].in_channels
    r = lambda *s: torch.randn(*s, device=model.device, dtype=model.dtype)  # noqa: E731
    return (r(1, f, c, h, w), torch.tensor([500.0], device=model.device), r(1, 16, d),
            r(1, frames, window, layers, channels), torch.rand(1, frames, k, 2, device=model.device),
            r(1, 1, c, h, w))


SYSTEMS = [
    Entry("hallo3", Hallo3Model, hallo3_inputs, HALLO3_TINY, {}, (9, 32, 32), (49, 480, 720)),
    Entry("hallo4", Hallo4Model, hallo4_inputs, HALLO4_TINY, {}, (9, 32, 32), (49, 480, 720)),
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
            model = entry.model(**config).eval()
    finally:
        torch.set_default_dtype(default)
    params = sum(p.numel() for p in model.parameters())
    frames, height, width = clip
    args = entry.inputs(model, frames, height, width)
    sync = torch.cuda.synchronize if device == "cuda" else (lambda: None)
    with torch.no_grad():
        model(*args)  # warm-up
        sync()
        if device == "cuda":
            torch.cuda.reset_peak_memory_stats()
            base = torch.cuda.memory_allocated()
        times = []
        with PeakRSS() as rss:
            for _ in range(repeats):
                t0 = time.perf_counter()
                model(*args)
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
    header = f"{'system':<10} {'size':<9} {'device':<6} {'clip (f,h,w)':<15} {'params M':>9} {'fwd s':>8} " \
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
            print(f"{entry.name:<10} {size:<9} {device:<6} {str(clip):<15} {r['params_M']:>9.2f} "
                  f"{r['forward_s']:>8.3f} {r['ms_per_frame']:>9.2f} {r['peak_MiB']:>9.1f} "
                  f"{r['peak_MiB_per_frame']:>10.2f}")
        if not cuda:
            print(f"{entry.name:<10} official  skipped: no GPU")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
