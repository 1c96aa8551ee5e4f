"""Hallo3 and Hallo4 official-release paths: speed and parity of the speed options.

    .venv/bin/python benchmarks/hallo34_release.py [--repeats 3] [--quick]

CPU (always, on the tiny reference data of Hallo3 and Hallo4 made by the official code):
- Hallo3: the official sampling run (reference network once per clip, CFG rows in one batch, SDPA), seconds and
  max |diff| of the final latents against the official run.
- Hallo4: one clip as the official code runs it (two model calls per step) and with `batched_cfg` (one call with
  both rows), seconds and max |diff| of the final latents against the official run.
GPU (only with CUDA; otherwise it prints "skipped: no GPU"): one DiT forward of each at the official size with
random weights, fp32 against bf16 (seconds and max |diff|), and the Hallo4 step with and without batched CFG.
Timings are medians of `--repeats` runs after one warm-up. The machine may be shared: timings taken while other
jobs run read high. The script never fails on speed.
"""
from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path

import torch

FIXTURES = Path(__file__).resolve().parents[2] / "shared" / "fixtures"


def timed(fn, repeats: int):
    fn()  # warm-up
    times, out = [], None
    for _ in range(repeats):
        if torch.cuda.is_available():
            torch.cuda.synchronize()
        t0 = time.perf_counter()
        out = fn()
        if torch.cuda.is_available():
            torch.cuda.synchronize()
        times.append(time.perf_counter() - t0)
    return statistics.median(times), out


def cpu_hallo3(repeats: int) -> None:
    from safetensors.torch import load_file

    from talkinghead.verify.hallo3 import load_fixture_model, run_recorded_inputs

    folder = FIXTURES / "hallo3" / "hallo3_tiny"
    if not folder.is_dir():
        print(f"hallo3: skipped: no reference data at {folder}")
        return
    model, config = load_fixture_model(folder)
    io = load_file(str(folder / "io.safetensors"))
    seconds, trace = timed(lambda: run_recorded_inputs(model, config, io), repeats)
    diff = (trace["s.samples"] - io["s.samples"]).abs().max().item()
    print(f"hallo3 tiny  official sampling ({config['model_config']['sampler_config']['params']['num_steps']} steps, "
          f"batched CFG, reference once)  {seconds:7.2f} s   max|diff| vs official {diff:.2e}")


def cpu_hallo4(repeats: int) -> None:
    from safetensors.torch import load_file

    from talkinghead.models.hallo4_wan import load_release_dit
    from talkinghead.pipelines.hallo4_wan import sample_clip

    folder = FIXTURES / "hallo4" / "hallo4_tiny"
    if not folder.is_dir():
        print(f"hallo4: skipped: no reference data at {folder}")
        return
    config = json.loads((folder / "config.json").read_text())
    a, run = config["audio_proj_ctor"], config["run"]
    model = load_release_dit(folder, audio={k: a[k] for k in ("seq_len", "blocks", "channels", "intermediate_dim",
                                                             "context_tokens")})
    io = load_file(str(folder / "io.safetensors"))
    ref = io["b.step.2.latents_after"]
    rows = {}
    for batched in (False, True):
        def clip():
            return sample_clip(model, io["b.noise"], io["b.ref_latent"], io["in.context_cond"].float(),
                               io["in.context_null"].float(), io["b.vace_context"], io["b.skeleton_latents"],
                               io["b.audio_tensor"], run["sample_steps"], run["sample_shift"], run["guide_scale"],
                               batched_cfg=batched)
        rows[batched] = timed(clip, repeats)
    for batched, (seconds, out) in rows.items():
        name = "batched CFG (one call)  " if batched else "official (two calls)   "
        print(f"hallo4 tiny  clip, {name} {seconds:7.2f} s   max|diff| vs official {(out - ref).abs().max().item():.2e}"
              f"   (README tolerance for latents 0.1)")
    print(f"hallo4 tiny  batched / official time ratio {rows[True][0] / rows[False][0]:.2f}")


def gpu(repeats: int) -> None:
    if not torch.cuda.is_available():
        print("GPU: skipped: no GPU")
        return
    from talkinghead.models.hallo3 import Hallo3Model
    from talkinghead.models.hallo4_wan import WAN_VACE_1_3B, Hallo4WanModel

    dev = torch.device("cuda")
    g = torch.Generator(device=dev).manual_seed(0)
    # Hallo3: one CFG batch at the official size (13 latent frames of 60 x 90, 226 text tokens)
    results = {}
    for dtype in (torch.float32, torch.bfloat16):
        torch.manual_seed(0)
        model = Hallo3Model().to(dev, dtype).eval()
        x = torch.randn(2, 13, 16, 60, 90, device=dev, generator=g).to(dtype)
        text = torch.randn(2, 226, 4096, device=dev, generator=g).to(dtype)
        face = torch.randn(2, 512, device=dev, generator=g).to(dtype)
        audio = torch.randn(2, 49, 5, 12, 768, device=dev, generator=g).to(dtype)
        motion = torch.randn(2, 1, 16, 60, 90, device=dev, generator=g).to(dtype)
        with torch.no_grad():
            model.encode_reference(motion[:1], torch.zeros_like(text[:1]))
            results[dtype] = timed(lambda: model(x, torch.tensor([500.0, 500.0], device=dev), text, face, audio, motion,
                                                 reuse_reference=True).float(), repeats)
        del model
        torch.cuda.empty_cache()
    diff = (results[torch.float32][1] - results[torch.bfloat16][1]).abs().max().item()
    print(f"hallo3 full  one CFG-batch forward  fp32 {results[torch.float32][0]:.2f} s  bf16 "
          f"{results[torch.bfloat16][0]:.2f} s  max|diff| bf16 vs fp32 {diff:.2e}")
    # Hallo4: one guided step at 480 x 832, 81 frames (21 + 1 latent frames of 60 x 104)
    results = {}
    for dtype in (torch.float32, torch.bfloat16):
        torch.manual_seed(0)
        model = Hallo4WanModel(**WAN_VACE_1_3B).to(dev, dtype).eval()
        lat = torch.randn(1, 16, 22, 60, 104, device=dev, generator=g).to(dtype)
        ctx = torch.randn(1, 20, 4096, device=dev, generator=g).to(dtype)
        vace = torch.randn(1, 96, 22, 60, 104, device=dev, generator=g).to(dtype)
        skel = torch.randn(1, 16, 81, 60, 104, device=dev, generator=g).to(dtype)
        audio = torch.randn(1, 81, 5, 12, 768, device=dev, generator=g).to(dtype)
        t = torch.tensor([500], device=dev)
        with torch.no_grad():
            results[dtype] = timed(lambda: model(lat, t, ctx, vace, skel, audio).float(), repeats)
        del model
        torch.cuda.empty_cache()
    diff = (results[torch.float32][1] - results[torch.bfloat16][1]).abs().max().item()
    print(f"hallo4 full  one DiT call  fp32 {results[torch.float32][0]:.2f} s  bf16 {results[torch.bfloat16][0]:.2f} s"
          f"  max|diff| bf16 vs fp32 {diff:.2e}")


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--quick", action="store_true", help="one repeat (the smoke run tests use)")
    args = p.parse_args(argv)
    repeats = 1 if args.quick else args.repeats
    print(f"torch threads {torch.get_num_threads()}, load average {Path('/proc/loadavg').read_text().split()[:3]}")
    cpu_hallo3(repeats)
    cpu_hallo4(repeats)
    gpu(repeats)


if __name__ == "__main__":
    main()
