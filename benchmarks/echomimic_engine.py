"""EchoMimic engine benchmark (EchoMimicPipeline): sampling time, ours / upstream-equivalent, and the parity cost of
half precision, measured in one run with random (seeded) weights; nothing here needs a checkpoint.

    .venv/bin/python benchmarks/echomimic_engine.py                      # tiny net (fixture sizes), 128 px, CPU
    .venv/bin/python benchmarks/echomimic_engine.py --size full --device cuda   # SD1.5 size, 512 px, official windows

Prints, for one configuration:
  1. seconds per generated frame for our pipeline and for the upstream-equivalent run, and the ratio. The
     upstream-equivalent is the same pipeline with `UpstreamReadProcessor` (below) in the denoising UNet: like
     the official code it computes the reference attention for every row, unconditional ones included, then
     recomputes the unconditional rows as plain self-attention. Everything else (one CFG batch per window, SDPA,
     the reference UNet once per video) is shared, so the ratio is the gain of skipping that discarded work;
  2. the same with every context window of a step batched into one UNet call (`window_batch`; officially one
     window per call), and max |ours - other| of the final latents for both (parity of the speed-ups);
  3. on a GPU: the same run in fp16 and bf16, with seconds per frame and max |half - fp32| of the final latents
     and decoded frames. On a CPU this part prints "skipped: no GPU".
The median over `--repeats` is reported; a benchmark never fails on speed.
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import statistics
import time
from pathlib import Path

import torch
from diffusers import AutoencoderKL
from diffusers.models.attention_processor import AttnProcessor2_0

from talkinghead.models.echomimic import EchoMimicConfig, EchoMimicNet
from talkinghead.nn.reference_attention import ReferenceReadProcessor
from talkinghead.pipelines.echomimic import EchoMimicPipeline, SamplingConfig

TINY_CONFIG = Path(__file__).resolve().parents[2] / "shared" / "fixtures" / "echomimic" / "echomimic_tiny" / "config.json"
FULL_VAE = {"block_out_channels": (128, 256, 512, 512), "layers_per_block": 2, "latent_channels": 4,
            "down_block_types": ("DownEncoderBlock2D",) * 4, "up_block_types": ("UpDecoderBlock2D",) * 4}


class UpstreamReadProcessor(ReferenceReadProcessor):
    """Reference attention for every row, then the unconditional rows recomputed as plain self-attention."""

    def __call__(self, attn, hidden_states, encoder_hidden_states=None, attention_mask=None, temb=None, *a, **k):
        reference = self.bank.reference(self.name)
        if reference is None:
            return AttnProcessor2_0.__call__(self, attn, hidden_states, None, attention_mask, temb)
        groups, rows = reference.shape[0], hidden_states.shape[0]
        tiled = reference.repeat(rows // groups, 1, 1).to(hidden_states.dtype)
        out = AttnProcessor2_0.__call__(self, attn, hidden_states, torch.cat([hidden_states, tiled], 1),
                                        attention_mask, temb)
        n_uncond = self.bank.uncond_groups * rows // groups
        if n_uncond:
            out = out.clone()
            out[:n_uncond] = AttnProcessor2_0.__call__(self, attn, hidden_states[:n_uncond], None, attention_mask, temb)
        return out


def build(size: str, device: str, dtype: torch.dtype) -> tuple[EchoMimicPipeline, int, SamplingConfig, int]:
    """(pipeline, image side, sampling settings, frames) with seeded random weights."""
    torch.manual_seed(0)
    if size == "tiny":
        cfg = json.loads(TINY_CONFIG.read_text())
        config = EchoMimicConfig.from_release_configs(cfg["reference_unet2d_config"], cfg["unet_additional_kwargs"],
                                                      cfg["face_locator"])
        vae = AutoencoderKL(**cfg["vae_constructor_kwargs"])
        run = cfg["run"]
        s = SamplingConfig(steps=run["num_inference_steps"], guidance_scale=run["guidance_scale"],
                           context_frames=run["context_frames"], context_overlap=run["context_overlap"])
        side, frames = run["height"], 8
    else:
        config, vae = EchoMimicConfig(), AutoencoderKL(**FULL_VAE)
        s, side, frames = SamplingConfig(), 512, 24  # infer_audio2vid.py: 30 steps, windows of 12 with overlap 3
    net = EchoMimicNet(config)
    for p in net.face_locator.conv_out.parameters():  # non-zero, so the face-locator path does work
        torch.nn.init.normal_(p, std=0.02)
    net.to(device, dtype)
    vae.to(device, dtype)
    return EchoMimicPipeline(net, vae), side, s, frames


def run_once(pipe: EchoMimicPipeline, side: int, s: SamplingConfig, frames: int, decode: bool = False):
    g = torch.Generator().manual_seed(1)
    h = side // 8
    audio = torch.randn(1, frames, 50, 384, generator=g)
    ref = torch.randn(1, 4, h, h, generator=g)
    mask = torch.zeros(1, 1, 1, side, side)
    mask[..., side // 4: 3 * side // 4, side // 4: 3 * side // 4] = 1
    noise = torch.randn(1, 4, frames, h, h, generator=g).clamp(-1.5, 1.5)
    sync()
    t0 = time.perf_counter()
    latents = pipe.sample(ref.to(pipe.device, pipe.dtype), audio, pipe.location(mask), noise, s)
    sync()
    seconds = time.perf_counter() - t0
    video = pipe.decode_latents(latents).float().cpu() if decode else None
    return seconds, latents.float().cpu(), video


def sync() -> None:
    if torch.cuda.is_available():
        torch.cuda.synchronize()


def set_reader(pipe: EchoMimicPipeline, cls) -> None:
    for name, module in pipe.net.denoising_unet.named_modules():
        processor = getattr(module, "processor", None)
        if isinstance(processor, ReferenceReadProcessor):
            module.set_processor(cls(pipe.bank, processor.name))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--size", choices=("tiny", "full"), default="tiny")
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--repeats", type=int, default=3)
    args = ap.parse_args()
    if args.device.startswith("cuda") and not torch.cuda.is_available():
        print("skipped: no GPU")
        return
    if args.size == "full" and args.device == "cpu":
        print("skipped: no GPU (the official size needs one)")
        return
    pipe, side, s, frames = build(args.size, args.device, torch.float32)
    print(f"EchoMimic {args.size}: {side} px, {frames} frames, {s.steps} steps, windows {s.context_frames}/"
          f"{s.context_overlap}, guidance {s.guidance_scale}, device {args.device}")
    times: dict[str, list[float]] = {"ours": [], "upstream": [], "batched": []}
    outs = {}
    batched = dataclasses.replace(s, window_batch=frames)  # every window of a step in one UNet call
    for r in range(args.repeats):
        order = ("ours", "upstream", "batched") if r % 2 == 0 else ("batched", "upstream", "ours")
        for name in order:
            set_reader(pipe, UpstreamReadProcessor if name == "upstream" else ReferenceReadProcessor)
            seconds, latents, _ = run_once(pipe, side, batched if name == "batched" else s, frames)
            times[name].append(seconds)
            outs[name] = latents
    set_reader(pipe, ReferenceReadProcessor)
    ours, up = statistics.median(times["ours"]), statistics.median(times["upstream"])
    print(f"ours      {ours / frames:.4f} s/frame")
    print(f"upstream  {up / frames:.4f} s/frame   (ours / upstream = {ours / up:.3f})")
    bat = statistics.median(times["batched"])
    print(f"batched   {bat / frames:.4f} s/frame   (all windows of a step in one UNet call; / upstream = {bat / up:.3f})")
    for name in ("upstream", "batched"):
        print(f"parity    max|ours - {name}| final latents {float((outs['ours'] - outs[name]).abs().max()):.3e}")
    if not args.device.startswith("cuda"):
        print("half precision: skipped: no GPU")
        return
    _, ref_latents, ref_video = run_once(pipe, side, s, frames, decode=True)
    for name, dtype in (("fp16", torch.float16), ("bf16", torch.bfloat16)):
        half, *_ = build(args.size, args.device, dtype)
        run_once(half, side, s, frames)  # warm-up
        seconds, latents, video = run_once(half, side, s, frames, decode=True)
        print(f"{name}      {seconds / frames:.4f} s/frame   max|{name} - fp32| latents "
              f"{float((latents - ref_latents).abs().max()):.3e}, frames {float((video - ref_video).abs().max()):.3e}")


if __name__ == "__main__":
    main()
