"""Hallo engine benchmark (HalloPipeline): stage times, peak memory and ours / upstream time, measured in one run.

    .venv/bin/python benchmarks/hallo_engine.py                     # tiny net, 128 px, 4 frames, 3 steps (CPU, seconds)
    .venv/bin/python benchmarks/hallo_engine.py --size full --device cuda --dtype fp16   # SD1.5-size, 512 px, 16 x 40

One clip is generated the way `HalloPipeline.sample_clip` does it, with random (seeded) weights and
random conditions: nothing here needs a checkpoint, and the numbers say nothing about image quality.

Prints, for one configuration:
  1. per-stage wall time and its share of the clip: VAE encode of the portrait + motion frames,
     conditions (image/audio projections + face locator), reference net (`fill_bank`), UNet steps
     (total and per step), VAE decode (total and per frame);
  2. peak memory per generated frame: on CUDA torch.cuda.max_memory_allocated over the clip (reset
     before each run); on CPU the peak RSS growth of one clip (VmHWM, or ru_maxrss where there is no
     /proc) above the RSS after building, measured in a fresh process per variant (`--memory-child`);
     each divided by the frames;
  3. seconds per generated frame for our pipeline and for the upstream-equivalent run, and the ratio
     ours / upstream. The upstream-equivalent is the same pipeline with `UpstreamReadProcessor` (below)
     in the denoising UNet: like the official Hallo code it computes the reference attention for every
     row, unconditional ones included, and then recomputes the unconditional rows as plain
     self-attention. Everything else (one CFG batch, SDPA, dtypes) is the same in both runs, so the
     ratio is the gain of skipping that discarded work.
Each repeat runs ours and the upstream-equivalent back to back, alternating which goes first; the
median over `--repeats` is reported. A benchmark never fails on speed.
"""
from __future__ import annotations

import argparse
import gc
import json
import os
import platform
import resource
import statistics
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import torch
from diffusers.models.attention_processor import Attention, AttnProcessor2_0

from talkinghead.models.unet3d import SD15_UNET
from talkinghead.systems.hallo.model import HALLO_UNET_ADDITIONAL
from talkinghead.nn.reference_attention import ReferenceReadProcessor
from talkinghead.config import DTYPES
from talkinghead.utils import torch_dtype
from reference_data import FIXTURES  # benchmarks/reference_data.py, beside this script

TINY_CONFIG = FIXTURES / "hallo" / "hallo_tiny" / "config.json"

# The sizes of the hallo_tiny reference data's config.json (TINY_CONFIG), used when that file is not there: the
# official configs with 32 channels, one layer per block and 2 heads.
TINY_FALLBACK = {
    "reference_unet2d_config_json_input": {
        **SD15_UNET, "attention_head_dim": 2, "block_out_channels": [32, 32, 32, 32], "cross_attention_dim": 32,
        "layers_per_block": 1, "sample_size": 16},
    "unet_additional_kwargs": {
        **HALLO_UNET_ADDITIONAL, "audio_attention_dim": 32,
        "motion_module_kwargs": {**HALLO_UNET_ADDITIONAL["motion_module_kwargs"], "num_attention_heads": 2}},
    "face_locator": {"conditioning_embedding_channels": 32, "conditioning_channels": 3,
                     "block_out_channels": [4, 8, 8, 16]},
    "image_proj": {"cross_attention_dim": 32, "clip_embeddings_dim": 512, "clip_extra_context_tokens": 4},
    "audio_proj": {"seq_len": 5, "blocks": 2, "channels": 32, "intermediate_dim": 64, "output_dim": 32,
                   "context_tokens": 32},
    "vae_constructor_kwargs": {
        "in_channels": 3, "out_channels": 3, "latent_channels": 4, "down_block_types": ["DownEncoderBlock2D"] * 4,
        "up_block_types": ["UpDecoderBlock2D"] * 4, "block_out_channels": [8, 16, 16, 16], "layers_per_block": 1,
        "norm_num_groups": 8, "act_fn": "silu", "sample_size": 128, "scaling_factor": 0.18215},
    "run": {"n_frames": 4, "n_motion_frames": 2, "image_size": 128, "cfg_scale": 3.5, "num_inference_steps": 3},
}

