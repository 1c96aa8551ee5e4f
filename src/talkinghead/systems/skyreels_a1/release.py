"""The official SkyReels-A1-5B release folder (huggingface.co/Skywork/SkyReels-A1; the upstream code's
`pretrained_models/SkyReels-A1-5B/`): diffusers folders `transformer/`, `vae/`, `pose_guider/`, the scheduler config
and the SigLIP identity encoder. The release keeps the identity MLP inside the patch embedding as
`patch_embed.pose_proj.{0,2}` (OFFICIAL_KEY_MAP renames it to our `identity_proj.{0,2}`), and its `pose_guider/`
folder is a full CogVideoX VAE whose `encoder.*` keys load into `landmark_guider`. `load_release` loads the folder
strictly; `load_official_state` puts release-named state dicts into a model."""
from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path

import torch
from diffusers import CogVideoXTransformer3DModel
from torch import nn

from ..skyreels_common import find_release_root, read_weights
from .model import SkyReelsA1, SkyReelsA1Config

RELEASE_NAME = "SkyReels-A1-5B (huggingface.co/Skywork/SkyReels-A1)"
SIGLIP_FOLDER = "siglip-so400m-patch14-384"  # the identity encoder, inside the release folder
IDENTITY_TOKENS = 729  # SigLIP so400m: 27 x 27 patches; the release's patch embedding hard-codes this count
RELEASE_ROPE_BASE = (720, 480)  # px (width, height): the release pipeline fits its RoPE grid to this size
RELEASE_PARTS = ("transformer", "vae", "pose_guider")  # diffusers model folders of the release
OFFICIAL_KEY_MAP = {"transformer.patch_embed.pose_proj.": "identity_proj."}  # release prefix -> ours


def official_name(key: str) -> str:
    """A release transformer key (prefixed `transformer.`) -> our SkyReelsA1 key."""
    for old, new in OFFICIAL_KEY_MAP.items():
        if key.startswith(old):
            return new + key[len(old):]
    return key


def load_official_state(model: SkyReelsA1, state: dict[str, torch.Tensor],
                        guider_vae_state: dict[str, torch.Tensor] | None = None) -> None:
    """Release transformer keys (prefixed `transformer.`) renamed by OFFICIAL_KEY_MAP into `model`, strict; the
    guider from the release's pose_guider VAE state when given."""
    from ...models.checkpoints import load_strict

    renamed = {official_name(k): v for k, v in state.items()}
    if guider_vae_state is not None:
        model.landmark_guider.load_vae_encoder(guider_vae_state)
    renamed.update({f"landmark_guider.{k}": v for k, v in model.landmark_guider.state_dict().items()})
    load_strict(model, renamed, "SkyReels-A1 transformer")


@dataclass
class SkyReelsA1Release:
    """What the official SkyReels-A1-5B folder holds, loaded: the model (transformer + identity MLP + pose
    guider), the CogVideoX VAE, the scheduler config (CogVideoXDDIMScheduler) and, when asked for, the SigLIP
    identity encoder with its image processor."""

    model: SkyReelsA1
    vae: nn.Module
    scheduler_config: dict
    identity_encoder: nn.Module | None = None
    image_processor: object | None = None

    def scheduler(self):
        from diffusers import CogVideoXDDIMScheduler

        return CogVideoXDDIMScheduler.from_config(self.scheduler_config)


def release_root(folder: Path) -> Path:
    """`pretrained_models/SkyReels-A1-5B` of an upstream checkout, `SkyReels-A1-5B/`, or the folder itself."""
    return find_release_root(folder, ("pretrained_models/SkyReels-A1-5B", "SkyReels-A1-5B"))


def release_config(transformer: dict, pose_guider: dict, identity_dim: int = 1152, identity_mult: int = 3
                   ) -> SkyReelsA1Config:
    """Our config for a release's transformer/config.json and pose_guider/config.json. The release class
    ignores `max_text_seq_length` and always keeps IDENTITY_TOKENS rows for the identity tokens."""
    import inspect

    accepted = set(inspect.signature(CogVideoXTransformer3DModel.__init__).parameters) - {"self"}
    tconf = {k: v for k, v in transformer.items() if k in accepted}
    tconf["max_text_seq_length"] = IDENTITY_TOKENS
    vae = {k: v for k, v in pose_guider.items() if not k.startswith("_")}
    return SkyReelsA1Config(transformer=tconf, vae=vae, identity_dim=identity_dim, identity_mult=identity_mult,
                            causal_guider=False, rope_base=RELEASE_ROPE_BASE)


def release_state_shapes(model: SkyReelsA1) -> dict[str, tuple[int, ...]]:
    """The release transformer file's keys and shapes for `model` (the guider lives in pose_guider/)."""
    inverse = {v: k[len("transformer."):] for k, v in OFFICIAL_KEY_MAP.items()}
    out = {}
    for k, v in model.state_dict().items():
        if k.startswith("landmark_guider."):
            continue
        for ours, theirs in inverse.items():
            if k.startswith(ours):
                k = theirs + k[len(ours):]
        out[k if k.startswith("patch_embed.pose_proj.") else k[len("transformer."):]] = tuple(v.shape)
    return out


