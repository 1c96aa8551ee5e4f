"""SkyReels-A1 / SkyReels-A2 release pipelines: time per clip and the parity of each speed option, measured in one
run.

    .venv/bin/python benchmarks/skyreels.py            # the tiny release folders of the reference data, CPU
    .venv/bin/python benchmarks/skyreels.py --gpu      # also the official sizes on a GPU (random weights)

Prints, on the tiny releases (the engines' own code, nothing stubbed):
  1. SkyReels-A1: seconds per clip in float32 and in bf16 (the release's precision), max |bf16 - fp32| of the
     frames;
  2. SkyReels-A2: seconds per clip with the release's two guidance calls per step and with both branches in one
     batch (`cfg_batch`), max |batched - serial| of the final frames; bf16 against fp32;
  3. with --gpu on a GPU: one transformer forward at the official size (A1: 49 frames 480x720, CogVideoX-5B;
     A2: 81 frames 480x832, Wan 14B) in bf16 with random weights, and max |bf16 - fp32| of the same forward at
     full width with 2 layers. Without a GPU this part prints "skipped: no GPU".
A benchmark never fails on speed; the median over --repeats is reported.
"""
from __future__ import annotations

import argparse
import statistics
import time
from pathlib import Path

import numpy as np
import torch

FIXTURES = Path(__file__).resolve().parents[2] / "shared" / "fixtures"


def _timed(fn, repeats: int):
    times, out = [], None
    for _ in range(repeats):
        t0 = time.perf_counter()
        out = fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times), out


def a1_tiny(repeats: int) -> None:
    from safetensors.torch import load_file

    from talkinghead.models.skyreels_a1 import load_release
    from talkinghead.pipelines.skyreels import release_control, release_pixels, sample_a1_release

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

    from talkinghead.models.skyreels_a2 import load_release
    from talkinghead.pipelines.skyreels import sample_a2_release
    from talkinghead.verify.skyreels_a2 import references

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


def gpu(repeats: int) -> None:
    if not torch.cuda.is_available():
        print("official sizes: skipped: no GPU")
        return
    from diffusers import WanTransformer3DModel

    from talkinghead.models.skyreels_a1 import COGVIDEOX_5B_I2V, SkyReelsA1, release_config

    dev = "cuda"
    # A1: CogVideoX-5B at 49 frames (13 latent) x 60 x 90 latents, CFG batch 2
    for layers, dtype in ((None, torch.bfloat16), (2, torch.bfloat16), (2, torch.float32)):
        conf = dict(COGVIDEOX_5B_I2V, **({"num_layers": layers} if layers else {}))
        model = SkyReelsA1(release_config(conf, dict(block_out_channels=(128, 256, 256, 512)))).to(dev, dtype).eval()
        g = torch.Generator(dev).manual_seed(0)
        x = torch.randn(2, 13, 48, 60, 90, generator=g, device=dev).to(dtype)
        tokens = model.identity_proj(torch.randn(2, 729, 1152, generator=g, device=dev).to(dtype))
        rope = model.rotary(13, 60, 90, dev)
        with torch.no_grad():
            def fwd():
                y = model.transformer(x, tokens, torch.tensor([999, 999], device=dev), image_rotary_emb=rope,
                                      return_dict=False)[0]
                torch.cuda.synchronize()
                return y
            sec, y = _timed(fwd, repeats)
        print(f"A1 official transformer ({layers or 42} layers, {dtype}): {sec:.3f} s per CFG forward")
        if layers == 2:
            globals().setdefault("_a1", {})[dtype] = y.float().cpu()
        model = None  # free it before the next size
    a = globals()["_a1"]
    print(f"A1 2-layer max |bf16 - fp32|: {(a[torch.bfloat16] - a[torch.float32]).abs().max():.3e}")
    from talkinghead.models.skyreels_a2 import WAN_14B_I2V

    for layers, dtype in ((None, torch.bfloat16), (2, torch.bfloat16), (2, torch.float32)):
        conf = dict(WAN_14B_I2V, **({"num_layers": layers} if layers else {}))
        model = WanTransformer3DModel(**conf).to(dev, dtype).eval()
        g = torch.Generator(dev).manual_seed(0)
        x = torch.randn(1, 36, 21, 60, 104, generator=g, device=dev).to(dtype)
        text = torch.randn(1, 512, 4096, generator=g, device=dev).to(dtype)
        img = torch.randn(1, 771, 1280, generator=g, device=dev).to(dtype)
        with torch.no_grad():
            def fwd():
                y = model(x, torch.tensor([999], device=dev), text, encoder_hidden_states_image=img,
                          return_dict=False)[0]
                torch.cuda.synchronize()
                return y
            sec, y = _timed(fwd, repeats)
        print(f"A2 official transformer ({layers or 40} layers, {dtype}): {sec:.3f} s per call")
        if layers == 2:
            globals().setdefault("_a2", {})[dtype] = y.float().cpu()
        model = None  # free it before the next size
    a = globals()["_a2"]
    print(f"A2 2-layer max |bf16 - fp32|: {(a[torch.bfloat16] - a[torch.float32]).abs().max():.3e}")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--repeats", type=int, default=1)
    p.add_argument("--gpu", action="store_true", help="also time the official sizes (needs a GPU)")
    args = p.parse_args(argv)
    if not FIXTURES.is_dir():
        print(f"skipped: no reference data at {FIXTURES}")
        return 0
    a1_tiny(args.repeats)
    a2_tiny(args.repeats)
    if args.gpu:
        gpu(args.repeats)
    else:
        print("official sizes: skipped: no GPU" if not torch.cuda.is_available() else "official sizes: pass --gpu")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
