"""LoRA on the bundled SmolLM2-135M-Instruct: speed and memory vs full fine-tuning; the real run's time
and its before/after task metric on a held-out split.

1. The same training step (batch 8 of the capital-records set, AdamW) for LoRA (r=8 on q_proj and
   v_proj) and for full fine-tuning (every weight trains), `--steps` steps each: steps/s and the
   peak resident memory of the process (Python, torch, the model, gradients, optimizer state and
   activations). Each method runs in a fresh child process started from this one, so memory the
   first leaves behind does not count for the second.
2. The real job: `configs/finetune/capital_records.yaml` on all 200 training rows for 3 epochs,
   with `configs/finetune/data/capital_records_heldout.jsonl` (50 sentences about 25 countries the
   training file never names, in sentence shapes it never uses) as the validation split. Early
   stopping is off so nothing is chosen on the held-out rows. Prints training time (goal: under 5
   minutes) and exact match of the record (`country=X; capital=Y`) before and after.

    .venv/bin/python benchmarks/finetune.py [--steps 8]
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import resource
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from finetune.config import FinetuneConfig  # noqa: E402
from finetune.data import encode_generation, load_dataset  # noqa: E402
from finetune.train import _collate, load_base, run_finetune  # noqa: E402
from studio.config import load_config  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
CONFIG = ROOT / "configs" / "finetune" / "capital_records.yaml"
HELDOUT = ROOT / "configs" / "finetune" / "data" / "capital_records_heldout.jsonl"


def step_speed(lora: bool, steps: int, cfg: FinetuneConfig) -> tuple[float, float, int]:
    """(steps/s, peak resident MB, trainable parameters), measured in a fresh child process so the
    memory one method leaves with the allocator does not count for the other."""
    ctx = multiprocessing.get_context("spawn")
    with ctx.Pool(1) as pool:
        return pool.apply(_steps, (lora, steps, cfg))


def _steps(lora: bool, steps: int, cfg: FinetuneConfig) -> tuple[float, float, int]:
    from peft import LoraConfig, TaskType, get_peft_model

    torch.set_num_threads(2)
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
    peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # kB on Linux
    return steps / dt, peak_mb, sum(p.numel() for p in params)


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
    print("| method | trainable parameters | steps/s | peak resident memory |")
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
        status = run_finetune(run_cfg, Path(tmp) / "run")
        wall = time.perf_counter() - t0
        m = json.loads((Path(tmp) / "run" / "metrics.json").read_text())
        ex = json.loads((Path(tmp) / "run" / "examples.json").read_text())
    steps = status["step"]
    peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # kB on Linux
    print(f"2. capital records: {status['train']} training rows x {args.epochs:g} epochs = {steps} steps "
          f"(batch {run_cfg.batch_size}); held-out: {status['val']} rows")
    print(f"training {status['train_seconds']:.0f} s ({steps / status['train_seconds']:.2f} steps/s; goal: "
          f"under 300 s); with the before/after evaluation {wall:.0f} s; peak resident memory "
          f"{peak_mb:,.0f} MB; trainable share {100 * status['trainable_share']:.2f}%")
    print("| held-out metric | base model | after LoRA |")
    print("|---|---:|---:|")
    for k in ("exact_match", "val_loss", "perplexity"):
        print(f"| {k} | {m['before'][k]} | {m['after'][k]} |")
    for e in ex[:3]:
        print(f"  {e['prompt'].splitlines()[-1]!r}\n    base:  {e['base_output']!r}\n    tuned: {e['tuned_output']!r}")


if __name__ == "__main__":
    main()
