"""Every engine with weights, at its official size on a GPU: our path against the upstream-equivalent one, and fp16 /
bf16 against fp32, in one table measured in one run. Random seeded weights; nothing is downloaded.

    .venv/bin/python benchmarks/gpu_engines.py                          # official sizes; needs CUDA
    .venv/bin/python benchmarks/gpu_engines.py --systems hallo,hallo4 --steps 4 --frames 33
    .venv/bin/python benchmarks/gpu_engines.py --tiny                   # the same code on tiny configs, CPU

The systems are read from the registry (`talkinghead.systems.SYSTEMS`): every one with weights and an engine.
For each it builds the model at the official size (the release configs: SD1.5-size UNets and sd-vae-ft-mse for
the UNet family, CogVideoX-5B for Hallo3 and SkyReels-A1, Wan2.1-VACE 1.3B for Hallo4, Wan2.1-I2V 14B for
SkyReels-A2; the paper sizes for EMO, Loopy, EMO2 and MIDAS, which have no release) with `torch.manual_seed(0)`
weights, makes one clip of random seeded conditions and times:

- ours: the engine's sampling path with its speed options (the reference-attention read that skips the
  discarded unconditional pass, EchoMimic's context windows batched into one UNet call, both guidance rows in one
  model call for Hallo4 and SkyReels-A2, SDPA attention in Hallo2's super-resolution network);
- upstream: the same clip computed as the official code computes it (its reference-attention read, one window
  per call, two model calls per guidance step, explicit bmm/softmax attention). Where our default path already
  is the official one (Hallo3, SkyReels-A1) there is no second path and the column says so; EMO, Loopy, EMO2 and
  MIDAS have no official code;
- ours in fp16 and in bf16 (the fp32 weights cast), against ours in fp32: max |diff| and PSNR (over the fp32
  output's range) of the clip's final latents (frames for Hallo2's super-resolution and MIDAS).

Each timed run is bracketed by `torch.cuda.synchronize()`, after one untimed warm-up; the median of `--repeats`
runs is reported (ours and upstream alternate which goes first) with `torch.cuda.max_memory_allocated` over the
run. A cell that runs out of memory or has no kernel on this device says so; the others still run. The DiTs
are timed over their denoising loop (the VAE and text encoders are not built at the official size); the UNet
clips include the VAE encode and decode. `--steps` defaults to 3 at the official size (times scale with steps;
the official counts are printed), `--frames` to the official clip. Without CUDA (and without --tiny) the script
prints "skipped: no GPU" and exits 0. It never fails on speed.

A second table measures the DiT engines' memory options (`--cpu-offload`, `--vae-tiling`; pipelines/memory.py) with
each DiT's release VAE (CogVideoX-5B's for Hallo3 and SkyReels-A1, Wan2.1's for Hallo4 and SkyReels-A2) in
`--memory-dtype` (bf16, the releases'): one clip (the denoising loop, then a VAE decode) with the model and the VAE
resident against both offloaded (time, peak GPU memory, max |diff|: offload only moves weights, so 0); the decode of
one clip's latents whole against tiles of half the frame (time, peak memory, max |diff| and PSNR). The same table
times diffusers' DPMSolverMultistepScheduler against the official scheduler at the same steps, in fp32, where our
path takes a scheduler: SkyReels-A1's release path (CogVideoXDDIM; max |diff| of the frames), Hallo's and
EchoMimic's `--scheduler dpm` against their DDIM (final latents), and Hallo4's and SkyReels-A2's `--scheduler dpm`
against their release UniPC on their tiny release fixtures (final latents; the frames' difference in the notes). `--tiny` runs the same code on the CPU, where
offload hooks attach but move nothing; `--no-memory` leaves the table out.
"""
from __future__ import annotations

import argparse
import gc
import json
import math
import statistics
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import torch

# this script's folder is first on sys.path (as Python runs a script): its sibling modules import by name, the Hallo
# engine benchmark (pipeline builder, upstream reader) among them
from reference_data import FIXTURES

DTYPES = {"fp16": torch.float16, "bf16": torch.bfloat16}
OFFICIAL_BENCH_STEPS = 3  # default steps per clip at the official size: enough for a per-step ratio


@dataclass
class Run:
    """One system built at one size and dtype: what one clip is, and the functions that make it."""

    clip: str  # size, frames, steps, guidance: what one clip is
    frames: int  # video frames one clip makes
    ours: Callable[[], torch.Tensor] | None
    upstream: Callable[[], torch.Tensor] | None = None
    modules: tuple = ()  # the DiT's model(s), for the CPU-offload row (the VAE is built there)
    pipeline: object = None  # a UNet pipeline whose `scheduler` the DPM-Solver row swaps


@dataclass
class Case:
    system: str
    official: str  # where the official sizes come from
    ours: str  # our path's speed options
    upstream: str  # the upstream-equivalent path, or why there is none
    build: Callable[..., Run]  # (tiny, device, dtype, steps, frames) -> Run


@dataclass
class Row:
    system: str
    clip: str = ""
    frames: int = 0
    seconds: dict = field(default_factory=dict)  # "ours" | "upstream" | "fp16" | "bf16" -> s per clip
    peak: dict = field(default_factory=dict)  # same keys -> bytes (CUDA) or None
    parity: dict = field(default_factory=dict)  # "upstream" | "fp16" | "bf16" -> (max |diff|, PSNR dB)
    notes: dict = field(default_factory=dict)  # a cell that could not run -> why


# ----------------------------------------------------------------------------------------------------- helpers
def made(factory: Callable[[], torch.nn.Module], device: torch.device, dtype: torch.dtype) -> torch.nn.Module:
    """The module `factory` builds, seeded, initialised on `device` in fp32 (the same weights for every dtype),
    then cast to `dtype`."""
    torch.manual_seed(0)
    with torch.device(device):
        module = factory()
    return torch.nn.Module.to(module, dtype).eval()  # diffusers' ModelMixin.to would warn about from_pretrained


def randn(*shape, seed: int, device, dtype) -> torch.Tensor:
    """Seeded normal noise drawn on the CPU (the same numbers on every device and dtype)."""
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed)).to(device, dtype)


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def free(device: torch.device) -> None:
    gc.collect()
    if device.type == "cuda":
        torch.cuda.empty_cache()


def timed(fn: Callable[[], torch.Tensor], device: torch.device) -> tuple[float, torch.Tensor, int | None]:
    """(seconds, output as float32 on the CPU, peak bytes allocated during the call on CUDA)."""
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    sync(device)
    t0 = time.perf_counter()
    with torch.inference_mode():
        out = fn()
    sync(device)
    seconds = time.perf_counter() - t0
    peak = torch.cuda.max_memory_allocated(device) if device.type == "cuda" else None
    return seconds, out.detach().float().cpu(), peak


def compare(out: torch.Tensor, ref: torch.Tensor) -> tuple[float, float]:
    """(max |out - ref|, PSNR in dB over ref's range); NaN where either is not finite."""
    if not (torch.isfinite(out).all() and torch.isfinite(ref).all()):
        return math.nan, math.nan
    diff = (out - ref).double()
    mse = float(diff.pow(2).mean())
    span = float(ref.max() - ref.min()) or 1.0
    return float(diff.abs().max()), math.inf if mse == 0 else 10 * math.log10(span ** 2 / mse)


