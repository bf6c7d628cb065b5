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
3. Serving that adapter, side by side on the 50 held-out rows (greedy, up to 24 tokens, one request at a
   time, each backend warmed up first, two rounds in alternating order): llama.cpp with the adapter
   exported to GGUF (`studio finetune export RUN --format gguf`), llama.cpp without it (the base), and
   transformers with the PEFT adapter (what picking an adapter meant before). Tokens/s is decode speed: the
   tokens after the first over the time after the first (prompt processing is reported apart, as time to
   first token). Goals: llama.cpp + adapter >= 0.9x plain llama.cpp and >= 4x hf + PEFT in tokens/s; exact
   match within 0.04 of hf + PEFT (the GGUF base is Q4_1, transformers runs its dequantized weights in f32).

    .venv/bin/python benchmarks/finetune.py [--steps 8] [--parts 1,2,3] [--run RUN]
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import resource
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from finetune.config import FinetuneConfig  # noqa: E402
from finetune.data import encode_generation, load_dataset  # noqa: E402
from finetune.gguf_export import export_gguf  # noqa: E402
from finetune.train import _collate, load_base, run_finetune  # noqa: E402
from studio.backends import GenerationSettings, load_backend  # noqa: E402
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


def serve_rows(backend, rows: list[dict]) -> dict:
    """Greedy answers to ``rows`` one at a time: exact matches, decode tokens/s, median time to first token."""
    settings = GenerationSettings(temperature=0, max_tokens=24)
    backend.complete([{"role": "user", "content": "Hello"}], settings)  # warm-up, not timed
    hits, tokens, decode_s, firsts = 0, 0, 0.0, []
    for row in rows:
        s = backend.stream([{"role": "user", "content": f"{row['instruction']}\n\n{row['input']}"}], settings)
        s.consume()
        hits += s.text.strip() == row["output"]
        tokens += max(s.completion_tokens - 1, 0)
        decode_s += s.seconds - (s.first_token_seconds or 0)
        firsts.append(s.first_token_seconds or s.seconds)
    return {"exact": hits, "tokens": tokens, "seconds": decode_s, "first": statistics.median(firsts)}


WAYS = {"llama.cpp + GGUF adapter (ours)": "gguf", "llama.cpp, no adapter (base)": "base",
        "hf + PEFT adapter (before)": "peft"}


def serve_in_child(way: str, run_dir: Path, rows: list[dict]) -> dict:
    """:func:`serve_rows` for one way of serving, in a fresh process: torch and llama.cpp share one OpenMP
    runtime, so a model of one kind decoding in the same process slows the other (a finding of this
    benchmark: see README); each way is measured as it runs on its own."""
    with multiprocessing.get_context("spawn").Pool(1) as pool:
        return pool.apply(_serve_way, (way, str(run_dir), rows))


def _serve_way(way: str, run_dir: str, rows: list[dict]) -> dict:
    torch.set_num_threads(2)
    backend = {"gguf": lambda: load_backend("llamacpp", adapter=str(Path(run_dir) / "adapter.gguf")),
               "base": lambda: load_backend("llamacpp"),
               "peft": lambda: load_backend("hf", adapter=str(Path(run_dir) / "adapter"))}[way]()
    try:
        return serve_rows(backend, rows)
    finally:
        backend.close()


