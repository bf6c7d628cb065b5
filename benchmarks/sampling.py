"""Sampling speed at 10 million draws, and the variance reduction of importance sampling.

For each distribution: draws per second at n = 10^7 (goal: plain sampling and importance weighting
of 10^7 in under a second). Then P(X > 4) for X ~ N(0, 1) at equal sample counts: plain Monte
Carlo's variance p(1-p)/n against importance sampling with the proposal N(4, 1) (goal >= 100x),
over several n. Also writes benchmarks/sampling_variance.png (estimates with error bars).

    .venv/bin/python benchmarks/sampling.py [--n 10000000]
"""

from __future__ import annotations

import argparse
import math
import sys
import time
from pathlib import Path

import numpy as np

# the repository first: run as a script, this folder's generative.py would shadow the package
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from generative import sampling as S  # noqa: E402

CASES = [("uniform", {}), ("normal", {}), ("exponential", {}), ("beta", {"a": 2, "b": 5}), ("gamma", {"shape": 2}),
         ("student_t", {"df": 3}), ("mixture", {}), ("banana", {}), ("formula", {"expr": "exp(-x**2/2)"})]
P_TAIL = 0.5 * math.erfc(4 / math.sqrt(2))


def best_of(fn, repeats: int = 3) -> float:
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return min(times)


def main() -> None:
    ap = argparse.ArgumentParser(description="sampling lab speed and variance reduction")
    ap.add_argument("--n", type=int, default=10_000_000)
    args = ap.parse_args()
    n = args.n
    rng = np.random.default_rng(0)
    print(f"n = {n:,} draws, best of 3")
    print(f"{'distribution':14}{'seconds':>9}{'draws/s':>14}")
    for name, params in CASES:
        d = S.make_distribution(name, **params)
        t = best_of(lambda d=d: d.sample(n, rng))
        print(f"{name:14}{t:>9.3f}{n / t:>14,.0f}")
    target, proposal = S.make_distribution("normal"), S.make_distribution("normal", mean=4)
    x = proposal.sample(n, rng)
    t_w = best_of(lambda: S.importance_weights(target.logpdf(x), proposal.logpdf(x)))
    t_is = best_of(lambda: S.importance_sampling(lambda v: v > 4, target, proposal, n, rng))
    print(f"importance weights of {n:,} draws: {t_w:.3f} s; whole IS estimate (draw + weight + average): {t_is:.3f} s")
    print("(goal: plain sampling and importance weighting of 10^7 in under a second)")

    print(f"\nP(X > 4), X ~ N(0,1), true value {P_TAIL:.4e}; variance at equal n")
    print(f"{'n':>10}{'plain MC var':>15}{'IS var':>13}{'reduction':>11}{'IS estimate':>14}")
    rows = []
    for size in (10_000, 100_000, 1_000_000):
        res = S.importance_sampling(lambda v: v > 4, target, proposal, size, np.random.default_rng(size))
        plain_var = P_TAIL * (1 - P_TAIL) / size  # exact variance of the plain estimator
        rows.append((size, res["estimate"], res["stderr"], plain_var))
        print(f"{size:>10,}{plain_var:>15.3e}{res['stderr'] ** 2:>13.3e}{plain_var / res['stderr'] ** 2:>10,.0f}x"
              f"{res['estimate']:>14.4e}")
    print("(goal: >= 100x)")
    _plot(rows, Path(__file__).with_name("sampling_variance.png"))


def _plot(rows, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 3.4))
    sizes = np.array([r[0] for r in rows])
    ax.errorbar(sizes, [r[1] for r in rows], yerr=[1.96 * r[2] for r in rows], fmt="o", label="importance sampling")
    ax.errorbar(sizes * 1.1, [P_TAIL] * len(rows), yerr=[1.96 * math.sqrt(r[3]) for r in rows], fmt="s",
                label="plain MC (expected 95% interval)")
    ax.axhline(P_TAIL, color="black", lw=0.8, label="true P(X > 4)")
    ax.set_xscale("log")
    ax.set_ylim(-2e-5, 9e-5)
    ax.set_xlabel("n")
    ax.legend(fontsize=8)
    ax.set_title("P(X > 4): importance sampling vs plain Monte Carlo")
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    print(f"plot: {path}")


if __name__ == "__main__":
    main()
