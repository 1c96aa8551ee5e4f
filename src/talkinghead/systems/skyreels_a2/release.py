"""The official SkyReels-A2 release folder (huggingface.co/Skywork/SkyReels-A2): diffusers' Wan transformer and VAE
folders, transformers' CLIP image encoder and UMT5 text encoder with their tokenizer and image processor, and the
sampler infer.py installs. `load_release` loads the folder strictly, nothing downloaded."""
from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path

import torch
from diffusers import UniPCMultistepScheduler
from torch import nn

from ..skyreels_common import find_release_root, read_weights

RELEASE_NAME = "SkyReels-A2 (huggingface.co/Skywork/SkyReels-A2)"
RELEASE_FLOW_SHIFT = 8.0  # infer.py replaces the folder's scheduler by UniPC in flow mode with this shift
IGNORED_RELEASE_KEYS = ("attn2.norm_added_q.weight",)  # converted Wan2.1 files may carry these; the model has none


@dataclass
class SkyReelsA2Release:
    """The official SkyReels-A2 folder, loaded: the Wan DiT (in the run dtype, bf16 in the release), the Wan VAE
    and the CLIP image encoder (float32, as infer.py loads them), the UMT5 text encoder (run dtype), its
    tokenizer and the CLIP image processor."""

    transformer: nn.Module
    vae: nn.Module
    image_encoder: nn.Module
    text_encoder: nn.Module
    tokenizer: object
    image_processor: object

    @staticmethod
    def scheduler():
        """The sampler infer.py installs (the folder's own scheduler config is discarded); set its steps with
        `set_release_timesteps`."""
        return UniPCMultistepScheduler(prediction_type="flow_prediction", use_flow_sigmas=True,
                                       num_train_timesteps=1000, flow_shift=RELEASE_FLOW_SHIFT)


def set_release_timesteps(scheduler, steps: int, device=None) -> None:
    """The release's flow sigmas (diffusers 0.33): s = 1 - linspace(1, 1/1000, steps + 1), reversed, the last
    (s = 0) dropped, then shifted by the scheduler; timesteps are 1000 sigma truncated to integers. Recent
    diffusers spaces them differently (linspace(1, 1/1000) directly), which moves every timestep."""
    import numpy as np

    n = scheduler.config.num_train_timesteps
    s = (1.0 - np.linspace(1.0, 1.0 / n, steps + 1))[::-1][:-1].copy()
    scheduler.set_timesteps(device=device, sigmas=s)


def release_root(folder: Path) -> Path:
    """`Skywork/SkyReels-A2` or `SkyReels-A2` below `folder`, or the folder itself."""
    return find_release_root(folder, ("Skywork/SkyReels-A2", "SkyReels-A2"))


def float64_rope(transformer: nn.Module) -> None:
    """Keep the RoPE tables in float64 whatever the model dtype: diffusers' Wan attention then rotates q and k in
    float64 and casts back, as the release's complex128 rotation does (a bf16 table would round the angles)."""
    from diffusers.models.transformers.transformer_wan import WanRotaryPosEmbed

    c = transformer.config
    device = next(transformer.parameters()).device
    rope = WanRotaryPosEmbed(c.attention_head_dim, c.patch_size, c.rope_max_seq_len)
    cos, sin = [], []
    for dim in (rope.t_dim, rope.h_dim, rope.w_dim):  # theta 10000, pairs (even, odd) of one angle each
        inv = 1.0 / (10000.0 ** (torch.arange(0, dim, 2, dtype=torch.float64) / dim))
        angles = torch.outer(torch.arange(c.rope_max_seq_len, dtype=torch.float64), inv)
        cos.append(angles.cos().repeat_interleave(2, dim=1))
        sin.append(angles.sin().repeat_interleave(2, dim=1))
    rope.freqs_cos, rope.freqs_sin = torch.cat(cos, dim=1), torch.cat(sin, dim=1)
    transformer.rope = rope.to(device)


