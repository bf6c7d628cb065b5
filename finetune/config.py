"""The fine-tuning run's settings (``configs/finetune/*.yaml`` map onto :class:`FinetuneConfig`).

Light on purpose: the CLI, the UI, the launcher and the training loop all build or read it without
importing torch or transformers.
"""

from __future__ import annotations

import os
import re
import warnings
from dataclasses import dataclass, field
from typing import Literal

from studio.errors import StudioError
from studio.limits import check_float, check_int
from studio.limits import current as current_limits
from studio.schema import config_class


@config_class
@dataclass
class FinetuneConfig:
    """A LoRA fine-tuning run (``configs/finetune/*.yaml``)."""

    data: str = ""
    validation: str | None = field(default=None, metadata={"help": "a separate validation file"})
    val_ratio: float = 0.15
    task: Literal["generation", "classification"] | None = field(default=None, metadata={
        "help": "generation | classification (auto)"})
    base_model: str | None = field(default=None, metadata={"help": "registry name or HF folder (auto by task)"})
    max_length: int = 256
    r: int = 8
    alpha: int = 16
    dropout: float = 0.05
    target_modules: list[str] = field(default_factory=list)
    lr: float = 5e-4
    epochs: float = 3.0
    steps: int = field(default=-1, metadata={"help": "training steps (-1 = by epochs); the generators' name too"})
    max_steps: int | None = field(default=None, metadata={
        "help": "deprecated: the old name of steps (still read; saved as steps)", "deprecated": True})
    batch_size: int = 8
    grad_accum: int = 1
    seed: int = 0
    eval_every: int = 20
    early_stopping: int = field(default=3, metadata={"help": "evaluations without improvement (0 = off)"})
    merge: bool = False
    eval_examples: int = 20
    threads: int = 0
    processes: int = field(default=1, metadata={"help": "CPU processes (accelerate launch, DDP over gloo)"})

    def __post_init__(self) -> None:
        if self.max_steps is not None:  # one name for one idea: generators and fine-tuning both say steps
            warnings.warn("the fine-tuning key max_steps is now steps; max_steps still works for now",
                          DeprecationWarning, stacklevel=3)
            if self.steps == -1:
                self.steps = self.max_steps
            self.max_steps = None

    def check(self) -> FinetuneConfig:
        """Refuse sizes outside ``limits`` (steps, epochs, batch, length, rank, examples) before any work."""
        lim = current_limits()
        check_int("max_length", self.max_length, 8, lim.max_length, "max_length")
        check_int("r", self.r, 1, lim.lora_rank, "lora_rank")
        check_int("alpha", self.alpha, 1, 16 * lim.lora_rank, "lora_rank")
        check_float("dropout", self.dropout, 0, 0.95)
        check_float("lr", self.lr, 0, 10)
        check_float("epochs", self.epochs, 0.001, lim.epochs, "epochs")
        if self.steps != -1:
            check_int("steps", self.steps, 1, lim.train_steps, "train_steps")
        check_int("batch_size", self.batch_size, 1, lim.batch_size, "batch_size")
        check_int("grad_accum", self.grad_accum, 1, lim.batch_size, "batch_size")
        check_int("eval_every", self.eval_every, 1, lim.train_steps, "train_steps")
        check_int("early_stopping", self.early_stopping, 0, 1000)
        check_int("eval_examples", self.eval_examples, 0, lim.eval_examples, "eval_examples")
        check_float("val_ratio", self.val_ratio, 0, 0.9)
        check_int("threads", self.threads, 0, 1024)
        check_int("processes", self.processes, 1, max(1, os.cpu_count() or 1))
        check_int("seed", self.seed, 0, 2**32 - 1)
        if len(self.target_modules) > 64 or any(not re.fullmatch(r"[A-Za-z0-9_.]{1,100}", t)
                                                for t in self.target_modules):
            raise StudioError("target_modules must be module names such as q_proj,v_proj")
        return self


def base_model_for(task: str) -> str:
    """The bundled model a task fine-tunes when the config names none."""
    return "smollm2-135m-instruct" if task == "generation" else "minilm-l6-v2"
