"""`talkinghead verify skyreels-a1 DIR`: run our SkyReels-A1 on reference data made by the official code and
compare every stored output. DIR is a folder of that format (see the skyreels_a1 reference data's README): a
release-layout folder (transformer/, vae/, pose_guider/, scheduler/) with config.json and io.safetensors, or a
folder holding one or more of them.

Three comparisons, each read from the folder: (a) one float32 denoising step with the patch embedding, time
embedding and every block's output; (b) the whole bf16 pipeline from the recorded generator seed, each stage
also checked on the stored inputs of that stage; (c) the float32 replica of the loop with (b)'s two noise draws.
Sizes, frame counts, steps, guidance and seeds come from config.json and the stored tensors' shapes."""
from __future__ import annotations

from pathlib import Path

import torch

from ...verify import Check, compare, generator_seed, verify_fixtures
from ..skyreels_common import ReferenceRun, recorded_steps, release_pixels
from .pipeline import release_control, sample_a1_release
from .release import SkyReelsA1Release, load_release

# tolerances from the fixture README (float32 on CPU, and a faithful bf16 re-implementation on CPU)
TOL_FP32_EXACT = 1e-5  # pixels, VAE / pose-guider latents, patch embedding
TOL_FP32 = 1e-4  # transformer outputs, guided outputs, latents (README: atol 1e-4 with rtol 1e-4)
TOL_FP32_FRAMES = 1.0  # uint8 levels
TOL_BF16_MODULE = 0.05  # one module on the stored inputs (control latents, VAE moments, one transformer call)
TOL_BF16_CHAIN = 0.15  # guided outputs and latents after several steps
TOL_BF16_DECODED = 0.1
TOL_BF16_FRAMES = 8.0  # uint8 levels
TOL_SCHEDULE = 1e-12


def is_fixture(folder: Path) -> bool:
    return (folder / "io.safetensors").is_file() and (folder / "pose_guider").is_dir()


def check_fixture(folder: Path) -> list[Check]:
    ref = ReferenceRun(folder)
    run, io, tag, checks, check = ref.config["run"], ref.io, ref.tag, ref.checks, ref.check
    guidance = float(run["guidance_scale"])
    steps = int(run["num_inference_steps"])
    identity = io["in.siglip_last_hidden_state"]
    ref_pixels = release_pixels(io["in.ref_image_uint8"].numpy())
    control = release_control(io["in.control_frames_uint8"].numpy())

    # (a) and (c): float32, with (b)'s noise draws
    release = load_release(folder, torch.float32, identity_encoder=False)
    check("a.ref_pixels", ref_pixels, TOL_FP32_EXACT)
    hooks, trace = {}, {}
    handles = _record_step(release, hooks)
    try:
        frames = sample_a1_release(release.model, release.vae, release.scheduler(), ref_pixels, control,
                                   identity.float(), steps, guidance, image_noise=io["b.vae_sample_noise"].float(),
                                   noise=io["b.initial_latents"].float(), trace=trace)
    finally:
        for h in handles:
            h.remove()
    check("sched.alphas_cumprod", release.scheduler().alphas_cumprod.double(), TOL_SCHEDULE)
    for key in ("ref_vae_moments", "image_latents", "control_latents"):
        check(f"a.{key}", trace[key], TOL_FP32_EXACT)
    check("a.latent_model_input", trace["step.0.latent_model_input"], TOL_FP32_EXACT)
    for key, value in hooks.items():
        check(f"a.{key}", value, TOL_FP32_EXACT if key == "patch_embed_out" else TOL_FP32)
    if "step.0.transformer_out" in trace:
        uncond, cond = trace["step.0.transformer_out"].chunk(2)
        check("a.transformer_out_uncond", uncond, TOL_FP32)
        check("a.transformer_out_cond", cond, TOL_FP32)
    check("a.guided", trace["step.0.guided"], TOL_FP32)
    check("a.scheduler_prev_sample", trace["step.0.scheduler_prev_sample"], TOL_FP32)
    check("a.scheduler_pred_original_sample", trace["step.0.scheduler_pred_original_sample"], TOL_FP32)
    for i in range(recorded_steps(io, "c", "latents_after", "transformer_out")):
        for key in ("transformer_out", "guided", "latents_after"):
            check(f"c.step.{i}.{key}", trace[f"step.{i}.{key}"], TOL_FP32)
    check("c.final_latents", trace["final_latents"], TOL_FP32)
    check("c.frames_uint8", torch.from_numpy(frames), TOL_FP32_FRAMES)
    del release

    # (b): the pipeline in the recorded dtype from the recorded generator seed
    dtype = io["b.final_latents"].dtype if "b.final_latents" in io else torch.bfloat16
    release = load_release(folder, dtype, identity_encoder=False)
    trace = {}
    generator = torch.Generator().manual_seed(generator_seed(run))
    frames = sample_a1_release(release.model, release.vae, release.scheduler(), ref_pixels, control, identity,
                               steps, guidance, generator=generator, trace=trace)
    check("b.timesteps", trace["timesteps"], 0.0)
    check("b.rope_cos", trace["rope_cos"], TOL_FP32_EXACT)
    check("b.rope_sin", trace["rope_sin"], TOL_FP32_EXACT)
    check("b.vae_sample_noise", trace["vae_sample_noise"], 0.0)  # the generator's first draw
    check("b.initial_latents", trace["initial_latents"], 0.0)  # and its second
    for key in ("ref_vae_moments", "control_latents"):
        check(f"b.{key}", trace[key], TOL_BF16_MODULE)
    check("b.image_latents", trace["image_latents"], TOL_BF16_MODULE)
    check("b.step.0.latent_model_input", trace["step.0.latent_model_input"], TOL_BF16_MODULE)
    n = recorded_steps(io, "b", "latents_after", "transformer_out")
    for i in range(n):
        for key in ("guided", "scheduler_prev_sample", "latents_after"):
            check(f"b.step.{i}.{key}", trace[f"step.{i}.{key}"], TOL_BF16_CHAIN)
        check(f"b.step.{i}.transformer_out", trace[f"step.{i}.transformer_out"], TOL_BF16_CHAIN)
    check("b.final_latents", trace["final_latents"], TOL_BF16_CHAIN)
    check("b.decode_input", trace["decode_input"], TOL_BF16_CHAIN)
    check("b.decoded", trace["decoded"], TOL_BF16_DECODED)
    check("b.frames_uint8", torch.from_numpy(frames), TOL_BF16_FRAMES)
    checks += _bf16_stages(release, io, tag, guidance)
    return checks


