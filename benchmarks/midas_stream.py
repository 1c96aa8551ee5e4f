"""MIDAS streaming benchmark (MidasPipeline.stream): latency from an audio chunk to its frames, steady fps,
per-stage times and cache sizes, measured in one run with random (seeded) weights and random conditions.

    .venv/bin/python benchmarks/midas_stream.py              # tiny size on the CPU, then the realistic size on CUDA
    .venv/bin/python benchmarks/midas_stream.py --chunks 12 --steps 8

Sizes. tiny: `DCVideoAEConfig.tiny()` (4x, 8 channels) and `MidasConfig.tiny()` (32 wide, 2 layers, 3-frame
chunks), 8x8 px frames. realistic: the paper-size autoencoder (64x, 128 channels) at 512x512 (an 8x8 latent
grid), the default `MidasConfig()` transformer (2048 wide, 36 layers, the paper's Qwen2.5-3B size) over
6-frame chunks of [6 audio, 60 pose, 256 text, 64 reference, 6 x 64 frame tokens], a 3-layer 1024-wide
diffusion head. The realistic run needs CUDA and prints
"skipped: no GPU" otherwise. Nothing here needs a checkpoint; the numbers say nothing about image quality.

For each size it prints:
  latency   the wall time from the moment the sampler takes an audio chunk to the first frame of that chunk
            (median and worst over the chunks after the first), and to the chunk's last frame; the audio
            chunk itself spans chunk_frames x 80 ms, which a live source adds on top (algorithmic latency);
  steady    frames per second over all chunks after the first, and x real-time (frames at 12.5 fps);
  stages    ms per frame in the condition encoder + prefix pass, the transformer frame step, the diffusion
            head's sampling and the autoencoder's streaming decode;
  memory    the transformer's KV cache (tokens) and the decoder's cache (frames) after the run, and the
            growth of allocated CUDA memory / RSS between the end of chunk 2 and the end of the run.
A benchmark never fails on speed.
"""
from __future__ import annotations

import argparse
import os
import statistics
import time
from collections import defaultdict

import torch

from talkinghead.nn.dc_video_autoencoder import DCVideoAEConfig
from talkinghead.systems.midas.model import DCVideoAutoencoder, MidasConfig, MidasTransformer
from talkinghead.systems.midas.pipeline import MidasPipeline

FRAME_SECONDS = 0.08  # one audio token (and one frame) per 80 ms


def _rss_mib() -> float:
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) / 1024
    except OSError:
        pass
    return float("nan")


def _build(size: str, device: str, dtype: torch.dtype) -> tuple[MidasPipeline, int]:
    torch.manual_seed(0)
    if size == "tiny":
        ae, tr, side = DCVideoAutoencoder(DCVideoAEConfig.tiny()), MidasTransformer(MidasConfig.tiny()), 8
    else:
        ae, tr, side = DCVideoAutoencoder(DCVideoAEConfig()), MidasTransformer(MidasConfig()), 512
    return MidasPipeline(ae.to(device, dtype), tr.to(device, dtype)), side


def _timed(obj, name: str, totals: dict, sync, label=None) -> None:
    """Wrap obj.name on the instance so its wall time adds up in totals[label(args) or name]."""
    inner = getattr(obj, name)

    def wrapper(*args, **kwargs):
        sync()
        t = time.perf_counter()
        out = inner(*args, **kwargs)
        sync()
        totals[label(*args) if label else name] += time.perf_counter() - t
        return out

    object.__setattr__(obj, name, wrapper)


