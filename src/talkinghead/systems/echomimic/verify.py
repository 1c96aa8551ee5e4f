"""`talkinghead verify echomimic DIR`: run our EchoMimic v1 modules on reference data made by the official
code and compare every stored output. DIR is a folder of that format (see
the echomimic reference data's README): a release folder (`reference_unet.pth`, `denoising_unet.pth`,
`motion_module.pth`, `face_locator.pth`, `face_locator_pose.pth`, `audio_processor/whisper_tiny.pt`,
`sd-vae-ft-mse/`, `sd-image-variations-diffusers/unet/config.json`) with `config.json` and `io.safetensors`,
or a folder holding such folders. Every size, seed and setting comes from the folder's own files."""
from __future__ import annotations

import json
from pathlib import Path

import torch
from diffusers import DDIMScheduler
from einops import rearrange

from ...models.checkpoints import require_files
from ...verify import Check, compare, verify_fixtures

TOL_EXACT = 1e-5  # log-mel, whisper features and windows, face locator, VAE latents, scheduler tables
TOL_BANK = 1e-4  # reference-bank features
TOL_UNET = 5e-4  # UNet outputs, guided outputs, latents, decoded frames (with rtol 1e-3 in the README)
TOL_BLOCK = 1e-3  # internal block outputs


def is_fixture(folder: Path) -> bool:
    return (folder / "io.safetensors").is_file() and (folder / "denoising_unet.pth").is_file()


def landmark_images(points: torch.Tensor, colours: torch.Tensor, height: int, width: int) -> torch.Tensor:
    """The fixture's landmark drawing: per frame a black RGB image with a 2x2 square of colour i at point i
    ((row, col)), drawn in order -> (1, 3, f, H, W) in [0, 1], built as infer_audio2vid_pose.py builds it."""
    frames = []
    for frame_points in points:
        img = torch.zeros(height, width, 3, dtype=torch.uint8)
        for (row, col), colour in zip(frame_points.tolist(), colours):
            img[row:row + 2, col:col + 2] = torch.tensor(colour, dtype=torch.uint8)
        frames.append(img.float() / 255.0)
    return torch.stack([f.permute(2, 0, 1) for f in frames], dim=1)[None]


def _block_output_module(block: torch.nn.Module) -> torch.nn.Module:
    """The submodule whose output is the block's output in our UNet's layer order."""
    for name in ("upsamplers", "downsamplers"):
        layers = getattr(block, name, None)
        if layers is not None:
            return layers[-1]
    if type(block).__name__.startswith("UNetMid"):
        return block.resnets[-1]
    for name in ("motion_modules", "attentions", "resnets"):
        layers = getattr(block, name, None)
        if layers is not None:
            return layers[-1]
    raise ValueError(f"no output layer in {type(block).__name__}")