# stable-diffusion-v1-5/vae (= sd-vae-ft-mse) sizes
SD_VAE = {
    "in_channels": 3, "out_channels": 3, "latent_channels": 4, "down_block_types": ["DownEncoderBlock2D"] * 4,
    "up_block_types": ["UpDecoderBlock2D"] * 4, "block_out_channels": [128, 256, 512, 512], "layers_per_block": 2,
    "norm_num_groups": 32, "act_fn": "silu", "sample_size": 512, "scaling_factor": 0.18215,
}


# ------------------------------------------------------------------------- upstream-equivalent
class UpstreamReadProcessor(ReferenceReadProcessor):
    """The reference read of the official code, for the upstream-equivalent timing; same numerics as ours.

    Official Hallo (hallo/models/mutual_self_attention.py, read mode with CFG) runs `attn1` over
    [own tokens, reference tokens] for every row of the batch, the unconditional rows included, clones the
    result, and overwrites the unconditional rows (boolean `_uc_mask`) with plain self-attention.
    `ReferenceReadProcessor` skips that first, discarded pass for the unconditional rows; this subclass
    does it again, clone and masked copy included, so that ours vs. this is exactly that saving.
    """

    def __call__(self, attn: Attention, hidden_states: torch.Tensor, encoder_hidden_states=None,
                 attention_mask=None, temb=None, *args, **kwargs) -> torch.Tensor:
        plain = AttnProcessor2_0.__call__
        reference = self.bank.reference(self.name)  # (groups, l, c)
        if reference is None:
            return plain(self, attn, hidden_states, None, attention_mask, temb)
        groups, rows = reference.shape[0], hidden_states.shape[0]
        n_uncond = self.bank.uncond_groups * rows // groups
        tiled = reference.repeat(rows // groups, 1, 1).to(hidden_states.dtype)  # row r -> group r % groups
        out = plain(self, attn, hidden_states, torch.cat([hidden_states, tiled], dim=1), attention_mask, temb)
        if n_uncond == 0:
            return out
        uc_mask = torch.arange(rows, device=hidden_states.device) < n_uncond
        out_c = out.clone()
        out_c[uc_mask] = plain(self, attn, hidden_states[uc_mask], None, attention_mask, temb)
        return out_c


def set_read_processors(pipe, upstream: bool) -> int:
    """Swap the denoising UNet's reference readers between ours and the upstream-equivalent; returns how many."""
    cls = UpstreamReadProcessor if upstream else ReferenceReadProcessor
    n = 0
    for module in pipe.net.denoising_unet.modules():
        proc = getattr(module, "processor", None)
        if isinstance(module, Attention) and isinstance(proc, ReferenceReadProcessor):
            if type(proc) is not cls:
                module.set_processor(cls(proc.bank, proc.name))
            n += 1
    return n


# ---------------------------------------------------------------------------------- the setup
@dataclass
class Spec:
    name: str
    source: str
    config: dict  # reference-run layout (HalloConfig.from_reference_run), or {} for the SD1.5-size default
    vae: dict
    image_size: int
    frames: int
    steps: int
    motion_frames: int
    guidance: float


def tiny_spec() -> Spec:
    if TINY_CONFIG.is_file():
        d, source = json.loads(TINY_CONFIG.read_text()), "sizes of the hallo_tiny reference data's config.json"
    else:
        d, source = TINY_FALLBACK, "built-in copy of the hallo_tiny reference data's sizes (that data is not here)"
    run = d["run"]
    return Spec("tiny", source, d, d.get("vae_constructor_kwargs") or d["vae"], run["image_size"], run["n_frames"],
                run["num_inference_steps"], run["n_motion_frames"], run["cfg_scale"])


def full_spec() -> Spec:
    return Spec("full", "SD1.5-size HalloNet() (official configs/inference/default.yaml sizes), sd-vae-ft-mse sizes",
                {}, SD_VAE, 512, 16, 40, 2, 3.5)


def build_pipeline(spec: Spec, device: torch.device, dtype: torch.dtype, seed: int):
    from diffusers import AutoencoderKL, DDIMScheduler

    from talkinghead.systems.hallo.model import HalloConfig, HalloNet
    from talkinghead.systems.hallo.pipeline import DEFAULT_SCHEDULER, HalloPipeline

    config = HalloConfig.from_reference_run(spec.config) if spec.config else HalloConfig()
    torch.manual_seed(seed)
    with torch.device(device):  # initialise the random weights where they will run
        net = HalloNet(config)
        vae = AutoencoderKL(**{k: tuple(v) if isinstance(v, list) else v for k, v in spec.vae.items()})
    net.to(device=device, dtype=dtype)
    torch.nn.Module.to(vae, device=device, dtype=dtype)  # ModelMixin.to would warn about from_pretrained
    return HalloPipeline(net, vae, DDIMScheduler(**DEFAULT_SCHEDULER))


@dataclass
class Inputs:
    pixels: torch.Tensor  # (1+m, 3, H, W) in [-1, 1]: portrait, then the motion frames
    face_embedding: torch.Tensor  # (1, d)
    audio_windows: torch.Tensor  # (1, f, seq_len, blocks, channels)
    region: torch.Tensor  # (1, 3, H, W) in {0, 1}
    masks: dict  # branch -> per level (f, h_l*w_l)
    noise: torch.Tensor  # (1, 4, f, h, w)


def _rect(size: int, top: float, bottom: float, left: float, right: float) -> torch.Tensor:
    """A size x size mask, 1 inside the rectangle given in fractions of the side (at least one pixel)."""
    m = torch.zeros(size, size)
    r0, c0 = int(top * size), int(left * size)
    m[r0:max(int(bottom * size), r0 + 1), c0:max(int(right * size), c0 + 1)] = 1
    return m


def make_inputs(pipe, spec: Spec, frames: int, motion_frames: int, seed: int) -> Inputs:
    """Random conditions with the layout of the fixture's (README §4): a face rectangle, full = 1 - face,
    a smaller lip rectangle, each as a 4-level pyramid at latent size /1, /2, /4, /8."""
    g = torch.Generator().manual_seed(seed)
    cfg = pipe.net.config
    size, latent = spec.image_size, spec.image_size // 8
    ap = cfg.audio_proj
    face = [_rect(latent >> lvl, 24 / 128, 104 / 128, 32 / 128, 96 / 128) for lvl in range(4)]
    lip = [_rect(latent >> lvl, 0.6, 0.75, 0.375, 0.625) for lvl in range(4)]

    def flat(ms: list[torch.Tensor]) -> list[torch.Tensor]:  # per level (f, h_l*w_l), as in the fixture
        return [m.reshape(1, -1).repeat(frames, 1) for m in ms]

    return Inputs(
        pixels=torch.rand(1 + motion_frames, 3, size, size, generator=g) * 2 - 1,
        face_embedding=torch.randn(1, cfg.image_proj["clip_embeddings_dim"], generator=g),
        audio_windows=torch.randn(1, frames, ap["seq_len"], ap["blocks"], ap["channels"], generator=g),
        region=_rect(size, 24 / 128, 104 / 128, 32 / 128, 96 / 128).expand(1, 3, size, size).clone(),
        masks={"full": flat([1 - m for m in face]), "face": flat(face), "lip": flat(lip)},
        noise=torch.randn(1, 4, frames, latent, latent, generator=g),
    )


# ------------------------------------------------------------------------------------- memory
def _status_kib(field: str) -> int | None:
    try:
        for ln in Path("/proc/self/status").read_text().splitlines():
            if ln.startswith(field + ":"):
                return int(ln.split()[1])
    except (OSError, ValueError, IndexError):
        pass
    return None


def rss_kib() -> int:
    """Current RSS: psutil if installed, else /proc/self/status VmRSS, else (no better) ru_maxrss."""
    try:
        import psutil

        return psutil.Process().memory_info().rss // 1024
    except ImportError:
        kib = _status_kib("VmRSS")
        return kib if kib is not None else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss


def peak_rss_kib() -> int:
    """Peak RSS of this process: VmHWM (this exec's own), else ru_maxrss (which Linux carries over from the
    parent across fork + exec, so only a lower bound on the growth here)."""
    kib = _status_kib("VmHWM")
    return kib if kib is not None else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss


class CudaPeak:
    """torch.cuda.max_memory_allocated over a block, after resetting it: `peak` (weights included) and
    `delta`, what the block allocated on top of what was allocated at its start."""

    def __enter__(self):
        gc.collect()
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
        self.start = torch.cuda.memory_allocated()
        return self

    def __exit__(self, *exc):
        torch.cuda.synchronize()
        self.peak = torch.cuda.max_memory_allocated()
        self.delta = max(0, self.peak - self.start)
        return False


def memory_child(args, variant: str) -> None:
    """`--memory-child ours|upstream`: in this fresh process, build the pipeline, then generate one clip and
    print one JSON line with the peak RSS and its growth over the RSS just before the clip.

    CPU peak memory is measured this way because within one process the numbers are not separable: glibc
    keeps the heap that an earlier run freed and the next run reuses it, so a second run shows almost no
    growth (and handing it back with malloc_trim makes every page fault again, which on some VMs slows
    the timed runs down many times over)."""
    spec = tiny_spec() if args.size == "tiny" else full_spec()
    frames, steps = args.frames or spec.frames, args.steps or spec.steps
    dtype = torch_dtype(args.dtype or "fp32")
    device = torch.device("cpu")
    with torch.inference_mode():
        pipe = build_pipeline(spec, device, dtype, args.seed)
        set_read_processors(pipe, upstream=variant == "upstream")
        inp = make_inputs(pipe, spec, frames, spec.motion_frames, args.seed)
        gc.collect()
        start = rss_kib()
        run_clip(pipe, inp, steps, spec.guidance, device)
    peak = peak_rss_kib()
    print("MEMORY_CHILD " + json.dumps(dict(variant=variant, start=1024 * start, peak=1024 * peak,
                                            delta=1024 * max(0, peak - start),
                                            source="VmHWM" if _status_kib("VmHWM") is not None else "ru_maxrss")),
          flush=True)


def start_memory_child(variant: str, args, frames: int, steps: int, dtype_name: str,
                       threads: int) -> subprocess.Popen:
    cmd = [sys.executable, str(Path(__file__).resolve()), "--memory-child", variant, "--size", args.size,
           "--frames", str(frames), "--steps", str(steps), "--dtype", dtype_name, "--seed", str(args.seed),
           "--device", "cpu"] + (["--force"] if args.force else [])
    env = dict(os.environ, OMP_NUM_THREADS=str(threads), MKL_NUM_THREADS=str(threads))
    return subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)


