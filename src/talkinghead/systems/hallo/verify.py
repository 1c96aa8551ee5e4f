"""`talkinghead verify hallo DIR`: run our Hallo modules on reference data made by the official code and
compare every stored output. DIR is a folder of that format (see the hallo reference data's README):
a net folder (config.json, net.pth or net.safetensors, vae_tiny.safetensors, io.safetensors), an audio
folder (config.json, preprocessor_config.json, model.safetensors, io.safetensors), or a folder holding
either or both as subfolders."""
from __future__ import annotations

import json
from pathlib import Path

import torch
from diffusers import DDIMScheduler

from ...errors import InputError
from ...models.checkpoints import load_state_dict, load_vae, require_files
from ...verify import Check, compare
from .model import HalloConfig
from .release import load_net
from .pipeline import HalloPipeline

# fp32 tolerances from the fixture README
TOL_EXACT = 1e-5  # projections, face locator, VAE latents, scheduler tables
TOL_BANK = 1e-4  # reference-bank features
TOL_UNET = 1e-3  # UNet outputs, guided outputs, latents, decoded frames
BRANCHES = ("full", "face", "lip")


def is_net_fixture(folder: Path) -> bool:
    return (folder / "io.safetensors").is_file() and ((folder / "net.pth").is_file()
                                                      or (folder / "net.safetensors").is_file())


def is_audio_fixture(folder: Path) -> bool:
    return (folder / "io.safetensors").is_file() and (folder / "preprocessor_config.json").is_file()


def fixture_folders(root: Path) -> tuple[list[Path], list[Path]]:
    """(net folders, audio folders) at `root` or one level below it."""
    if not root.is_dir():
        raise InputError(f"{root} is not a folder", "pass a Hallo reference-data folder (made by running the official code on a tiny config)")
    candidates = [root] + sorted(p for p in root.iterdir() if p.is_dir())
    nets = [p for p in candidates if is_net_fixture(p)]
    audios = [p for p in candidates if is_audio_fixture(p)]
    if not nets and not audios:
        raise InputError(f"{root} holds no Hallo reference data",
                         "expected io.safetensors with net.pth (net data) or with preprocessor_config.json "
                         "(audio data), in the folder or a subfolder")
    return nets, audios


def load_fixture_pipeline(folder: Path) -> tuple[HalloPipeline, dict]:
    """Build the pipeline for a net fixture through the loaders users use (strict keys)."""
    files = require_files(folder, {
        "configs": ["config.json"],
        "net weights": ["net.pth", "net.safetensors"],
        "VAE weights": ["vae_tiny.safetensors", "vae.safetensors"],
    }, "Hallo reference data")
    config = json.loads(files["configs"].read_text())
    net = load_net(files["net weights"], HalloConfig.from_reference_run(config))
    vae = load_vae(files["VAE weights"], config.get("vae_constructor_kwargs") or config["vae"])
    scheduler = DDIMScheduler(**config["scheduler_kwargs"])
    return HalloPipeline(net, vae, scheduler), config


