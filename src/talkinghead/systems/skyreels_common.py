"""What SkyReels-A1 and SkyReels-A2 share: their release folders' layout (diffusers model folders, optionally
sharded, found below the folder the user names) and the once-per-process cache of a loaded release, the image
helpers both release pipelines use (the release's pixel layout, its uint8 rounding), the engine set-up (precision,
frame count), and the way both parity checks read a reference-data folder."""
from __future__ import annotations

import json
import threading
from collections.abc import Callable, Iterable
from pathlib import Path

import numpy as np
import torch
from einops import rearrange

from ..errors import InputError
from ..verify import Check, compare

DIFFUSERS_WEIGHTS = "diffusion_pytorch_model"  # a diffusers model folder's weights file, without its suffix
VAE_FILES = ["config.json", f"{DIFFUSERS_WEIGHTS}.safetensors"]


# ------------------------------------------------------------------ release folders


def find_release_root(folder: Path, subfolders: Iterable[str]) -> Path:
    """The first of `subfolders` below `folder` that exists (an upstream checkout's layout), else `folder`."""
    for sub in subfolders:
        if (folder / sub).is_dir():
            return folder / sub
    return folder


def read_weights(folder: Path, rel: str, name: str = DIFFUSERS_WEIGHTS
                 ) -> tuple[dict[str, torch.Tensor] | None, list[str]]:
    """A model folder's tensors (`{name}.safetensors`, or its index and shards), or the relative paths of what
    is missing."""
    from safetensors.torch import load_file

    single, index = folder / f"{name}.safetensors", folder / f"{name}.safetensors.index.json"
    if single.is_file():
        return load_file(str(single)), []
    if not index.is_file():
        return None, [f"{rel}/{single.name} (or {index.name} and its shards)"]
    shards = sorted(set(json.loads(index.read_text())["weight_map"].values()))
    missing = [f"{rel}/{s}" for s in shards if not (folder / s).is_file()]
    if missing:
        return None, missing
    state: dict[str, torch.Tensor] = {}
    for shard in shards:
        state.update(load_file(str(folder / shard)))
    return state, []


_CACHES: dict[str, dict[tuple, object]] = {}  # loader -> its one loaded release
_CACHE_LOCK = threading.Lock()


def cached_release(load: Callable, root: Path, dtype: torch.dtype, device: str):
    """`load(root, dtype, device)` once per process for the same files (a replaced file is loaded again; one
    release of each loader in memory at a time), with a `lock` attribute for the callers that share it."""
    stats = tuple((str(p), p.stat().st_size, p.stat().st_mtime_ns) for p in sorted(root.rglob("*")) if p.is_file()) \
        if root.is_dir() else ()
    key = (str(root.resolve()), str(dtype), device, stats)
    with _CACHE_LOCK:
        cache = _CACHES.setdefault(f"{load.__module__}.{load.__qualname__}", {})
        if key not in cache:
            cache.clear()
            release = load(root, dtype, device)
            release.lock = threading.Lock()
            cache[key] = release
        return cache[key]


def require_local(folder: str | Path, needed: dict[str, list[str]], system: str, hint: str | None = None) -> Path:
    """InputError naming every missing file (relative to `folder`) of a local weights folder."""
    folder = Path(folder)
    missing = [f"{part}/{name}" for part, names in needed.items() for name in names
               if not (folder / part / name).is_file()]
    if not folder.is_dir() or missing:
        listed = "\n".join(f"  {m}" for m in (missing or ["(the folder itself)"]))
        raise InputError(f"{folder} lacks the {system} weights:\n{listed}", hint or (
            f"put the files there (no download is attempted); `model/` is written by "
            f"{system.replace('-', '')}.save_pretrained, `vae/` is the diffusers VAE folder of the release"))
    return folder


# ------------------------------------------------------------------ images in and out


def to_pixels(image: np.ndarray, size: tuple[int, int]) -> torch.Tensor:
    """(h, w, 3) uint8 -> (3, H, W) float in [-1, 1] at `size` (width, height)."""
    import cv2

    if image.shape[1::-1] != tuple(size):
        image = cv2.resize(image, size, interpolation=cv2.INTER_AREA)
    return torch.from_numpy(np.ascontiguousarray(image)).permute(2, 0, 1).float() / 127.5 - 1.0


def to_frames(video: torch.Tensor) -> np.ndarray:
    """(1, 3, f, H, W) in [-1, 1] -> (f, H, W, 3) uint8."""
    v = ((video[0].float().clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8)
    return rearrange(v, "c f h w -> f h w c").cpu().numpy()


def release_pixels(image: np.ndarray) -> torch.Tensor:
    """(H, W, 3) uint8 -> (1, 3, H, W) float32 in [-1, 1], with the memory layout of diffusers' VideoProcessor
    (a channels-last view): the release's bf16 VAE encode is sensitive to it."""
    x = torch.from_numpy(np.asarray(image, np.float32)[None] / 255.0).permute(0, 3, 1, 2)
    return 2.0 * x - 1.0


def release_uint8(video: torch.Tensor) -> np.ndarray:
    """(1, 3, F, H, W) decoded video -> (F, H, W, 3) uint8: clamp in the VAE's dtype, then x 255 and round in
    float32 numpy (diffusers' postprocess_video)."""
    x = (video[0] / 2 + 0.5).clamp(0, 1).permute(1, 2, 3, 0).float().cpu().numpy()
    return (x * 255).round().astype(np.uint8)


# ------------------------------------------------------------------ engines


def release_precision(d) -> tuple[str, torch.dtype]:
    """(device, dtype) of a DiffusionConfig for a SkyReels release: bf16 (the release's precision) or fp32 on a CPU."""
    from ..utils import resolve_precision

    return resolve_precision(d.device, d.dtype, on_cpu=("fp32", "bf16"),
                             cpu_hint="use bf16 (the release's precision) or fp32 on a CPU")


class ReleaseVideo:
    """What both SkyReels engines answer the same way: frames at --fps, at the release's one frame size
    (`self.size`, (W, H)), as many as the speech lasts."""

    config: object
    size: tuple[int, int]

    @property
    def fps(self) -> float:
        return self.config.render.fps

    @property
    def frame_size(self) -> tuple[int, int]:
        return self.size

    def n_frames(self, speech) -> int:
        return max(1, int(round(len(speech.samples) / speech.sample_rate * self.fps)))


# ------------------------------------------------------------------ parity checks


class ReferenceRun:
    """One reference-data folder of a SkyReels check: its `config.json` (the run's settings), its
    `io.safetensors` (the official code's tensors) and the comparisons made against them, named `<folder>/<key>`."""

    def __init__(self, folder: Path):
        from safetensors.torch import load_file

        self.config = json.loads((folder / "config.json").read_text())
        self.io = load_file(str(folder / "io.safetensors"))
        self.tag = folder.name
        self.checks: list[Check] = []

    def check(self, key: str, ours: torch.Tensor, tol: float, name: str | None = None) -> None:
        """Compare `ours` with the stored tensor `key`, when the folder has it."""
        if key in self.io:
            self.checks.append(compare(f"{self.tag}/{name or key}", ours, self.io[key], tol))


def recorded_steps(io: dict, prefix: str, *keys: str) -> int:
    """How many denoising steps of run `prefix` a reference-data folder recorded (any of `keys` stored per step)."""
    n = 0
    while any(f"{prefix}.step.{n}.{k}" in io for k in keys):
        n += 1
    return n