def finish_memory_child(p: subprocess.Popen) -> dict:
    out, err = p.communicate()
    for ln in out.splitlines():
        if ln.startswith("MEMORY_CHILD "):
            return json.loads(ln[len("MEMORY_CHILD "):])
    sys.stderr.write(out[-3000:] + err[-3000:])
    raise SystemExit(f"--memory-child failed with exit code {p.returncode}")


def mib(b: float) -> float:
    return b / 2**20


# ------------------------------------------------------------------------------------ one run
STAGES = (  # key, label
    ("encode", "VAE encode (portrait + motion frames)"),
    ("condition", "conditions (projections + face locator)"),
    ("reference", "reference net (fill_bank)"),
    ("unet", "UNet steps (all)"),
    ("decode", "VAE decode"),
    ("other", "other (scheduler, noise, guidance set-up)"),
)


def run_clip(pipe, inp: Inputs, steps: int, guidance: float, device: torch.device) -> tuple[dict, torch.Tensor, torch.Tensor]:
    """One clip as `HalloPipeline.sample_clip` makes it, plus the VAE encode before and decode after.
    fill_bank is timed by wrapping it on the instance and each step through sample_clip's progress
    callback, so this times the pipeline's own code. Returns (times in s, final latents, frames)."""
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)

    def now() -> float:
        sync()
        return time.perf_counter()

    t: dict = {}
    marks: list[float] = []
    fill_bank = pipe.fill_bank

    def timed_fill_bank(*a, **kw):
        t0 = now()
        fill_bank(*a, **kw)
        marks.append(now())
        t["reference"] = marks[-1] - t0

    t0 = now()
    ref = pipe.encode_images(inp.pixels)
    t1 = now()
    cond = pipe.condition(inp.face_embedding, inp.audio_windows, inp.region, inp.masks, guidance > 1.0)
    t2 = now()
    pipe.fill_bank = timed_fill_bank
    try:
        latents = pipe.sample_clip(ref, cond, inp.noise, steps, guidance, progress=lambda _n: marks.append(now()))
    finally:
        del pipe.fill_bank  # back to the class's method
    t3 = now()
    frames = pipe.decode_latents(latents)
    t4 = now()
    t["encode"], t["condition"], t["decode"] = t1 - t0, t2 - t1, t4 - t3
    t["step"] = [b - a for a, b in zip(marks, marks[1:])]
    t["unet"] = sum(t["step"])
    t["total"] = t4 - t0
    t["other"] = t["total"] - sum(t[k] for k, _ in STAGES if k != "other")
    return t, latents, frames


