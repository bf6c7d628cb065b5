"""Where the studio keeps its state, and the offline defaults applied before heavy imports.

All state (Chroma data, chat sessions, jobs, runs, caches) lives under ``STUDIO_HOME``
(default ``~/.genai-studio``).
"""

from __future__ import annotations

import os
from pathlib import Path

# Nothing phones home: no hub downloads, no analytics, no telemetry. These are defaults, so a
# user who really wants the hub can still export HF_HUB_OFFLINE=0 before starting the studio.
OFFLINE_DEFAULTS = {
    "HF_HUB_OFFLINE": "1",
    "TRANSFORMERS_OFFLINE": "1",
    "HF_DATASETS_OFFLINE": "1",
    "HF_HUB_DISABLE_TELEMETRY": "1",
    "GRADIO_ANALYTICS_ENABLED": "False",
    "ANONYMIZED_TELEMETRY": "False",  # Chroma
    "DO_NOT_TRACK": "1",
    "TOKENIZERS_PARALLELISM": "false",
}


def apply_offline_defaults() -> None:
    """Set the offline environment variables unless the user already set them."""
    for key, value in OFFLINE_DEFAULTS.items():
        os.environ.setdefault(key, value)


def studio_home() -> Path:
    """The studio's state folder (``$STUDIO_HOME`` or ``~/.genai-studio``), created on demand."""
    home = Path(os.environ.get("STUDIO_HOME") or Path.home() / ".genai-studio").expanduser()
    home.mkdir(parents=True, exist_ok=True)
    return home


def home_dir(*parts: str) -> Path:
    """A sub-folder of the studio home, created on demand, e.g. ``home_dir("cache", "hf")``."""
    path = studio_home().joinpath(*parts)
    path.mkdir(parents=True, exist_ok=True)
    return path


def unique_run_dir(*parts: str, name: str) -> Path:
    """A run folder path under the studio home that does not exist yet: NAME-YYYYmmdd-HHMMSS[-n]."""
    import time

    base = home_dir(*parts) / f"{name}-{time.strftime('%Y%m%d-%H%M%S')}"
    out, n = base, 1
    while out.exists():
        n += 1
        out = base.with_name(f"{base.name}-{n}")
    return out
