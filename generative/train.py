"""Training runs for the generators: run folder, events, checkpoints, cancel and resume.

A run folder holds ``config.yaml`` (resolved), ``events.jsonl`` (one line per logged step:
step, seconds, losses), ``status.json`` (state, step, error), ``checkpoint.pt`` (model, optimizer
and RNG state, written every ``checkpoint_every`` steps and when stopped), ``samples/`` (PNG grids
marked synthetic) and, at the end, ``model/`` (VAE/GAN: config.json + model.safetensors) or
``pipeline/`` (DDPM: a diffusers DDPMPipeline folder).

SIGTERM or SIGINT (what ``studio jobs cancel`` sends) stops the loop after the current step; a
checkpoint is saved and the state becomes ``cancelled``. ``resume`` continues from the checkpoint
with the same step counter and RNG state.
"""

from __future__ import annotations

import copy
import json
import os
import signal
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import numpy as np
import torch

from generative.data import TOYS, load_images, load_toy
from generative.diffusion import ddpm_sample, toy_ddpm_sample
from generative.images import save_grid, save_scatter
from generative.models import (
    MLPVAE,
    ConvVAE,
    Discriminator,
    Generator,
    MLPDenoiser,
    MLPDiscriminator,
    MLPGenerator,
    load_checkpoint,
    make_unet,
    save_torch_model,
)
from studio.errors import StudioError
from studio.jobs import read_jsonl, read_status, write_status
from studio.limits import check_float, check_int
from studio.limits import current as current_limits
from studio.schema import config_class

MODELS = ("vae", "gan", "ddpm")


@config_class
@dataclass
class DataConfig:
    name: Literal["digits", "fashion", "folder", "gmm", "moons", "rings"] = field(default="digits", metadata={
        "help": "digits | fashion | folder | gmm | moons | rings"})
    size: int = 16
    channels: int = 1
    path: str | None = None
    limit: int | None = None


@config_class
@dataclass
class GenConfig:
    """A generator training run (``configs/generative/*.yaml``)."""

    model: Literal["vae", "gan", "ddpm"] = field(default="vae", metadata={"help": "vae | gan | ddpm"})
    data: DataConfig = field(default_factory=DataConfig)
    seed: int = 0
    steps: int = 2000
    budget_seconds: float = field(default=0.0, metadata={"help": "stop after this much training time (0 = off)"})
    batch_size: int = 64
    lr: float = 1e-3
    width: int = 32
    z_dim: int = 16
    beta: float = field(default=1.0, metadata={"help": "VAE: weight of the KL term"})
    timesteps: int = field(default=1000, metadata={"help": "DDPM: diffusion steps T"})
    ema: float = field(default=0.999, metadata={"help": "DDPM: decay of the weight average it samples with (0 = off)"})
    log_every: int = 10
    sample_every: int = 200
    checkpoint_every: int = 200
    n_samples: int = 64
    metrics: bool = field(default=True, metadata={"help": "classifier-Frechet etc. at each sample (digits, fashion)"})
    threads: int = 0

    def check(self) -> GenConfig:
        """Refuse unknown models and sizes outside ``limits`` (steps, batch, width, image size, T, grids)."""
        if self.model not in MODELS:
            raise StudioError(f"unknown model {self.model!r}; choose one of: {', '.join(MODELS)}")
        lim = current_limits()
        check_int("steps", self.steps, 1, lim.train_steps, "train_steps")
        check_int("batch_size", self.batch_size, 1, lim.batch_size, "batch_size")
        check_int("width", self.width, 1, lim.width, "width")
        check_int("z_dim", self.z_dim, 1, lim.width, "width")
        check_int("timesteps", self.timesteps, 2, lim.timesteps, "timesteps")
        check_int("n_samples", self.n_samples, 1, lim.sample_images, "sample_images")
        for key in ("log_every", "sample_every", "checkpoint_every"):
            check_int(key, getattr(self, key), 1, lim.train_steps, "train_steps")
        check_float("budget_seconds", self.budget_seconds, 0, 7 * 86400)
        check_float("lr", self.lr, 0, 10)
        check_float("ema", self.ema, 0, 1)
        check_int("threads", self.threads, 0, 1024)
        if self.data.limit is not None:
            check_int("data.limit", self.data.limit, 1, lim.folder_images, "folder_images")
        if self.data.name in TOYS:
            return self
        check_int("data.size", self.data.size, 8, lim.image_size, "image_size")
        if self.data.size % 4 or self.data.size < 8:
            raise StudioError(f"data.size must be a multiple of 4 and at least 8, got {self.data.size}")
        if self.data.channels not in (1, 3):
            raise StudioError(f"data.channels must be 1 or 3, got {self.data.channels}")
        return self