def median_times(runs: list[dict]) -> dict:
    out = {k: statistics.median(r[k] for r in runs) for k in runs[0] if k != "step"}
    out["step"] = statistics.median(s for r in runs for s in r["step"])
    out["step_min"] = min(s for r in runs for s in r["step"])
    out["step_max"] = max(s for r in runs for s in r["step"])
    return out


# --------------------------------------------------------------------------------------- main
def machine(device: torch.device) -> str:
    if device.type == "cuda":
        p = torch.cuda.get_device_properties(device)
        return f"{p.name} ({p.total_memory / 2**30:.0f} GiB), CUDA {torch.version.cuda}"
    cpu = "?"
    try:
        for ln in Path("/proc/cpuinfo").read_text().splitlines():
            if ln.startswith("model name"):
                cpu = ln.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return f"{os.cpu_count()} CPUs ({cpu}), torch using {torch.get_num_threads()} threads"


def load() -> str:
    try:
        return " ".join(f"{v:.2f}" for v in os.getloadavg())
    except OSError:
        return "?"


def params(module: torch.nn.Module) -> str:
    return f"{sum(p.numel() for p in module.parameters()) / 1e6:.1f} M"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--size", choices=("tiny", "full"), default="tiny",
                    help="tiny: the hallo_tiny fixture's sizes, 128 px, 4 frames, 3 steps (default); "
                         "full: SD1.5-size net, 512 px, 16 frames, 40 steps (GPU only, see --force)")
    ap.add_argument("--frames", type=int, help="frames in the clip (default: 4 tiny, 16 full)")
    ap.add_argument("--steps", type=int, help="DDIM steps (default: 3 tiny, 40 full)")
    ap.add_argument("--repeats", type=int, help="timed runs of each variant; the median is reported "
                                                "(default: 3 tiny, 1 full)")
    ap.add_argument("--device", help="cpu or cuda (default: cuda if available, else cpu)")
    ap.add_argument("--dtype", choices=tuple(DTYPES), help="weights and activations (default: fp16 on cuda, fp32 on cpu)")
    ap.add_argument("--seed", type=int, default=0, help="seed of the random weights and inputs (default 0)")
    ap.add_argument("--force", action="store_true", help="run --size full even on the CPU")
    ap.add_argument("--memory-child", choices=("ours", "upstream"), help=argparse.SUPPRESS)
    args = ap.parse_args(argv)

    if args.memory_child:
        memory_child(args, args.memory_child)
        return 0

    device = torch.device(args.device or ("cuda" if torch.cuda.is_available() else "cpu"))
    if device.type == "cuda" and not torch.cuda.is_available():
        ap.error("--device cuda: no CUDA device is available to this torch build")
    if device.type not in ("cpu", "cuda"):
        ap.error(f"--device {args.device}: only cpu and cuda are supported")
    if args.size == "full" and device.type == "cpu" and not args.force:
        ap.error("--size full builds the SD1.5-size Hallo net (~2.5 B parameters in fp32, ~10 GiB) and runs "
                 "40 steps of 16 frames at 512x512, which takes hours on a CPU. Run it on a GPU "
                 "(--device cuda), or add --force to run it here anyway.")
    dtype_name = args.dtype or ("fp16" if device.type == "cuda" else "fp32")
    dtype = torch_dtype(dtype_name)
    spec = tiny_spec() if args.size == "tiny" else full_spec()
    frames = args.frames or spec.frames
    steps = args.steps or spec.steps
    repeats = args.repeats or (3 if args.size == "tiny" else 1)
    if frames < 1 or steps < 1 or repeats < 1:
        ap.error("--frames, --steps and --repeats must be >= 1")

    t_start = time.perf_counter()
    print("talkinghead Hallo engine benchmark (HalloPipeline.sample_clip, random weights)")
    print(f"  machine: {machine(device)}; {platform.system()} {platform.release()}, Python {platform.python_version()}")
    import diffusers

    print(f"  torch {torch.__version__}, diffusers {diffusers.__version__}; device {device}, dtype {str(dtype)[6:]}")
    print(f"  load average at start: {load()}")

    # CPU memory: one fresh process per variant (see memory_child), run before anything is built or timed
    # here. Tiny: both at once, sharing the cores between them; full size: one after the other.
    memory: dict = {}
    if device.type == "cpu":
        t0 = time.perf_counter()
        together = spec.name == "tiny"
        threads = max(1, torch.get_num_threads() // 2) if together else torch.get_num_threads()
        running = {}
        for variant in ("ours", "upstream"):
            running[variant] = start_memory_child(variant, args, frames, steps, dtype_name, threads)
            if not together:
                memory[variant] = finish_memory_child(running.pop(variant))
        memory.update({k: finish_memory_child(p) for k, p in running.items()})
        print(f"  memory: one fresh process per variant ({threads} thread(s) each{', both at once' if together else ''}"
              f"), {time.perf_counter() - t0:.2f} s, before the timed part")

    with torch.inference_mode():
        print("\n[setup]")
        t0 = time.perf_counter()
        pipe = build_pipeline(spec, device, dtype, args.seed)
        built = time.perf_counter() - t0
        net = pipe.net
        n_readers = set_read_processors(pipe, upstream=False)
        latent = spec.image_size // 8
        bank = "none" if pipe.bank.dtype is None else str(pipe.bank.dtype)[6:]
        print(f"  net: {spec.name}, {spec.source}; random weights (torch.manual_seed({args.seed}))")
        print(f"  parameters: reference UNet {params(net.reference_unet)}, denoising UNet {params(net.denoising_unet)}, "
              f"VAE {params(pipe.vae)}; {n_readers} reference-attention layers")
        print(f"  clip: {spec.image_size}x{spec.image_size} px (latent {latent}x{latent}), {frames} frames, "
              f"{spec.motion_frames} motion frames, {steps} DDIM steps, CFG {spec.guidance:g} "
              f"(cond + uncond in one batch of {2 if spec.guidance > 1 else 1}), reference bank stored as {bank}")
        print(f"  build: {built:.2f} s, not timed below")
        inp = make_inputs(pipe, spec, frames, spec.motion_frames, args.seed)

        t0 = time.perf_counter()
        for upstream in (False, True):  # warm-up, both variants, at most 2 steps
            set_read_processors(pipe, upstream)
            run_clip(pipe, inp, min(steps, 2), spec.guidance, device)
        print(f"  warm-up (each variant once, {min(steps, 2)} step(s)): {time.perf_counter() - t0:.2f} s")

        print(f"\n[runs] {repeats} repeat(s); each runs ours and the upstream-equivalent back to back, "
              f"alternating which goes first")
        results: dict[str, list] = {"ours": [], "upstream": []}
        cuda_peaks: dict[str, list] = {"ours": [], "upstream": []}
        final: dict[str, torch.Tensor] = {}
        for i in range(repeats):
            order = ("ours", "upstream") if i % 2 == 0 else ("upstream", "ours")
            parts = []
            for name in order:
                set_read_processors(pipe, upstream=name == "upstream")
                if device.type == "cuda":
                    with CudaPeak() as mem:
                        t, latents, video = run_clip(pipe, inp, steps, spec.guidance, device)
                    cuda_peaks[name].append(mem)
                else:
                    t, latents, video = run_clip(pipe, inp, steps, spec.guidance, device)
                results[name].append(t)
                final[name] = latents
                del video
                parts.append(f"{name} {t['total']:8.3f} s ({t['total'] / frames:.4f} s/frame)")
            print(f"  run {i + 1}: " + ", ".join(parts), flush=True)
        set_read_processors(pipe, upstream=False)
        if device.type == "cuda":
            memory = {k: dict(start=v[0].start, peak=max(m.peak for m in v), delta=max(m.delta for m in v))
                      for k, v in cuda_peaks.items()}

    med = {k: median_times(v) for k, v in results.items()}
    # headline: on CUDA the whole allocated peak, on CPU the RSS growth of the clip
    peak = {k: v["peak"] if device.type == "cuda" else v["delta"] for k, v in memory.items()}

    for name, title in (("ours", "ours"), ("upstream", "upstream-equivalent (UpstreamReadProcessor)")):
        m = med[name]
        print(f"\n[stages] {title}: median of {repeats}, seconds and share of the clip")
        for key, label in STAGES:
            extra = ""
            if key == "unet":
                extra = (f"  = {steps} x {m['step']:.4f} s/step (min {m['step_min']:.4f}, max {m['step_max']:.4f})")
            elif key == "decode":
                extra = f"  = {frames} x {m['decode'] / frames:.4f} s/frame"
            elif key == "encode":
                extra = f"  ({1 + spec.motion_frames} images)"
            print(f"  {label:<42}{m[key]:9.4f} s {100 * m[key] / m['total']:5.1f}%{extra}")
        print(f"  {'clip total':<42}{m['total']:9.4f} s 100.0%  = {m['total'] / frames:.4f} s/generated frame")

    if device.type == "cuda":
        print(f"\n[memory] torch.cuda.max_memory_allocated, reset before each run; the largest of {repeats}")
    else:
        src = memory["ours"]["source"]
        print(f"\n[memory] peak RSS ({src}) of a fresh process per variant that builds the pipeline and makes one clip")
    for name in ("ours", "upstream"):
        m = memory[name]
        if device.type == "cuda":
            print(f"  {name:<9} peak {mib(m['peak']):9.1f} MiB allocated (weights included), "
                  f"+{mib(m['delta']):.1f} MiB above the start of the run")
        else:
            print(f"  {name:<9} peak RSS {mib(m['peak']):9.1f} MiB, +{mib(m['delta']):.1f} MiB above the RSS "
                  f"after building ({mib(m['start']):.1f} MiB)")
    diff = (final["ours"].float() - final["upstream"].float()).abs().max().item()
    finite = bool(torch.isfinite(final["ours"]).all())
    print(f"\n  check: final latents ours vs upstream-equivalent max |diff| {diff:.3g} (the same maths)"
          + ("" if finite else "; the latents are not finite (random weights in low precision), timings still hold"))
    print(f"  load average at end: {load()}; benchmark wall time {time.perf_counter() - t_start:.1f} s")

    o, u = med["ours"], med["upstream"]
    basis = "allocated" if device.type == "cuda" else "RSS growth"
    print(f"\n== results: {spec.name}, {spec.image_size}x{spec.image_size}, {frames} frames, {steps} steps, "
          f"{str(dtype)[6:]} on {device} ==")
    row = "{:<36}{:>16}{:>22}{:>16}"
    print(row.format("metric", "ours", "upstream-equiv.", "ours / upstream").rstrip())
    print(row.format("seconds per generated frame", f"{o['total'] / frames:.4f} s", f"{u['total'] / frames:.4f} s",
                     f"{o['total'] / u['total']:.3f}"))
    print(row.format("UNet step", f"{o['step']:.4f} s", f"{u['step']:.4f} s", f"{o['step'] / u['step']:.3f}"))
    print(row.format("reference net (fill_bank)", f"{o['reference']:.4f} s", f"{u['reference']:.4f} s",
                     f"{o['reference'] / u['reference']:.3f}"))
    print(row.format("VAE decode per frame", f"{o['decode'] / frames:.4f} s", f"{u['decode'] / frames:.4f} s",
                     f"{o['decode'] / u['decode']:.3f}"))
    ratio_mem = f"{peak['ours'] / peak['upstream']:.3f}" if peak["upstream"] > 0 else "n/a"
    print(row.format(f"peak memory per frame ({basis})", f"{mib(peak['ours']) / frames:.1f} MiB",
                     f"{mib(peak['upstream']) / frames:.1f} MiB", ratio_mem))
    print(f"ours / upstream-equivalent time: {o['total'] / u['total']:.3f} "
          f"(speed-up {u['total'] / o['total']:.2f}x; below 1 means ours is faster)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
