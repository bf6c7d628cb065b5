"""Generators on digits within a fixed CPU budget: classifier-Fréchet distance vs. baselines; DDIM vs DDPM.

For each model (VAE, DCGAN, DDPM) one run of `budget` seconds of training on digits (16x16),
then the classifier-Fréchet distance (not Inception FID; see generative/metrics.py) of 360
samples next to a trivial baseline (independent per-pixel Gaussian samples with the training
set's per-pixel mean and std) and held-out real images. For DDPM: sampling at 1000 DDPM steps vs
50 DDIM steps, wall time and distance. Writes a grid per model to benchmarks/generative_<model>.png.

    .venv/bin/python benchmarks/generative.py [--budget 180]
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from generative.data import load_images  # noqa: E402
from generative.generate import load_generator  # noqa: E402
from generative.images import save_grid  # noqa: E402
from generative.metrics import Judge  # noqa: E402
from generative.train import GenConfig, train  # noqa: E402

HERE = Path(__file__).resolve().parent


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--budget", type=float, default=180, help="training seconds per model")
    ap.add_argument("--n", type=int, default=360)
    args = ap.parse_args()
    torch.set_num_threads(2)
    judge = Judge("digits", 16)
    held, _ = load_images("digits", 16, split="test")
    train_x, _ = load_images("digits", 16)
    mu, sd = train_x.mean(0), train_x.std(0)
    noise = (mu + sd * torch.randn(args.n, *mu.shape, generator=torch.Generator().manual_seed(0))).clamp(-1, 1)
    rows = [("held-out real images (what a perfect generator reaches)", "-", judge.score(held[: args.n])["fd"]),
            ("per-pixel Gaussian baseline", "-", judge.score(noise)["fd"])]
    ddpm_dir = None
    lrs = {"vae": 1e-3, "gan": 5e-4, "ddpm": 1e-3}
    with tempfile.TemporaryDirectory() as tmp:
        for model in ("vae", "gan", "ddpm"):
            cfg = GenConfig(model=model, steps=10**7, budget_seconds=args.budget, lr=lrs[model], batch_size=64,
                            width=32, z_dim=16 if model == "vae" else 32, sample_every=10**9,
                            checkpoint_every=10**9, metrics=False)
            run = Path(tmp) / model
            status = train(cfg, run)
            gen = load_generator(run)
            t0 = time.perf_counter()
            samples = gen.sample(args.n, seed=1, steps=50, sampler="ddim") if model == "ddpm" else gen.sample(
                args.n, seed=1)
            fd = judge.score(samples)["fd"]
            save_grid(samples[:64], HERE / f"generative_{model}.png", model, status["step"])
            rows.append((f"{model} ({status['step']} steps in {status['train_seconds']:.0f} s)"
                         + (" sampled by DDIM 50" if model == "ddpm" else ""), f"{time.perf_counter() - t0:.1f} s",
                         fd))
            print(f"{rows[-1][0]}: classifier-Fréchet {fd:.1f}", flush=True)
            if model == "ddpm":
                ddpm_dir = run
                t0 = time.perf_counter()
                full = gen.sample(args.n, seed=1, sampler="ddpm")
                t_full = time.perf_counter() - t0
                t0 = time.perf_counter()
                fast = gen.sample(args.n, seed=1, steps=50, sampler="ddim")
                t_fast = time.perf_counter() - t0
                fd_full, fd_fast = judge.score(full)["fd"], judge.score(fast)["fd"]
        print()
        print(f"{'samples':<60}{'sampling':>10}{'classifier-Fréchet':>20}")
        for name, secs, fd in rows:
            print(f"{name:<60}{secs:>10}{fd:>20.1f}")
        if ddpm_dir:
            print()
            print(f"DDPM 1000 steps: {t_full:.1f} s, distance {fd_full:.1f}; DDIM 50 steps: {t_fast:.1f} s, "
                  f"distance {fd_fast:.1f}")
            print(f"speedup {t_full / t_fast:.1f}x (goal >= 15x), distance ratio {fd_fast / fd_full:.3f} "
                  "(goal <= 1.10)")


if __name__ == "__main__":
    main()