def _record_step(release: SkyReelsA1Release, out: dict) -> list:
    """Forward hooks that keep the first call's patch embedding, time embedding and each block's video tokens."""
    transformer = release.model.transformer

    def keep(name, pick):
        def hook(_module, _inputs, output):
            out.setdefault(name, pick(output).detach().clone())
        return hook

    handles = [transformer.patch_embed.register_forward_hook(keep("patch_embed_out", lambda o: o)),
               transformer.time_embedding.register_forward_hook(keep("temb", lambda o: o))]
    for i, block in enumerate(transformer.transformer_blocks):
        handles.append(block.register_forward_hook(keep(f"block.{i}.hidden_out", lambda o: o[0])))
    return handles


@torch.no_grad()
def _bf16_stages(release: SkyReelsA1Release, io: dict, tag: str, guidance: float) -> list[Check]:
    """Each bf16 module on the stored inputs of its stage: the transformer per step, the decoder."""
    model, vae = release.model, release.vae
    dtype = next(model.parameters()).dtype
    checks = []
    identity = io["in.siglip_last_hidden_state"].to(dtype)
    tokens = model.identity_proj(torch.cat([torch.zeros_like(identity), identity]) if guidance > 1 else identity)
    rope = (io["b.rope_cos"], io["b.rope_sin"])
    control = io["b.control_latents"].permute(0, 2, 1, 3, 4)
    n = 2 if guidance > 1 else 1
    for i, t in enumerate(io["b.timesteps"]):
        key = f"b.step.{i}.transformer_out"
        latents = io["b.initial_latents"] if i == 0 else io[f"b.step.{i - 1}.latents_after"]
        if key not in io:
            continue
        x = torch.cat([torch.cat([latents] * n), torch.cat([control] * n), torch.cat([io["b.image_latents"]] * n)],
                      dim=2)
        out = model.transformer(x, tokens, t.expand(n), image_rotary_emb=rope, return_dict=False)[0]
        checks.append(compare(f"{tag}/{key} (on stored inputs)", out, io[key], TOL_BF16_MODULE))
    if "b.decode_input" in io and "b.decoded" in io:
        checks.append(compare(f"{tag}/b.decoded (on stored inputs)", vae.decode(io["b.decode_input"]).sample,
                              io["b.decoded"], TOL_BF16_DECODED))
    return checks


def verify_skyreels_a1(root: Path) -> list[Check]:
    """Every check of every SkyReels-A1 reference-data folder under `root` (itself included)."""
    return verify_fixtures(root, is_fixture, check_fixture, "SkyReels-A1",
                           "io.safetensors beside transformer/, vae/, pose_guider/ and scheduler/")