def load_release(folder: str | os.PathLike, dtype: torch.dtype = torch.float32, device: str | torch.device = "cpu",
                 identity_encoder: bool = True) -> SkyReelsA1Release:
    """Load the official SkyReels-A1-5B folder strictly (every key present, none left over, shapes equal),
    nothing downloaded. Layout (the upstream inference code's `pretrained_models/SkyReels-A1-5B/`):
    `transformer/`, `vae/`, `pose_guider/` (diffusers folders: config.json + diffusion_pytorch_model.safetensors
    or its sharded index), `scheduler/scheduler_config.json` and, with `identity_encoder`,
    `siglip-so400m-patch14-384/` (config.json, model.safetensors, preprocessor_config.json). Weights are cast
    to `dtype` (the release runs in bf16). One CheckpointError lists every missing file, then every key problem."""
    from diffusers import AutoencoderKLCogVideoX

    from ...errors import CheckpointError
    from ...models.checkpoints import key_report

    root = release_root(Path(folder))
    if not root.is_dir():
        raise CheckpointError(f"checkpoint folder {root} does not exist (expected the {RELEASE_NAME} folder)")
    needed = [f"{part}/config.json" for part in RELEASE_PARTS] + ["scheduler/scheduler_config.json"]
    if identity_encoder:
        needed += [f"{SIGLIP_FOLDER}/{n}" for n in ("config.json", "model.safetensors", "preprocessor_config.json")]
    missing = [n for n in needed if not (root / n).is_file()]
    states = {}
    for part in RELEASE_PARTS:
        states[part], absent = read_weights(root / part, part)
        missing += absent
    if missing:
        raise CheckpointError(f"{root} is missing files of the {RELEASE_NAME} release:\n"
                              + "\n".join(f"  {m}" for m in missing))
    configs = {part: json.loads((root / part / "config.json").read_text()) for part in RELEASE_PARTS}
    pose = states["transformer"].get("patch_embed.pose_proj.0.weight")
    hidden, identity_dim = pose.shape if pose is not None else (3 * 1152, 1152)
    config = release_config(configs["transformer"], configs["pose_guider"], identity_dim, hidden // identity_dim)
    with torch.device("meta"):  # shapes only: the file's tensors are assigned below
        model = SkyReelsA1(config)
        vae = AutoencoderKLCogVideoX.from_config(configs["vae"])
        guider_vae = AutoencoderKLCogVideoX.from_config(configs["pose_guider"])
    expected = {"transformer": release_state_shapes(model), "vae": vae.state_dict(),
                "pose_guider": guider_vae.state_dict()}
    problems = []
    for part in RELEASE_PARTS:
        shapes = {k: torch.empty(v, device="meta") if isinstance(v, tuple) else v for k, v in expected[part].items()}
        report = key_report(shapes, states[part])
        if report:
            problems.append(f"{part}/:\n" + "\n".join(f"  {line}" for line in report))
    if problems:
        raise CheckpointError(f"{root} does not match the {RELEASE_NAME} model:\n" + "\n".join(problems))
    ours = {official_name("transformer." + k): v for k, v in states["transformer"].items()}
    # the pose guider runs only its encoder: the decoder half of the file is checked above, then dropped
    ours.update({f"landmark_guider.{k}": v for k, v in states["pose_guider"].items() if k.startswith("encoder.")})
    model.load_state_dict(ours, strict=True, assign=True)
    vae.load_state_dict(states["vae"], strict=True, assign=True)
    for module in (model, vae):  # nn.Module.to: diffusers' own .to warns about fp32 modules this VAE lacks
        nn.Module.to(module, device=device, dtype=dtype).eval()
    vae.enable_tiling()  # as the release's inference: at 480 x 720 the image encode and the decode go by tiles
    release = SkyReelsA1Release(model, vae, json.loads((root / "scheduler" / "scheduler_config.json").read_text()))
    if identity_encoder:
        release.identity_encoder, release.image_processor = load_siglip(root / SIGLIP_FOLDER, device)
    return release


def load_siglip(folder: Path, device: str | torch.device = "cpu"):
    """SiglipVisionModel (fp32, as the release runs it) and its SiglipImageProcessor from a local folder; a
    file holding the whole SiglipModel is fine (its text tower is not used). Missing vision keys are a
    CheckpointError."""
    from transformers import SiglipImageProcessor, SiglipVisionModel

    from ...errors import CheckpointError

    from transformers.utils import logging as hf_logging

    verbosity = hf_logging.get_verbosity()
    hf_logging.set_verbosity_error()  # the text tower's keys are expected to be left over: no table of them
    try:
        encoder, info = SiglipVisionModel.from_pretrained(str(folder), local_files_only=True,
                                                          output_loading_info=True)
    except (OSError, ValueError) as exc:
        raise CheckpointError(f"cannot load the SigLIP identity encoder from {folder}: {exc}") from exc
    finally:
        hf_logging.set_verbosity(verbosity)
    if info.get("missing_keys") or info.get("mismatched_keys"):
        keys = list(info.get("missing_keys", [])) + [str(k) for k in info.get("mismatched_keys", [])]
        raise CheckpointError(f"{folder}/model.safetensors lacks SigLIP vision keys:\n"
                              + "\n".join(f"  {k}" for k in keys[:12]))
    processor = SiglipImageProcessor.from_pretrained(str(folder), local_files_only=True)
    return encoder.to(device).eval(), processor