def short(e: BaseException) -> str:
    if isinstance(e, torch.cuda.OutOfMemoryError):
        return "out of memory"
    text = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
    return f"{type(e).__name__}: {text[:90]}"


# ------------------------------------------------------------------------------------------------ the systems
def hallo(tiny, device, dtype, steps, frames) -> Run:
    import hallo_engine as he

    spec = he.tiny_spec() if tiny else he.full_spec()
    pipe = he.build_pipeline(spec, device, dtype, 0)
    frames = frames or spec.frames
    steps = steps or (spec.steps if tiny else OFFICIAL_BENCH_STEPS)
    inputs = he.make_inputs(pipe, spec, frames, spec.motion_frames, 0)

    def clip(upstream: bool):
        def fn():
            he.set_read_processors(pipe, upstream)
            return he.run_clip(pipe, inputs, steps, spec.guidance, device)[1]
        return fn

    return Run(f"{spec.image_size}px {frames}f {steps}/{spec.steps} DDIM steps, CFG {spec.guidance:g}", frames,
               clip(False), clip(True), pipeline=pipe)


SR_TINY = dict(img_size=64, nf=32, ch_mult=(1, 1, 1), attn_resolutions=(16,), codebook_size=8, emb_dim=32,
               dim_embd=32, n_head=2, n_layers=1, latent_size=256, connect_list=("32",),
               fuse_encoder_block={"64": 2, "32": 5, "16": 9}, fuse_generator_block={"16": 6, "32": 9, "64": 12})


def _sr_upstream_attention(block, x):
    """The official AttnBlock arithmetic: bmm, scale int(c) ** -0.5, softmax, bmm."""
    t = block.norm(x)
    q, k, v = block.q(t), block.k(t), block.v(t)
    b, c, h, w = q.shape
    weights = torch.bmm(q.reshape(b, c, h * w).permute(0, 2, 1), k.reshape(b, c, h * w)) * int(c) ** -0.5
    out = torch.bmm(v.reshape(b, c, h * w), weights.softmax(dim=2).permute(0, 2, 1)).reshape(b, c, h, w)
    return x + block.proj_out(out)


def hallo2(tiny, device, dtype, steps, frames) -> Run:
    """Hallo2's own stage: the video super-resolution network (its sampling is Hallo's, timed in Hallo's row)."""
    from talkinghead.nn import vq_super_resolution as sr
    from talkinghead.systems.hallo2.super_resolution import SR_CHUNK

    def factory():
        net = sr.VQVideoSuperResolution(sr.VQSuperResolutionConfig(**(SR_TINY if tiny else {})))
        with torch.no_grad():  # weights scaled by fan-in and sharper code logits: varied code picks
            for p in net.parameters():
                if p.dim() > 1:
                    p.normal_(0, p[0].numel() ** -0.5)
            net.idx_pred_layer[1].weight.mul_(4.0)
        return net

    net = made(factory, device, torch.float32)
    if dtype != torch.float32:  # the VQGAN in half precision; the code transformer stays fp32 (discrete codes)
        for part in (net.encoder, net.generator, net.fuse_convs_dict):
            part.to(dtype)
    frames = frames or (3 if tiny else SR_CHUNK)
    side = net.config.img_size
    x = randn(1, frames, 3, side, side, seed=1, device=device, dtype=torch.float32).clamp(-1, 1)

    def restore():
        if dtype == torch.float32:
            return net.restore(x, 1.0).video
        lq, skips = net.encode(x.flatten(0, 1).to(dtype))
        logits = net.code_logits(lq.float(), frames)
        idx = logits.softmax(2).topk(1, dim=2).indices[..., 0]
        quant = sr.adain(net.quantize.lookup(idx, (net.config.latent_side,) * 2), lq.float())
        return net.decode(quant.to(dtype), skips, 1.0)

    def upstream():
        patched = sr.AttnBlock.forward
        sr.AttnBlock.forward = _sr_upstream_attention
        for layer in net.ft_layers:  # the official layers compute (and discard) the averaged attention weights
            for mha in (layer.self_attn, layer.temp_attn):
                mha.forward = (lambda real: lambda q, k, v, need_weights=True, **kw: real(
                    q, k, v, need_weights=True, **kw))(type(mha).forward.__get__(mha))
        try:
            return net.restore(x, 1.0).video
        finally:
            sr.AttnBlock.forward = patched
            for layer in net.ft_layers:
                del layer.self_attn.forward, layer.temp_attn.forward

    return Run(f"SR {side}px {frames}f, fidelity 1", frames, lambda: restore().reshape(-1, *x.shape[2:]),
               (lambda: upstream().reshape(-1, *x.shape[2:])) if dtype == torch.float32 else None)


