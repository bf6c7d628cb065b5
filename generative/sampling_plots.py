"""Plots for the sampling lab (matplotlib, Agg backend): what a learner would rather look at."""

from __future__ import annotations

from pathlib import Path

import numpy as np


def _subplots(*grid, figsize=None):
    """A figure and its axes without pyplot: no global backend is switched, so a notebook that calls
    these functions keeps its inline figures (and a server needs no display)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=figsize)
    FigureCanvasAgg(fig)  # this figure's own canvas (pixels for the GIF frames)
    return fig, fig.subplots(*grid)


def _density_line(ax, target, x):
    """The target's density over the draws' range and the target's own bulk (an importance-sampling
    proposal can sit far from the target: the curve must not stop where the draws begin)."""
    lo, hi = np.quantile(x, [0.001, 0.999])
    own = target.sample(20_000, np.random.default_rng(0))
    if own.ndim == 1:
        lo, hi = min(lo, np.quantile(own, 0.001)), max(hi, np.quantile(own, 0.999))
    grid = np.linspace(lo, hi, 400)
    ax.plot(grid, target.pdf(grid), color="black", lw=1.5, label="true density")


def plot_run(kind: str, target, result: dict, arrays: dict, path: Path) -> Path:
    """One figure per run kind, saved as PNG."""
    if kind == "mcmc":
        fig, axes = _subplots(1, 3, figsize=(13, 3.6))
        chains, burn = arrays["chains"], arrays["burn_in"]
        for c in chains[:, :, 0]:
            axes[0].plot(c, lw=0.5)
        axes[0].axvspan(0, burn, color="grey", alpha=0.2, label="burn-in")
        axes[0].set_title(f"traces · acceptance {np.mean(result['acceptance']):.2f}")
        axes[0].legend(loc="upper right")
        from generative.sampling import autocorrelation

        axes[1].plot(autocorrelation(arrays["fx"][0], 100))
        axes[1].axhline(0, color="grey", lw=0.5)
        axes[1].set_title(f"autocorrelation · ESS {result['ess']:.0f} (bulk {result['ess_bulk']:.0f})"
                          f" · R-hat {result['rhat']:.3f}")
        kept = chains[:, burn:, 0].ravel()
        axes[2].hist(kept, bins=80, density=True, alpha=0.6, label="MCMC")
        if target.dim == 1:
            _density_line(axes[2], target, kept)
        axes[2].set_title("posterior / target")
        axes[2].legend()
    elif kind == "is":
        fig, axes = _subplots(1, 2, figsize=(11, 3.6))
        w = arrays["weights"]
        axes[0].hist(np.log10(w[w > 0]), bins=80)
        axes[0].set_title(f"log10 importance weights · ESS {result['ess']:.0f} of {result['n']}")
        x = arrays["samples"] if arrays["samples"].ndim == 1 else arrays["samples"][:, 0]
        axes[1].hist(x, bins=80, density=True, alpha=0.6, label="proposal draws")
        _density_line(axes[1], target, x)
        axes[1].set_title(f"estimate {result['estimate']:.4g} ± {result['stderr']:.2g}")
        axes[1].legend()
    else:
        fig, axes = _subplots(1, 2, figsize=(11, 3.6))
        x = arrays["samples"]
        if x.ndim == 2:
            axes[0].scatter(x[:5000, 0], x[:5000, 1], s=2, alpha=0.4)
            axes[0].set_title(f"{target.name}: 2-D samples")
        else:
            axes[0].hist(x, bins=100, density=True, alpha=0.6, label="samples")
            _density_line(axes[0], target, x)
            axes[0].legend()
            axes[0].set_title(f"{target.name} · n = {len(x)}")
        n = np.arange(1, len(arrays["running"]) + 1)
        axes[1].plot(n, arrays["running"], lw=1, label="running estimate")
        axes[1].fill_between(n, arrays["running"] - arrays["band"], arrays["running"] + arrays["band"], alpha=0.3,
                             label="95% band")
        axes[1].set_xscale("log")
        axes[1].set_title(f"estimate {result['estimate']:.4g} ± {result['stderr']:.2g}")
        axes[1].legend()
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    return path


def histogram_gif(samples: np.ndarray, target, path: Path, frames: int = 16) -> Path:
    """An animated GIF of the histogram filling in as the sample grows (log-spaced sizes)."""
    from PIL import Image

    x = samples if samples.ndim == 1 else samples[:, 0]
    sizes = np.unique(np.geomspace(10, len(x), frames).astype(int))
    lo, hi = np.quantile(x, [0.001, 0.999])
    images = []
    for size in sizes:
        fig, ax = _subplots(figsize=(5, 3.2))
        ax.hist(x[:size], bins=60, range=(lo, hi), density=True, alpha=0.6)
        grid = np.linspace(lo, hi, 300)
        ax.plot(grid, target.pdf(grid), color="black", lw=1.2)
        ax.set_title(f"n = {size}")
        fig.tight_layout()
        fig.canvas.draw()
        images.append(Image.fromarray(np.asarray(fig.canvas.buffer_rgba())).convert("P"))
    images[0].save(path, save_all=True, append_images=images[1:], duration=350, loop=0)
    return path
