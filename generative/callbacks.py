"""The studio's part of a Lightning run: one callback for the run folder, and EMA with a warm-up.

:class:`StudioEvents` writes ``events.jsonl`` and ``status.json``, draws a sample grid and the metrics
at each validation, stops at the next step boundary when the job is cancelled (SIGTERM or SIGINT,
what ``studio jobs cancel`` sends) and saves ``checkpoints/last.ckpt`` when training ends for any
reason. Only rank 0 writes; under DDP every process stops at the same step.
"""

from __future__ import annotations

import json
import math
import os
import signal
import time
from pathlib import Path

import lightning as L
from lightning.pytorch.callbacks import WeightAveraging

from studio.errors import StudioError
from studio.jobs import write_status

LAST = Path("checkpoints") / "last.ckpt"


def warm_ema(decay: float):
    """EMA update with the usual warm-up: d = min(decay, (1 + n) / (10 + n)) after n updates, so the
    average follows the weights closely early on and averages over ~1/(1 - decay) steps later (a
    short run's average is not stuck near its first weights)."""

    def avg(averaged, current, n):
        n = int(n)
        d = min(decay, (1 + n) / (10 + n))
        return averaged + (current - averaged) * (1 - d)
    return avg


class WarmEMA(WeightAveraging):
    """Lightning's EMA weight averaging (swapped in for validation, copied into the model at the end)
    with :func:`warm_ema`'s warm-up."""

    def __init__(self, decay: float):
        super().__init__(avg_fn=warm_ema(decay))


class StudioEvents(L.Callback):
    def __init__(self, cfg, run_dir: Path, progress=None, elapsed0: float = 0.0, on_validation=None):
        self.cfg, self.run_dir, self.progress = cfg, Path(run_dir), progress
        self.elapsed0, self.on_validation = elapsed0, on_validation
        self.stop_requested = self.cancelled = False
        self.early_stopped: dict = {}  # {"early_stopped": step, "best_val_loss": ...} when EarlyStopping ended the run
        self._previous: dict = {}
        self._events = None
        self.t0 = time.perf_counter()

    def elapsed(self) -> float:
        return round(self.elapsed0 + time.perf_counter() - self.t0, 2)

    def _on_signal(self, signum, _frame) -> None:
        self.stop_requested = True

    def on_train_start(self, trainer, module) -> None:
        # after Lightning's own SIGTERM handler (which would end the run without a checkpoint)
        self._previous = {s: signal.signal(s, self._on_signal) for s in (signal.SIGTERM, signal.SIGINT)}
        self.t0 = time.perf_counter()
        if trainer.is_global_zero:
            write_status(self.run_dir, state="running", step=trainer.global_step, pid=os.getpid(),
                         steps=self.cfg.steps, error=None, model=self.cfg.model, dataset=self.cfg.data.name)
            self._events = open(self.run_dir / "events.jsonl", "a")

    def _write(self, row: dict) -> None:
        if self._events:
            self._events.write(json.dumps(row) + "\n")
            self._events.flush()

    def on_train_batch_end(self, trainer, module, outputs, batch, batch_idx) -> None:
        step = trainer.global_step
        losses = {k: float(v.detach()) for k, v in (outputs or {}).items() if getattr(v, "ndim", 1) == 0}
        if not all(math.isfinite(v) for v in losses.values()):
            raise StudioError(f"the loss became {losses} at step {step}; lower lr")
        if step % self.cfg.log_every == 0 or step == 1:
            if trainer.is_global_zero:
                self._write({"step": step, "seconds": self.elapsed(), **{k: round(v, 5) for k, v in losses.items()}})
                write_status(self.run_dir, step=step, train_seconds=self.elapsed())
            if self.progress and trainer.is_global_zero:
                self.progress(step, self.cfg.steps, losses)
        if trainer.strategy.reduce_boolean_decision(self.stop_requested, all=False):
            self.cancelled = True
            trainer.should_stop = True

    def on_validation_epoch_end(self, trainer, module) -> None:
        if self.cancelled or trainer.sanity_checking or not trainer.is_global_zero:
            return
        step = trainer.global_step
        val = trainer.callback_metrics.get("val_loss")
        if val is not None:
            self._write({"step": step, "seconds": self.elapsed(), "val_loss": round(float(val), 5)})
        if self.on_validation:  # the sample grid and metrics, with the averaged weights swapped in
            self.on_validation(module, step)

    def on_train_end(self, trainer, module) -> None:
        # before the EMA callback copies its average into the model: the checkpoint keeps both
        # a save (Lightning's default keeps the callbacks' state); every load is weights_only=True
        trainer.save_checkpoint(self.run_dir / LAST)
        stopper = trainer.early_stopping_callback
        if stopper is not None and stopper.wait_count >= stopper.patience and not self.cancelled:
            self.early_stopped = {"early_stopped": trainer.global_step,
                                  "best_val_loss": round(float(stopper.best_score), 5)}
            self._write({"step": trainer.global_step, "seconds": self.elapsed(), "early_stop": True,
                         **self.early_stopped})
        if trainer.is_global_zero:
            write_status(self.run_dir, step=trainer.global_step, train_seconds=self.elapsed())

    def teardown(self, trainer, module, stage: str) -> None:
        for s, h in self._previous.items():
            signal.signal(s, h)
        self._previous = {}
        if self._events:
            self._events.close()
            self._events = None
