"""Reference work once per clip (EMO, Loopy, EMO2 stage 2, and the training nets of Hallo/Hallo2 and EchoMimic):
sampling time and final latents with the reference net and the step-independent encoders (EMO's face locator,
EMO2's pose guider, Hallo's face locator and image and audio projections, EchoMimic's landmark encoder) run at
every denoising step (as a training forward runs them) against once per clip (`predictor`, what `sample`, the
trained-run engines and the trainer's sample grids use), measured in one run.

    .venv/bin/python benchmarks/reference_once.py                    # tiny nets, 32x32 latents, 8 frames, 10 steps
    .venv/bin/python benchmarks/reference_once.py --device cuda --steps 25
    .venv/bin/python benchmarks/reference_once.py --nets hallo,echomimic

The nets have random (seeded) weights, their zero-initialised layers included, so the reference features steer
every step; the numbers say nothing about image quality. For each net the script prints the median seconds per
clip of both variants over `--repeats` (run back to back, alternating which goes first, after one untimed
warm-up of each), their ratio (per step / once: above 1 means once per clip is faster) and the largest absolute
difference between the two final latents. It never fails on speed.
"""
from __future__ import annotations

import argparse
import statistics
import time

import torch
from diffusers import DDIMScheduler

from talkinghead.nn.loopy import AudioToLatentsConfig
from talkinghead.nn.speed import SpeedConfig
from talkinghead.nn.temporal import TemporalConfig
from talkinghead.sampling import denoise
from talkinghead.models.reference_video import TRAIN_SCHEDULER
from talkinghead.systems.emo.model import EMOConfig, EMONet
from talkinghead.systems.echomimic.train import EchoMimicTrainNet
from talkinghead.systems.emo2.model import EMO2Stage2Config, EMO2Stage2Net
from talkinghead.systems.hallo.train import HalloTrainNet
from talkinghead.models.unet3d import SD15_UNET
from talkinghead.systems.loopy.model import LoopyConfig, LoopyNet

AUDIO_TOKENS, AUDIO_DIM = 2, 16
# Hallo's and EchoMimic's non-UNet parts at small sizes: a 2-stage face locator (its input twice the latent side)
HALLO_MODEL = {"face_locator": {"block_out_channels": [16, 32]}, "image_proj": {"clip_extra_context_tokens": 4},
               "audio_proj": {"seq_len": 5, "blocks": 2, "channels": AUDIO_DIM, "intermediate_dim": 64,
                              "context_tokens": 8}}
ECHOMIMIC_MODEL = {"face_locator": {"block_out_channels": [16, 32]}, "audio_dim": AUDIO_DIM}


def build(kind: str, latent: int) -> torch.nn.Module:
    unet = {**SD15_UNET, "block_out_channels": [32, 64, 64, 64], "layers_per_block": 1, "attention_head_dim": 4,
            "cross_attention_dim": 32, "sample_size": latent}
    time_dim = 4 * unet["block_out_channels"][0]
    motion = TemporalConfig(num_attention_heads=2)
    if kind == "emo":
        net = EMONet(EMOConfig(unet=unet, audio_dim=AUDIO_DIM, motion=motion, speed=SpeedConfig(dim=time_dim),
                               face_locator=(16, 32, 64, 128)))
    elif kind == "hallo":
        net = HalloTrainNet.for_system(unet, 2, HALLO_MODEL)
    elif kind == "echomimic":
        net = EchoMimicTrainNet.for_system(unet, 2, ECHOMIMIC_MODEL)
    elif kind == "loopy":
        net = LoopyNet(LoopyConfig(unet=unet, audio_dim=AUDIO_DIM, motion=motion, audio_to_latents=AudioToLatentsConfig(
            audio_dim=AUDIO_TOKENS * AUDIO_DIM, dim=32, heads=2, num_latents=8, time_embed_dim=time_dim)))
    else:
        net = EMO2Stage2Net(EMO2Stage2Config(unet=unet, audio_dim=AUDIO_DIM, motion=motion))
    g = torch.Generator().manual_seed(7)
    with torch.no_grad():
        for p in net.parameters():
            if not p.any():  # zero-initialised layers: give them weights so the reference features matter
                p.copy_(0.05 * torch.randn(p.shape, generator=g))
    return net.eval()


