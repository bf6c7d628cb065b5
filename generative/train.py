"""Training runs for the generators, through Lightning: run folder, events, checkpoints, cancel and resume.

``train(cfg, run_dir)`` builds the config's LightningModule (``generative/modules.py``) and data module
(``generative/datamodule.py``) and calls ``L.Trainer.fit`` with Lightning's callbacks: ``ModelCheckpoint``
(``checkpoints/last.ckpt`` every ``checkpoint_every`` steps), ``EarlyStopping`` on the validation loss
(``early_stop_patience`` checks, 0 = off), EMA weight averaging for DDPM, ``CSVLogger`` (``csv/``), and
``max_steps`` / ``max_time`` from ``steps`` / ``budget_seconds``. The studio's own concerns live in one
callback (``generative/callbacks.py``).

A run folder holds ``config.yaml`` (resolved), ``events.jsonl`` (one line per logged step: step,
seconds, losses; and one per validation: ``val_loss``), ``status.json`` (state, step, error),
``checkpoints/last.ckpt`` (Lightning's checkpoint: weights, optimizers, loops; loaded with
``weights_only=True``), ``samples/`` (PNG grids marked synthetic), ``metrics.jsonl`` and, at the end,
``model/`` (VAE/GAN: config.json + model.safetensors) or ``pipeline/`` (DDPM: a diffusers
DDPMPipeline folder).

SIGTERM or SIGINT (what ``studio jobs cancel`` sends) stops after the current step; the checkpoint
is saved and the state becomes ``cancelled``. ``resume`` is ``fit(ckpt_path="last")``: the same step
counter, and the same batches and noise from there as a run that never stopped.

Hardware: ``accelerator: auto`` uses a GPU when there is one (bf16 mixed precision where the GPU
has it), else the CPU; ``devices: N`` with ``strategy: ddp`` runs N processes (gloo on CPU).
"""

from __future__ import annotations

import json
import os
import warnings
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path
from typing import Literal

import lightning as L
import torch
from lightning.pytorch.callbacks import EarlyStopping, ModelCheckpoint
from lightning.pytorch.loggers import CSVLogger

from generative.callbacks import LAST, StudioEvents, WarmEMA
from generative.data import CLASS_NAMES, TOYS, load_toy
from generative.datamodule import GenData
from generative.images import save_grid, save_scatter
from generative.models import load_checkpoint
from generative.modules import GenModule, build_module
from studio.errors import StudioError
from studio.jobs import read_jsonl, read_status, write_status
from studio.limits import check_float, check_int
from studio.limits import current as current_limits
from studio.schema import config_class

MODELS = ("vae", "gan", "ddpm")
RUN_DIR_ENV = "STUDIO_DDP_RUN_DIR"  # rank 0 tells the processes Lightning's DDP launcher starts where the run is


def is_worker() -> bool:
    """True in a process that is not rank 0 of a multi-process run (Lightning's DDP launcher or torchrun set
    LOCAL_RANK / NODE_RANK / RANK): it trains alongside rank 0, which alone writes and reports."""
    return any(os.environ.get(k, "0") not in ("", "0") for k in ("LOCAL_RANK", "NODE_RANK", "RANK"))


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
    conditional: bool = field(default=False, metadata={
        "help": "VAE/DDPM on digits or fashion: learn p(x | class) (sample with --label, DDPM also --guidance)"})
    p_uncond: float = field(default=0.1, metadata={"help": "conditional DDPM: share of labels dropped in training"})
    guidance: float = field(default=1.0, metadata={"help": "conditional DDPM: guidance w of the training grids"})
    early_stop_patience: int = field(default=0, metadata={
        "help": "stop when val_loss has not improved for this many validations (every sample_every steps; 0 = off)"})
    accelerator: Literal["auto", "cpu", "gpu"] = field(default="auto", metadata={"help": "auto | cpu | gpu"})
    devices: int = field(default=1, metadata={"help": "processes (CPU) or GPUs per machine"})
    num_nodes: int = field(default=1, metadata={"help": "machines (with strategy ddp; see README)"})
    strategy: Literal["auto", "ddp"] = field(default="auto", metadata={"help": "auto | ddp (devices > 1)"})

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
        check_int("early_stop_patience", self.early_stop_patience, 0, 10_000)
        check_int("devices", self.devices, 1, 64)
        check_int("num_nodes", self.num_nodes, 1, 1024)
        check_float("p_uncond", self.p_uncond, 0, 1)
        check_float("guidance", self.guidance, 0, 50)
        if self.accelerator not in ("auto", "cpu", "gpu") or self.strategy not in ("auto", "ddp"):
            raise StudioError("accelerator is auto, cpu or gpu; strategy is auto or ddp")
        if self.conditional and (self.model == "gan" or self.data.name not in CLASS_NAMES):
            raise StudioError("conditional=true is for a VAE or DDPM on a labelled dataset "
                              f"({', '.join(CLASS_NAMES)})")
        if self.early_stop_patience and self.model == "gan":
            raise StudioError("a GAN's losses do not fall as its samples improve, so early stopping is not offered "
                              "for GANs; stop by steps or budget_seconds")
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


