"""The official Hallo and Hallo2 release folders (huggingface.co/fudan-generative-ai/hallo, .../hallo2): the files
they hold (`release_files`), the net read key for key (`load_net`), and every part the engine runs (`load_release`).
"""
from __future__ import annotations

import json
import threading
from pathlib import Path

import torch

from ...models.checkpoints import load_state_dict, load_strict, load_vae_folder, require_files
from .model import HalloConfig, HalloNet
from .pipeline import HalloPipeline

RELEASE_URL = "https://huggingface.co/fudan-generative-ai/{variant}"
VAE_FOLDER, WAV2VEC_FOLDER = "sd-vae-ft-mse", "wav2vec/wav2vec2-base-960h"  # in pretrained_models/


def release_root(folder: Path) -> Path:
    """The `pretrained_models/` folder of a release checkout (or the folder itself)."""
    return folder / "pretrained_models" if (folder / "pretrained_models").is_dir() else folder


def release_files(variant: str) -> dict[str, list[str]]:
    """label -> accepted paths (relative to pretrained_models/) of every file loading `variant` reads: the
    net, and the VAE's and wav2vec's own file lists under their release folders."""
    from ...audio.wav2vec import FILES as WAV2VEC_FILES
    from ...models.checkpoints import VAE_FILES

    files = {f"{variant} net": [f"{variant}/net.pth", f"{variant}/net.safetensors"]}
    for folder, parts in ((VAE_FOLDER, VAE_FILES), (WAV2VEC_FOLDER, WAV2VEC_FILES)):
        files.update({label: [f"{folder}/{name}" for name in names] for label, names in parts.items()})
    return files


def load_net(path: str | Path, config: HalloConfig | None = None) -> HalloNet:
    """The official Hallo/Hallo2 net alone (`net.pth`, or `net.safetensors`; a file, or the release's `hallo/` or
    `hallo2/` folder holding it) built from `config` (default: the official full-size one), keys strict."""
    path = Path(path)
    if path.is_dir():
        path = require_files(path, {"Hallo net": ["net.pth", "net.safetensors"]}, "Hallo/Hallo2 (net.pth)")["Hallo net"]
    net = HalloNet(config)
    load_strict(net, load_state_dict(path), path)
    return net.eval()


def load_release(folder: str | Path, variant: str = "hallo", device: str = "cpu",
                 dtype: torch.dtype = torch.float32):
    """Load the parts of an official Hallo/Hallo2 release folder, strictly, without any download.

    Layout (as distributed): `{variant}/net.pth`, `sd-vae-ft-mse/`, `wav2vec/wav2vec2-base-960h/`,
    optionally `stable-diffusion-v1-5/unet/config.json`. A `{variant}/config.json` written by
    `HalloConfig.to_dict()` overrides the built-in official sizes (used for small test releases).
    Returns (HalloPipeline, wav2vec model, feature extractor).
    """
    from ...audio.wav2vec import load_wav2vec

    root = release_root(Path(folder))
    files = require_files(root, release_files(variant), f"{variant} ({RELEASE_URL.format(variant=variant)})")
    config = HalloConfig()
    unet_config = root / "stable-diffusion-v1-5" / "unet" / "config.json"
    if unet_config.is_file():
        config.unet = json.loads(unet_config.read_text())
    own = root / variant / "config.json"
    if own.is_file():
        config = HalloConfig.from_dict(json.loads(own.read_text()))
    key = (str(root.resolve()), variant, device, str(dtype),
           tuple((name, str(f), f.stat().st_mtime_ns, f.stat().st_size) for name, f in sorted(files.items())))
    with _CACHE_LOCK:
        parts = _CACHE.get(key)
        if parts is None:
            _CACHE.clear()  # one release in memory at a time
            net = load_net(files[f"{variant} net"], config)
            vae = load_vae_folder(files["VAE config"].parent)
            audio_model, extractor = load_wav2vec(files["wav2vec config"].parent, device=device)
            if (device, dtype) != ("cpu", torch.float32):
                net.to(device=device, dtype=dtype)
                vae.to(device=device, dtype=dtype)
            pipe = HalloPipeline(net, vae)  # its reference bank is attached to this net's attention layers
            pipe.net_lock = threading.Lock()
            parts = _CACHE[key] = (pipe, audio_model, extractor)
    return parts


# Loaded releases, so a server or UI that renders many videos loads the weights once (models are never
# reloaded per request). The key holds every file's size and mtime: a replaced checkpoint is loaded again.
# The pipeline keeps per-call state (the reference bank its net's attention layers write and read, the
# scheduler's timesteps), so callers that share it take `pipe.net_lock` while they run it and bring their
# own scheduler; two jobs then alternate clip by clip.
_CACHE: dict[tuple, tuple] = {}
_CACHE_LOCK = threading.Lock()