def serving(run_dir: Path, rounds: int = 2) -> None:
    """Part 3: the run's adapter on llama.cpp (exported to GGUF), plain llama.cpp, and hf + PEFT."""
    rows = [json.loads(line) for line in HELDOUT.read_text().splitlines() if line.strip()]
    t0 = time.perf_counter()
    gguf = export_gguf(run_dir)
    export_s = time.perf_counter() - t0
    totals = {name: {"exact": 0, "tokens": 0, "seconds": 0.0, "first": []} for name in WAYS}
    for r in range(rounds):
        for name in (list(WAYS) if r % 2 == 0 else list(reversed(WAYS))):
            got = serve_in_child(WAYS[name], run_dir, rows)
            t = totals[name]
            t["exact"] += got["exact"]
            t["tokens"] += got["tokens"]
            t["seconds"] += got["seconds"]
            t["first"].append(got["first"])
    speed = {name: t["tokens"] / t["seconds"] for name, t in totals.items()}
    em = {name: t["exact"] / (rounds * len(rows)) for name, t in totals.items()}
    print(f"3. serving the adapter: {len(rows)} held-out rows x {rounds} rounds, greedy, one request at a time, "
          f"each way in a fresh process (export to GGUF took {export_s:.1f} s, {gguf.stat().st_size / 1e6:.1f} MB)")
    print("| backend | decode tokens/s | median time to first token | held-out exact match |")
    print("|---|---:|---:|---:|")
    for name in WAYS:
        print(f"| {name} | {speed[name]:.1f} | {1000 * statistics.median(totals[name]['first']):.0f} ms | "
              f"{em[name]:.2f} |")
    ours, plain, hf = (speed[n] for n in WAYS)
    em_ours, _, em_hf = (em[n] for n in WAYS)
    print(f"llama.cpp + adapter: {ours / plain:.2f}x plain llama.cpp (goal >= 0.9x), {ours / hf:.1f}x hf + PEFT "
          f"(goal >= 4x); exact match {em_ours:.2f} vs {em_hf:.2f} with hf + PEFT, a difference of "
          f"{abs(em_ours - em_hf):.2f} (goal <= 0.04)")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--steps", type=int, default=8, help="timed steps per method in part 1")
    ap.add_argument("--epochs", type=float, default=3)
    ap.add_argument("--parts", default="1,2,3", help="which parts to run (3 serves part 2's adapter or --run's)")
    ap.add_argument("--run", type=Path, help="part 3 only: serve this finished run's adapter instead of training")
    args = ap.parse_args()
    parts = {int(p) for p in args.parts.split(",")}
    torch.set_num_threads(2)
    cfg = load_config(FinetuneConfig, CONFIG)
    cfg.data = str(ROOT / cfg.data)
    if args.run:
        serving(args.run)
        return
    if 1 in parts:
        speeds(args, cfg)
    if parts & {2, 3}:
        trained(args, 3 in parts)


def speeds(args, cfg: FinetuneConfig) -> None:
    """Part 1: a LoRA step against a full fine-tuning step."""
    print(f"1. one training step, batch 8, {args.steps} steps each (after a warm-up step)")
    lo = step_speed(True, args.steps, cfg)
    full = step_speed(False, args.steps, cfg)
    print("| method | trainable parameters | steps/s | peak resident memory |")
    print("|---|---:|---:|---:|")
    for name, (sps, mb, n) in (("full fine-tuning (baseline)", full), ("LoRA r=8 q_proj,v_proj (ours)", lo)):
        print(f"| {name} | {n:,} | {sps:.3f} | {mb:,.0f} MB |")
    print(f"LoRA vs full: {lo[0] / full[0]:.2f}x the steps/s, {lo[1] / max(full[1], 1):.2f}x the peak memory, "
          f"{lo[2] / full[2]:.4f}x the trainable parameters\n")


def trained(args, serve: bool) -> None:
    """Part 2: the real capital-records job; then part 3 on its adapter when ``serve``."""
    run_cfg = load_config(FinetuneConfig, CONFIG, [f"epochs={args.epochs}", "early_stopping=0", "eval_every=25",
                                                   "eval_examples=50"])
    run_cfg.data, run_cfg.validation = str(ROOT / run_cfg.data), str(HELDOUT)
    with tempfile.TemporaryDirectory() as tmp:
        t0 = time.perf_counter()
        status = run_finetune(run_cfg, Path(tmp) / "run")
        wall = time.perf_counter() - t0
        m = json.loads((Path(tmp) / "run" / "metrics.json").read_text())
        ex = json.loads((Path(tmp) / "run" / "examples.json").read_text())
        report_run(args, run_cfg, status, wall, m, ex)
        if serve:
            print()
            serving(Path(tmp) / "run")


def report_run(args, run_cfg: FinetuneConfig, status: dict, wall: float, m: dict, ex: list) -> None:
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
