"""Drawing from trained generators: sample grids, DDPM/DDIM with trajectories, VAE latent walks,
class-conditional samples with classifier-free guidance.

>>> gen = load_generator("runs/vae_digits")       # a finished (or checkpointed) run folder
>>> images = gen.sample(64, seed=0)                # (64, C, H, W) in [-1, 1]
>>> gen.sample(16, label=7, guidance=3)            # a conditional DDPM: sixteen 7s
>>> gen.interpolate(a, b, n=10)                    # VAE: decode along the line between two codes

A run folder is read as the module its config builds (``generative/modules.py``), with the weights of
its final ``model/`` or ``pipeline/`` folder, else of its last checkpoint (``checkpoints/last.ckpt``,
DDPM: the averaged weights). A run trained by the studio's earlier loop (``checkpoint.pt``) loads too.
"""

from __future__ import annotations

from pathlib import Path

import torch

from generative.callbacks import LAST
from generative.data import CLASS_NAMES
from generative.models import load_checkpoint, load_torch_model
from generative.modules import build_module
from generative.train import GenConfig
from studio.config import load_config
from studio.errors import StudioError
from studio.limits import check_float, check_int
from studio.limits import current as current_limits


class LoadedGenerator:
    def __init__(self, run_dir: Path):
        self.run_dir = Path(run_dir)
        if not (self.run_dir / "config.yaml").is_file():
            raise StudioError(f"{self.run_dir} is not a generator run folder (no config.yaml)")
        self.cfg = load_config(GenConfig, self.run_dir / "config.yaml").check()
        self.kind = self.cfg.model
        self.module = build_module(self.cfg)
        self.toy = self.module.toy
        rd = self.run_dir
        if self.kind == "ddpm" and not self.toy and (rd / "pipeline").is_dir():
            from diffusers import DDPMPipeline

            pipe = DDPMPipeline.from_pretrained(str(rd / "pipeline"), use_safetensors=True)
            self.module.net, self.module.scheduler = pipe.unet, pipe.scheduler
        elif (rd / "model").is_dir() and (self.kind != "ddpm" or self.toy):
            self.module.net = load_torch_model(rd / "model")
            if self.kind == "ddpm":
                from diffusers import DDPMScheduler

                self.module.scheduler = DDPMScheduler.from_pretrained(str(rd / "model" / "scheduler"))
        elif (rd / LAST).is_file():  # an unfinished run: its last checkpoint (DDPM: the averaged weights)
            self.module.load_state_dict(load_checkpoint(rd / LAST)["state_dict"])
        elif (rd / "checkpoint.pt").is_file():  # a run of the studio's earlier training loop
            saved = load_checkpoint(rd / "checkpoint.pt")["modules"]
            self.module.net.load_state_dict(saved.get("ema") or saved["model"])
        else:
            raise StudioError(f"{rd} has no trained model yet (no model/, pipeline/ or checkpoint)")
        self.module.eval()
        self.model = self.module.net
        self.scheduler = getattr(self.module, "scheduler", None)

    @property
    def classes(self) -> list[str]:
        """The class names a conditional run can be asked for ([] for an unconditional one)."""
        return CLASS_NAMES[self.cfg.data.name] if self.cfg.conditional else []

    def check_request(self, n: int, steps: int | None = None, label: int | None = None,
                      guidance: float = 0.0) -> None:
        """Bound one sampling call (limits.sample_images; 16x that many points for a 2-D toy; DDPM steps <= T;
        a label of this run's classes; guidance 0-50)."""
        lim = current_limits()
        most = lim.sample_images * (16 if self.toy else 1)
        check_int("the number of samples", n, 1, most, "sample_images")
        if steps is not None and self.kind == "ddpm":
            check_int("the DDPM steps", steps, 1, int(self.scheduler.config.num_train_timesteps))
        check_float("guidance", guidance, 0, 50)
        self.module.check_labels(n, label)
        if guidance and not (self.classes and self.kind == "ddpm"):
            raise StudioError("guidance is for class-conditional DDPM runs")

    @torch.no_grad()
    def sample(self, n: int, seed: int = 0, steps: int | None = None, sampler: str = "ddpm",
               label: int | None = None, guidance: float = 0.0) -> torch.Tensor:
        """n samples; a conditional run draws class ``label`` (default: the classes in turn)."""
        self.check_request(n, steps, label, guidance)
        return self.module.sample(n, seed, label, guidance, steps, sampler)

    @torch.no_grad()
    def class_grid(self, per_class: int = 8, seed: int = 0, steps: int | None = None, sampler: str = "ddim",
                   guidance: float = 0.0) -> torch.Tensor:
        """A conditional run's grid: ``per_class`` samples of each class, one row per class."""
        if not self.classes:
            raise StudioError("a grid by class is for class-conditional runs")
        labels = torch.arange(len(self.classes)).repeat_interleave(per_class)
        self.check_request(len(labels), steps, 0, guidance)
        return self.module.sample(len(labels), seed, labels, guidance, steps, sampler)

    @torch.no_grad()
    def trajectory(self, n: int = 8, seed: int = 0, steps: int | None = None, sampler: str = "ddpm",
                   frames: int = 10, label: int | None = None, guidance: float = 0.0) -> list[torch.Tensor]:
        if self.kind != "ddpm":
            raise StudioError("the denoising trajectory is for DDPM runs")
        self.check_request(n, steps, label, guidance)
        check_int("frames", frames, 1, 100)
        return self.module.trajectory(n, seed, label, guidance, steps, sampler, frames)

    @torch.no_grad()
    def interpolate(self, a: torch.Tensor, b: torch.Tensor, n: int = 10, label: int | None = None) -> torch.Tensor:
        """VAE: decode z = (1 - t) mu(a) + t mu(b) for n values of t in [0, 1]."""
        if self.kind != "vae":
            raise StudioError("latent interpolation is for VAE runs")
        check_int("interpolation steps", n, 2, 100)
        y = self._one_class(1, label)
        za, zb = self.model.encode(a[None], y)[0], self.model.encode(b[None], y)[0]
        t = torch.linspace(0, 1, n)[:, None]
        return self.model.decode((1 - t) * za + t * zb, None if y is None else y.expand(n))

    @torch.no_grad()
    def latent_map(self, n: int = 10, span: float = 2.5, label: int | None = None) -> torch.Tensor:
        """VAE: decode an n x n grid over the first two latent dimensions (the rest at 0)."""
        if self.kind != "vae":
            raise StudioError("the latent map is for VAE runs")
        check_int("the latent map side", n, 2, 32)
        v = torch.linspace(-span, span, n)
        z = torch.zeros(n * n, self.model.z_dim)
        z[:, 0] = v.repeat(n)
        z[:, 1] = v.repeat_interleave(n)
        return self.model.decode(z, self._one_class(n * n, label))

    def _one_class(self, n: int, label: int | None) -> torch.Tensor | None:
        """n copies of ``label`` (class 0 when None) for a conditional VAE; None for an unconditional one."""
        return self.module.check_labels(n, label if label is not None or not self.classes else 0)


def load_generator(run_dir: str | Path) -> LoadedGenerator:
    return LoadedGenerator(Path(run_dir))