def read_events(run_dir: Path) -> list[dict]:
    return read_jsonl(Path(run_dir) / "events.jsonl")


class Trainer:
    """Builds the model and optimizers for ``cfg``; ``train_step`` does one update."""

    def __init__(self, cfg: GenConfig):
        self.cfg = cfg
        d = cfg.data
        ch, size = d.channels, d.size
        self.toy = d.name in TOYS
        if self.toy:
            self._init_toy(cfg)
        elif cfg.model == "vae":
            self.model = ConvVAE(ch, size, cfg.z_dim, cfg.width)
            self.opts = [torch.optim.Adam(self.model.parameters(), lr=cfg.lr)]
        elif cfg.model == "gan":
            self.model = Generator(ch, size, cfg.z_dim, 2 * cfg.width)
            self.disc = Discriminator(ch, size, 2 * cfg.width)
            self.opts = [torch.optim.Adam(self.model.parameters(), lr=cfg.lr, betas=(0.5, 0.999)),
                         torch.optim.Adam(self.disc.parameters(), lr=cfg.lr, betas=(0.5, 0.999))]
        else:
            from diffusers import DDPMScheduler

            self.model = make_unet(ch, size, cfg.width)
            self.scheduler = DDPMScheduler(num_train_timesteps=cfg.timesteps)
            self.opts = [torch.optim.AdamW(self.model.parameters(), lr=cfg.lr)]

        self.ema = None
        if cfg.model == "ddpm" and cfg.ema > 0:  # sampling uses an exponential moving average of the weights
            self.ema = copy.deepcopy(self.model).eval().requires_grad_(False)

    def update_ema(self, step: int) -> None:
        """ema <- d * ema + (1 - d) * weights, with d = min(cfg.ema, (1 + step) / (10 + step)): the
        average follows the weights closely early on and averages over ~1/(1 - ema) steps later."""
        if self.ema is None:
            return
        d = min(self.cfg.ema, (1 + step) / (10 + step))
        with torch.no_grad():
            for e, w in zip(self.ema.parameters(), self.model.parameters(), strict=True):
                e.lerp_(w, 1 - d)
            for e, w in zip(self.ema.buffers(), self.model.buffers(), strict=True):
                e.copy_(w)

    @property
    def sampler_model(self) -> torch.nn.Module:
        return self.ema if self.ema is not None else self.model

    def _init_toy(self, cfg: GenConfig) -> None:
        width = 4 * cfg.width
        if cfg.model == "vae":
            self.model = MLPVAE(2, 2, width)
            self.opts = [torch.optim.Adam(self.model.parameters(), lr=cfg.lr)]
        elif cfg.model == "gan":
            self.model, self.disc = MLPGenerator(2, cfg.z_dim, width), MLPDiscriminator(2, width)
            self.opts = [torch.optim.Adam(self.model.parameters(), lr=cfg.lr, betas=(0.5, 0.999)),
                         torch.optim.Adam(self.disc.parameters(), lr=cfg.lr, betas=(0.5, 0.999))]
        else:
            from diffusers import DDPMScheduler

            self.model = MLPDenoiser(2, width)
            self.scheduler = DDPMScheduler(num_train_timesteps=cfg.timesteps)
            self.opts = [torch.optim.AdamW(self.model.parameters(), lr=cfg.lr)]

    def data(self) -> torch.Tensor:
        d = self.cfg.data
        if self.toy:
            return load_toy(d.name, n=d.limit or 4000, seed=self.cfg.seed)
        return load_images(d.name, d.size, d.channels, d.path, limit=d.limit)[0]

    def save_samples(self, path: Path, step: int) -> Path:
        n = 1000 if self.toy else self.cfg.n_samples
        samples = self.sample(n, self.cfg.seed)
        if self.toy:
            return save_scatter(samples, path, self.cfg.model, step, real=load_toy(self.cfg.data.name, 1000, seed=99))
        return save_grid(samples, path, self.cfg.model, step)

    def modules(self) -> dict[str, torch.nn.Module]:
        return {"model": self.model, **({"disc": self.disc} if self.cfg.model == "gan" else {}),
                **({"ema": self.ema} if self.ema is not None else {})}

    def train_step(self, x: torch.Tensor) -> dict[str, float]:
        cfg = self.cfg
        if cfg.model == "vae":
            out = self.model.loss(x, cfg.beta)
            self.opts[0].zero_grad()
            out["loss"].backward()
            self.opts[0].step()
            return {k: float(v.detach()) for k, v in out.items()}
        if cfg.model == "gan":
            bce = torch.nn.functional.binary_cross_entropy_with_logits
            z = torch.randn(len(x), cfg.z_dim)
            fake = self.model(z)
            d_loss = bce(self.disc(x), torch.full((len(x),), 0.9)) + bce(self.disc(fake.detach()),
                                                                         torch.zeros(len(x)))
            self.opts[1].zero_grad()
            d_loss.backward()
            self.opts[1].step()
            g_loss = bce(self.disc(fake), torch.ones(len(x)))
            self.opts[0].zero_grad()
            g_loss.backward()
            self.opts[0].step()
            g, d = float(g_loss.detach()), float(d_loss.detach())
            return {"loss": g + d, "g_loss": g, "d_loss": d}
        noise = torch.randn_like(x)
        t = torch.randint(0, self.scheduler.config.num_train_timesteps, (len(x),))
        noisy = self.scheduler.add_noise(x, noise, t)
        pred = self.model(noisy, t) if self.toy else self.model(noisy, t).sample
        loss = torch.nn.functional.mse_loss(pred, noise)
        self.opts[0].zero_grad()
        loss.backward()
        self.opts[0].step()
        return {"loss": float(loss.detach())}

    @torch.no_grad()
    def sample(self, n: int, seed: int = 0, steps: int = 50, sampler: str = "ddim") -> torch.Tensor:
        """n images in [-1, 1] (DDPM: ``sampler`` at ``steps`` steps)."""
        for m in self.modules().values():
            m.eval()
        try:
            g = torch.Generator().manual_seed(seed)
            if self.cfg.model == "vae":
                return self.model.decode(torch.randn(n, self.model.z_dim, generator=g))
            if self.cfg.model == "gan":
                return self.model(torch.randn(n, self.model.z_dim, generator=g))
            if self.toy:
                return toy_ddpm_sample(self.sampler_model, self.scheduler, n, seed, steps, sampler)[0]
            return ddpm_sample(self.sampler_model, self.scheduler, n, seed, steps, sampler)[0]
        finally:
            for k, m in self.modules().items():
                m.train(k != "ema")

    # --- checkpoints -------------------------------------------------------------------------------------
    def state(self, step: int, batch_rng: np.random.Generator) -> dict:
        return {"step": step, "modules": {k: m.state_dict() for k, m in self.modules().items()},
                "opts": [o.state_dict() for o in self.opts], "torch_rng": torch.get_rng_state(),
                "batch_rng": batch_rng.bit_generator.state}

    def load(self, state: dict, batch_rng: np.random.Generator) -> int:
        for k, m in self.modules().items():
            m.load_state_dict(state["modules"].get(k) or state["modules"]["model"])  # (runs saved before EMA)
        for o, s in zip(self.opts, state["opts"], strict=True):
            o.load_state_dict(s)
        torch.set_rng_state(state["torch_rng"])
        batch_rng.bit_generator.state = state["batch_rng"]
        return int(state["step"])

    def save_final(self, run_dir: Path) -> Path:
        if self.toy:  # an MLP in safetensors; DDPM's noise schedule in diffusers' scheduler format
            save_torch_model(self.sampler_model, run_dir / "model")
            if self.cfg.model == "ddpm":
                self.scheduler.save_pretrained(str(run_dir / "model" / "scheduler"))
            return run_dir / "model"
        if self.cfg.model == "ddpm":
            from diffusers import DDPMPipeline

            out = run_dir / "pipeline"
            DDPMPipeline(unet=self.sampler_model, scheduler=self.scheduler).save_pretrained(str(out))
            return out
        out = run_dir / "model"
        save_torch_model(self.model, out)
        return out


