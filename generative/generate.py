"""Drawing from trained generators: sample grids, DDPM/DDIM with trajectories, VAE latent walks.

>>> gen = load_generator("runs/vae_digits")       # a finished (or checkpointed) run folder
>>> images = gen.sample(64, seed=0)                # (64, C, H, W) in [-1, 1]
>>> gen.interpolate(a, b, n=10)                    # VAE: decode along the line between two codes
"""

from __future__ import annotations

from pathlib import Path

import torch

from generative.data import TOYS
from generative.diffusion import ddpm_sample, toy_ddpm_sample
from generative.models import load_checkpoint, load_torch_model
from generative.train import GenConfig, Trainer
from studio.config import load_config
from studio.errors import StudioError
from studio.limits import check_int
from studio.limits import current as current_limits


class LoadedGenerator:
    def __init__(self, run_dir: Path):

        self.run_dir = Path(run_dir)
        if not (self.run_dir / "config.yaml").is_file():
            raise StudioError(f"{self.run_dir} is not a generator run folder (no config.yaml)")
        self.cfg = load_config(GenConfig, self.run_dir / "config.yaml").check()
        self.kind = self.cfg.model

        self.toy = self.cfg.data.name in TOYS
        if self.toy and (self.run_dir / "model").is_dir():
            self.model = load_torch_model(self.run_dir / "model")
            if self.kind == "ddpm":
                from diffusers import DDPMScheduler

                self.scheduler = DDPMScheduler.from_pretrained(str(self.run_dir / "model" / "scheduler"))
        elif self.kind == "ddpm" and (self.run_dir / "pipeline").is_dir():
            from diffusers import DDPMPipeline

            pipe = DDPMPipeline.from_pretrained(str(self.run_dir / "pipeline"), use_safetensors=True)
            self.model, self.scheduler = pipe.unet.eval(), pipe.scheduler
        elif self.kind != "ddpm" and (self.run_dir / "model").is_dir():
            self.model = load_torch_model(self.run_dir / "model")
        elif (self.run_dir / "checkpoint.pt").is_file():  # an unfinished run: its last checkpoint
            t = Trainer(self.cfg)
            saved = load_checkpoint(self.run_dir / "checkpoint.pt")["modules"]
            t.model.load_state_dict(saved.get("ema") or saved["model"])  # DDPM samples with its weight average
            self.model = t.model.eval()
            self.scheduler = getattr(t, "scheduler", None)
        else:
            raise StudioError(f"{self.run_dir} has no trained model yet (no model/, pipeline/ or checkpoint.pt)")

    def check_request(self, n: int, steps: int | None = None) -> None:
        """Bound one sampling call (limits.sample_images; 16x that many points for a 2-D toy; DDPM steps <= T)."""
        lim = current_limits()
        most = lim.sample_images * (16 if self.toy else 1)
        check_int("the number of samples", n, 1, most, "sample_images")
        if steps is not None and self.kind == "ddpm":
            check_int("the DDPM steps", steps, 1, int(self.scheduler.config.num_train_timesteps))

    @torch.no_grad()
    def sample(self, n: int, seed: int = 0, steps: int | None = None, sampler: str = "ddpm") -> torch.Tensor:
        self.check_request(n, steps)
        g = torch.Generator().manual_seed(seed)
        if self.kind == "vae":
            return self.model.decode(torch.randn(n, self.model.z_dim, generator=g))
        if self.kind == "gan":
            return self.model(torch.randn(n, self.model.z_dim, generator=g))
        if self.toy:
            return toy_ddpm_sample(self.model, self.scheduler, n, seed, steps, sampler)[0]
        return ddpm_sample(self.model, self.scheduler, n, seed, steps, sampler)[0]

    @torch.no_grad()
    def trajectory(self, n: int = 8, seed: int = 0, steps: int | None = None, sampler: str = "ddpm",
                   frames: int = 10) -> list[torch.Tensor]:
        if self.kind != "ddpm":
            raise StudioError("the denoising trajectory is for DDPM runs")
        self.check_request(n, steps)
        check_int("frames", frames, 1, 100)
        if self.toy:
            return toy_ddpm_sample(self.model, self.scheduler, n, seed, steps, sampler, keep=frames)[1]
        return ddpm_sample(self.model, self.scheduler, n, seed, steps, sampler, keep=frames)[1]

    @torch.no_grad()
    def interpolate(self, a: torch.Tensor, b: torch.Tensor, n: int = 10) -> torch.Tensor:
        """VAE: decode z = (1 - t) mu(a) + t mu(b) for n values of t in [0, 1]."""
        if self.kind != "vae":
            raise StudioError("latent interpolation is for VAE runs")
        check_int("interpolation steps", n, 2, 100)
        za, zb = self.model.encode(a[None])[0], self.model.encode(b[None])[0]
        t = torch.linspace(0, 1, n)[:, None]
        return self.model.decode((1 - t) * za + t * zb)

    @torch.no_grad()
    def latent_map(self, n: int = 10, span: float = 2.5) -> torch.Tensor:
        """VAE: decode an n x n grid over the first two latent dimensions (the rest at 0)."""
        if self.kind != "vae":
            raise StudioError("the latent map is for VAE runs")
        check_int("the latent map side", n, 2, 32)
        v = torch.linspace(-span, span, n)
        z = torch.zeros(n * n, self.model.z_dim)
        z[:, 0] = v.repeat(n)
        z[:, 1] = v.repeat_interleave(n)
        return self.model.decode(z)


def load_generator(run_dir: str | Path) -> LoadedGenerator:
    return LoadedGenerator(Path(run_dir))
