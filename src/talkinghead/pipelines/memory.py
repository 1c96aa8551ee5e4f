"""GPU memory options of the DiT engines (Hallo3, Hallo4, SkyReels-A1/A2): model CPU offload, each big model on the
GPU only while it runs (diffusers' `enable_model_cpu_offload`, on accelerate's hooks), and tiled VAE encode/decode
(diffusers' `enable_tiling` of AutoencoderKLCogVideoX / AutoencoderKLWan).

Offload moves weights, never changes arithmetic: outputs are bit-identical. Tiling decodes overlapping spatial
tiles and blends their seams, so frames differ slightly from a whole-frame decode (measured in
tests/pipelines/test_memory.py and benchmarks/gpu_engines.py)."""
from __future__ import annotations

import math
from collections.abc import Iterable

import torch
from accelerate.hooks import ModelHook, add_hook_to_module, remove_hook_from_module
from accelerate.utils import send_to_device
from torch import nn

from ..errors import InputError

TILING = ("auto", "on", "off")
CPU = torch.device("cpu")


def as_device(device: str | torch.device) -> torch.device:
    """`device` with its index: "cuda" is the current GPU ("cuda:0"), as parameters moved there report it."""
    device = torch.device(device)
    if device.type == "cuda" and device.index is None:
        device = torch.device("cuda", torch.cuda.current_device())
    return device


def _device_of(module: nn.Module) -> torch.device:
    p = next(module.parameters(), None)
    return p.device if p is not None else CPU


class OneOnDevice(ModelHook):
    """An accelerate hook keeping its module on the CPU until the module runs: before its forward (or, for
    diffusers' VAEs, before encode/decode) it sends every other module of its group back to the CPU, moves its
    own to the execution device, and its inputs with it. So at most one model of the group sits on the GPU,
    whatever order the engine calls them in (the VAE encodes, the transformer denoises, the VAE decodes)."""

    def __init__(self, group: list[nn.Module], execution_device: torch.device):
        self.group = group
        self.execution_device = execution_device

    def init_hook(self, module):
        return nn.Module.to(module, CPU)  # nn.Module.to: diffusers' own .to warns about modules it keeps in fp32

    def pre_forward(self, module, *args, **kwargs):
        moved = False
        for other in self.group:
            if other is not module and _device_of(other) != CPU:
                nn.Module.to(other, CPU)
                moved = True
        if moved and self.execution_device.type == "cuda":
            torch.cuda.empty_cache()
        if _device_of(module) != self.execution_device:
            nn.Module.to(module, self.execution_device)
        # inputs follow even when the module was already there: a caller may have read the device of its weights
        # while they still waited on the CPU (tensors already on the device are left as they are)
        return send_to_device(args, self.execution_device), send_to_device(kwargs, self.execution_device)


def _hook(module: nn.Module) -> OneOnDevice | None:
    hook = getattr(module, "_hf_hook", None)
    return hook if isinstance(hook, OneOnDevice) else None


def refuse_cpu_offload(offload: bool, device: str | torch.device) -> None:
    """InputError(field="cpu_offload") when offload is asked for on a CPU device: there is no GPU to move to."""
    if offload and torch.device(device).type == "cpu":
        raise InputError("needs a GPU: it keeps each model on the CPU and moves it to the GPU only for its own "
                         "forward, and the device is the CPU", "leave it out, or run on a GPU (device cuda)",
                         field="cpu_offload")


def load_device(offload: bool, device: str) -> str:
    """Where to load a release: on the CPU when it is offloaded (a model too big for the GPU must never land
    there whole), else on `device`. Refuses offload on a CPU device."""
    refuse_cpu_offload(offload, device)
    return "cpu" if offload else device


def set_cpu_offload(models: Iterable[nn.Module | None], device: str | torch.device, offload: bool,
                    resident: Iterable[nn.Module | None] = ()) -> list[nn.Module]:
    """Place a release's models for running on `device`. With `offload`, each of `models` (the big ones: text and
    image encoders, transformer, VAE) stays on the CPU and moves to `device` only for its own forward, one at a
    time (`OneOnDevice`); `resident` (small parts called every step, e.g. projections) moves to `device` for good.
    Without, any offload hooks are removed and everything moves to `device`. Idempotent: a cached release is
    placed again by each render with that render's choice. None entries (absent parts) are skipped. Returns the
    hooked models. (Engines refuse offload to a CPU device with `load_device`; here it is allowed, the hooks then
    move nothing, which is how tests check them without a GPU.)"""
    device = as_device(device)
    models = [m for m in models if m is not None]
    for m in resident:
        if m is not None:
            nn.Module.to(m, device)
    hooks = [_hook(m) for m in models]
    if offload and all(h is not None and h.execution_device == device and h.group == models for h in hooks):
        return models
    for m, h in zip(models, hooks):
        if h is not None:
            remove_hook_from_module(m)
    if not offload:
        for m in models:
            nn.Module.to(m, device)
        return []
    group: list[nn.Module] = []
    for m in models:
        group.append(m)
        add_hook_to_module(m, OneOnDevice(group, device))
    return models


def onload(module: nn.Module) -> None:
    """Move an offloaded module to its execution device now (and the rest of its group to the CPU), for calls
    that do not go through its forward (e.g. a method that runs a sub-network); nothing when it is not offloaded."""
    hook = _hook(module)
    if hook is not None:
        hook.pre_forward(module)


