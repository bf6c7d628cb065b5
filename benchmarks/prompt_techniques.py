"""Prompt techniques x task library with the bundled model: accuracy, wall time, and what
self-consistency costs.

Runs every technique over configs/prompts/*.yaml (no cache, greedy except self-consistency at
temperature 0.7 with N = 5 seeds) and prints the accuracy table with each technique's wall time.
Then times, per arithmetic task, one chain-of-thought sample at the self-consistency settings
against self-consistency with 5 samples (goal: <= 5.5x one sample).

    .venv/bin/python benchmarks/prompt_techniques.py [--json out.json]
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path

from studio.backends import GenerationSettings, load_backend
from studio.config import load_config
from studio.prompting.bench import PromptSuite, run_bench
from studio.prompting.techniques import TECHNIQUES, PromptCache, run_technique

LIBRARY = Path(__file__).resolve().parents[1] / "configs" / "prompts"


def main() -> None:
    ap = argparse.ArgumentParser(description="prompt techniques x tasks")
    ap.add_argument("--json", help="also write the figures here")
    ap.add_argument("--max-tokens", type=int, default=192)
    args = ap.parse_args()
    suites = [load_config(PromptSuite, p) for p in sorted(LIBRARY.glob("*.yaml"))]
    llm = load_backend("llamacpp")
    settings = GenerationSettings(temperature=0.0, max_tokens=args.max_tokens, seed=0)
    no_cache = PromptCache(enabled=False)
    result = run_bench(suites, list(TECHNIQUES), llm, settings, samples=5, cache=no_cache)
    names = [s.name for s in suites]
    print(f"SmolLM2-135M (llama.cpp), {sum(len(s.tasks) for s in suites)} tasks, no cache")
    print(f"{'technique':22}" + "".join(f"{n:>12}" for n in names) + f"{'mean':>8}{'seconds':>9}")
    for t, row in result["table"].items():
        mean = sum(row.values()) / len(row)
        print(f"{t:22}" + "".join(f"{row[n]:>12.2f}" for n in names) + f"{mean:>8.2f}{result['seconds'][t]:>9.1f}")

    sc = GenerationSettings(temperature=0.7, max_tokens=args.max_tokens, seed=0)
    arithmetic = next(s for s in suites if s.name == "arithmetic")
    ratios = []
    for item in arithmetic.tasks:
        task = arithmetic.task(item)
        start = time.perf_counter()
        run_technique(llm, task, "cot", sc, cache=no_cache)
        one = time.perf_counter() - start
        start = time.perf_counter()
        run_technique(llm, task, "self-consistency", sc, samples=5, cache=no_cache)
        ratios.append((time.perf_counter() - start) / one)
    ratio = statistics.median(ratios)
    print(f"self-consistency (N=5) / one sample, median over {len(ratios)} tasks: {ratio:.2f}x (goal <= 5.5x)")
    if args.json:
        Path(args.json).write_text(json.dumps({**result, "sc_cost_ratio": ratio, "ratios": ratios}, indent=2))


if __name__ == "__main__":
    main()
