"""The small public module the course notebooks (``notebooks/``) start from.

    from studio.notebook import set_seed, get_device, quick
    CONFIG = quick(CONFIG, steps=40)   # the fast setting under `make notebooks` / CI
    set_seed(CONFIG["seed"])
    device = get_device()              # get_device(prefer_cpu=True) for transformers models

Everything else a notebook uses comes from the studio's own packages (``generative``, ``finetune``,
``ingest``, ``eval``, ``studio``), so what a learner runs is what the tabs run.
"""

from __future__ import annotations

import os

FAST_ENV = "STUDIO_NOTEBOOK_FAST"  # set to 1 by `make notebooks` (and CI): a small CONFIG, minutes not hours


def set_seed(seed: int) -> int:
    """Seed Python's, NumPy's and torch's generators (Lightning's ``seed_everything``); returns the seed."""
    import lightning as L

    return L.seed_everything(int(seed), workers=True, verbose=False)


def get_device(prefer_cpu: bool = False) -> str:
    """"cuda" when a GPU is present, else "mps" on Apple silicon, else "cpu". ``prefer_cpu=True`` keeps
    small transformers models on the CPU, where they load in seconds and run fast enough."""
    import torch

    if prefer_cpu:
        return "cpu"
    if torch.cuda.is_available():
        return "cuda"
    if getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
        return "mps"
    return "cpu"


def is_fast() -> bool:
    """True under ``STUDIO_NOTEBOOK_FAST=1`` (``make notebooks``, CI)."""
    return os.environ.get(FAST_ENV, "").strip() not in ("", "0", "false", "no")


def quick(config: dict, **fast_values) -> dict:
    """``config`` with ``fast_values`` swapped in under the fast setting (unknown keys refused); otherwise
    ``config`` unchanged. A new dict: the full values stay readable in the cell above."""
    unknown = sorted(set(fast_values) - set(config))
    if unknown:
        raise KeyError(f"quick() got keys that are not in CONFIG: {', '.join(unknown)}")
    return {**config, **fast_values} if is_fast() else dict(config)
