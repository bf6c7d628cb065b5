"""Server-side maximums for every size and count a user can ask for, declared once.

The ``limits:`` section of ``configs/studio.yaml`` maps onto :class:`Limits`. The core checks
its inputs against :func:`current` (sample sizes in the sampling lab, training steps, widths and
batch sizes of the generators and of fine-tuning, sample grids, generated tokens, retrieved
chunks, JSON-schema sizes, text lengths), so a request to the web UI's HTTP API that skips the
widgets meets the same bounds as the widgets, and so does the CLI. An operator who needs more
raises a limit in the config (``studio --set limits.sample_n=100000000 ...``).

>>> check_int("n", 10**12, 2, current().sample_n, "sample_n")
Traceback (most recent call last):
studio.errors.StudioError: n must be between 2 and 10,000,000 (limits.sample_n), got 1,000,000,000,000

The CLI and the server call :func:`configure` with the loaded config; background jobs inherit the
same values through the ``STUDIO_LIMITS`` environment variable.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
from dataclasses import dataclass, field

from studio.errors import StudioError
from studio.schema import config_class

ENV = "STUDIO_LIMITS"


@config_class
@dataclass
class Limits:
    """Maximums enforced in the core (``limits`` in configs/studio.yaml)."""

    # text a user sends
    message_chars: int = field(default=16_000, metadata={"help": "one chat message, question or task"})
    system_prompt_chars: int = field(default=8_000, metadata={"help": "a system prompt"})
    prompt_chars: int = field(default=200_000, metadata={"help": "everything one model call reads"})
    json_schema_chars: int = field(default=20_000, metadata={"help": "a JSON schema, as JSON text"})
    json_schema_depth: int = field(default=12, metadata={"help": "nesting of a JSON schema"})
    stop_strings: int = field(default=16, metadata={"help": "stop strings of one request"})
    # generation
    max_new_tokens: int = field(default=4096, metadata={"help": "tokens one reply may generate"})
    top_k: int = field(default=1000, metadata={"help": "top-k sampling"})
    self_consistency_samples: int = field(default=25, metadata={"help": "samples one self-consistency run draws"})
    loaded_models: int = field(default=2, metadata={"help": "chat models kept loaded at once (least recent goes)"})
    # retrieval and ingestion
    retrieval_k: int = field(default=50, metadata={"help": "chunks one question retrieves"})
    fetch_k: int = field(default=500, metadata={"help": "candidates per ranking before fusion"})
    chunk_chars: int = field(default=20_000, metadata={"help": "chunk size and overlap, characters"})
    ingest_files: int = field(default=20_000, metadata={"help": "files one ingestion takes"})
    unzipped_mb: float = field(default=200.0, metadata={"help": "a .docx (zip) once inflated"})
    zip_ratio: float = field(default=200.0, metadata={"help": "inflated size / stored size of one zip member"})
    ocr_pages: int = field(default=300, metadata={"help": "pages without a text layer OCRed in one PDF"})
    # sampling lab
    sample_n: int = field(default=10_000_000, metadata={"help": "draws of draw / mc / is"})
    mcmc_draws: int = field(default=2_000_000, metadata={"help": "MH draws in all: chains x (n + burn-in)"})
    mcmc_chains: int = field(default=16, metadata={"help": "MH chains"})
    # generators
    train_steps: int = field(default=1_000_000, metadata={"help": "training steps (generators and fine-tuning)"})
    batch_size: int = field(default=1024, metadata={"help": "batch size (generators and fine-tuning)"})
    width: int = field(default=512, metadata={"help": "generator width (channels / hidden units)"})
    image_size: int = field(default=64, metadata={"help": "generator image side, pixels"})
    timesteps: int = field(default=4000, metadata={"help": "DDPM diffusion steps T"})
    sample_images: int = field(default=1024, metadata={
        "help": "images one sampling call draws (2-D toys: 16x as many points)"})
    folder_images: int = field(default=200_000, metadata={"help": "images read from a folder dataset"})
    # fine-tuning
    epochs: float = field(default=1000.0, metadata={"help": "fine-tuning epochs"})
    max_length: int = field(default=8192, metadata={"help": "fine-tuning tokens per example"})
    lora_rank: int = field(default=512, metadata={"help": "LoRA rank r"})
    eval_examples: int = field(default=1000, metadata={"help": "before/after examples of a fine-tune"})
    data_mb: float = field(default=500.0, metadata={"help": "a fine-tuning data file"})
    # models
    model_download_gb: float = field(default=40.0, metadata={"help": "files one `models pull` downloads, in GB"})
    # eval
    eval_cases: int = field(default=5000, metadata={"help": "cases of one eval suite"})
    # fair use of a shared studio, per account
    generations_per_user: int = field(default=1, metadata={
        "help": "chat replies and Prompt Lab runs one account has in progress; more wait their turn"})
    jobs_per_user: int = field(default=2, metadata={"help": "background jobs one account has queued or running"})
    ingest_mb_per_day: float = field(default=2000.0, metadata={
        "help": "new or changed document bytes one account ingests per day (UTC)"})
    collection_chunks: int = field(default=500_000, metadata={"help": "chunks one collection holds"})


_active: Limits | None = None


def configure(limits: Limits) -> Limits:
    """Make ``limits`` the ones the core enforces here and in the jobs this process starts."""
    global _active
    _active = limits
    os.environ[ENV] = json.dumps(dataclasses.asdict(limits))
    return limits


def current() -> Limits:
    """The limits in force: configured here, inherited from the parent process, or the defaults."""
    global _active
    if _active is None:
        raw = os.environ.get(ENV)
        known = {f.name for f in dataclasses.fields(Limits)}
        try:
            values = {k: v for k, v in json.loads(raw).items() if k in known} if raw else {}
            _active = Limits(**values)
        except (ValueError, TypeError, AttributeError):
            _active = Limits()
    return _active


def _fmt(value: float) -> str:
    if isinstance(value, float) and not value.is_integer():
        return f"{value:g}"
    try:
        return f"{int(value):,}"
    except (OverflowError, ValueError):
        return str(value)


def check_int(name: str, value, lo: int, hi: int, limit: str | None = None) -> int:
    """``value`` as an int in ``[lo, hi]``, or a StudioError naming the bounds (and the limit's key)."""
    if isinstance(value, bool) or not isinstance(value, (int, float)) or (isinstance(value, float)
                                                                          and not value.is_integer()):
        raise StudioError(f"{name} must be a whole number, got {value!r}")
    if not lo <= value <= hi:
        where = f" (limits.{limit})" if limit else ""
        raise StudioError(f"{name} must be between {_fmt(lo)} and {_fmt(hi)}{where}, got {_fmt(value)}")
    return int(value)


def check_float(name: str, value, lo: float, hi: float, limit: str | None = None) -> float:
    """``value`` as a finite float in ``[lo, hi]``, or a StudioError naming the bounds."""
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise StudioError(f"{name} must be a finite number, got {value!r}")
    if not lo <= value <= hi:
        where = f" (limits.{limit})" if limit else ""
        raise StudioError(f"{name} must be between {_fmt(lo)} and {_fmt(hi)}{where}, got {_fmt(value)}")
    return float(value)


def check_text(name: str, text, limit: str) -> str:
    """``text`` if it is a string no longer than ``limits.<limit>`` characters."""
    if not isinstance(text, str):
        raise StudioError(f"{name} must be text, got {type(text).__name__}")
    hi = getattr(current(), limit)
    if len(text) > hi:
        raise StudioError(f"{name} is {len(text):,} characters long; the limit is {hi:,} (limits.{limit})")
    return text


def check_json_schema(schema) -> dict:
    """A JSON schema small enough to turn into a grammar: a mapping, bounded in size and depth."""
    if not isinstance(schema, dict):
        raise StudioError("a JSON schema must be a JSON object, e.g. {\"type\": \"object\", ...}")
    lim = current()
    depth, stack = 0, [(schema, 1)]
    while stack:  # iterative: a schema nested thousands deep must not exhaust the recursion limit
        node, d = stack.pop()
        depth = max(depth, d)
        if depth > lim.json_schema_depth:
            raise StudioError(f"the JSON schema nests deeper than {lim.json_schema_depth} levels "
                              "(limits.json_schema_depth)")
        children = node.values() if isinstance(node, dict) else node if isinstance(node, list) else ()
        stack.extend((c, d + 1) for c in children if isinstance(c, (dict, list)))
    try:
        text = json.dumps(schema)
    except (TypeError, ValueError) as exc:
        raise StudioError(f"the JSON schema cannot be written as JSON ({exc})") from None
    if len(text) > lim.json_schema_chars:
        raise StudioError(f"the JSON schema is {len(text):,} characters; the limit is {lim.json_schema_chars:,} "
                          "(limits.json_schema_chars)")
    return schema