def check_net_fixture(folder: Path) -> list[Check]:
    from safetensors.torch import load_file

    pipe, config = load_fixture_pipeline(folder)
    io = load_file(str(folder / "io.safetensors"))
    run = config["run"]
    checks: list[Check] = []
    tag = folder.name

    def check(key: str, ours: torch.Tensor, tol: float) -> None:
        if key in io:
            checks.append(compare(f"{tag}/{key}", ours, io[key], tol))

    if (folder / "net.pth").is_file() and (folder / "net.safetensors").is_file():
        a, b = load_state_dict(folder / "net.pth"), load_state_dict(folder / "net.safetensors")
        same = set(a) == set(b)
        worst = max(((a[k].float() - b[k].float()).abs().max().item() for k in a), default=0.0) if same else float("inf")
        checks.append(Check(f"{tag}/net.safetensors == net.pth", worst, 0.0))

    masks = {k: [io[f"in.{k}_mask.{i}"] for i in range(_levels(io, k))] for k in BRANCHES}
    pixels = io["in.ref_and_motion_pixels"][0]  # (1+m, 3, H, W): the portrait, then the motion frames
    guidance = run["cfg_scale"] > 1.0
    with torch.no_grad():
        net = pipe.net
        emb = io["in.face_emb"]
        check("a.imageproj_cond", net.imageproj(emb), TOL_EXACT)
        check("a.imageproj_uncond", net.imageproj(torch.zeros_like(emb)), TOL_EXACT)
        check("a.audioproj_out", net.audioproj(io["in.audio_windows"]), TOL_EXACT)
        frames = io["in.audio_windows"].shape[1]
        check("a.face_locator_out", pipe.location(io["in.face_region_mask"], frames, False), TOL_EXACT)
        ref_latents = pipe.encode_images(pixels)
        check("a.ref_latents", ref_latents, TOL_EXACT)

        # (a) one guided denoising step with a non-default branch weighting
        pipe.scheduler.set_timesteps(run["num_inference_steps"])
        check("sched.timesteps", pipe.scheduler.timesteps, 0.0)
        check("sched.alphas_cumprod", pipe.scheduler.alphas_cumprod, TOL_EXACT)
        t = pipe.scheduler.timesteps[0]
        cond = pipe.condition(emb, io["in.audio_windows"], io["in.face_region_mask"], masks, guidance,
                              tuple(run.get("motion_scale_forward_a", (1.0, 1.0, 1.0))))
        pipe.fill_bank(ref_latents, cond)
        for name, tokens in pipe.bank.features.items():
            check(f"a.ref_bank.{name}", tokens, TOL_BANK)
        out = pipe.model_output(io["in.latents_forward_a"], t, cond)
        check("a.model_out_cfg_batch", out, TOL_UNET)
        guided = pipe.guided(out, run["cfg_scale"])
        check("a.model_out_guided", guided, TOL_UNET)
        step = pipe.scheduler.step(guided, t, io["in.latents_forward_a"], eta=0.0, return_dict=False)[0]
        check("a.ddim_step_prev_sample", step, TOL_UNET)

        # (b) a full short sampling run
        if "b.initial_latents" in io:
            cond = pipe.condition(emb, io["in.audio_windows"], io["in.face_region_mask"], masks, guidance,
                                  tuple(run.get("motion_scale_sampling_b", (1.0, 1.0, 1.0))))
            trace: dict = {}
            latents = pipe.sample_clip(ref_latents, cond, io["b.initial_latents"], run["num_inference_steps"],
                                       run["cfg_scale"], trace=trace)
            for key, value in trace.items():
                check(f"b.{key}", value, TOL_UNET)
            check("b.final_latents", latents, TOL_UNET)
            check("b.videos", pipe.decode_latents(latents), TOL_UNET)
    return checks


def _levels(io: dict, branch: str) -> int:
    n = 0
    while f"in.{branch}_mask.{n}" in io:
        n += 1
    return n


def check_audio_to_net(audio_folder: Path, net_folder: Path) -> list[Check]:
    """The audio fixture's first-clip windows through the net fixture's audio projection."""
    from safetensors.torch import load_file

    io = load_file(str(audio_folder / "io.safetensors"))
    key = "out.clip0_audioproj_tokens_tiny_net"
    if key not in io or "out.clip0_audio_windows" not in io:
        return []
    pipe, _ = load_fixture_pipeline(net_folder)
    with torch.no_grad():
        tokens = pipe.net.audioproj(io["out.clip0_audio_windows"])
    return [compare(f"{audio_folder.name}/{key}", tokens, io[key], TOL_EXACT)]


def verify_hallo(root: Path) -> list[Check]:
    from ...verify.audio import check_audio_fixture

    nets, audios = fixture_folders(Path(root))
    checks: list[Check] = []
    for folder in nets:
        checks += check_net_fixture(folder)
    for folder in audios:
        checks += check_audio_fixture(folder)
        if nets:
            checks += check_audio_to_net(folder, nets[0])
    return checks
