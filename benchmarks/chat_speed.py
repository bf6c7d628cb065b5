"""Chat speed: our llamacpp backend vs raw llama-cpp-python, same model/prompt/threads/seed.

Runs them alternating, raw llama-cpp-python in a child process of its own, and prints tokens/s, time to
first token and their ratio (goal: ours >= 0.95x raw). In one process the two would each call llama.cpp from
their own thread, and ggml's OpenMP gives each calling thread a team: two teams on two cores slowed both
sides to about a quarter of their speed (26 and 25 tokens/s in the 2026-11-29 run that still did so; see
studio.backends.batching._DecodingThread); then how fast `studio --help` answers (goal < 1 s) and the
resident memory of an idle `studio serve` with the bundled chat model loaded (goal < 1.5 GB).

    .venv/bin/python benchmarks/chat_speed.py [--rounds 5] [--max-tokens 200]
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

from studio.backends import GenerationSettings
from studio.backends.llamacpp import LlamaCppBackend, default_threads
from studio.registry import resolve_model

ROOT = Path(__file__).resolve().parents[1]
PROMPT = [{"role": "user", "content": "Write a story about a lighthouse keeper who finds a map."}]


def raw_run(llm, max_tokens: int, seed: int) -> tuple[int, float, float]:
    """(tokens, seconds, time to first token) for raw llama-cpp-python streaming."""
    llm.reset()  # no cached prompt: time to first token includes reading the prompt
    start = time.perf_counter()
    first = None
    tokens = 0
    for part in llm.create_chat_completion(messages=PROMPT, stream=True, temperature=0.0,
                                           max_tokens=max_tokens, seed=seed):
        if part["choices"][0]["delta"].get("content"):
            tokens += 1
            first = first or time.perf_counter() - start
    return tokens, time.perf_counter() - start, first or 0.0


_RAW = None  # the child process's Llama


def _raw_init(path: str, threads: int) -> None:
    global _RAW
    from llama_cpp import Llama

    _RAW = Llama(model_path=path, n_ctx=4096, n_threads=threads, n_threads_batch=threads, verbose=False)


def _raw_round(max_tokens: int, seed: int) -> tuple[int, float, float]:
    return raw_run(_RAW, max_tokens, seed)


def ours_run(backend: LlamaCppBackend, max_tokens: int, seed: int) -> tuple[int, float, float]:
    backend.llama.reset()
    stream = backend.stream(PROMPT, GenerationSettings(temperature=0.0, max_tokens=max_tokens, seed=seed))
    stream.consume()
    return stream.completion_tokens, stream.seconds, stream.first_token_seconds or 0.0


def help_seconds(repeats: int = 5) -> float:
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        subprocess.run([str(Path(sys.executable).parent / "studio"), "--help"], capture_output=True, check=True)
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def serve_idle_rss_mb(settle: float = 5.0) -> float:
    """Resident memory of `studio serve` (bundled model preloaded) once it is up and idle."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    with tempfile.TemporaryDirectory() as home:
        env = {**os.environ, "STUDIO_HOME": home}
        proc = subprocess.Popen([str(Path(sys.executable).parent / "studio"), "serve", "--port", str(port)],
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env)
        try:
            deadline = time.monotonic() + 120
            while time.monotonic() < deadline:
                try:
                    urllib.request.urlopen(f"http://127.0.0.1:{port}/", timeout=2)
                    break
                except OSError:
                    time.sleep(0.3)
            time.sleep(settle)
            status = Path(f"/proc/{proc.pid}/status").read_text()
            kb = int(next(line.split()[1] for line in status.splitlines() if line.startswith("VmRSS")))
            return kb / 1024
        finally:
            proc.terminate()
            proc.wait(timeout=20)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--max-tokens", type=int, default=200)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--json", help="also write the figures to this file")
    args = ap.parse_args()

    path = resolve_model("smollm2-135m-instruct").path
    threads = default_threads()
    ours = LlamaCppBackend("smollm2-135m-instruct", n_ctx=4096, n_threads=threads)
    results: dict[str, list[tuple[int, float, float]]] = {"raw": [], "ours": []}
    with multiprocessing.get_context("spawn").Pool(1, _raw_init, (str(path), threads)) as raw:
        raw.apply(_raw_round, (16, args.seed)), ours_run(ours, 16, args.seed)  # warm both up
        for _ in range(args.rounds):  # alternate so drift on the machine hits both alike
            results["raw"].append(raw.apply(_raw_round, (args.max_tokens, args.seed)))
            results["ours"].append(ours_run(ours, args.max_tokens, args.seed))

    def summary(runs):
        return {"tokens": runs[0][0],
                "tokens_per_s": statistics.median(t / s for t, s, _ in runs),
                "ttft_s": statistics.median(f for _, _, f in runs)}

    r, o = summary(results["raw"]), summary(results["ours"])
    figures = {
        "model": path.name, "threads": threads, "rounds": args.rounds, "raw": r, "ours": o,
        "ratio": o["tokens_per_s"] / r["tokens_per_s"],
        "help_s": help_seconds(),
        "serve_idle_rss_mb": serve_idle_rss_mb(),
    }
    print(f"model {path.name}, {threads} threads, greedy, {r['tokens']} tokens, median of {args.rounds}")
    print(f"{'':22}{'tokens/s':>10}{'first token':>14}")
    print(f"{'raw llama-cpp-python':22}{r['tokens_per_s']:>10.1f}{r['ttft_s'] * 1000:>11.0f} ms")
    print(f"{'studio llamacpp':22}{o['tokens_per_s']:>10.1f}{o['ttft_s'] * 1000:>11.0f} ms")
    print(f"ratio ours/raw: {figures['ratio']:.3f}x (goal >= 0.95x)")
    print(f"`studio --help`: {figures['help_s'] * 1000:.0f} ms (goal < 1000 ms)")
    print(f"`studio serve` idle, model loaded: {figures['serve_idle_rss_mb']:.0f} MB RSS (goal < 1536 MB)")
    if args.json:
        Path(args.json).write_text(json.dumps(figures, indent=2))


if __name__ == "__main__":
    main()