def check_fixture(folder: Path, record: dict | None = None) -> list[Check]:
    """Compare every output the folder's io.safetensors holds. With `record`, compare nothing and store all
    of our outputs in it instead (to write a fixture of the same format for other settings)."""
    from safetensors.torch import load_file

    from ...audio.whisper import WhisperFeatures, audio_windows, log_mel_spectrogram, window_indices
    from ...models.checkpoints import load_vae_folder
    from .release import load_net
    from .pipeline import EchoMimicPipeline, SamplingConfig

    files = require_files(folder, {"settings": ["config.json"], "whisper": ["audio_processor/whisper_tiny.pt"],
                                   "VAE": ["sd-vae-ft-mse/config.json"]}, "EchoMimic reference data")
    config = json.loads(files["settings"].read_text())
    run = config["run"]
    io = load_file(str(folder / "io.safetensors"))
    checks: list[Check] = []
    tag = folder.name

    def check(key: str, ours: torch.Tensor, tol: float) -> None:
        if record is not None:
            record[key] = ours.detach().cpu().clone()
        elif key in io:
            checks.append(compare(f"{tag}/{key}", ours, io[key], tol))

    vae = load_vae_folder(files["VAE"].parent)
    whisper = WhisperFeatures.from_openai_checkpoint(files["whisper"])
    scheduler_kwargs = config.get("scheduler_kwargs") or {}
    pipe = EchoMimicPipeline(load_net(folder), vae, DDIMScheduler(**scheduler_kwargs))
    height, width = io["in.ref_image_uint8"].shape[:2]
    fps = run["fps"]
    guidance = run["guidance_scale"]
    steps = run["num_inference_steps"]
    with torch.no_grad():
        # audio front end
        waveform = io["in.waveform_int16"].float().numpy() / 32768.0
        check("audio.log_mel", log_mel_spectrogram(waveform, whisper.dims.n_mels), TOL_EXACT)
        features = whisper.features(waveform)
        check("audio.whisper_feature", features, TOL_EXACT)
        check("audio.chunk_feature_indices", torch.tensor(window_indices(features.shape[0], fps)), 0.0)
        windows = audio_windows(features, fps)
        check("audio.num_chunks", torch.tensor(windows.shape[0]), 0.0)
        check("audio.whisper_chunk_0", windows[0], TOL_EXACT)

        # (a) one guided step on one window
        pipe.scheduler.set_timesteps(steps)
        check("sched.timesteps", pipe.scheduler.timesteps, 0.0)
        check("sched.alphas_cumprod", pipe.scheduler.alphas_cumprod, TOL_EXACT)
        t = pipe.scheduler.timesteps[0]
        check("a.t", t, 0.0)
        mask = io["in.face_mask_uint8"].float()[None, None, None] / 255.0
        location = pipe.location(mask)
        check("a.face_locator_out", location, TOL_EXACT)
        ref_latents = pipe.encode_reference(io["in.ref_image_uint8"].numpy())
        check("a.ref_latents", ref_latents, TOL_EXACT)
        pipe.fill_bank(ref_latents, guidance > 1.0)
        for name, tokens in pipe.bank.features.items():
            check(f"a.ref_bank.{name}", tokens, TOL_BANK)
        latents_a = io["in.latents_a"]
        frames_a = latents_a.shape[2]
        unet = pipe.net.denoising_unet
        outputs: dict[str, torch.Tensor] = {}
        hooks = []
        block_keys = [f"a.unet_block_out.down_blocks.{len(unet.down_blocks) - 1}", "a.unet_block_out.mid_block",
                      "a.unet_block_out.up_blocks.0"]  # the recorded set: the bottom of the UNet
        for key in (block_keys if record is not None else [k for k in io if k.startswith("a.unet_block_out.")]):
            block = unet.get_submodule(key.removeprefix("a.unet_block_out."))
            hooks.append(_block_output_module(block).register_forward_hook(
                lambda m, a, out, key=key: outputs.__setitem__(key, rearrange(out, "(b f) c h w -> b c f h w",
                                                                              f=frames_a))))
        try:
            out = pipe.model_output(latents_a, t, windows[None, :frames_a], location, guidance > 1.0)
        finally:
            for hook in hooks:
                hook.remove()
        for key, value in outputs.items():
            check(key, value, TOL_BLOCK)
        check("a.model_out_cfg_batch", out, TOL_UNET)
        guided = pipe.guided(out, guidance)
        check("a.model_out_guided", guided, TOL_UNET)
        check("a.ddim_step_prev_sample", pipe.scheduler.step(guided, t, latents_a, return_dict=False)[0], TOL_UNET)

        # (b) the audio-driven pipeline, (c) the landmark-driven pipeline
        video_length = min(run["video_length_requested"], windows.shape[0])
        shape = (1, vae.config.latent_channels, video_length, height // 8, width // 8)
        audio = windows[None, :video_length]
        for prefix, landmarks in (("b", False), ("c", True)):
            if f"{prefix}.final_latents" not in io and record is None:
                continue
            s = SamplingConfig(steps=steps, guidance_scale=guidance, context_frames=run["context_frames"],
                               context_overlap=run["context_overlap"], fps=fps, seed=run["sampling_seed"],
                               landmarks=landmarks)
            if landmarks:
                pipe = EchoMimicPipeline(load_net(folder, landmarks=True), vae,
                                         DDIMScheduler(**scheduler_kwargs))
                points = io["in.pose_points"][:video_length]
                location = pipe.location(landmark_images(points, io["in.pose_colors"].tolist(), height, width))
            noise = torch.randn(shape, generator=torch.Generator().manual_seed(s.seed))
            check(f"{prefix}.initial_noise", noise, 0.0)
            initial = noise.clamp(-1.5, 1.5) if s.clamp_noise else noise
            check(f"{prefix}.initial_latents", initial, 0.0)
            trace: dict = {}
            final = pipe.sample(ref_latents, audio, location, initial, s, trace=trace)
            for key, value in trace.items():
                exact = key.startswith(("context_idx", "step_t"))
                check(f"{prefix}.{key}", value, 0.0 if exact else TOL_UNET)
            check(f"{prefix}.final_latents", final, TOL_UNET)
            if f"{prefix}.videos" in io or (record is not None and not landmarks):
                check(f"{prefix}.videos", pipe.decode_latents(final), TOL_UNET)
    return checks


def verify_echomimic(root: Path) -> list[Check]:
    """Every check of every EchoMimic reference-data folder under `root` (itself included)."""
    return verify_fixtures(root, is_fixture, check_fixture, "EchoMimic",
                           "io.safetensors next to the release files (denoising_unet.pth, ...)")