def run(size: str, chunks: int, steps: int | None, device: str, dtype: torch.dtype) -> None:
    pipe, side = _build(size, device, dtype)
    c = pipe.transformer.config
    sync = torch.cuda.synchronize if device == "cuda" else (lambda: None)
    g = torch.Generator(device="cpu").manual_seed(1)
    reference = (torch.rand(1, 3, side, side, generator=g) * 2 - 1).to(device, dtype)
    audio = [torch.randn(1, c.audio_features_per_chunk, c.audio.feature_dim, generator=g).to(device, dtype)
             for _ in range(chunks)]
    text = torch.randn(1, c.text_tokens, c.text_dim, generator=g).to(device, dtype)
    steps = steps or pipe.transformer.config.head.sample_steps

    # warm-up: one chunk, untimed
    for _ in pipe.stream(reference, audio[:1], text=text, steps=steps):
        pass
    totals: dict[str, float] = defaultdict(float)
    _timed(pipe.transformer.conditions, "forward", totals, sync, lambda *a: "conditions")
    _timed(pipe.transformer, "run", totals, sync,
           lambda tokens, *a: "prefix pass" if tokens.shape[1] == c.prefix_tokens else "frame step")
    _timed(pipe.transformer, "sample_frame", totals, sync, lambda *a: "head sampling")
    _timed(pipe.autoencoder, "decode", totals, sync, lambda *a: "decode")
    taken: dict[int, float] = {}

    def source():
        for k, chunk in enumerate(audio):
            taken[k] = time.perf_counter()
            yield chunk

    if device == "cuda":
        torch.cuda.reset_peak_memory_stats()
    first, last, mem_mark = {}, {}, None
    start = time.perf_counter()
    with torch.inference_mode():
        for i, _frame in enumerate(pipe.stream(reference, source(), text=text, steps=steps)):
            sync()
            now, k = time.perf_counter(), i // c.chunk_frames
            first.setdefault(k, now - taken[k])
            last[k] = now
            if k == 1 and i % c.chunk_frames == c.chunk_frames - 1:
                mem_mark = (torch.cuda.memory_allocated() / 2 ** 20) if device == "cuda" else _rss_mib()
    total = time.perf_counter() - start
    mem_end = (torch.cuda.memory_allocated() / 2 ** 20) if device == "cuda" else _rss_mib()
    frames = chunks * c.chunk_frames
    later = [first[k] for k in range(1, chunks)] or [first[0]]
    chunk_times = [last[k] - taken[k] for k in range(1, chunks)] or [last[0] - taken[0]]
    steady_s = last[chunks - 1] - last[0] if chunks > 1 else total
    steady_fps = (frames - c.chunk_frames) / steady_s if chunks > 1 else frames / total
    kv, dec = pipe.last_cache_sizes
    print(f"[{size}] {side}x{side} px, latent {c.latent_size[0]}x{c.latent_size[1]}x{c.latent_channels}, "
          f"dim {c.dim} x {c.layers} layers, chunk {c.chunk_frames} frames = {c.chunk_tokens} tokens, "
          f"head {steps} steps, {chunks} chunks, {device} {str(dtype).replace('torch.', '')}")
    print(f"  latency  chunk -> first frame: median {1000 * statistics.median(later):.1f} ms, "
          f"worst {1000 * max(later):.1f} ms; chunk -> last frame: "
          f"median {1000 * statistics.median(chunk_times):.1f} ms "
          f"(+ {1000 * c.chunk_frames * FRAME_SECONDS:.0f} ms of audio per chunk)")
    print(f"  steady   {steady_fps:.2f} fps = {steady_fps * FRAME_SECONDS:.2f}x real-time (12.5 fps video)")
    per = {k: 1000 * v / frames for k, v in totals.items()}
    print("  stages   ms/frame: " + ", ".join(f"{k} {v:.2f}" for k, v in per.items()))
    unit = "MiB allocated" if device == "cuda" else "MiB RSS"
    growth = f"{mem_end - mem_mark:+.1f} {unit} from chunk 2 to chunk {chunks}" if mem_mark is not None else "n/a"
    print(f"  memory   KV cache {kv} tokens (bound {(c.window_chunks + 1) * c.chunk_tokens}), decoder cache {dec} "
          f"frames; {growth}" + (f"; peak {torch.cuda.max_memory_allocated() / 2 ** 30:.2f} GiB"
                                 if device == "cuda" else ""))


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--chunks", type=int, default=6)
    p.add_argument("--steps", type=int, default=None, help="diffusion head steps (default: the config's)")
    p.add_argument("--dtype", choices=("fp32", "bf16", "fp16"), default="bf16", help="realistic size on CUDA")
    p.add_argument("--threads", type=int, default=1, help="CPU threads for the tiny run")
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    print(f"load average at start: {load:.2f}")
    run("tiny", args.chunks, args.steps, "cpu", torch.float32)
    if torch.cuda.is_available():
        dtype = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}[args.dtype]
        run("realistic", args.chunks, args.steps, "cuda", dtype)
    else:
        print("[realistic] skipped: no GPU")
    if hasattr(os, "getloadavg"):
        print(f"load average at end: {os.getloadavg()[0]:.2f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