def read_metrics(run_dir: Path) -> list[dict]:
    return read_jsonl(Path(run_dir) / "metrics.jsonl")


_JUDGES: dict = {}


def judge_for(data: DataConfig):
    """The dataset's metric judge (its classifier and reference features), built once per process."""
    from generative.metrics import Judge

    key = (data.name, data.size, data.channels, data.path)
    if key not in _JUDGES:
        _JUDGES[key] = Judge(*key)
    return _JUDGES[key]


def grid_labels(module: GenModule, n: int) -> torch.Tensor | None:
    """A conditional model's grid: one row per class (n // classes columns, at least 1)."""
    if not module.num_classes:
        return None
    cols = max(1, n // module.num_classes)
    return torch.arange(module.num_classes).repeat_interleave(cols)


def draw(module: GenModule, n: int, seed: int) -> tuple[torch.Tensor, torch.Tensor | None]:
    labels = grid_labels(module, n)
    n = len(labels) if labels is not None else n
    guidance = module.cfg.guidance if module.num_classes and module.kind == "ddpm" else 0.0
    # guided grids by the stochastic DDPM sampler: deterministic DDIM drifts under guidance (generative/diffusion.py)
    return module.sample(n, seed, labels, guidance, steps=50, sampler="ddpm" if guidance else "ddim"), labels


def save_samples(module: GenModule, path: Path, step: int) -> Path:
    cfg = module.cfg
    if module.toy:
        pts, _ = draw(module, 1000, cfg.seed)
        return save_scatter(pts, path, cfg.model, step, real=load_toy(cfg.data.name, 1000, seed=99))
    images, labels = draw(module, cfg.n_samples, cfg.seed)
    return save_grid(images, path, cfg.model, step, nrow=None if labels is None else len(labels) // module.num_classes)


def log_metrics(module: GenModule, step: int, run_dir: Path) -> dict | None:
    """Classifier-Frechet distance, confidence, nearest-neighbour ratio (and, for a conditional run, the
    share of samples the classifier assigns to the class asked for) of 250-256 samples; MMD for a toy."""
    cfg = module.cfg
    if not cfg.metrics or cfg.data.name not in ("digits", "fashion", *TOYS):
        return None
    if module.toy:
        from generative.metrics import mmd

        fresh = load_toy(cfg.data.name, 1000, seed=98)
        row = {"step": step, "mmd": round(mmd(draw(module, 1000, cfg.seed + 1)[0], fresh), 5)}
    else:
        images, labels = draw(module, 256, cfg.seed + 1)
        row = {"step": step, **judge_for(cfg.data).score(images, labels)}
    with open(run_dir / "metrics.jsonl", "a") as fh:
        fh.write(json.dumps(row) + "\n")
    return row


def trainer_options(cfg: GenConfig, cuda: bool, bf16: bool) -> dict:
    """accelerator, devices, strategy and precision for ``L.Trainer``: bf16 mixed precision on a GPU
    that has it (the UNet's convolutions are where it pays), full precision elsewhere."""
    gpu = cfg.accelerator == "gpu" or (cfg.accelerator == "auto" and cuda)
    if cfg.accelerator == "gpu" and not cuda:
        raise StudioError("accelerator=gpu but torch sees no GPU here; use accelerator=auto or cpu")
    opts = {"accelerator": "gpu" if gpu else "cpu", "devices": cfg.devices,
            "precision": "bf16-mixed" if gpu and bf16 else "32-true"}
    if cfg.num_nodes > 1:
        opts["num_nodes"] = cfg.num_nodes
    if cfg.devices > 1 or cfg.num_nodes > 1 or cfg.strategy == "ddp":
        opts["strategy"] = "ddp"  # gloo on CPU, nccl on GPUs (Lightning picks)
    return opts


def train(cfg: GenConfig, run_dir: str | Path, resume: bool = False, progress=None) -> dict:
    """Train (or resume) into ``run_dir``; returns the final status."""
    from studio.config import load_config, save_config

    run_dir = Path(run_dir)
    rank = 1 if is_worker() else 0
    ckpt = None
    if resume:
        if not (run_dir / LAST).is_file():
            if (run_dir / "checkpoint.pt").is_file():
                raise StudioError(f"{run_dir.name} was trained by the studio's earlier training loop; its "
                                  "checkpoint.pt can be sampled from but not resumed. Start a new run")
            raise StudioError(f"nothing to resume in {run_dir.name}: no {LAST}")
        cfg = load_config(GenConfig, run_dir / "config.yaml")
        load_checkpoint(run_dir / LAST)  # refuses anything but tensors and numbers, before Lightning reads it
        ckpt = str(run_dir / LAST)
    cfg.check()
    if rank == 0:
        run_dir.mkdir(parents=True, exist_ok=True)
        (run_dir / "samples").mkdir(exist_ok=True)
        save_config(cfg, run_dir / "config.yaml")
        os.environ[RUN_DIR_ENV] = str(run_dir.resolve())  # inherited by the DDP processes started in fit()
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    warnings.filterwarnings("ignore", ".*does not have many workers.*")
    warnings.filterwarnings("ignore", ".*resuming from a checkpoint that ended before the epoch ended.*")
    # a GAN's checkpoint at step N holds the weights after step N's updates, which is what resume expects
    warnings.filterwarnings("ignore", ".*Using ModelCheckpoint with manual optimization.*")
    L.seed_everything(cfg.seed, verbose=False)
    module, data = build_module(cfg), GenData(cfg)
    elapsed0 = read_status(run_dir).get("train_seconds", 0.0) if resume else 0.0

    def on_validation(m, step):
        save_samples(m, run_dir / "samples" / f"step_{step:06d}.png", step)
        log_metrics(m, step, run_dir)

    events = StudioEvents(cfg, run_dir, progress, elapsed0, on_validation)
    callbacks = [events]
    if cfg.model == "ddpm" and cfg.ema > 0:
        callbacks.append(WarmEMA(cfg.ema))
    if cfg.early_stop_patience:
        callbacks.append(EarlyStopping("val_loss", patience=cfg.early_stop_patience, check_on_train_epoch_end=False))
    callbacks.append(ModelCheckpoint(dirpath=run_dir / LAST.parent, save_top_k=0, save_last=True,
                                     every_n_train_steps=cfg.checkpoint_every))
    trainer = L.Trainer(max_steps=cfg.steps, max_epochs=-1,
                        max_time=timedelta(seconds=cfg.budget_seconds) if cfg.budget_seconds else None,
                        val_check_interval=cfg.sample_every, check_val_every_n_epoch=None, num_sanity_val_steps=0,
                        log_every_n_steps=cfg.log_every, logger=CSVLogger(run_dir, name="csv"),  # csv/version_N
                        callbacks=callbacks, enable_progress_bar=False, enable_model_summary=False,
                        use_distributed_sampler=False, deterministic=False, default_root_dir=run_dir,
                        **trainer_options(cfg, torch.cuda.is_available(),
                                          torch.cuda.is_available() and torch.cuda.is_bf16_supported()))
    try:
        trainer.fit(module, data, ckpt_path=ckpt, weights_only=True)
    except BaseException as exc:
        if rank == 0:
            write_status(run_dir, state="failed", step=trainer.global_step, error=f"{type(exc).__name__}: {exc}")
        raise
    step = trainer.global_step
    if not trainer.is_global_zero:
        return {"state": "cancelled" if events.cancelled else "finished", "step": step}
    state = "cancelled" if events.cancelled else "finished"
    if state == "finished":  # the model now holds the averaged weights (the EMA callback copied them in)
        save_samples(module, run_dir / "samples" / "final.png", step)
        if step % cfg.sample_every:  # not logged at this step yet
            log_metrics(module, step, run_dir)
        module.save_final(run_dir)
    write_status(run_dir, state=state, step=step, train_seconds=events.elapsed(), **events.early_stopped)
    return read_status(run_dir)