_JUDGES: dict = {}


def judge_for(data: DataConfig):
    """The dataset's metric judge (its classifier and reference features), built once per process."""
    from generative.metrics import Judge

    key = (data.name, data.size, data.channels, data.path)
    if key not in _JUDGES:
        _JUDGES[key] = Judge(*key)
    return _JUDGES[key]


def log_metrics(cfg: GenConfig, trainer: Trainer, step: int, run_dir: Path) -> dict | None:
    """Classifier-Frechet distance, confidence and nearest-neighbour ratio of 256 samples -> metrics.jsonl."""
    if not cfg.metrics or cfg.data.name not in ("digits", "fashion", *TOYS):
        return None
    from generative.metrics import mmd

    if trainer.toy:
        fresh = load_toy(cfg.data.name, 1000, seed=98)
        row = {"step": step, "mmd": round(mmd(trainer.sample(1000, cfg.seed + 1), fresh), 5)}
        with open(run_dir / "metrics.jsonl", "a") as fh:
            fh.write(json.dumps(row) + "\n")
        return row

    row = {"step": step, **judge_for(cfg.data).score(trainer.sample(256, cfg.seed + 1))}
    with open(run_dir / "metrics.jsonl", "a") as fh:
        fh.write(json.dumps(row) + "\n")
    return row


