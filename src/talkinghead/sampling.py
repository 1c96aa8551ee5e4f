"""The one denoising loop and the one classifier-free guidance of every diffusion system (UNet and DiT; ε, v or
flow prediction): the model-specific work (conditions, reference banks, channel concatenation, context windows)
lives in each pipeline's `predict`, the update rule in a diffusers scheduler (or an object with the same
`timesteps` / `step` interface), and the loop itself here."""
from __future__ import annotations

from collections.abc import Callable

import torch

Predict = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


def classifier_free_guidance(uncond: torch.Tensor, cond: torch.Tensor, scale: float) -> torch.Tensor:
    """u + s (c - u): the prediction pushed away from the unconditional one (Ho & Salimans 2022)."""
    return uncond + scale * (cond - uncond)


def split_guidance(out: torch.Tensor, scale: float | None) -> torch.Tensor:
    """A batch of [unconditional; conditional] predictions -> the guided prediction; a single branch
    (`scale` None) is returned as it is."""
    if scale is None:
        return out
    uncond, cond = out.chunk(2)
    return classifier_free_guidance(uncond, cond, scale)


@torch.no_grad()
def denoise(predict: Predict, scheduler, latents: torch.Tensor, guidance_scale: float | None = None,
            timesteps=None, step_kwargs: dict | None = None,
            on_step: Callable[[int, torch.Tensor, torch.Tensor, torch.Tensor], None] | None = None,
            progress: Callable[[int], None] | None = None) -> torch.Tensor:
    """Run `scheduler` from `latents` to the clean sample.

    `predict(latents, t)` returns the model output for `latents` at step `t`; with `guidance_scale` given it
    returns the unconditional and conditional outputs stacked along the batch ([uncond; cond]), which are
    guided here. `timesteps` defaults to the scheduler's (set them first); `step_kwargs` go to every
    `scheduler.step` (e.g. a generator); `on_step(i, t, latents, guided)` sees each step's input and guided
    output (parity traces); `progress(1)` is called once per step."""
    kwargs = step_kwargs or {}
    for i, t in enumerate(scheduler.timesteps if timesteps is None else timesteps):
        out = split_guidance(predict(latents, t), guidance_scale)
        if on_step is not None:
            on_step(i, t, latents, out)
        latents = scheduler.step(out, t, latents, return_dict=False, **kwargs)[0]
        if progress is not None:
            progress(1)
    return latents


__all__ = ["classifier_free_guidance", "split_guidance", "denoise"]
