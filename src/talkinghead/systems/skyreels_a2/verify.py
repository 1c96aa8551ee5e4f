"""`talkinghead verify skyreels-a2 DIR`: run our SkyReels-A2 on reference data made by the official code and
compare every stored output. DIR is a folder of that format (see the skyreels_a2 reference data's README): a
complete release folder (transformer/, vae/, image_encoder/, image_processor/, text_encoder/, tokenizer/) with
config.json and io.safetensors, or a folder holding one or more of them.

Two runs, both read from the folder: (c) everything in float32, checked tightly stage by stage (reference
preparation, CLIP, UMT5, the condition, every step's transformer calls, UniPC internals, the decode) with the
first step's internals; (b) the release's dtypes (transformer and text encoder in the stored dtype), checked
with the README's bf16 tolerances, each transformer call also on the stored inputs of its step. Sizes, frame
counts, steps, guidance, prompts and seeds come from config.json and the stored tensors."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from ...verify import Check, compare, generator_seed, verify_fixtures
from ..skyreels_common import ReferenceRun, recorded_steps
from .pipeline import A2_CLIP_SIZE, crop_to_aspect, pad_to_aspect, sample_a2_release
from .release import load_release

# tolerances from the fixture README
TOL_FP32_EXACT = 1e-5  # CLIP states, prompt embeddings, VAE moments, condition, preprocessed pixels
TOL_FP32 = 1e-4  # transformer outputs, step internals, guided outputs, x0 predictions, latents, decoded
TOL_FP32_DECODE_INPUT = 2e-4
TOL_UINT8 = 1.0  # PIL resizes and the fp32 frames: within one level
TOL_BF16_CALL = 0.06  # one transformer call on the stored inputs
# the bf16 UMT5 encoder: transformers 5 rounds differently from the 4.49 the release ran (measured 0.11 at
# |x| <= 3.7 on the tiny encoder, about 7 bf16 steps; float32 agrees to 3e-6); as the README's chained bf16 bound
TOL_BF16_TEXT = 0.15
TOL_BF16_CHAIN = 0.3  # guided outputs, x0 predictions, latents after several steps
TOL_BF16_DECODE_INPUT = 0.6
TOL_BF16_DECODED = 0.3
TOL_BF16_FRAMES = 32.0  # uint8 levels, max
TOL_BF16_FRAMES_MEAN = 2.0  # uint8 levels, mean


def is_fixture(folder: Path) -> bool:
    return (folder / "io.safetensors").is_file() and (folder / "image_encoder").is_dir()


def references(io: dict, config: dict, height: int, width: int) -> tuple[list[np.ndarray], list[np.ndarray]]:
    """(VAE-branch images, CLIP-branch images) of the stored references, prepared as infer.py does: subjects
    padded with white, the background (a role saying "crop", else the last image) centre-cropped."""
    images, i = [], 0
    while f"in.ref_image_{i}_uint8" in io:
        images.append(io[f"in.ref_image_{i}_uint8"].numpy())
        i += 1
    roles = config.get("inputs", {}).get("ref_roles") or []
    cropped = [("crop" in r) for r in roles] if len(roles) == len(images) else \
        [k == len(images) - 1 for k in range(len(images))]
    vae = [crop_to_aspect(img, height, width) if c else pad_to_aspect(img, height, width)
           for img, c in zip(images, cropped)]
    clip = [pad_to_aspect(img, A2_CLIP_SIZE, A2_CLIP_SIZE) for img in images]
    return vae, clip


def _record_first_step(transformer, out: dict) -> list:
    """Hooks keeping the first transformer call's internals (cond) and the second's (uncond) under the fixture's
    `s0.*` names."""
    calls = {"n": 0}

    def tag() -> str:
        return "cond" if calls["n"] == 0 else "uncond"

    def keep(name, per_call, pick=lambda o: o):
        def hook(_module, _inputs, output):
            if calls["n"] < 2:
                key = f"s0.{tag()}.{name}" if per_call else f"s0.{name}"
                out.setdefault(key, pick(output).detach().clone())
        return hook

    emb = transformer.condition_embedder
    handles = [transformer.patch_embedding.register_forward_hook(keep("patch_embedding_out", False)),
               emb.time_embedder.register_forward_hook(keep("temb", True)),
               emb.time_proj.register_forward_hook(keep("timestep_proj", True)),
               emb.text_embedder.register_forward_hook(keep("text_embedder_out", True)),
               emb.image_embedder.register_forward_hook(keep("image_embedder_out", False)),
               transformer.norm_out.register_forward_hook(keep("norm_out_out", True)),
               transformer.rope.register_forward_hook(keep("rope_freqs_real_imag", False, lambda o: torch.stack(
                   [o[0][0, :, 0, 0::2], o[1][0, :, 0, 1::2]], dim=-1)))]
    for k, block in enumerate(transformer.blocks):
        handles.append(block.register_forward_hook(keep(f"block.{k}_out", True)))

    def count(_module, _inputs, _output):
        calls["n"] += 1
    handles.append(transformer.register_forward_hook(count))
    return handles


def check_fixture(folder: Path) -> list[Check]:
    ref = ReferenceRun(folder)
    config, io, tag, checks, check = ref.config, ref.io, ref.tag, ref.checks, ref.check
    run, inputs = config["run"], config.get("inputs", {})
    height, width, frames = int(run["height"]), int(run["width"]), int(run["num_frames"])
    steps, guidance = int(run["num_inference_steps"]), float(run["guidance_scale"])
    prompt, negative = inputs.get("prompt", ""), inputs.get("negative_prompt", "")
    vae_images, clip_images = references(io, config, height, width)

    def tol_c(key: str) -> float:
        if key.startswith("text."):  # token ids and masks
            return 0.0
        if key.endswith("_uint8"):
            return TOL_UINT8
        if key.startswith(("prep.", "clip.", "cond.")) or "embeds" in key or "t5_last" in key:
            return TOL_FP32_EXACT
        if key == "decode_input":
            return TOL_FP32_DECODE_INPUT
        if key.endswith("frames_uint8"):
            return TOL_UINT8
        return TOL_FP32

    # (c): float32 throughout, with the generator's draws made here from the recorded seed
    release = load_release(folder, torch.float32)
    trace: dict = {}
    handles = _record_first_step(release.transformer, trace)
    try:
        out = sample_a2_release(release, vae_images, clip_images, prompt, negative, frames, steps, guidance,
                                generator=torch.Generator().manual_seed(generator_seed(run)), trace=trace)
    finally:
        for h in handles:
            h.remove()
    trace["frames_uint8"] = torch.from_numpy(out)
    for key, value in trace.items():
        if key.startswith(("prep.", "clip.", "text.", "cond.", "init.", "sched.")):
            tol = {"cond.posterior_noise": 0.0, "init.latents": 0.0, "sched.timesteps": 0.0}.get(key, tol_c(key))
            check(key, value, tol)
        else:
            check(f"c.{key}", value, tol_c(key))
    del release

    # (b): the release's dtypes, the same draws
    dtype = io["b.step.0.transformer_out_cond"].dtype if "b.step.0.transformer_out_cond" in io else torch.bfloat16
    release = load_release(folder, dtype)
    trace = {}
    out = sample_a2_release(release, vae_images, clip_images, prompt, negative, frames, steps, guidance,
                            generator=torch.Generator().manual_seed(generator_seed(run)), trace=trace)
    for key in ("prompt_t5_last_hidden_state", "prompt_embeds", "negative_prompt_t5_last_hidden_state",
                "negative_prompt_embeds"):
        if key in trace:
            check(f"b.{key}", trace[key], TOL_BF16_TEXT)
    for key in ("image_embeds", "step.0.latent_model_input"):
        check(f"b.{key}", trace[key], TOL_BF16_CALL)
    for i in range(recorded_steps(io, "b", "latents_after")):
        for key in ("transformer_out_cond", "transformer_out_uncond", "guided", "x0_pred", "corrected_sample",
                    "latents_after"):
            if f"step.{i}.{key}" in trace:
                check(f"b.step.{i}.{key}", trace[f"step.{i}.{key}"], TOL_BF16_CHAIN)
    check("b.final_latents", trace["final_latents"], TOL_BF16_CHAIN)
    check("b.decode_input", trace["decode_input"], TOL_BF16_DECODE_INPUT)
    check("b.decoded", trace["decoded"], TOL_BF16_DECODED)
    check("b.frames_uint8", torch.from_numpy(out), TOL_BF16_FRAMES)
    if "b.frames_uint8" in io:
        mean = float((torch.from_numpy(out).float() - io["b.frames_uint8"].float()).abs().mean())
        checks.append(Check(f"{tag}/b.frames_uint8 (mean |diff|)", mean, TOL_BF16_FRAMES_MEAN))
    checks += _bf16_calls(release, io, tag, guidance)
    return checks


@torch.no_grad()
def _bf16_calls(release, io: dict, tag: str, guidance: float) -> list[Check]:
    """Each transformer call of (b) on the stored inputs of its step."""
    transformer = release.transformer
    dtype = next(transformer.parameters()).dtype
    checks = []
    for i in range(recorded_steps(io, "b", "latents_after")):
        latents = io["init.latents"] if i == 0 else io[f"b.step.{i - 1}.latents_after"]
        x = torch.cat([latents, io["cond.condition"]], dim=1).to(dtype)
        t = io[f"b.step.{i}.timestep"]
        for branch, text in (("cond", "b.prompt_embeds"), ("uncond", "b.negative_prompt_embeds")):
            key = f"b.step.{i}.transformer_out_{branch}"
            if key not in io or text not in io:
                continue
            out = transformer(x, t, encoder_hidden_states=io[text], encoder_hidden_states_image=io["b.image_embeds"],
                              return_dict=False)[0]
            checks.append(compare(f"{tag}/{key} (on stored inputs)", out, io[key], TOL_BF16_CALL))
    return checks


def verify_skyreels_a2(root: Path) -> list[Check]:
    """Every check of every SkyReels-A2 reference-data folder under `root` (itself included)."""
    return verify_fixtures(root, is_fixture, check_fixture, "SkyReels-A2",
                           "io.safetensors beside transformer/, vae/, image_encoder/, text_encoder/, tokenizer/ "
                           "and image_processor/")