def load_release(folder: str | os.PathLike, dtype: torch.dtype = torch.bfloat16, device: str | torch.device = "cpu"
                 ) -> SkyReelsA2Release:
    """Load the official SkyReels-A2 folder strictly, nothing downloaded: `transformer/`, `vae/` (diffusers:
    config.json + diffusion_pytorch_model.safetensors or its index and shards), `image_encoder/`,
    `text_encoder/` (transformers: config.json + model.safetensors or index and shards), `tokenizer/`,
    `image_processor/preprocessor_config.json`. The transformer's keys must equal the model's (the
    `attn2.norm_added_q` weights some Wan conversions carry are accepted and dropped); the transformers parts
    may carry only what their classes ignore (CLIP's projection, UMT5's tied embedding). One CheckpointError
    lists every missing file, then every key problem. The transformer and text encoder run in `dtype`."""
    from diffusers import AutoencoderKLWan, WanTransformer3DModel
    from transformers import CLIPVisionModel, UMT5EncoderModel
    from transformers.utils import logging as hf_logging

    from ...errors import CheckpointError
    from ...models.checkpoints import key_report
    from ...models.text_encoders import load_tokenizer

    root = release_root(Path(folder))
    if not root.is_dir():
        raise CheckpointError(f"checkpoint folder {root} does not exist (expected the {RELEASE_NAME} folder)")
    missing = [n for n in ("transformer/config.json", "vae/config.json", "image_encoder/config.json",
                           "text_encoder/config.json", "tokenizer/tokenizer_config.json",
                           "image_processor/preprocessor_config.json") if not (root / n).is_file()]
    if not any((root / "tokenizer" / n).is_file() for n in ("tokenizer.json", "spiece.model")):
        missing.append("tokenizer/tokenizer.json (or spiece.model)")
    states = {}
    for part, name in (("transformer", "diffusion_pytorch_model"), ("vae", "diffusion_pytorch_model")):
        states[part], absent = read_weights(root / part, part, name)
        missing += absent
    for part in ("image_encoder", "text_encoder"):
        if not any((root / part / n).is_file() for n in ("model.safetensors", "model.safetensors.index.json")):
            missing.append(f"{part}/model.safetensors (or model.safetensors.index.json and its shards)")
    if missing:
        raise CheckpointError(f"{root} is missing files of the {RELEASE_NAME} release:\n"
                              + "\n".join(f"  {m}" for m in missing))

    tconf = json.loads((root / "transformer" / "config.json").read_text())
    with torch.device("meta"):
        transformer = WanTransformer3DModel.from_config(tconf)
        vae = AutoencoderKLWan.from_config(json.loads((root / "vae" / "config.json").read_text()))
    states["transformer"] = {k: v for k, v in states["transformer"].items() if not k.endswith(IGNORED_RELEASE_KEYS)}
    problems = []
    for part, module in (("transformer", transformer), ("vae", vae)):
        report = key_report(module.state_dict(), states[part])
        if report:
            problems.append(f"{part}/:\n" + "\n".join(f"  {line}" for line in report))
    verbosity = hf_logging.get_verbosity()
    hf_logging.set_verbosity_error()  # the keys a class ignores by design are checked below, not printed
    hf_logging.disable_progress_bar()
    try:
        clip, clip_info = CLIPVisionModel.from_pretrained(str(root / "image_encoder"), local_files_only=True,
                                                          torch_dtype=torch.float32, output_loading_info=True)
        text, text_info = UMT5EncoderModel.from_pretrained(str(root / "text_encoder"), local_files_only=True,
                                                           torch_dtype=dtype, output_loading_info=True)
    except (OSError, ValueError) as exc:
        raise CheckpointError(f"cannot load the CLIP or UMT5 encoder of {root}: {exc}") from exc
    finally:
        hf_logging.set_verbosity(verbosity)
        hf_logging.enable_progress_bar()
    for part, info, allowed in (("image_encoder", clip_info, ("visual_projection.",)),
                                ("text_encoder", text_info, ())):
        bad = sorted(info.get("missing_keys", [])) + [str(k) for k in info.get("mismatched_keys", [])]
        bad += sorted(k for k in info.get("unexpected_keys", []) if not k.startswith(allowed))
        if bad:
            problems.append(f"{part}/: keys missing, mismatched or unexpected:\n"
                            + "\n".join(f"  {k}" for k in bad[:12]))
    if problems:
        raise CheckpointError(f"{root} does not match the {RELEASE_NAME} model:\n" + "\n".join(problems))
    transformer.load_state_dict(states["transformer"], strict=True, assign=True)
    vae.load_state_dict(states["vae"], strict=True, assign=True)
    # nn.Module.to casts every part, as infer.py's transformer.to(dtype) does (diffusers' own keeps some in fp32)
    float64_rope(transformer)  # its tables are not in the file: made here (on the meta device they are empty)
    nn.Module.to(transformer, device=device, dtype=dtype).eval()
    float64_rope(transformer)  # ... and again after the cast
    nn.Module.to(vae, device=device, dtype=torch.float32).eval()
    for name in getattr(text, "_keep_in_fp32_modules", None) or ():  # T5's `wo` stays float32 in a bf16 load,
        for key, module in text.named_modules():  # as the release's transformers loads it
            if key.split(".")[-1] == name:
                module.float()
    tokenizer = load_tokenizer(root / "tokenizer")
    processor = clip_image_processor().from_pretrained(str(root / "image_processor"), local_files_only=True)
    return SkyReelsA2Release(transformer, vae, clip.to(device).eval(), text.to(device).eval(), tokenizer, processor)


def clip_image_processor():
    """transformers' PIL-based CLIP image processor (the one the release ran; the default one needs torchvision)."""
    try:
        from transformers import CLIPImageProcessorPil
        return CLIPImageProcessorPil
    except ImportError:
        from transformers import CLIPImageProcessor
        return CLIPImageProcessor