def execution_device(module: nn.Module) -> torch.device:
    """Where `module` computes: its offload hook's device, else where its parameters are."""
    hook = _hook(module)
    return hook.execution_device if hook is not None else _device_of(module)


# ------------------------------------------------------------------------------------------------ VAE tiling
_TILE_ATTRS = ("tile_sample_min_height", "tile_sample_min_width", "tile_overlap_factor_height",
               "tile_overlap_factor_width", "tile_sample_stride_height", "tile_sample_stride_width")


def _spatial_factor(vae) -> int:
    if hasattr(vae.config, "block_out_channels"):  # AutoencoderKLCogVideoX
        return 2 ** (len(vae.config.block_out_channels) - 1)
    return int(vae.spatial_compression_ratio)  # AutoencoderKLWan


def _overlap(k: int, default: float, exact) -> int:
    """Latent rows (or columns) two neighbouring tiles of `k` share: the share `default` of a tile, at least one,
    among the counts for which diffusers' float arithmetic gives whole, aligned strides (`exact`)."""
    target = max(1, round(k * default))
    for o in sorted(range(1, k), key=lambda o: (abs(o - target), o)):
        if exact(o):
            return o
    raise ValueError(f"no aligned overlap for tiles of {k} latents")


def half_frame_tiles(vae, height: int, width: int) -> dict:
    """`enable_tiling` arguments for tiles of half the frame each way (at least two latents), overlapping by
    diffusers' default share (1/6 x 1/5 of a tile for CogVideoX, 1/4 for Wan), chosen so every stride is a whole
    number of latents: at 480 x 720 these are the SkyReels-A1 release's own 240 x 360 tiles."""
    s = _spatial_factor(vae)
    kh, kw = (max(2, math.ceil(n / s / 2)) for n in (height, width))
    if hasattr(vae, "tile_overlap_factor_height"):  # CogVideoX: the overlap is a factor of the tile
        def exact(k):
            def aligned(o):  # decode strides in latents and seams in pixels; encode the other way round
                f = o / k
                return (int(k * (1 - f)) == k - o and int(s * k * f) == s * o
                        and int(s * k * (1 - f)) == s * (k - o) and int(k * f) == o)
            return aligned
        oh = _overlap(kh, 1 / 6, exact(kh))
        ow = _overlap(kw, 1 / 5, exact(kw))
        return dict(tile_sample_min_height=s * kh, tile_sample_min_width=s * kw,
                    tile_overlap_factor_height=oh / kh, tile_overlap_factor_width=ow / kw)
    oh, ow = (_overlap(k, 1 / 4, lambda o: True) for k in (kh, kw))  # Wan: strides in pixels
    return dict(tile_sample_min_height=s * kh, tile_sample_min_width=s * kw,
                tile_sample_stride_height=s * (kh - oh), tile_sample_stride_width=s * (kw - ow))


def set_vae_tiling(vae, mode: str, frame_hw: tuple[int, int], release_tiles: bool = False, tiles: dict | None = None
                   ) -> bool:
    """Set `vae`'s tiled encode/decode for frames of `frame_hw` (H, W): "auto" does what the official release
    does (`release_tiles`: diffusers' default tiles, as SkyReels-A1's inference calls `enable_tiling()`; else
    whole frames), "on" tiles of half the frame (`half_frame_tiles`, or `tiles`: explicit `enable_tiling`
    arguments), "off" whole frames. A cached release is set again by each render. Returns whether it tiles."""
    if mode not in TILING:
        raise InputError(f"must be one of {', '.join(TILING)}, got {mode!r}", "", field="vae_tiling")
    if not hasattr(vae, "_default_tiles"):  # the constructor's tile settings, restored for "auto"
        vae._default_tiles = {a: getattr(vae, a) for a in _TILE_ATTRS if hasattr(vae, a)}
    on = mode == "on" or (mode == "auto" and release_tiles)
    if not on:
        vae.disable_tiling()
        return False
    vae.enable_tiling(**{**vae._default_tiles, **(tiles or (half_frame_tiles(vae, *frame_hw) if mode == "on"
                                                              else {}))})
    return True


def apply_memory_options(diffusion, device: str, *, models: Iterable[nn.Module | None], vae, frame_hw: tuple[int, int],
                         release_tiles: bool = False, resident: Iterable[nn.Module | None] = (), lock=None) -> None:
    """An engine's one call after loading its release (with `load_device`): the `vae_tiling` and `cpu_offload`
    controls of `diffusion` (a DiffusionConfig) applied to the release's `vae` (frames of `frame_hw`) and
    `models` (`set_cpu_offload`), under the release's `lock` when it is shared."""
    from contextlib import nullcontext

    with lock if lock is not None else nullcontext():
        set_vae_tiling(vae, diffusion.vae_tiling, frame_hw, release_tiles)
        set_cpu_offload(models, device, diffusion.cpu_offload, resident)


__all__ = ["TILING", "apply_memory_options", "OneOnDevice", "as_device", "refuse_cpu_offload", "load_device", "set_cpu_offload", "onload",
           "execution_device", "half_frame_tiles", "set_vae_tiling"]
