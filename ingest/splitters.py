"""Splitters: documents -> chunks, each carrying where it came from.

Strategies (``SplitterConfig.splitter``):
- ``recursive`` (default): LangChain's RecursiveCharacterTextSplitter (paragraph, line, word).
- ``sentence``: whole sentences packed up to ``chunk_size`` characters; the overlap is made of
  whole trailing sentences.
- ``markdown``: split at ``#``/``##``/``###`` headings first (LangChain's
  MarkdownHeaderTextSplitter), then recursively; the heading path goes in ``headers``.
- ``token``: recursive, measured in tokens of the embedding model's own tokenizer, so no chunk
  is cut short by the model's 256-token limit.

HTML and Markdown files come from their loaders already cut at headings (:mod:`ingest.structure`):
each section is split on its own, so no chunk crosses a heading, and keeps its heading path.

Every chunk's metadata: ``source``, ``page`` (1-based, or None), ``chunk`` (index within the
file), ``headers`` ("A > B", or ""), ``anchor`` (the section's id, or ""), ``start`` (character
offset in its page or section), ``chunk_hash``.
"""

from __future__ import annotations

import hashlib
import re

from langchain_core.documents import Document
from langchain_text_splitters import MarkdownHeaderTextSplitter, RecursiveCharacterTextSplitter

from ingest.config import SplitterConfig

HEADINGS = [("#", "h1"), ("##", "h2"), ("###", "h3")]


def content_hash(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8", "surrogatepass")).hexdigest()[:16]


_SENTENCE_END = re.compile(r"(?<=[.!?])[\"')\]]*\s+|\n\s*\n")


def split_sentences(text: str) -> list[str]:
    """Sentences (and paragraphs) of ``text``, whitespace-trimmed, none empty."""
    return [s.strip() for s in _SENTENCE_END.split(text) if s and s.strip()]


class SentenceSplitter:
    """Packs whole sentences into chunks of at most ``size`` characters, overlapping by sentences."""

    def __init__(self, size: int, overlap: int):
        self.size, self.overlap = size, overlap
        self._long = RecursiveCharacterTextSplitter(chunk_size=size, chunk_overlap=overlap)

    def split_text(self, text: str) -> list[str]:
        chunks: list[str] = []
        current: list[str] = []
        for sentence in split_sentences(text):
            pieces = self._long.split_text(sentence) if len(sentence) > self.size else [sentence]
            for piece in pieces:
                if current and len(" ".join([*current, piece])) > self.size:
                    chunks.append(" ".join(current))
                    keep: list[str] = []
                    for prev in reversed(current):  # carry whole sentences up to the overlap
                        if len(" ".join([prev, *keep])) > self.overlap:
                            break
                        keep.insert(0, prev)
                    current = keep if len(" ".join([*keep, piece])) <= self.size else []
                current.append(piece)
        if current:
            chunks.append(" ".join(current))
        return chunks


_TOKENIZER = None


def _minilm_tokenizer():
    global _TOKENIZER
    if _TOKENIZER is None:
        from transformers import AutoTokenizer

        from studio.registry import resolve_model

        _TOKENIZER = AutoTokenizer.from_pretrained(resolve_model("minilm-l6-v2").path)
    return _TOKENIZER


def make_text_splitter(cfg: SplitterConfig):
    """The object whose ``split_text`` cuts one section of text."""
    size, overlap = cfg.resolved()
    if cfg.splitter == "sentence":
        return SentenceSplitter(size, overlap)
    if cfg.splitter == "token":
        return RecursiveCharacterTextSplitter.from_huggingface_tokenizer(
            _minilm_tokenizer(), chunk_size=size, chunk_overlap=overlap)
    return RecursiveCharacterTextSplitter(chunk_size=size, chunk_overlap=overlap)


def _sections(doc: Document, markdown: bool) -> list[tuple[str, str]]:
    """(heading path, text) sections of a document: the loader's section (HTML, Markdown files), or
    the ``#`` headings of its text with the ``markdown`` splitter, or one untitled section."""
    if doc.metadata.get("section") is not None:
        return [(doc.metadata["section"], doc.page_content)]
    if not markdown:
        return [("", doc.page_content)]
    parts = MarkdownHeaderTextSplitter(HEADINGS, strip_headers=False).split_text(doc.page_content)
    return [(" > ".join(p.metadata[k] for _, k in HEADINGS if k in p.metadata), p.page_content) for p in parts]


def split_documents(docs: list[Document], cfg: SplitterConfig | None = None) -> list[Document]:
    """Cut one file's documents (pages) into chunks numbered in reading order."""
    cfg = cfg or SplitterConfig()
    splitter = make_text_splitter(cfg)
    chunks: list[Document] = []
    for doc in docs:
        markdown = cfg.splitter == "markdown"
        cursor = 0
        for headers, section in _sections(doc, markdown):
            for text in splitter.split_text(section):
                text = text.strip()
                if not text:
                    continue
                found = doc.page_content.find(text[:80], cursor)
                start = found if found >= 0 else cursor
                cursor = max(cursor, start)
                meta = {**{k: v for k, v in doc.metadata.items() if k != "section"}, "chunk": len(chunks),
                        "headers": headers, "anchor": doc.metadata.get("anchor", ""), "start": start,
                        "chunk_hash": content_hash(text)}
                chunks.append(Document(page_content=text, metadata=meta))
    return chunks
