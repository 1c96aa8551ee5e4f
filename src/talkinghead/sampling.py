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


def guided_prediction(predict: Callable[[torch.Tensor, dict], torch.Tensor], x: torch.Tensor, cond: dict,
                      uncond: dict, scale: float, mode: str = "auto") -> torch.Tensor:
    """The guided prediction of `predict(x, inputs)` for systems whose two branches differ in their input
    dicts. "batch": one forward of [cond; uncond] (tensors in the dicts stacked along the batch); "serial": two
    forwards; "ranks": rank 0 runs cond, rank 1 uncond, one all_gather (torch.distributed with 2 ranks, the
    CFG parallelism of large DiTs); "auto": ranks when such a group is up, else batch. Without guidance
    (scale 1) only the conditional forward runs."""
    if scale == 1.0:
        return predict(x, cond)
    if mode == "auto":
        dist = torch.distributed
        mode = "ranks" if dist.is_available() and dist.is_initialized() and dist.get_world_size() == 2 else "batch"
    if mode == "batch":
        both = {k: (torch.cat([v, uncond[k]]) if isinstance(v, torch.Tensor) else v) for k, v in cond.items()}
        c, u = predict(torch.cat([x, x]), both).chunk(2)
    elif mode == "serial":
        c, u = predict(x, cond), predict(x, uncond)
    elif mode == "ranks":
        dist = torch.distributed
        mine = predict(x, cond if dist.get_rank() == 0 else uncond).contiguous()
        parts = [torch.empty_like(mine) for _ in range(2)]
        dist.all_gather(parts, mine)
        c, u = parts
    else:
        raise ValueError(f"mode must be auto, batch, serial or ranks, not {mode!r}")
    return classifier_free_guidance(u, c, scale)


@torch.no_grad()
def denoise(predict: Predict, scheduler, latents: torch.Tensor, guidance_scale: float | None = None,
            timesteps=None, step_kwargs: dict | None = None,
            on_step: Callable[[int, torch.Tensor, torch.Tensor, torch.Tensor], None] | None = None,
            after_step: Callable[[int, torch.Tensor, tuple], torch.Tensor] | None = None,
            progress: Callable[[int], None] | None = None) -> torch.Tensor:
    """Run `scheduler` from `latents` to the clean sample.

    `predict(latents, t)` returns the model output for `latents` at step `t`; with `guidance_scale` given it
    returns the unconditional and conditional outputs stacked along the batch ([uncond; cond]), which are
    guided here. `timesteps` defaults to the scheduler's (set them first); `step_kwargs` go to every
    `scheduler.step` (e.g. a generator); `on_step(i, t, latents, guided)` sees each step's input and guided
    output (parity traces); `after_step(i, t, step_output)` gets the scheduler's output tuple and returns the
    next latents (a release's dtype cast, or recording its predicted x0); `progress(1)` is called once per step."""
    kwargs = step_kwargs or {}
    for i, t in enumerate(scheduler.timesteps if timesteps is None else timesteps):
        out = split_guidance(predict(latents, t), guidance_scale)
        if on_step is not None:
            on_step(i, t, latents, out)
        stepped = scheduler.step(out, t, latents, return_dict=False, **kwargs)
        latents = stepped[0] if after_step is None else after_step(i, t, stepped)
        if progress is not None:
            progress(1)
    return latents


__all__ = ["classifier_free_guidance", "split_guidance", "guided_prediction", "denoise"]
