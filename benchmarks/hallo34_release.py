"""Hallo3 and Hallo4 official-release paths: speed and parity of the speed options.

    .venv/bin/python benchmarks/hallo34_release.py [--repeats 3] [--quick]

CPU (always, on the tiny reference data of Hallo3 and Hallo4 made by the official code):
- Hallo3: the official sampling run (reference network once per clip, CFG rows in one batch, SDPA), seconds and
  max |diff| of the final latents against the official run.
- Hallo4: one clip as the official code runs it (two model calls per step) and with `batched_cfg` (one call with
  both rows), seconds and max |diff| of the final latents against the official run.
The official sizes on a GPU (fp32 against fp16/bf16, batched against serial guidance) are measured by
`benchmarks/gpu_engines.py`.
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

from reference_data import FIXTURES  # benchmarks/reference_data.py, beside this script


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

    from talkinghead.systems.hallo3.verify import load_fixture_model, run_recorded_inputs

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

    from talkinghead.systems.hallo4.release import load_dit
    from talkinghead.systems.hallo4.pipeline import sample_clip

    folder = FIXTURES / "hallo4" / "hallo4_tiny"
    if not folder.is_dir():
        print(f"hallo4: skipped: no reference data at {folder}")
        return
    config = json.loads((folder / "config.json").read_text())
    a, run = config["audio_proj_ctor"], config["run"]
    model = load_dit(folder, audio={k: a[k] for k in ("seq_len", "blocks", "channels", "intermediate_dim",
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


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--quick", action="store_true", help="one repeat (the smoke run tests use)")
    args = p.parse_args(argv)
    repeats = 1 if args.quick else args.repeats
    print(f"torch threads {torch.get_num_threads()}, load average {Path('/proc/loadavg').read_text().split()[:3]}")
    cpu_hallo3(repeats)
    cpu_hallo4(repeats)


if __name__ == "__main__":
    main()
