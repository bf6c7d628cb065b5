"""Reverse diffusion with diffusers' schedulers: the sampling loop shared by training (sample grids,
metrics) and by trained runs (`studio generate sample`).

The loop is diffusers' pipeline loop, a few readable lines: predict the noise, step x_t -> x_{t-1}.
``ddpm`` uses :class:`DDPMScheduler` (all T steps by default); ``ddim`` uses :class:`DDIMScheduler`
with the same training schedule and fewer steps.
"""

from __future__ import annotations

import torch

from studio.errors import StudioError


@torch.no_grad()
def ddpm_sample(unet, train_scheduler, n: int, seed: int = 0, steps: int | None = None, sampler: str = "ddpm",
                keep: int = 0) -> tuple[torch.Tensor, list[torch.Tensor]]:
    """Reverse diffusion from pure noise. ``sampler``: ddpm (``steps`` defaults to T) or ddim.
    Returns the images and ``keep`` evenly spaced intermediate x_t (the trajectory)."""
    from diffusers import DDIMScheduler, DDPMScheduler

    if sampler not in ("ddpm", "ddim"):
        raise StudioError(f"sampler must be ddpm or ddim, not {sampler!r}")
    cls = DDPMScheduler if sampler == "ddpm" else DDIMScheduler
    sched = cls.from_config(train_scheduler.config)
    sched.set_timesteps(steps or train_scheduler.config.num_train_timesteps)
    g = torch.Generator().manual_seed(seed)
    size, ch = unet.config.sample_size, unet.config.in_channels
    x = torch.randn(n, ch, size, size, generator=g)
    timesteps = list(sched.timesteps)
    marks = {int(i * (len(timesteps) - 1) / max(1, keep - 1)) for i in range(keep)} if keep else set()
    frames = []
    unet.eval()
    for i, t in enumerate(timesteps):
        eps = unet(x, t).sample
        x = sched.step(eps, t, x, generator=g).prev_sample if sampler == "ddpm" else sched.step(eps, t, x).prev_sample
        if i in marks:
            frames.append(x.clamp(-1, 1).clone())
    return x.clamp(-1, 1), frames


@torch.no_grad()
def toy_ddpm_sample(model, train_scheduler, n: int, seed: int = 0, steps: int | None = None, sampler: str = "ddpm",
                    keep: int = 0) -> tuple[torch.Tensor, list[torch.Tensor]]:
    """Reverse diffusion for 2-D points with an MLP denoiser (same schedulers as the images)."""
    from diffusers import DDIMScheduler, DDPMScheduler

    if sampler not in ("ddpm", "ddim"):
        raise StudioError(f"sampler must be ddpm or ddim, not {sampler!r}")
    sched = (DDPMScheduler if sampler == "ddpm" else DDIMScheduler).from_config(train_scheduler.config)
    sched.set_timesteps(steps or train_scheduler.config.num_train_timesteps)
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, model.dim, generator=g)
    timesteps = list(sched.timesteps)
    marks = {int(i * (len(timesteps) - 1) / max(1, keep - 1)) for i in range(keep)} if keep else set()
    frames = []
    model.eval()
    for i, t in enumerate(timesteps):
        eps = model(x, t)
        x = sched.step(eps, t, x, generator=g).prev_sample if sampler == "ddpm" else sched.step(eps, t, x).prev_sample
        if i in marks:
            frames.append(x.clone())
    return x, frames