def echomimic(tiny, device, dtype, steps, frames) -> Run:
    import dataclasses

    import hallo_engine as he
    from diffusers import AutoencoderKL

    from talkinghead.systems.echomimic.model import EchoMimicConfig, EchoMimicNet
    from talkinghead.systems.echomimic.pipeline import EchoMimicPipeline, SamplingConfig

    if tiny:
        cfg = json.loads((FIXTURES / "echomimic" / "echomimic_tiny" / "config.json").read_text())
        config = EchoMimicConfig.from_release_configs(cfg["reference_unet2d_config"], cfg["unet_additional_kwargs"],
                                                      cfg["face_locator"])
        vae_kwargs, run = cfg["vae_constructor_kwargs"], cfg["run"]
        s = SamplingConfig(steps=run["num_inference_steps"], guidance_scale=run["guidance_scale"],
                           context_frames=run["context_frames"], context_overlap=run["context_overlap"])
        side, frames = run["height"], frames or 8
    else:  # infer_audio2vid.py: 30 steps, windows of 12 overlapping by 3, 512 px; sd-vae-ft-mse
        config, s, side, frames = EchoMimicConfig(), SamplingConfig(), 512, frames or 24
        vae_kwargs = {"block_out_channels": (128, 256, 512, 512), "layers_per_block": 2, "latent_channels": 4,
                      "down_block_types": ("DownEncoderBlock2D",) * 4, "up_block_types": ("UpDecoderBlock2D",) * 4}

    def factory():
        net = EchoMimicNet(config)
        for p in net.face_locator.conv_out.parameters():  # non-zero, so the face locator does work
            torch.nn.init.normal_(p, std=0.02)
        return net

    net = made(factory, device, dtype)
    vae = made(lambda: AutoencoderKL(**{k: tuple(v) if isinstance(v, list) else v for k, v in vae_kwargs.items()}),
               device, dtype)
    pipe = EchoMimicPipeline(net, vae)
    official_steps = s.steps
    s = dataclasses.replace(s, steps=steps or (s.steps if tiny else OFFICIAL_BENCH_STEPS))
    h = side // 8
    audio = randn(1, frames, 50, 384, seed=1, device="cpu", dtype=torch.float32)
    ref = randn(1, 4, h, h, seed=2, device=device, dtype=dtype)
    noise = randn(1, 4, frames, h, h, seed=3, device="cpu", dtype=torch.float32).clamp(-1.5, 1.5)
    mask = torch.zeros(1, 1, 1, side, side)
    mask[..., side // 4: 3 * side // 4, side // 4: 3 * side // 4] = 1

    def clip(upstream: bool):
        settings = s if upstream else dataclasses.replace(s, window_batch=frames)  # every window in one call

        def fn():
            he.set_read_processors(pipe, upstream)
            return pipe.sample(ref, audio, pipe.location(mask), noise, settings)
        return fn

    return Run(f"{side}px {frames}f {s.steps}/{official_steps} DDIM steps, CFG {s.guidance_scale:g}, windows "
               f"{s.context_frames}/{s.context_overlap}", frames, clip(False), clip(True), pipeline=pipe)


def _reference_video(kind: str, tiny: bool, device, dtype, steps, frames) -> Run:
    """EMO, Loopy and EMO2 (stage 2): the trained engines' sampler, DDIM over `net.predict` without guidance."""
    from diffusers import DDIMScheduler

    from talkinghead.models.reference_video import TRAIN_SCHEDULER
    from talkinghead.models.unet3d import SD15_UNET
    from talkinghead.nn.temporal import TemporalConfig
    from talkinghead.sampling import denoise

    unet = {**SD15_UNET, "block_out_channels": [32, 32, 32, 32], "layers_per_block": 1, "attention_head_dim": 2,
            "cross_attention_dim": 32, "sample_size": 8} if tiny else dict(SD15_UNET)
    motion = TemporalConfig(num_attention_heads=2) if tiny else TemporalConfig()
    tokens, audio_dim = (2, 16) if tiny else (2, 768)  # wav2vec: two 50 Hz features per 25 fps frame
    time_dim = 4 * unet["block_out_channels"][0]
    if kind == "emo":
        from talkinghead.systems.emo.model import EMOConfig, EMONet
        from talkinghead.nn.speed import SpeedConfig

        factory = lambda: EMONet(EMOConfig(unet=unet, audio_dim=audio_dim, motion=motion,  # noqa: E731
                                           speed=SpeedConfig(dim=time_dim)))
    elif kind == "loopy":
        from talkinghead.systems.loopy.model import LoopyConfig, LoopyNet
        from talkinghead.nn.loopy import AudioToLatentsConfig

        a2l = AudioToLatentsConfig(audio_dim=tokens * audio_dim, time_embed_dim=time_dim,
                                   **(dict(dim=32, heads=2, num_latents=8) if tiny else {}))
        factory = lambda: LoopyNet(LoopyConfig(unet=unet, audio_dim=audio_dim, motion=motion,  # noqa: E731
                                               audio_to_latents=a2l))
    else:
        from talkinghead.systems.emo2.model import EMO2Stage2Config, EMO2Stage2Net, PoseDiscriminatorConfig

        factory = lambda: EMO2Stage2Net(EMO2Stage2Config(  # noqa: E731
            unet=unet, audio_dim=audio_dim, motion=motion,
            **(dict(guider_channels=(8, 8, 16, 16), discriminator=PoseDiscriminatorConfig(channels=(16,),
                                                                                         norm_groups=8)) if tiny else {})))
    net = made(factory, device, dtype)
    side = 64 if tiny else 512  # pixels; latents are 1/8
    h, m = side // 8, 2 if tiny else 4  # EMO: 4 motion frames before each 12-frame clip
    frames = frames or (4 if tiny else 12)
    steps = steps or (2 if tiny else OFFICIAL_BENCH_STEPS)
    batch = {"audio": randn(1, frames, tokens, audio_dim, seed=1, device=device, dtype=dtype)}
    if kind == "loopy":
        batch["ref"] = randn(1, 1, 4, h, h, seed=2, device=device, dtype=dtype)
        batch["history"] = randn(1, 4 * m, 4, h, h, seed=3, device=device, dtype=dtype)
        batch["head_motion"] = torch.rand(1, frames, 1, generator=torch.Generator().manual_seed(4)).to(device, dtype)
        batch["expression"] = torch.rand(1, frames, 1, generator=torch.Generator().manual_seed(5)).to(device, dtype)
    else:
        batch["ref"] = randn(1, 1 + m, 4, h, h, seed=2, device=device, dtype=dtype)
    if kind == "emo":
        batch["speed"] = torch.rand(1, frames, generator=torch.Generator().manual_seed(6)).to(device, dtype)
        region = torch.zeros(1, 1, frames, side, side)
        region[..., side // 4: 3 * side // 4, side // 4: 3 * side // 4] = 1
        batch["face_region"] = region.to(device, dtype)
    if kind == "emo2":
        batch["pose_maps"] = randn(1, 4, frames, side, side, seed=7, device=device, dtype=dtype).clamp(0, 1)
        batch["hand_confidence"] = torch.rand(1, frames, 2, generator=torch.Generator().manual_seed(8)).to(device,
                                                                                                        dtype)
    noise = randn(1, 4, frames, h, h, seed=9, device=device, dtype=dtype)

    def clip():
        if kind == "loopy":
            batch["generator"] = torch.Generator().manual_seed(3)  # the motion-latent draw, the same every run
        scheduler = DDIMScheduler(**TRAIN_SCHEDULER)
        scheduler.set_timesteps(steps)
        return denoise(lambda x, t: net.predict(x, t, batch), scheduler, noise.clone())

    return Run(f"{side}px {frames}f ({h}x{h} latents), {m} motion frames, {steps} DDIM steps, no CFG", frames, clip)


def emo(*a) -> Run:
    return _reference_video("emo", *a)


def loopy(*a) -> Run:
    return _reference_video("loopy", *a)


def emo2(*a) -> Run:
    return _reference_video("emo2", *a)


def midas(tiny, device, dtype, steps, frames) -> Run:
    from talkinghead.nn.dc_video_autoencoder import DCVideoAEConfig
    from talkinghead.systems.midas.model import DCVideoAutoencoder, MidasConfig, MidasTransformer
    from talkinghead.systems.midas.pipeline import MidasPipeline

    ae = made(lambda: DCVideoAutoencoder(DCVideoAEConfig.tiny() if tiny else DCVideoAEConfig()), device, dtype)
    tr = made(lambda: MidasTransformer(MidasConfig.tiny() if tiny else MidasConfig()), device, dtype)
    pipe, side, c = MidasPipeline(ae, tr), 8 if tiny else 512, tr.config
    chunks = max(1, -(-(frames or 2 * c.chunk_frames) // c.chunk_frames))
    steps = steps or c.head.sample_steps
    reference = randn(1, 3, side, side, seed=1, device=device, dtype=dtype).clamp(-1, 1)
    audio = [randn(1, c.audio_features_per_chunk, c.audio.feature_dim, seed=10 + k, device=device, dtype=dtype)
             for k in range(chunks)]
    text = randn(1, c.text_tokens, c.text_dim, seed=2, device=device, dtype=dtype)

    def stream():
        return torch.stack(list(pipe.stream(reference, audio, text=text, steps=steps,
                                            generator=torch.Generator().manual_seed(0))))

    return Run(f"{side}px {chunks} chunks x {c.chunk_frames}f, head {steps} steps", chunks * c.chunk_frames, stream)


def hallo3(tiny, device, dtype, steps, frames) -> Run:
    from talkinghead.systems.hallo3.model import HALLO3_TINY, Hallo3Model
    from talkinghead.nn.dit import latent_frame_count
    from talkinghead.systems.hallo3.pipeline import Hallo3Sampler

    model = made(lambda: Hallo3Model(**HALLO3_TINY) if tiny else Hallo3Model(), device, dtype)
    c = model.transformer.config
    frames = frames or (9 if tiny else 49)
    height, width = (32, 32) if tiny else (480, 720)
    f, ch, h, w = latent_frame_count(frames, c.temporal_compression_ratio), c.out_channels, height // 8, width // 8
    window, layers, channels = (5, 12, 768) if model.audio_proj.proj1.in_features == 5 * 12 * 768 else (3, 2, 8)
    text = randn(1, getattr(c, "max_text_seq_length", 16), c.text_embed_dim, seed=1, device=device, dtype=dtype)
    cond_text = torch.cat([torch.zeros_like(text), text])  # [uncond; cond] as the engine batches them
    face = randn(1, model.face_proj.proj.in_features, seed=2, device=device, dtype=dtype).expand(2, -1)
    audio = randn(1, frames, window, layers, channels, seed=3, device=device, dtype=dtype)
    audio_in = torch.cat([torch.zeros_like(audio), audio])
    motion_in = randn(1, 1, ch, h, w, seed=4, device=device, dtype=dtype).expand(2, -1, -1, -1, -1)
    ref_latent = randn(1, 1, ch, h, w, seed=5, device=device, dtype=dtype)
    noise = randn(1, f, ch, h, w, seed=6, device=device, dtype=torch.float32)
    steps = steps or (3 if tiny else OFFICIAL_BENCH_STEPS)

    def clip():
        model.encode_reference(ref_latent, torch.zeros_like(text))  # once per clip, as the release

        def predict(x, index):
            t = torch.full((x.shape[0],), float(index), device=device)
            return model(x.to(dtype), t, cond_text, face, audio_in, motion_in, reuse_reference=True)
        return Hallo3Sampler().sample(predict, noise.clone(), steps, 3.5, torch.Generator().manual_seed(0))

    return Run(f"{height}x{width} {frames}f ({f} latent), {steps} VPSDE-DPM++ steps, CFG 3.5", frames, clip,
               modules=(model,))


def hallo4(tiny, device, dtype, steps, frames) -> Run:
    from talkinghead.systems.hallo4.model import HALLO4_AUDIO, WAN_TEXT_DIM, WAN_VACE_1_3B, Hallo4WanModel
    from talkinghead.systems.hallo4.pipeline import sample_clip

    tiny_audio = dict(seq_len=5, blocks=2, channels=16, intermediate_dim=32, context_tokens=32)
    conf = dict(dim=32, ffn_dim=64, num_heads=2, num_layers=4, freq_dim=32, text_len=12, vace_layers=[0, 2]) \
        if tiny else dict(WAN_VACE_1_3B)  # tiny: the hallo4_tiny reference data's sizes
    audio_conf = tiny_audio if tiny else HALLO4_AUDIO
    model = made(lambda: Hallo4WanModel(**conf, audio=audio_conf), device, dtype)
    frames = frames or (9 if tiny else 81)
    height, width = (32, 48) if tiny else (480, 832)
    f, h, w = (frames - 1) // 4 + 1, height // 8, width // 8
    noise = randn(16, 1 + f, h, w, seed=1, device=device, dtype=torch.float32)
    ref_latent = randn(16, 1, h, w, seed=2, device=device, dtype=dtype)
    context = randn(16, WAN_TEXT_DIM, seed=3, device=device, dtype=dtype)
    negative = randn(24, WAN_TEXT_DIM, seed=4, device=device, dtype=dtype)
    vace = randn(96, 1 + f, h, w, seed=5, device=device, dtype=dtype)
    skeleton = randn(1, 16, frames, h, w, seed=6, device=device, dtype=dtype)
    audio = randn(1, frames, audio_conf["seq_len"], audio_conf["blocks"], audio_conf["channels"], seed=7,
                  device=device, dtype=dtype)
    steps = steps or (3 if tiny else OFFICIAL_BENCH_STEPS)

    def clip(batched: bool):
        return lambda: sample_clip(model, noise, ref_latent, context, negative, vace, skeleton, audio, steps, 8.0, 6.0,
                                   batched_cfg=batched)

    return Run(f"{height}x{width} {frames}f, {steps}/40 UniPC steps, CFG 6", frames, clip(True), clip(False),
               modules=(model,))


def skyreels_a1(tiny, device, dtype, steps, frames) -> Run:
    from talkinghead.systems.skyreels_a1 import model as a1

    model = made(lambda: a1.SkyReelsA1(a1.TINY if tiny else a1.OFFICIAL), device, dtype)
    cfg = model.config
    frames = frames or (9 if tiny else 49)
    height, width = (16, 16) if tiny else (480, 720)
    scale = 2 ** (len(cfg.vae["block_out_channels"]) - 1)
    c, h, w = cfg.latent_channels, height // scale, width // scale
    batch = {"ref_latent": randn(1, 1, c, h, w, seed=1, device=device, dtype=dtype),
             "guidance": randn(1, 3, frames, height, width, seed=2, device=device, dtype=dtype).clamp(-1, 1),
             "identity": randn(1, 4 if tiny else 729, cfg.identity_dim, seed=3, device=device, dtype=dtype)}
    steps = steps or (3 if tiny else OFFICIAL_BENCH_STEPS)

    def clip():
        return model.sample(batch, steps, torch.Generator(device).manual_seed(0), guidance_scale=3.0)

    return Run(f"{height}x{width} {frames}f, {steps}/10 UniPC steps, CFG 3 (batched)", frames, clip, modules=(model,))


def skyreels_a2(tiny, device, dtype, steps, frames) -> Run:
    from talkinghead.systems.skyreels_a2 import model as a2
    from talkinghead.nn.dit import latent_frame_count

    model = made(lambda: a2.SkyReelsA2(a2.TINY if tiny else a2.OFFICIAL), device, dtype)
    cfg = model.config
    frames = frames or (9 if tiny else 81)
    height, width = (32, 32) if tiny else (480, 832)
    f, c, h, w = latent_frame_count(frames, 4), cfg.latent_channels, height // 8, width // 8
    clip_px = cfg.clip.get("image_size", 224)
    batch = {"ref_latents": randn(1, 2, c, h, w, seed=1, device=device, dtype=dtype),
             "ref_images": randn(1, 2, 3, clip_px, clip_px, seed=2, device=device, dtype=dtype).clamp(-1, 1)}
    steps = steps or (3 if tiny else OFFICIAL_BENCH_STEPS)

    def clip(mode: str):
        return lambda: model.sample(batch, f, steps, torch.Generator(device).manual_seed(0), guidance_scale=5.0,
                                    cfg_mode=mode)

    return Run(f"{height}x{width} {frames}f ({f} latent), 2 references, {steps}/50 UniPC steps, CFG 5", frames,
               clip("batch"), clip("serial"), modules=(model,))


REFERENCE_READ = ("reference-attention read: ours skips the unconditional rows' discarded pass; upstream runs it "
                  "for every row, then overwrites those rows with plain self-attention")
CASES = {c.system: c for c in (
    Case("hallo", "HalloNet() = configs/inference/default.yaml (SD1.5 UNet), sd-vae-ft-mse; 512px, 16 frames",
         "our reference read, CFG in one batch, SDPA", REFERENCE_READ, hallo),
    Case("hallo2", "net_g.pth manifest sizes (VQSuperResolutionConfig()), 512px chunks of 16 frames",
         "SDPA in the VQGAN attention blocks, fused MultiheadAttention without weights",
         "explicit bmm/softmax attention blocks, MultiheadAttention computing its averaged weights", hallo2),
    Case("echomimic", "EchoMimicConfig() = the release's UNet configs, sd-vae-ft-mse; infer_audio2vid.py settings",
         "our reference read, all context windows of a step in one UNet call",
         REFERENCE_READ + "; one context window per call", echomimic),
    Case("emo", "EMO paper: SD1.5-size reference and denoising UNets, 512px, 12-frame clips, 4 motion frames",
         "DDIM, no guidance", "no official code (weights: own)", emo),
    Case("loopy", "Loopy paper: SD1.5-size UNets, 512px, 12-frame clips, motion-frame history",
         "DDIM, no guidance", "no official code (weights: own)", loopy),
    Case("emo2", "EMO2 paper: SD1.5-size stage-2 UNets with the pose guider, 512px", "DDIM, no guidance",
         "no official code (weights: own)", emo2),
    Case("midas", "MidasConfig() (Qwen2.5-3B width) + the 64x DC video autoencoder, 512px",
         "streaming with a KV cache", "no official code (weights: own)", midas),
    Case("hallo3", "Hallo3Model() = the SAT release's CogVideoX-5B-I2V sizes; 480x720, 49 frames",
         "CFG rows in one batch, identity reference once per clip", "ours is the official path", hallo3),
    Case("hallo4", "Wan2.1-VACE 1.3B (WAN_VACE_1_3B) + Hallo4 audio/pose projections; 480x832, 81 frames",
         "both guidance rows in one model call (batched_cfg)", "two model calls per step, as generate()", hallo4),
    Case("skyreels-a1", "SkyReels-A1 release: CogVideoX-5B transformer, pose guider; 480x720, 49 frames",
         "CFG rows in one batch", "ours is the official path (the release pipeline batches CFG)", skyreels_a1),
    Case("skyreels-a2", "SkyReels-A2 release: Wan2.1-I2V 14B transformer, CLIP ViT-H; 480x832, 81 frames",
         "both guidance branches in one batch (cfg_mode batch)", "two transformer calls per step, as infer.py",
         skyreels_a2),
)}


def registry_systems() -> list[str]:
    """Every registry system with weights and an engine, in registry order."""
    from talkinghead.systems import SYSTEMS

    return [s.name for s in SYSTEMS.values() if s.weights != "none" and s.engine is not None]


# ----------------------------------------------------------------------------------------------------- runs
def time_paths(case: Case, tiny: bool, device: torch.device, dtype: torch.dtype, args, upstream: bool,
               repeats: int, warmups: int) -> tuple[Run, dict, dict, dict]:
    """Build `case` in `dtype` and time ours (and the upstream-equivalent): (the run's description with its
    functions dropped, median seconds, last outputs, peak bytes), by path. The model lives only in this call, so
    it is freed before the next dtype is built."""
    run = case.build(tiny, device, dtype, args.steps, args.frames)
    paths = {"ours": run.ours, **({"upstream": run.upstream} if upstream and run.upstream is not None else {})}
    for _ in range(warmups):
        for name in paths:
            with torch.inference_mode():
                paths[name]()  # warm-up: kernels chosen, caches filled
    times: dict[str, list[float]] = {k: [] for k in paths}
    outs: dict[str, torch.Tensor] = {}
    peaks: dict[str, int | None] = {}
    for r in range(repeats):
        for name in (list(paths) if r % 2 == 0 else list(paths)[::-1]):
            seconds, outs[name], peak = timed(paths[name], device)
            times[name].append(seconds)
            peaks[name] = max(peaks.get(name) or 0, peak or 0) or None
    described = Run(run.clip, run.frames, ours=None)
    return described, {k: statistics.median(v) for k, v in times.items()}, outs, peaks


def measure(case: Case, tiny: bool, device: torch.device, args) -> Row:
    row = Row(case.system)
    repeats = args.repeats or (1 if tiny else 2)
    warmups = 1 if device.type == "cuda" else 0  # a CPU has no kernels to pick or caches to fill
    reference = None
    for name, dtype in (("ours", torch.float32), *DTYPES.items()):
        try:
            run, seconds, outs, peaks = time_paths(case, tiny, device, dtype, args, name == "ours", repeats, warmups)
        except Exception as e:  # noqa: BLE001 - a cell that cannot run must not stop the table
            row.notes[name] = short(e)  # (the traceback, which holds the model, goes with `e` here)
        free(device)
        if name in row.notes:
            if name == "ours":
                return row
            continue
        if name == "ours":
            row.clip, row.frames, reference = run.clip, run.frames, outs["ours"]
            row.seconds.update(seconds)
            row.peak.update(peaks)
            if "upstream" in outs:
                row.parity["upstream"] = compare(outs["ours"], outs["upstream"])
        else:
            row.seconds[name], row.peak[name] = seconds["ours"], peaks["ours"]
            row.parity[name] = compare(outs["ours"], reference)
    return row


def fmt(x: float | None, spec: str = ".3g") -> str:
    if x is None:
        return "-"
    if isinstance(x, float) and math.isinf(x):
        return "inf"
    return format(x, spec)


def print_table(rows: list[Row], device: torch.device) -> None:
    head = (f"{'system':<12} {'ours s/f':>9} {'upstr s/f':>9} {'ours/up':>7} {'|ours-up|':>9} {'fp16 s/f':>9} "
            f"{'fp16 |d|':>9} {'fp16 dB':>7} {'bf16 s/f':>9} {'bf16 |d|':>9} {'bf16 dB':>7} {'peak GiB':>8}")
    print(head)
    print("-" * len(head))
    for r in rows:
        if "ours" in r.notes:
            print(f"{r.system:<12} {r.notes['ours']}")
            continue
        per = {k: v / r.frames for k, v in r.seconds.items()}
        up = per.get("upstream")
        cells = [fmt(per["ours"]), fmt(up), fmt(per["ours"] / up, ".3f") if up else "-",
                 fmt(r.parity.get("upstream", (None,))[0], ".2e")]
        for name in DTYPES:
            if name in r.notes:
                cells += ["n/a", "n/a", "n/a"]
            else:
                d, psnr = r.parity[name]
                cells += [fmt(per[name]), fmt(d, ".2e"), fmt(psnr, ".1f")]
        peak = max((p for p in r.peak.values() if p), default=None)
        cells.append(fmt(peak / 2 ** 30, ".2f") if peak else "-")
        widths = (9, 9, 7, 9, 9, 9, 7, 9, 9, 7, 8)
        print(f"{r.system:<12} " + " ".join(f"{c:>{w}}" for c, w in zip(cells, widths)))


# ------------------------------------------------------------------- the DiT memory options and DPM-Solver
DIT_VAES = {"hallo3": "cogvideox", "skyreels-a1": "cogvideox", "hallo4": "wan", "skyreels-a2": "wan"}
# (height, width, frames) the VAE rows decode: tiny, then official (CogVideoX-5B at 480x720, Wan2.1 at 480x832)
DIT_FRAMES = {"cogvideox": ((32, 48, 9), (480, 720, 49)), "wan": ((32, 48, 9), (480, 832, 81))}
WAN_TINY = dict(base_dim=8, z_dim=16, dim_mult=[1, 2, 4, 4], num_res_blocks=1, temperal_downsample=[False, True, True])
A1_SCHEDULER = FIXTURES / "skyreels_a1" / "skyreels_a1_tiny" / "scheduler" / "scheduler_config.json"


@dataclass
class MemoryRow:
    system: str
    vae: str = ""
    seconds: dict = field(default_factory=dict)  # "resident" | "offload" | "whole" | "tiled" | "official" | "dpm"
    peak: dict = field(default_factory=dict)  # same keys -> bytes (CUDA) or None
    parity: dict = field(default_factory=dict)  # "offload" | "tiled" | "dpm" -> (max |diff|, PSNR dB)
    notes: dict = field(default_factory=dict)  # "offload" | "tiling" | "dpm" -> why it did not run


def dit_vae(family: str, tiny: bool, device, dtype) -> torch.nn.Module:
    """The release's VAE at its official size (CogVideoX-5B's: SkyReels-A1's config, = Hallo3's; Wan2.1's: diffusers'
    defaults), or a tiny one, with seeded weights."""
    from diffusers import AutoencoderKLCogVideoX, AutoencoderKLWan

    from talkinghead.systems.skyreels_a1 import model as a1

    if family == "cogvideox":
        return made(lambda: AutoencoderKLCogVideoX(**(a1.TINY if tiny else a1.OFFICIAL).vae), device, dtype)
    return made(lambda: AutoencoderKLWan(**WAN_TINY) if tiny else AutoencoderKLWan(), device, dtype)


def repeat_timed(fn: Callable[[], torch.Tensor], device, repeats: int, warmups: int):
    """(median seconds, last output, peak bytes) of `repeats` runs of `fn` after `warmups` untimed ones."""
    for _ in range(warmups):
        with torch.inference_mode():
            fn()
    runs = [timed(fn, device) for _ in range(repeats)]
    peaks = [p for _, _, p in runs if p is not None]
    return statistics.median(s for s, _, _ in runs), runs[-1][1], max(peaks) if peaks else None


def vae_latents(vae, family: str, tiny: bool, frames: int | None, device, dtype) -> tuple[torch.Tensor, tuple]:
    """Seeded latents (1, c, f, h, w) of one clip at the system's frame size, and that size (H, W)."""
    height, width, n = DIT_FRAMES[family][0 if tiny else 1]
    n = frames or n
    if family == "cogvideox":
        s, c = 2 ** (len(vae.config.block_out_channels) - 1), vae.config.latent_channels
    else:
        s, c = int(vae.spatial_compression_ratio), vae.config.z_dim
    return randn(1, c, (n - 1) // 4 + 1, height // s, width // s, seed=11, device=device, dtype=dtype), (height, width)


def measure_memory(name: str, tiny: bool, device: torch.device, args) -> MemoryRow:
    """The DiT `name` with its release VAE: one clip (the denoising loop, then a decode) with every model on the
    device against `--cpu-offload` (the model and the VAE on the CPU, each moved to the device for its own
    forward); the decode whole against `--vae-tiling on`; and, where our path takes a scheduler, the official
    sampler against diffusers' DPMSolverMultistepScheduler at the same steps."""
    from talkinghead.pipelines.memory import set_vae_tiling

    family = DIT_VAES[name]
    dtype = torch.float32 if device.type == "cpu" else DTYPES[args.memory_dtype]
    repeats, warmups = args.repeats or (1 if tiny else 2), (1 if device.type == "cuda" else 0)
    row = MemoryRow(name, family)
    vae = dit_vae(family, tiny, device, dtype)
    latents, hw = vae_latents(vae, family, tiny, args.frames, device, dtype)
    decode = lambda: vae.decode(latents).sample  # noqa: E731
    try:  # tiling: the same latents decoded whole and by tiles of half the frame
        set_vae_tiling(vae, "off", hw)
        row.seconds["whole"], whole, row.peak["whole"] = repeat_timed(decode, device, repeats, warmups)
        set_vae_tiling(vae, "on", hw)
        row.seconds["tiled"], tiled, row.peak["tiled"] = repeat_timed(decode, device, repeats, warmups)
        row.parity["tiled"] = compare(tiled, whole)
    except Exception as e:  # noqa: BLE001 - a cell that cannot run must not stop the table
        row.notes["tiling"] = "could not run: " + short(e)
    finally:
        set_vae_tiling(vae, "off", hw)
        free(device)
    try:
        offload_cells(row, CASES[name].build(tiny, device, dtype, args.steps, args.frames), vae, decode, device,
                      repeats, warmups)  # the DiT lives only in that call
    except Exception as e:  # noqa: BLE001
        row.notes["offload"] = "could not run: " + short(e)
    free(device)
    if name in ("skyreels-a1", *DPM_FLOW):
        try:
            if name == "skyreels-a1":
                dpm_a1(row, tiny, device, torch.float32, args, repeats, warmups)
            else:
                dpm_flow(row, name, device, args, repeats, warmups)
        except Exception as e:  # noqa: BLE001
            row.notes["dpm"] = "could not run: " + short(e)
    else:
        row.notes["dpm"] = DPM_NOTES[name]
    free(device)
    return row


def offload_cells(row: MemoryRow, run: Run, vae, decode: Callable[[], torch.Tensor], device, repeats: int,
                  warmups: int) -> None:
    """One clip (the run's denoising loop, then `decode`) with the DiT and the VAE resident on the device, then
    with both offloaded (`set_cpu_offload`); their times, peaks and max |diff| into `row`."""
    from talkinghead.pipelines.memory import onload, set_cpu_offload

    models = [*run.modules, vae]

    def clip():
        for m in run.modules:  # our own DiT paths enter through sample(), not forward: onload first
            onload(m)
        out = run.ours()
        return torch.cat([out.float().flatten(), decode().float().flatten()])

    row.seconds["resident"], resident, row.peak["resident"] = repeat_timed(clip, device, repeats, warmups)
    set_cpu_offload(models, device, True)
    try:
        row.seconds["offload"], offloaded, row.peak["offload"] = repeat_timed(clip, device, repeats, warmups)
    finally:
        set_cpu_offload(models, device, False)
    row.parity["offload"] = compare(offloaded, resident)


# the UNet engines whose --scheduler dpm this table measures against their official DDIM: name -> the engine's factory
UNET_DPM = {"hallo": "talkinghead.systems.hallo.engine:_scheduler",
            "echomimic": "talkinghead.systems.echomimic.engine:make_scheduler"}


def measure_unet_dpm(name: str, tiny: bool, device: torch.device, args) -> MemoryRow:
    """The engine's own `--scheduler dpm` (DPMSolverMultistepScheduler, DPM-Solver++) against its official DDIM on
    our path at the same steps, in fp32: time per clip and max |diff| of the final latents."""
    from talkinghead.systems import resolve

    row = MemoryRow(name, "-")
    repeats, warmups = args.repeats or (1 if tiny else 2), (1 if device.type == "cuda" else 0)
    try:
        run = CASES[name].build(tiny, device, torch.float32, args.steps, args.frames)
        pipe, official = run.pipeline, run.pipeline.scheduler
        row.seconds["official"], ddim, row.peak["official"] = repeat_timed(run.ours, device, repeats, warmups)
        pipe.scheduler = resolve(UNET_DPM[name].replace("talkinghead.", ".", 1))("dpm")
        try:
            row.seconds["dpm"], dpm, row.peak["dpm"] = repeat_timed(run.ours, device, repeats, warmups)
        finally:
            pipe.scheduler = official
        row.parity["dpm"] = compare(dpm, ddim)
        row.notes["dpm steps"] = f"{run.clip}; the same steps with --scheduler dpm, final latents"
    except Exception as e:  # noqa: BLE001
        row.notes["dpm"] = "could not run: " + short(e)
    free(device)
    return row


DPM_NOTES = {"hallo3": "its official sampler already is DPM++ (VPSDE DPM++ 2M SDE)"}
# the flow DiTs whose --scheduler dpm is measured on their tiny release fixture: name -> the fixture's folder
DPM_FLOW = {"hallo4": ("hallo4", "hallo4_tiny"), "skyreels-a2": ("skyreels_a2", "skyreels_a2_tiny")}


def flow_clip(name: str, folder: Path, device, steps: int | None) -> tuple[Callable[[str], Callable], int, dict]:
    """(sampler name -> a function running one clip of the release fixture `folder` with it and returning its final
    latents and uint8 frames flattened into one tensor, the step count, a dict whose "latents" each run sets to
    how many of those values are latents): Hallo4's first recorded clip (its
    stored inputs: noise, reference latent, contexts, VACE context, skeleton latents, audio windows), decoded by
    the fixture's Wan VAE; SkyReels-A2's whole release path from the stored references, prompts and seed."""
    config, seen = json.loads((folder / "config.json").read_text()), {}
    if name == "hallo4":
        from safetensors.torch import load_file

        from talkinghead.systems.hallo4.pipeline import WanLatents, sample_clip
        from talkinghead.systems.hallo4.release import VAE_FILE, load_dit, load_wan_vae

        run, io, a = config["run"], load_file(str(folder / "io.safetensors")), config.get("audio_proj_ctor", {})
        dit = load_dit(folder, audio={k: a[k] for k in ("seq_len", "blocks", "channels", "intermediate_dim",
                                                        "context_tokens") if k in a}).to(device)
        vae = load_wan_vae(folder / VAE_FILE, config.get("vae_cfg", {}).get("dim", 96)).to(device)
        latents = WanLatents(vae)
        inputs = [io[k].to(device) for k in ("b.noise", "b.ref_latent", "in.context_cond", "in.context_null",
                                              "b.vace_context", "b.skeleton_latents", "b.audio_tensor")]
        inputs[2:4] = [x.float() for x in inputs[2:4]]
        steps = steps or run["sample_steps"]

        def clip(sampler: str):
            def go():
                final = sample_clip(dit, *inputs, steps, run["sample_shift"], run["guide_scale"],
                                    run.get("context_scale", 1.0), sampler=sampler)
                frames = ((latents.decode(final[:, 1:]) + 1) / 2 * 255).to(torch.uint8)
                seen["latents"] = final[:, 1:].numel()
                return torch.cat([final[:, 1:].flatten().float().cpu(), frames.flatten().float().cpu()])
            return go
        return clip, steps, seen
    from talkinghead.systems.skyreels_a2.pipeline import sample_a2_release
    from talkinghead.systems.skyreels_a2.release import load_release
    from talkinghead.systems.skyreels_a2.verify import references
    from talkinghead.systems.skyreels_common import ReferenceRun
    from talkinghead.verify import generator_seed

    ref = ReferenceRun(folder)
    run, prompts = ref.config["run"], ref.config.get("inputs", {})
    height, width = int(run["height"]), int(run["width"])
    vae_images, clip_images = references(ref.io, ref.config, height, width)
    release = load_release(folder, torch.float32, device)
    steps = steps or int(run["num_inference_steps"])

    def clip(sampler: str):
        def go():
            trace = {}
            frames = sample_a2_release(release, vae_images, clip_images, prompts.get("prompt", ""),
                                       prompts.get("negative_prompt", ""), int(run["num_frames"]), steps,
                                       float(run["guidance_scale"]), sampler=sampler, trace=trace,
                                       generator=torch.Generator(device).manual_seed(generator_seed(run)))
            seen["latents"] = trace["final_latents"].numel()
            return torch.cat([trace["final_latents"].flatten().float().cpu(),
                              torch.from_numpy(frames).flatten().float()])
        return go
    return clip, steps, seen


def dpm_flow(row: MemoryRow, name: str, device, args, repeats: int, warmups: int) -> None:
    """`--scheduler dpm` of a flow DiT (DPM-Solver++ on the release's sigmas) against its release UniPC, at the same
    steps, on its tiny release fixture in fp32 (no official-size weights here): time per clip, max |diff| of the
    final latents (the table's cell) and of the uint8 frames (in the notes)."""
    folder = FIXTURES.joinpath(*DPM_FLOW[name])
    if not (folder / "config.json").is_file():
        row.notes["dpm"] = f"no release fixture at {folder}"
        return
    clip, steps, seen = flow_clip(name, folder, device, args.steps)
    row.seconds["official"], unipc, row.peak["official"] = repeat_timed(clip("unipc"), device, repeats, warmups)
    row.seconds["dpm"], dpm, row.peak["dpm"] = repeat_timed(clip("dpm"), device, repeats, warmups)
    latents = seen["latents"]  # the outputs hold the final latents, then the frames
    row.parity["dpm"] = compare(dpm[:latents], unipc[:latents])
    row.notes["dpm steps"] = (f"tiny release fixture {folder.name}, {steps} steps of the release's UniPC and of "
                              f"DPM-Solver++ (2M) on the same sigmas, fp32: final latents max |diff| "
                              f"{row.parity['dpm'][0]:.3g}, uint8 frames max |diff| "
                              f"{float((dpm[latents:] - unipc[latents:]).abs().max()):.0f}")


def dpm_a1(row: MemoryRow, tiny: bool, device, dtype, args, repeats: int, warmups: int) -> None:
    """SkyReels-A1's release sampling path (`sample_a1_release`: VAE encode, pose guider, denoising, decode) with the
    release's CogVideoXDDIM against DPMSolverMultistepScheduler made from the same config, at the same steps."""
    from diffusers import CogVideoXDDIMScheduler, DPMSolverMultistepScheduler

    from talkinghead.systems.skyreels_a1 import model as a1
    from talkinghead.systems.skyreels_a1.pipeline import sample_a1_release

    if not A1_SCHEDULER.is_file():
        row.notes["dpm"] = f"no release scheduler config at {A1_SCHEDULER}"
        return
    official = CogVideoXDDIMScheduler.from_config(json.loads(A1_SCHEDULER.read_text()))
    model = made(lambda: a1.SkyReelsA1(a1.TINY if tiny else a1.OFFICIAL), device, dtype)
    vae = dit_vae("cogvideox", tiny, device, dtype)
    cfg, tc = model.config, model.transformer.config
    s = 2 ** (len(cfg.vae["block_out_channels"]) - 1)
    height, width, frames = tc.sample_height * s, tc.sample_width * s, args.frames or tc.sample_frames
    ref = randn(1, 3, height, width, seed=21, device=device, dtype=torch.float32).clamp(-1, 1)
    control = randn(1, 3, frames, height, width, seed=22, device=device, dtype=torch.float32).clamp(-1, 1)
    identity = randn(1, 4 if tiny else 729, cfg.identity_dim, seed=23, device=device, dtype=torch.float32)
    steps = args.steps or (2 if tiny else OFFICIAL_BENCH_STEPS)

    def clip(scheduler):
        return lambda: torch.from_numpy(sample_a1_release(
            model, vae, type(scheduler).from_config(scheduler.config), ref, control, identity, steps, 3.0,
            generator=torch.Generator(device).manual_seed(0)).astype("float32"))

    # CogVideoX's SNR shift has no DPM-Solver counterpart: dropped (the release's config sets it to 1, no shift)
    dpm = DPMSolverMultistepScheduler.from_config({k: v for k, v in official.config.items() if k != "snr_shift_scale"})
    row.seconds["official"], ref_out, row.peak["official"] = repeat_timed(clip(official), device, repeats, warmups)
    row.seconds["dpm"], dpm_out, row.peak["dpm"] = repeat_timed(clip(dpm), device, repeats, warmups)
    row.parity["dpm"] = compare(dpm_out, ref_out)
    row.notes["dpm steps"] = (f"{steps} steps of CogVideoXDDIM and of DPM-Solver++ (2M), frames 0..255"
                              + (f"; CogVideoX's snr_shift_scale {official.config.snr_shift_scale} is not in DPM-Solver"
                                 if official.config.get("snr_shift_scale", 1.0) != 1.0 else ""))


def print_memory_table(rows: list[MemoryRow]) -> None:
    head = (f"{'system':<12} {'vae':<9} {'res s':>7} {'offl s':>7} {'offl/res':>8} {'|offl-res|':>10} "
            f"{'res GiB':>7} {'offl GiB':>8} {'whole s':>7} {'tiled s':>7} {'|tiled-wh|':>10} {'tiled dB':>8} "
            f"{'wh GiB':>6} {'tile GiB':>8} {'offic s':>7} {'dpm s':>7} {'|dpm-offic|':>11}")
    print(head)
    print("-" * len(head))
    gib = lambda b: fmt(b / 2 ** 30, ".2f") if b else "-"  # noqa: E731
    for r in rows:
        sec, par = r.seconds, r.parity
        cells = [fmt(sec.get("resident")), fmt(sec.get("offload")),
                 fmt(sec["offload"] / sec["resident"], ".2f") if "offload" in sec else "-",
                 fmt(par.get("offload", (None,))[0], ".2e"), gib(r.peak.get("resident")), gib(r.peak.get("offload")),
                 fmt(sec.get("whole")), fmt(sec.get("tiled")), fmt(par.get("tiled", (None,))[0], ".2e"),
                 fmt(par.get("tiled", (None, None))[1], ".1f"), gib(r.peak.get("whole")), gib(r.peak.get("tiled")),
                 fmt(sec.get("official")), fmt(sec.get("dpm")), fmt(par.get("dpm", (None,))[0], ".3g")]
        widths = (7, 7, 8, 10, 7, 8, 7, 7, 10, 8, 6, 8, 7, 7, 11)
        print(f"{r.system:<12} {r.vae:<9} " + " ".join(f"{c:>{w}}" for c, w in zip(cells, widths)))
    for r in rows:
        for k, v in r.notes.items():
            print(f"  {r.system} {k}: {v}")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--systems", default="", help="comma-separated registry names (default: every engine with "
                                                  "weights)")
    ap.add_argument("--steps", type=int, default=None, help=f"denoising steps per clip (default: "
                                                            f"{OFFICIAL_BENCH_STEPS} at the official size)")
    ap.add_argument("--frames", type=int, default=None, help="video frames per clip (default: the official clip; "
                                                             "4k+1 for the DiTs)")
    ap.add_argument("--repeats", type=int, default=None, help="timed runs per cell after the warm-up (default 2, "
                                                              "1 with --tiny)")
    ap.add_argument("--tiny", action="store_true", help="tiny configs on the CPU: the same code, in seconds")
    ap.add_argument("--memory-dtype", default="bf16", choices=tuple(DTYPES),
                    help="precision of the DiT memory-option rows on a GPU (default bf16, the releases'; fp32 on a "
                         "CPU)")
    ap.add_argument("--no-memory", action="store_true", help="skip the DiT memory-option and DPM-Solver rows")
    args = ap.parse_args(argv)
    known = registry_systems()
    wanted = [s.strip() for s in args.systems.split(",") if s.strip()] or known
    unknown = [s for s in wanted if s not in CASES]
    if unknown:
        ap.error(f"unknown system(s) {', '.join(unknown)}; choose from {', '.join(known)}")
    missing = [s for s in known if s not in CASES]  # a registry system this script does not know how to build
    if not args.tiny and not torch.cuda.is_available():
        print("skipped: no GPU")
        return 0
    device = torch.device("cpu" if args.tiny else "cuda")
    if device.type == "cuda":
        p = torch.cuda.get_device_properties(device)
        where = f"{p.name} ({p.total_memory / 2 ** 30:.0f} GiB), torch {torch.__version__}, CUDA {torch.version.cuda}"
        torch.backends.cuda.matmul.allow_tf32 = False  # fp32 means fp32: the reference the half runs are held to
        torch.backends.cudnn.allow_tf32 = False
    else:
        where = f"CPU, {torch.get_num_threads()} threads, torch {torch.__version__}"
    print(f"gpu_engines: {'tiny configs' if args.tiny else 'official sizes'} on {where}")
    rows = []
    t_start = time.perf_counter()
    for name in wanted:
        case = CASES[name]
        row = measure(case, args.tiny, device, args)
        rows.append(row)
        print(f"  {name}: {row.clip or '-'}  ({time.perf_counter() - t_start:.1f} s so far)", flush=True)
    print()
    print("s/f: seconds per generated video frame (median of the timed runs); ours/up: ours / upstream time, below 1 "
          "is faster; |ours-up|: max |diff| of the two paths' outputs; fp16/bf16: ours with the fp32 weights cast, "
          "|d| and dB: max |diff| and PSNR against ours in fp32; peak: torch.cuda.max_memory_allocated")
    print_table(rows, device)
    print()
    for name in wanted:
        c = CASES[name]
        print(f"{name}: official size: {c.official}\n    ours: {c.ours}\n    upstream: {c.upstream}")
        notes = {k: v for k, v in next(r for r in rows if r.system == name).notes.items()}
        for k, v in notes.items():
            print(f"    {k}: could not run: {v}")
    second = [name for name in wanted if (name in DIT_VAES or name in UNET_DPM) and not args.no_memory]
    if second:
        memory_rows = []
        for name in second:
            if name in DIT_VAES:
                memory_rows.append(measure_memory(name, args.tiny, device, args))
            else:
                memory_rows.append(measure_unet_dpm(name, args.tiny, device, args))
            print(f"  {name}: memory options / DPM-Solver measured ({time.perf_counter() - t_start:.1f} s so far)",
                  flush=True)
        print()
        print(f"DiT memory options ({'fp32' if device.type == 'cpu' else args.memory_dtype}) and DPM-Solver: "
              "res/offl: one clip (the "
              "denoising loop above, then a VAE decode) with the model and the VAE resident on the device / with "
              "--cpu-offload (both on the CPU, each moved to the device for its own forward), s per clip, |offl-res| "
              "max |diff| of the outputs; whole/tiled: the VAE decode of one clip's latents whole / with --vae-tiling "
              "on (tiles of half the frame), |tiled-wh| and dB against whole; offic/dpm (fp32): the official "
              "scheduler / "
              "DPMSolverMultistepScheduler at the same steps, s per clip and max |diff| (SkyReels-A1: its release "
              "path with CogVideoXDDIM, frames 0..255; Hallo, EchoMimic: --scheduler ddim / dpm, final latents; "
              "Hallo4, SkyReels-A2: their release UniPC / --scheduler dpm on the tiny release fixture, final "
              "latents); "
              "GiB: torch.cuda.max_memory_allocated")
        print_memory_table(memory_rows)
        print()
    if missing:
        print(f"not benchmarked (no case here yet): {', '.join(missing)}")
    print(f"total wall time {time.perf_counter() - t_start:.1f} s")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