def batch(kind: str, frames: int, motion_frames: int, latent: int, net: torch.nn.Module) -> dict:
    g = torch.Generator().manual_seed(0)
    if kind in ("hallo", "echomimic"):  # a System.model_batch of one clip
        side = latent * 2 ** (len(net.config.face_locator["block_out_channels"]) - 1)  # the locator's input
        out = {"ref": torch.randn(1, 1 + (motion_frames if kind == "hallo" else 0), 4, latent, latent, generator=g),
               "drop_audio": torch.tensor([False])}
        if kind == "echomimic":
            out["audio_tokens"] = torch.randn(1, frames, AUDIO_TOKENS * 5, AUDIO_DIM, generator=g)
            out["location"] = (torch.rand(1, 1, frames, side, side, generator=g) > 0.9).float()
            return out
        ap = net.config.audio_proj
        out["face_embedding"] = torch.zeros(1, 512)
        out["audio_windows"] = torch.randn(1, frames, ap["seq_len"], ap["blocks"], ap["channels"], generator=g)
        out["location"] = torch.rand(1, 3, 1, side, side, generator=g).expand(-1, -1, frames, -1, -1)
        out["masks"] = {b: [torch.rand(frames, (latent // 2 ** i) ** 2, generator=g) for i in range(4)]
                        for b in ("lip", "face", "full")}
        return out
    out = {"ref": torch.randn(1, 1 + (motion_frames if kind != "loopy" else 0), 4, latent, latent, generator=g),
           "audio": torch.randn(1, frames, AUDIO_TOKENS, AUDIO_DIM, generator=g)}
    if kind == "emo":
        out["speed"] = torch.rand(1, frames, generator=g)
        out["face_region"] = (torch.rand(1, 1, frames, 8 * latent, 8 * latent, generator=g) > 0.5).float()
    elif kind == "loopy":
        out["history"] = torch.randn(1, 4 * motion_frames, 4, latent, latent, generator=g)
    else:
        out["pose_maps"] = torch.rand(1, 4, frames, latent * net.config.map_scale, latent * net.config.map_scale,
                                      generator=g)
        out["hand_confidence"] = torch.rand(1, frames, 2, generator=g)
    return out


@torch.inference_mode()
def run(net, kind: str, data: dict, frames: int, steps: int, once: bool, device: str) -> tuple[float, torch.Tensor]:
    data = {k: (v.to(device) if isinstance(v, torch.Tensor) else  # Hallo's masks: {branch: [per level]}
                {b: [m.to(device) for m in ms] for b, ms in v.items()}) for k, v in data.items()}
    if kind == "loopy":
        data["generator"] = torch.Generator(device).manual_seed(3)
    scheduler = DDIMScheduler(**TRAIN_SCHEDULER)
    scheduler.set_timesteps(steps)
    b, _, c, h, w = data["ref"].shape
    x = torch.randn((b, c, frames, h, w), generator=torch.Generator(device).manual_seed(5), device=device)
    sync = torch.cuda.synchronize if device.startswith("cuda") else (lambda: None)
    sync()
    start = time.perf_counter()
    predict = net.predictor(data) if once else (lambda z, t: net.predict(z, t, data))
    out = denoise(predict, scheduler, x)
    sync()
    return time.perf_counter() - start, out.float().cpu()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--frames", type=int, default=8)
    ap.add_argument("--motion-frames", type=int, default=2)
    ap.add_argument("--latent", type=int, default=32, help="latent side (px of the 4-channel latents)")
    ap.add_argument("--steps", type=int, default=10)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--nets", default="emo,loopy,emo2,hallo,echomimic")
    args = ap.parse_args()
    print(f"device {args.device}, {args.frames} frames, {args.motion_frames} motion frames, {args.latent}^2 latents, "
          f"{args.steps} DDIM steps, median of {args.repeats}")
    print(f"{'net':9} {'per step s':>11} {'once s':>9} {'per step / once':>16} {'max |diff|':>11}")
    for kind in args.nets.split(","):
        torch.manual_seed(0)
        net = build(kind, args.latent).to(args.device)
        data = batch(kind, args.frames, args.motion_frames, args.latent, net)
        times = {False: [], True: []}
        outs = {}
        for once in (False, True):  # warm-up
            run(net, kind, data, args.frames, args.steps, once, args.device)
        for r in range(args.repeats):
            for once in ((False, True) if r % 2 == 0 else (True, False)):
                seconds, outs[once] = run(net, kind, data, args.frames, args.steps, once, args.device)
                times[once].append(seconds)
        slow, fast = statistics.median(times[False]), statistics.median(times[True])
        diff = (outs[False] - outs[True]).abs().max().item()
        print(f"{kind:9} {slow:11.3f} {fast:9.3f} {slow / fast:16.2f} {diff:11.3g}")


if __name__ == "__main__":
    main()