def read_metrics(run_dir: Path) -> list[dict]:
    return read_jsonl(Path(run_dir) / "metrics.jsonl")


def _save_checkpoint(trainer: Trainer, step: int, rng: np.random.Generator, run_dir: Path) -> None:
    tmp = run_dir / "checkpoint.pt.tmp"
    torch.save(trainer.state(step, rng), tmp)
    os.replace(tmp, run_dir / "checkpoint.pt")  # a kill never leaves a half-written checkpoint


def train(cfg: GenConfig, run_dir: str | Path, resume: bool = False, progress=None) -> dict:
    """Train (or resume) into ``run_dir``; returns the final status."""
    from studio.config import load_config, save_config

    run_dir = Path(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    if resume:
        if not (run_dir / "checkpoint.pt").is_file():
            raise StudioError(f"nothing to resume in {run_dir}: no checkpoint.pt")
        cfg = load_config(GenConfig, run_dir / "config.yaml")
    cfg.check()
    save_config(cfg, run_dir / "config.yaml")
    torch.manual_seed(cfg.seed)
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    trainer = Trainer(cfg)
    x = trainer.data()
    rng = np.random.default_rng(cfg.seed)
    step = 0
    if resume:
        step = trainer.load(load_checkpoint(run_dir / "checkpoint.pt"), rng)
    stop = {"signal": None}

    def on_signal(signum, _frame):
        stop["signal"] = signum

    previous = {s: signal.signal(s, on_signal) for s in (signal.SIGTERM, signal.SIGINT)}
    (run_dir / "samples").mkdir(exist_ok=True)
    write_status(run_dir, state="running", step=step, pid=os.getpid(), steps=cfg.steps, error=None,
                  model=cfg.model, dataset=cfg.data.name)
    start = time.perf_counter()
    elapsed0 = read_status(run_dir).get("train_seconds", 0.0) if resume else 0.0
    state = "finished"
    try:
        with open(run_dir / "events.jsonl", "a") as events:
            while step < cfg.steps:
                idx = rng.integers(0, len(x), cfg.batch_size)
                losses = trainer.train_step(x[idx])
                step += 1
                trainer.update_ema(step)
                if not all(np.isfinite(v) for v in losses.values()):
                    raise StudioError(f"the loss became {losses} at step {step}; lower lr")
                elapsed = elapsed0 + time.perf_counter() - start
                if step % cfg.log_every == 0 or step == 1:
                    events.write(json.dumps({"step": step, "seconds": round(elapsed, 2),
                                             **{k: round(v, 5) for k, v in losses.items()}}) + "\n")
                    events.flush()
                    write_status(run_dir, step=step, train_seconds=round(elapsed, 2))
                    if progress:
                        progress(step, cfg.steps, losses)
                if step % cfg.sample_every == 0:
                    trainer.save_samples(run_dir / "samples" / f"step_{step:06d}.png", step)
                    log_metrics(cfg, trainer, step, run_dir)
                if step % cfg.checkpoint_every == 0:
                    _save_checkpoint(trainer, step, rng, run_dir)
                if stop["signal"] is not None:
                    state = "cancelled"
                    break
                if cfg.budget_seconds and elapsed >= cfg.budget_seconds:
                    break
        _save_checkpoint(trainer, step, rng, run_dir)
        if state == "finished":
            trainer.save_samples(run_dir / "samples" / "final.png", step)
            if step % cfg.sample_every:  # not logged at this step yet
                log_metrics(cfg, trainer, step, run_dir)
            trainer.save_final(run_dir)
        write_status(run_dir, state=state, step=step, train_seconds=round(elapsed0 + time.perf_counter() - start, 2))
    except BaseException as exc:
        write_status(run_dir, state="failed", step=step, error=f"{type(exc).__name__}: {exc}")
        raise
    finally:
        for s, h in previous.items():
            signal.signal(s, h)
    return read_status(run_dir)
