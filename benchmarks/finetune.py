"""LoRA on the bundled SmolLM2-135M-Instruct: speed and memory vs full fine-tuning; the real run's time
and its before/after task metric on a held-out split.

1. The same training step (batch 8 of the capital-records set, AdamW) for LoRA (r=8 on q_proj and
   v_proj) and for full fine-tuning (every weight trains), `--steps` steps each, in this process:
   steps/s and peak resident memory (sampled every 10 ms) above the level before the model was
   loaded: weights, gradients, optimizer state and activations.
2. The real job: `configs/finetune/capital_records.yaml` on all 200 training rows for 3 epochs,
   with `configs/finetune/data/capital_records_heldout.jsonl` (50 sentences about 25 countries the
   training file never names, in sentence shapes it never uses) as the validation split. Early
   stopping is off so nothing is chosen on the held-out rows. Prints training time (goal: under 5
   minutes) and exact match of the record (`country=X; capital=Y`) before and after.

    .venv/bin/python benchmarks/finetune.py [--steps 8]
"""

from __future__ import annotations

import argparse
import gc
import json
import sys
import tempfile
import threading
import time
from pathlib import Path

import psutil
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from finetune.data import encode_generation, load_dataset  # noqa: E402
from finetune.train import FinetuneConfig, _collate, load_base, run_finetune  # noqa: E402
from studio.config import load_config  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
CONFIG = ROOT / "configs" / "finetune" / "capital_records.yaml"
HELDOUT = ROOT / "configs" / "finetune" / "data" / "capital_records_heldout.jsonl"


class PeakRSS:
    """Peak resident memory above the level at start, sampled in a thread."""

    def __enter__(self):
        gc.collect()
        self.proc = psutil.Process()
        self.base = self.peak = self.proc.memory_info().rss
        self.done = threading.Event()
        self.thread = threading.Thread(target=self._watch, daemon=True)
        self.thread.start()
        return self

    def _watch(self):
        while not self.done.wait(0.01):
            self.peak = max(self.peak, self.proc.memory_info().rss)

    def __exit__(self, *exc):
        self.done.set()
        self.thread.join()
        self.mb = (self.peak - self.base) / 2**20


def step_speed(lora: bool, steps: int, cfg: FinetuneConfig) -> tuple[float, float, int]:
    """(steps/s, peak MB above the level before the model was loaded, trainable parameters)."""
    with PeakRSS() as mem:
        sps, n = _steps(lora, steps, cfg)
    gc.collect()
    return sps, mem.mb, n


def _steps(lora: bool, steps: int, cfg: FinetuneConfig) -> tuple[float, int]:
    from peft import LoraConfig, TaskType, get_peft_model

    torch.manual_seed(0)
    model, tok = load_base(cfg, "generation", [])
    ds = load_dataset(cfg.data)
    enc = encode_generation(ds.rows, tok, cfg.max_length)
    collate = _collate(tok.pad_token_id, "generation")
    batches = [collate([{"input_ids": enc.input_ids[j], "labels": enc.labels[j]} for j in range(i, i + 8)])
               for i in range(0, 8 * (steps + 1), 8)]
    if lora:
        model = get_peft_model(model, LoraConfig(task_type=TaskType.CAUSAL_LM, r=cfg.r, lora_alpha=cfg.alpha,
                                                 lora_dropout=cfg.dropout, target_modules=cfg.target_modules))
    model.train()
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=cfg.lr)
    model(**batches[0]).loss.backward()  # warm-up step, not timed
    opt.step()
    opt.zero_grad()
    t0 = time.perf_counter()
    for b in batches[1:]:
        model(**b).loss.backward()
        opt.step()
        opt.zero_grad()
    dt = time.perf_counter() - t0
    return steps / dt, sum(p.numel() for p in params)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--steps", type=int, default=8, help="timed steps per method in part 1")
    ap.add_argument("--epochs", type=float, default=3)
    args = ap.parse_args()
    torch.set_num_threads(2)
    cfg = load_config(FinetuneConfig, CONFIG)
    cfg.data = str(ROOT / cfg.data)

    print(f"1. one training step, batch 8, {args.steps} steps each (after a warm-up step)")
    lo = step_speed(True, args.steps, cfg)
    full = step_speed(False, args.steps, cfg)
    print("| method | trainable parameters | steps/s | peak memory above start |")
    print("|---|---:|---:|---:|")
    for name, (sps, mb, n) in (("full fine-tuning (baseline)", full), ("LoRA r=8 q_proj,v_proj (ours)", lo)):
        print(f"| {name} | {n:,} | {sps:.3f} | {mb:,.0f} MB |")
    print(f"LoRA vs full: {lo[0] / full[0]:.2f}x the steps/s, {lo[1] / max(full[1], 1):.2f}x the peak memory, "
          f"{lo[2] / full[2]:.4f}x the trainable parameters\n")

    run_cfg = load_config(FinetuneConfig, CONFIG, [f"epochs={args.epochs}", "early_stopping=0", "eval_every=25",
                                                   "eval_examples=50"])
    run_cfg.data, run_cfg.validation = str(ROOT / run_cfg.data), str(HELDOUT)
    with tempfile.TemporaryDirectory() as tmp:
        t0 = time.perf_counter()
        with PeakRSS() as mem:
            status = run_finetune(run_cfg, Path(tmp) / "run")
        wall = time.perf_counter() - t0
        m = json.loads((Path(tmp) / "run" / "metrics.json").read_text())
        ex = json.loads((Path(tmp) / "run" / "examples.json").read_text())
    steps = status["step"]
    print(f"2. capital records: {status['train']} training rows x {args.epochs:g} epochs = {steps} steps "
          f"(batch {run_cfg.batch_size}); held-out: {status['val']} rows")
    print(f"training {status['train_seconds']:.0f} s ({steps / status['train_seconds']:.2f} steps/s; goal: "
          f"under 300 s); with the before/after evaluation {wall:.0f} s; peak memory above start "
          f"{mem.mb:,.0f} MB; trainable share {100 * status['trainable_share']:.2f}%")
    print("| held-out metric | base model | after LoRA |")
    print("|---|---:|---:|")
    for k in ("exact_match", "val_loss", "perplexity"):
        print(f"| {k} | {m['before'][k]} | {m['after'][k]} |")
    for e in ex[:3]:
        print(f"  {e['prompt'].splitlines()[-1]!r}\n    base:  {e['base_output']!r}\n    tuned: {e['tuned_output']!r}")


if __name__ == "__main__":
    main()
