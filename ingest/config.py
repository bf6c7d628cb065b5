"""Ingestion settings (light: importing this loads no model, parser or database)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

from studio.errors import StudioError
from studio.limits import current as current_limits
from studio.schema import config_class

SPLITTERS = ("recursive", "sentence", "markdown", "token")
DEFAULT_SIZES = {"token": (200, 40)}  # others: (1000, 200) characters


@config_class
@dataclass
class SplitterConfig:
    """How to cut documents. Sizes are characters (tokens for ``token``); 0 = the default."""

    splitter: Literal["recursive", "sentence", "markdown", "token"] = "recursive"
    chunk_size: int = 0
    chunk_overlap: int = -1

    def resolved(self) -> tuple[int, int]:
        """(size, overlap) with defaults filled in, checked."""
        if self.splitter not in SPLITTERS:
            raise StudioError(f"unknown splitter {self.splitter!r}; choose one of: {', '.join(SPLITTERS)}")
        size_d, overlap_d = DEFAULT_SIZES.get(self.splitter, (1000, 200))
        size = self.chunk_size or size_d
        overlap = overlap_d if self.chunk_overlap < 0 else self.chunk_overlap
        most = current_limits().chunk_chars
        if size < 20:
            raise StudioError(f"chunk size {size} is too small; use at least 20")
        if size > most or overlap > most:
            raise StudioError(f"chunk size and overlap must be at most {most:,} (limits.chunk_chars)")
        if overlap < 0:
            raise StudioError(f"chunk overlap must be 0 or more (-1 = the default), got {self.chunk_overlap}")
        if overlap >= size:
            raise StudioError(f"chunk overlap ({overlap}) must be smaller than chunk size ({size})")
        if self.splitter == "token" and size > 256:
            raise StudioError("all-MiniLM-L6-v2 reads at most 256 tokens: use --chunk-size 256 or less")
        return size, overlap


@config_class
@dataclass
class IngestConfig:
    """Everything an ingestion run needs (``configs/ingest.yaml``)."""

    splitter: SplitterConfig = field(default_factory=SplitterConfig)
    max_file_mb: float = field(default=100.0, metadata={"help": "larger files fail alone"})
    max_pages: int = 3000
    chroma_url: str | None = field(default=None, metadata={"help": "a Chroma server; None = embedded"})
    embed_model: str = field(default="minilm-l6-v2", metadata={"help": "a sentence-transformers folder"})
    embed_engine: Literal["auto", "onnx", "torch"] = field(default="auto", metadata={"help": "auto | onnx | torch"})
    prefetch: int = field(default=2, metadata={"help": "files parsed ahead of the embedder"})
