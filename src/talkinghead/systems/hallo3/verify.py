"""`talkinghead verify hallo3 DIR`: load a SAT-format Hallo3 checkpoint through the release loader, run our
model and the official sampler on the recorded inputs, and compare every recorded tensor.

DIR is a folder of the format of the hallo3 reference data's hallo3_tiny (or a folder holding one): `latest`,
`<n>/mp_rank_00_model_states.pt`, `config.json` (the SAT model config, the audio/face projection sizes and
the sampling seeds) and `io.safetensors`. Sizes, steps and seeds come from those files only."""
from __future__ import annotations

import json
from pathlib import Path

import torch

from ...models.checkpoints import require_files
from ...verify import Check, compare, verify_fixtures
from .model import Hallo3Model
from .release import config_from_sat, find_sat_checkpoint, load_sat_checkpoint
from .pipeline import Hallo3Sampler

TOL = 1e-4  # fp32, every tensor (the fixture README: reordering and attention kernels stay under 1e-5)


def is_fixture(folder: Path) -> bool:
    return (folder / "latest").is_file() and (folder / "io.safetensors").is_file() and (folder / "config.json").is_file()


def load_fixture_model(folder: Path) -> tuple[Hallo3Model, dict]:
    """Our model built from the fixture's SAT config and loaded from its checkpoint by the release loader."""
    files = require_files(folder, {"config": ["config.json"], "reference data": ["io.safetensors"]},
                          "Hallo3 reference data")
    config = json.loads(files["config"].read_text())
    model = Hallo3Model(**config_from_sat(config["model_config"], config.get("audio_proj_args"),
                                          config.get("face_proj_args")))
    load_sat_checkpoint(model, find_sat_checkpoint(folder))
    return model.eval(), config


def _sampler(model_config: dict) -> tuple[Hallo3Sampler, int, float]:
    """The sampler, its step count and the guidance scale DynamicCFG actually applies (a constant 3.5)."""
    params = model_config["sampler_config"]["params"]
    disc = params.get("discretization_config", {}).get("params", {})
    sampler = Hallo3Sampler(shift_scale=disc.get("shift_scale", 1.0))
    return sampler, params["num_steps"], 3.5


def run_recorded_inputs(model: Hallo3Model, config: dict, io: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Run the official order of calls on the fixture's `in.*` tensors (README §3): seeded initial noise, the
    reference pass with zero text, then the sampler with the CFG batch [uc, c] (zero text and zero audio in uc,
    the same face and image condition in both). Returns every intermediate under the fixture's names."""
    text, ref_latent = io["in.text_emb_cond"], io["in.ref_image_latent"]
    image_cond, audio, face = io["in.concat_first_latent"], io["in.audio_emb"], io["in.face_emb"]
    sampler, steps, scale = _sampler(config["model_config"])
    p = model.transformer.config.patch_size
    b, _, c, h, w = ref_latent.shape
    frames = 1 + (audio.shape[1] - 1) // 2 ** model.audio_proj.compressions  # latent frames of the clip
    tokens_per_frame = (h // p) * (w // p)
    trace: dict[str, torch.Tensor] = {}
    blocks = model.transformer.transformer_blocks
    hooks, record = [], {"on": False}

    def keep(name, fn=lambda o: o):
        def hook(module, args, out):
            if record["on"]:
                trace[name] = fn(out)
        return hook

    def attention_only(name):  # a cross layer returns x + attn(LN(x)); the fixture holds attn(LN(x)) per frame
        def hook(module, args, out):
            if record["on"]:
                trace[name] = (out - args[0]).reshape(-1, tokens_per_frame, out.shape[-1])
        return hook

    def tokens(name):
        def hook(module, args):
            if record["on"]:
                trace[name] = args[0]
        return hook

    joined = lambda o: torch.cat([o[1], o[0]], 1)  # noqa: E731 - a block's (video, text) -> [text, video]
    for n, block in enumerate(model.reference_net.transformer_blocks):
        hooks.append(block.register_forward_hook(keep(f"ref.layer{n}.out", joined)))
    hooks.append(model.reference_net.register_forward_hook(keep("ref.out", lambda o: o[0])))
    hooks.append(model.audio_proj.register_forward_hook(keep("step0.audio_proj_out")))
    hooks.append(model.face_proj.register_forward_hook(keep("step0.face_proj_out")))
    for n, block in enumerate(blocks):
        hooks.append(block.register_forward_hook(keep(f"step0.layer{n}.out", joined)))
        for kind in ("face", "audio"):
            layer = block.cross_layers[f"{kind}_attn"]
            hooks.append(layer.register_forward_hook(attention_only(f"step0.layer{n}.{kind}_attn_out")))
            hooks.append(layer.norm.register_forward_hook(keep(f"step0.layer{n}.{kind}_attn_in")))
            hooks.append(layer.attn.to_k.register_forward_pre_hook(tokens(f"step0.layer{n}.{kind}_attn_tokens")))

    seed = int(config.get("variant", {}).get("sample_seed", 42))
    generator = torch.Generator().manual_seed(seed)
    step = {"n": 0}
    try:
        with torch.no_grad():
            noise = torch.randn((b, frames, c, h, w), generator=generator)
            trace["s.initial_noise"] = noise
            record["on"] = True
            model.encode_reference(ref_latent, torch.zeros_like(text))  # zero text: the unconditional embedding
            record["on"] = False
            for n in range(len(blocks)):
                trace[f"ref.bank.layer{n}"] = model.bank.read(n, 2)
            motion = torch.cat([image_cond, image_cond])
            cond_text, cond_face = torch.cat([torch.zeros_like(text), text]), torch.cat([face, face])
            cond_audio = torch.cat([torch.zeros_like(audio), audio])

            def predict(x, index):
                i = step["n"]
                record["on"] = i == 0
                t = torch.full((x.shape[0],), float(index))
                trace[f"step{i}.den_in_x"], trace[f"step{i}.den_idx"] = x, t
                out = model(x, t, cond_text, cond_face, cond_audio, motion, reuse_reference=True)
                record["on"] = False
                step["n"] += 1
                return out

            trace["s.samples"] = sampler.sample(predict, noise, steps, scale, generator, trace=trace)
    finally:
        for hook in hooks:
            hook.remove()
    return trace


def check_fixture(folder: Path) -> list[Check]:
    from safetensors.torch import load_file

    model, config = load_fixture_model(folder)
    io = load_file(str(folder / "io.safetensors"))
    trace = run_recorded_inputs(model, config, io)
    checks = [compare(f"{folder.name}/{key}", trace[key], io[key], TOL) for key in trace if key in io]
    missing = sorted(k for k in io if not k.startswith("in.") and k not in trace)
    checks += [Check(f"{folder.name}/{key} (not reproduced)", float("inf"), TOL) for key in missing]
    return checks


def verify_hallo3(root: Path) -> list[Check]:
    """Every check of every Hallo3 reference-data folder under `root` (itself included)."""
    return verify_fixtures(root, is_fixture, check_fixture, "Hallo3",
                           "latest, <n>/mp_rank_00_model_states.pt, config.json and io.safetensors")
