"""SkyReels-A1 / SkyReels-A2 release pipelines: time per clip and the parity of each speed option, measured in one
run.

    .venv/bin/python benchmarks/skyreels.py            # the tiny release folders of the reference data, CPU

Prints, on the tiny releases (the engines' own code, nothing stubbed):
  1. SkyReels-A1: seconds per clip in float32 and in bf16 (the release's precision), max |bf16 - fp32| of the
     frames;
  2. SkyReels-A2: seconds per clip with the release's two guidance calls per step and with both branches in one
     batch (`cfg_batch`), max |batched - serial| of the final frames; bf16 against fp32.
The official sizes on a GPU (batched against serial guidance, fp16/bf16 against fp32) are measured by
`benchmarks/gpu_engines.py`.
A benchmark never fails on speed; the median over --repeats is reported.
"""
from __future__ import annotations

import argparse
import statistics
import time

import numpy as np
import torch

from reference_data import FIXTURES  # benchmarks/reference_data.py, beside this script


def _timed(fn, repeats: int):
    times, out = [], None
    for _ in range(repeats):
        t0 = time.perf_counter()
        out = fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times), out


def a1_tiny(repeats: int) -> None:
    from safetensors.torch import load_file

    from talkinghead.systems.skyreels_a1.pipeline import release_control, sample_a1_release
    from talkinghead.systems.skyreels_a1.release import load_release
    from talkinghead.systems.skyreels_common import release_pixels

    folder = FIXTURES / "skyreels_a1" / "skyreels_a1_tiny"
    io = load_file(str(folder / "io.safetensors"))
    pixels, control = release_pixels(io["in.ref_image_uint8"].numpy()), release_control(
        io["in.control_frames_uint8"].numpy())
    frames = {}
    for name, dtype in (("fp32", torch.float32), ("bf16", torch.bfloat16)):
        r = load_release(folder, dtype, identity_encoder=False)
        sec, frames[name] = _timed(lambda: sample_a1_release(
            r.model, r.vae, r.scheduler(), pixels, control, io["in.siglip_last_hidden_state"], 3, 3.0,
            generator=torch.Generator().manual_seed(43)), repeats)
        print(f"A1 tiny {name}: {sec:.2f} s per clip ({control.shape[2]} frames)")
    print(f"A1 tiny max |bf16 - fp32| frames: {np.abs(frames['bf16'].astype(int) - frames['fp32']).max()}/255")


def a2_tiny(repeats: int) -> None:
    import json

    from safetensors.torch import load_file

    from talkinghead.systems.skyreels_a2.release import load_release
    from talkinghead.systems.skyreels_a2.pipeline import sample_a2_release
    from talkinghead.systems.skyreels_a2.verify import references

    folder = FIXTURES / "skyreels_a2" / "skyreels_a2_tiny"
    config = json.loads((folder / "config.json").read_text())
    run, inputs = config["run"], config["inputs"]
    io = load_file(str(folder / "io.safetensors"))
    vae, clip = references(io, config, run["height"], run["width"])
    out = {}
    for name, dtype, batch in (("fp32 serial", torch.float32, False), ("fp32 batched", torch.float32, True),
                               ("bf16 serial", torch.bfloat16, False), ("bf16 batched", torch.bfloat16, True)):
        r = load_release(folder, dtype)
        sec, out[name] = _timed(lambda: sample_a2_release(
            r, vae, clip, inputs["prompt"], inputs["negative_prompt"], run["num_frames"], run["num_inference_steps"],
            run["guidance_scale"], generator=torch.Generator().manual_seed(42), cfg_batch=batch), repeats)
        print(f"A2 tiny {name}: {sec:.2f} s per clip")
    for a, b in (("fp32 batched", "fp32 serial"), ("bf16 batched", "bf16 serial"), ("bf16 serial", "fp32 serial")):
        print(f"A2 tiny max |{a} - {b}| frames: {np.abs(out[a].astype(int) - out[b]).max()}/255")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--repeats", type=int, default=1)
    args = p.parse_args(argv)
    if not FIXTURES.is_dir():
        print(f"skipped: no reference data at {FIXTURES}")
        return 0
    a1_tiny(args.repeats)
    a2_tiny(args.repeats)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
