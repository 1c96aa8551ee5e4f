"""`talkinghead verify hallo4 DIR`: the official Hallo4 release layout (DiT checkpoint + its config, Wan2.1 VAE,
wav2vec2) loaded by our release loaders, then the official inference replayed from the recorded inputs: the
audio front end, source preparation, two clips of the generate loop (VACE context, skeleton latents, UniPC with
CFG), one instrumented DiT evaluation and the assembled video, every recorded tensor compared.

DIR is a folder of the format of the hallo4 reference data's hallo4_tiny (or one holding it). Sizes, seeds, steps,
shift, guidance and clip settings come from its config.json and tensor shapes."""
from __future__ import annotations

import json
import math
from pathlib import Path

import torch

from ...errors import InputError
from ...models.checkpoints import require_files
from ...verify import Check, compare, verify_fixtures
from .release import CHECKPOINT, CONFIG, VAE_FILE, load_dit, load_wan_vae
from .pipeline import (WanLatents, center_crop_width, random_mask_patches,
                       resize_for_rectangle_crop, sample_clip, vace_context)

WAV2VEC = "wav2vec/wav2vec2-base-960h"
# tolerances of the reference data's README (fp32): exact stages, one DiT evaluation, latents after the
# solver and CFG, decoded video, uint8 frames
TOL_EXACT, TOL_DIT, TOL_LATENTS, TOL_VIDEO, TOL_FRAMES = 1e-5, 2e-2, 0.1, 3e-2, 3.0
DIT_KEYS = ("noise_pred_cond", "noise_pred_uncond")


def is_fixture(folder: Path) -> bool:
    return (folder / CHECKPOINT).is_file() and (folder / "io.safetensors").is_file()


def tolerance(key: str) -> float:
    name = key.split(".", 1)[1] if "." in key else key
    if key.startswith("a.") and not any(k in key for k in ("embedding_out", "projection_out", "proj_out")):
        return TOL_DIT
    if key.startswith("a."):
        return TOL_EXACT
    if any(k in name for k in DIT_KEYS):
        return TOL_DIT
    if any(k in name for k in ("guided", "x0_pred", "corrected_sample", "latents_after", "decode_input")) or (
            "latent_model_input" in name and ".step.0." not in key):
        return TOL_LATENTS
    if name in ("decoded", "video"):
        return TOL_VIDEO
    if name == "frames_uint8":
        return TOL_FRAMES
    return TOL_EXACT


