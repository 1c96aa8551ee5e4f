"""The official EchoMimic release folder (huggingface.co/BadToBest/EchoMimic, `pretrained_weights/`): the files a
render reads (`release_files`), the net read key for key from its separate .pth files (`load_net`: reference_unet,
denoising_unet + motion_module, face_locator[_pose]), and every part the engine runs (`load_release`)."""
from __future__ import annotations

import json
import threading
from pathlib import Path
from typing import TYPE_CHECKING

import torch

from ...models.checkpoints import load_state_dict, load_strict, load_vae_folder, require_files
from .model import SD_IMAGE_VARIATIONS_UNET, EchoMimicConfig, EchoMimicNet
from .pipeline import EchoMimicPipeline

if TYPE_CHECKING:
    from ...audio.whisper import WhisperFeatures

RELEASE_URL = "https://huggingface.co/BadToBest/EchoMimic"


def release_root(folder: Path) -> Path:
    """The `pretrained_weights/` folder of a release checkout (or the folder itself)."""
    return folder / "pretrained_weights" if (folder / "pretrained_weights").is_dir() else folder


def release_files(landmarks: bool) -> dict[str, list[str]]:
    """Label -> accepted relative paths of everything a render loads (the `_pose` set for landmarks)."""
    def names(stem: str) -> list[str]:
        return [f"{stem}_pose.pth", f"{stem}.pth"] if landmarks else [f"{stem}.pth"]

    return {"reference UNet": names("reference_unet"), "denoising UNet": names("denoising_unet"),
            "motion module": names("motion_module"),
            "face locator": ["face_locator_pose.pth"] if landmarks else ["face_locator.pth"],
            "whisper": ["audio_processor/whisper_tiny.pt"], "VAE": ["sd-vae-ft-mse/config.json"]}


def load_release(folder: str | Path, landmarks: bool = False, device: str = "cpu",
                 dtype: torch.dtype = torch.float32) -> tuple[EchoMimicPipeline, "WhisperFeatures"]:
    """Load the parts of an official EchoMimic release folder, strictly, without any download; one error
    names every missing file. Loaded releases are kept (keyed by every file's size and mtime), so a server
    loads the weights once; callers take `pipe.net_lock` while they run the shared pipeline."""
    from ...audio.whisper import WhisperFeatures

    root = release_root(Path(folder))
    files = require_files(root, release_files(landmarks), f"EchoMimic ({RELEASE_URL}, pretrained_weights/)")
    key = (str(root.resolve()), landmarks, device, str(dtype),
           tuple((name, str(f), f.stat().st_mtime_ns, f.stat().st_size) for name, f in sorted(files.items())))
    with _CACHE_LOCK:
        parts = _CACHE.get(key)
        if parts is None:
            _CACHE.clear()  # one release in memory at a time
            net = load_net(root, landmarks=landmarks)
            vae = load_vae_folder(files["VAE"].parent)
            whisper = WhisperFeatures.from_openai_checkpoint(files["whisper"])
            if (device, dtype) != ("cpu", torch.float32):
                net.to(device=device, dtype=dtype)
                vae.to(device=device, dtype=dtype)
            if device != "cpu":
                whisper.to(device=device, dtype=torch.float16)  # whisper's transcribe() runs fp16 on a GPU
            pipe = EchoMimicPipeline(net, vae)
            pipe.net_lock = threading.Lock()
            parts = _CACHE[key] = (pipe, whisper)
    return parts


_CACHE: dict[tuple, tuple] = {}
_CACHE_LOCK = threading.Lock()


def load_net(folder: str | Path, config: EchoMimicConfig | None = None, landmarks: bool = False) -> EchoMimicNet:
    """The net alone from the official `pretrained_weights/` folder (strict over the union of the UNet files).

    `landmarks=True` loads the landmark-driven set: `face_locator_pose.pth` (3-channel landmark images)
    and, where the folder has them, `reference_unet_pose.pth`, `denoising_unet_pose.pth` and
    `motion_module_pose.pth` (the plain files otherwise, as the architecture is the same). The face
    locator's sizes are read from its file; the rest from `config`, else the folder (see `_config_from_folder`).
    """
    folder = Path(folder)
    suffix = "_pose" if landmarks else ""

    def names(stem: str, required_pose: bool = False) -> list[str]:
        if not landmarks:
            return [f"{stem}.pth"]
        return [f"{stem}_pose.pth"] if required_pose else [f"{stem}_pose.pth", f"{stem}.pth"]

    files = require_files(folder, {
        "reference UNet": names("reference_unet"),
        "denoising UNet": names("denoising_unet"),
        "motion module": names("motion_module"),
        "landmark encoder": names("face_locator", required_pose=True),
    }, f"EchoMimic{' (landmark-driven)' if suffix else ''} (pretrained_weights/)")
    config = config or _config_from_folder(folder)
    locator_state = load_state_dict(files["landmark encoder"])
    config.face_locator = face_locator_sizes(locator_state, config.face_locator)
    net = EchoMimicNet(config)
    load_strict(net.reference_unet, load_state_dict(files["reference UNet"]), files["reference UNet"])
    # official loading order: the motion module first, then denoising_unet.pth on top
    unet_state = {**load_state_dict(files["motion module"]), **load_state_dict(files["denoising UNet"])}
    load_strict(net.denoising_unet, unet_state, "denoising_unet.pth + motion_module.pth")
    load_strict(net.face_locator, locator_state, files["landmark encoder"])
    return net.eval()


def face_locator_sizes(state: dict[str, torch.Tensor], default: dict) -> dict:
    """FaceLocator constructor sizes read from its weights (conv_in, blocks.N, conv_out); `default` if absent."""
    if "conv_in.weight" not in state or "conv_out.weight" not in state:
        return dict(default)
    widths = [state["conv_in.weight"].shape[0]]
    i = 1
    while f"blocks.{i}.weight" in state:
        widths.append(state[f"blocks.{i}.weight"].shape[0])
        i += 2
    return {"conditioning_embedding_channels": int(state["conv_out.weight"].shape[0]),
            "conditioning_channels": int(state["conv_in.weight"].shape[1]), "block_out_channels": widths}


RUN_CONFIG = "config.json"  # optional: {"unet_additional_kwargs": ...} overriding inference_v2.yaml's values


def _config_from_folder(folder: Path) -> EchoMimicConfig:
    """The release's sd-image-variations unet config when it is there (else the built-in SD copy), with
    `unet_additional_kwargs` from a `config.json` in the folder when it has them (else inference_v2.yaml's)."""
    unet = dict(SD_IMAGE_VARIATIONS_UNET)
    for rel in ("sd-image-variations-diffusers/unet/config.json", "unet/config.json"):
        if (folder / rel).is_file():
            unet = json.loads((folder / rel).read_text())
            break
    extra = None
    if (folder / RUN_CONFIG).is_file():
        extra = json.loads((folder / RUN_CONFIG).read_text()).get("unet_additional_kwargs")
    if extra is None:
        return EchoMimicConfig(unet=unet)
    return EchoMimicConfig.from_release_configs(unet, extra)