def run_release(folder: Path) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor]]:
    """(our tensors under the fixture's names, the fixture's io) for one reference-data folder."""
    from safetensors.torch import load_file

    from ...audio.wav2vec import audio_windows, load_wav2vec, trace_hallo_audio

    files = require_files(folder, {"config": ["config.json"], "reference data": ["io.safetensors"],
                                   "VAE": [VAE_FILE], "wav2vec2": [f"{WAV2VEC}/config.json"]}, "Hallo4 reference data")
    config = json.loads(files["config"].read_text())
    io = load_file(str(files["reference data"]))
    run = config["run"]
    a = config.get("audio_proj_ctor", {})
    dit = load_dit(folder, audio={k: a[k] for k in ("seq_len", "blocks", "channels", "intermediate_dim",
                                                           "context_tokens") if k in a})
    latents = WanLatents(load_wan_vae(files["VAE"], config.get("vae_cfg", {}).get("dim", 96)))
    audio_model, extractor = load_wav2vec(files["wav2vec2"].parent)
    ours: dict[str, torch.Tensor] = {}
    fps = int(run.get("fps", 25))

    # (w) audio front end, no padding (clip_length -1)
    with torch.no_grad():
        w = trace_hallo_audio(audio_model, extractor, io["in.waveform"].numpy(), fps=fps, clip_length=-1)
    windows = audio_windows(w.audio_emb)
    ours.update({"w.fe_input_values": w.normalized, "w.conv_features": w.conv_features.transpose(1, 2),
                 "w.interpolated_features": w.interpolated, "w.audio_emb": w.audio_emb, "w.audio_windows": windows,
                 "w.audio_length": torch.tensor(w.audio_length)})

    # (p) source preparation
    height, width = run["size_hw"]
    ref = io["in.ref_image_uint8"].permute(2, 0, 1).float() / 255.0
    ref_image = resize_for_rectangle_crop(((ref - 0.5) / 0.5)[:, None], height, width)
    ours["p.ref_image"] = ref_image
    skeleton = io["in.skeleton_frames_uint8"].permute(3, 0, 1, 2).float() / 127.5 - 1.0  # (3, T, H, W)

    # (b, c, ...) the clip loop
    F = run["frame_num"]
    total = min(skeleton.shape[1], windows.shape[0])
    clips = math.ceil((total - 1) / (F - 1))
    context, negative = io["in.context_cond"].float(), io["in.context_null"].float()
    ref_latent = latents.encode(ref_image)
    outputs = []
    for i in range(clips):
        p = f"{'bcdefghijk'[i]}."
        idx = torch.arange(i * (F - 1), i * (F - 1) + F).clamp(max=total - 1)  # short clips repeat the last frame
        skel = resize_for_rectangle_crop(skeleton[:, idx], height, width)
        audio = windows[idx][None]
        frames = torch.zeros(3, F, height, width)
        mask = torch.ones(3, F, height, width)
        if i:
            # the official patch mask draws torch.randperm from the global RNG, which it never seeds; the reference
            # data seeds it with mask_seed + clip index right before the call and stores the result. Stage by
            # stage: the stored frame is this clip's input, and our mask of the stored previous clip's last frame
            # is compared with it; without a stored frame our own previous clip is masked
            stored, prev = io.get(f"{p}motion_frame_masked"), f"{'bcdefghijk'[i - 1]}.decoded"
            seed = run.get("mask_seed")
            if seed is not None:
                last = io[prev][:, -1:] if stored is not None and prev in io else outputs[-1][:, -1:]
                ours[f"{p}motion_frame_masked"] = random_mask_patches(last, torch.Generator().manual_seed(seed + i))
            if stored is None and seed is None:
                raise InputError(f"{folder} has no {p}motion_frame_masked and no run.mask_seed",
                                 "the official patch mask draws from an unseeded RNG: store the masked frame")
            motion = stored if stored is not None else ours[f"{p}motion_frame_masked"]
            frames[:, :1] = motion
            mask[:, :1] = 0
        ours.update({f"{p}skeleton_frames": skel, f"{p}audio_tensor": audio, f"{p}ref_latent": ref_latent})
        skeleton_latents = latents.encode_frames(skel)
        z = vace_context(latents, frames, mask, ref_latent, ours, p)
        f_lat, h, w_ = z.shape[1], ref_latent.shape[2], ref_latent.shape[3]
        noise = torch.randn((ref_latent.shape[0], f_lat, h, w_), generator=torch.Generator().manual_seed(run["base_seed"]))
        ours.update({f"{p}skeleton_latents": skeleton_latents, f"{p}vace_context": z, f"{p}noise": noise,
                     f"{p}seq_len": torch.tensor(f_lat * h * w_ // 4)})
        if i == 0:  # (a) the first model calls, instrumented
            x = noise.clone()
            x[:, :1] = ref_latent
            from .pipeline import official_scheduler

            t = torch.tensor([int(official_scheduler(run["sample_steps"], run["sample_shift"]).timesteps[0])])
            ours["a.t"] = t
            for branch, ctx, aud in (("cond", context, audio), ("uncond", negative, torch.zeros_like(audio))):
                dit.trace = {}
                with torch.no_grad():
                    out = dit(x[None], t, ctx[None], z[None], skeleton_latents, aud, run.get("context_scale", 1.0))
                for key, value in {**dit.trace, "model_out": out[0]}.items():
                    shared = key in ("patch_embedding_out", "time_embedding_out", "time_projection_out",
                                     "vace_patch_embedding_out", "pose_proj_out")
                    ours[f"a.{key}" if shared else f"a.{branch}.{key}"] = value
            dit.trace = None
        final = sample_clip(dit, noise, ref_latent, context, negative, z, skeleton_latents, audio, run["sample_steps"],
                            run["sample_shift"], run["guide_scale"], run.get("context_scale", 1.0), trace=ours, prefix=p)
        ours[f"{p}decode_input"] = final[:, 1:]
        decoded = latents.decode(final[:, 1:])
        ours[f"{p}decoded"] = decoded
        outputs.append(decoded)

    # (out) assembly: later clips without their first frame, cropped back to the reference's aspect, truncated
    video = torch.cat([outputs[0]] + [o[:, 1:] for o in outputs[1:]], dim=1)[:, :total]
    video = center_crop_width(video, tuple(int(v) for v in io["in.ref_image_uint8"].shape[:2]), height)
    ours["out.video"] = video
    ours["out.frames_uint8"] = ((video.clamp(-1, 1) + 1) / 2 * 255).to(torch.uint8).permute(1, 2, 3, 0)
    return ours, io


def check_fixture(folder: Path) -> list[Check]:
    ours, io = run_release(folder)
    checks = []
    for key in io:
        if key.startswith("in."):
            continue
        if key not in ours:
            checks.append(Check(f"{folder.name}/{key} (not reproduced)", float("inf"), tolerance(key)))
            continue
        ref, mine = io[key], ours[key]
        if mine.numel() == ref.numel() and tuple(mine.shape) != tuple(ref.shape):
            mine = mine.reshape(ref.shape)
        checks.append(compare(f"{folder.name}/{key}", mine.float(), ref.float(), tolerance(key)))
    return checks


def verify_hallo4(root: Path) -> list[Check]:
    """Every check of every Hallo4 reference-data folder under `root` (itself included)."""
    return verify_fixtures(root, is_fixture, check_fixture, "Hallo4",
                           f"{CHECKPOINT}, {CONFIG}, {VAE_FILE}, {WAV2VEC}/, config.json and io.safetensors")


__all__ = ["verify_hallo4", "run_release"]
