"""Loaders: one file -> LangChain ``Document``s with ``source`` and ``page`` metadata.

The type is decided by content first (``%PDF-``, zip members, HTML tags) and by extension
second, so a PDF named ``.txt`` still loads as a PDF. PDFs give one document per page with its
1-based ``page``; other formats give one document with ``page=None`` (CSV: one per row block).
Text is decoded as UTF-8, then by detection (charset-normalizer), never crashing on bad bytes.
Every failure is a :class:`LoadError` whose message says what is wrong and what to do.
"""

from __future__ import annotations

import csv
import io
import json
import re
import zipfile
from dataclasses import dataclass
from html.parser import HTMLParser
from pathlib import Path
from xml.etree import ElementTree

from langchain_core.documents import Document

from studio.limits import current as current_limits


class LoadError(Exception):
    """A file that cannot be ingested, with the reason a user can act on."""


@dataclass
class Limits:
    """What a single file may weigh. Bigger files fail alone with a clear reason."""

    max_file_mb: float = 100.0
    max_pages: int = 3000


ARCHIVE_MAGIC = {b"\x1f\x8b": "gzip", b"BZh": "bzip2", b"\xfd7zXZ": "xz", b"7z\xbc\xaf": "7z",
                 b"Rar!": "rar"}
TEXT_EXT = {".txt", ".text", ".log", ".rst", ".py", ".tex"}
MD_EXT = {".md", ".markdown", ".mdown"}
HTML_EXT = {".html", ".htm", ".xhtml"}
ARCHIVE_EXT = {".zip", ".tar", ".gz", ".tgz", ".bz2", ".xz", ".7z", ".rar"}
SUPPORTED = sorted({".pdf", ".docx", ".csv", ".json", ".jsonl"} | TEXT_EXT | MD_EXT | HTML_EXT)


def sniff(path: Path, head: bytes) -> str:
    """The file's kind: pdf, docx, html, markdown, csv, json, text, or archive/binary."""
    ext = path.suffix.lower()
    if head.startswith(b"%PDF-"):
        return "pdf"
    if head.startswith(b"PK\x03\x04"):
        try:
            with zipfile.ZipFile(path) as zf:
                if "word/document.xml" in zf.namelist():
                    return "docx"
        except zipfile.BadZipFile:
            pass
        return "archive"
    if any(head.startswith(m) for m in ARCHIVE_MAGIC) or ext in ARCHIVE_EXT:
        return "archive"
    if b"\x00" in head[:4096] and not head.startswith((b"\xff\xfe", b"\xfe\xff")):
        return "binary"
    lowered = head[:2048].lower().lstrip()
    if ext in HTML_EXT or lowered.startswith((b"<!doctype html", b"<html")) or b"<html" in lowered[:512]:
        return "html"
    if ext in MD_EXT:
        return "markdown"
    if ext == ".csv":
        return "csv"
    if ext in (".json", ".jsonl"):
        return "json"
    return "text"


def decode(data: bytes) -> str:
    """Bytes -> text: UTF-8 (BOM or not), UTF-16 by BOM, else the detected legacy encoding."""
    if data.startswith(b"\xef\xbb\xbf"):
        return data[3:].decode("utf-8", errors="replace")
    if data.startswith((b"\xff\xfe", b"\xfe\xff")):
        return data.decode("utf-16", errors="replace")
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        pass
    from charset_normalizer import from_bytes

    best = from_bytes(data[:200_000]).best()
    if best is None or best.coherence == 0:
        # no language evidence (short or plain Latin text): the commonest legacy encoding wins
        try:
            return data.decode("cp1252")
        except UnicodeDecodeError:
            pass
    return data.decode(best.encoding if best else "cp1252", errors="replace")


def load_file(path: str | Path, source: str | None = None, limits: Limits | None = None) -> list[Document]:
    """Load one file into documents; raises :class:`LoadError` with the reason."""
    path = Path(path)
    limits = limits or Limits()
    source = source or path.name
    if not path.is_file():
        raise LoadError(f"{source}: not a file")
    size_mb = path.stat().st_size / 1e6
    if size_mb > limits.max_file_mb:
        raise LoadError(f"{source}: {size_mb:.0f} MB is over the {limits.max_file_mb:g} MB limit "
                        "(raise ingest.max_file_mb to allow it)")
    with open(path, "rb") as fh:
        head = fh.read(8192)
    kind = sniff(path, head)
    if kind == "archive":
        raise LoadError(f"{source}: archives are not ingested; unpack it and ingest the folder")
    if kind == "binary":
        raise LoadError(f"{source}: binary file, not a document (supported: {', '.join(SUPPORTED)})")
    loader = LOADERS[kind]
    try:
        docs = loader(path, limits) if kind == "pdf" else loader(path.read_bytes())
    except LoadError as exc:
        raise LoadError(f"{source}: {exc}") from None
    docs = [d for d in docs if d.page_content.strip()]
    if not docs:
        hint = " (a scanned PDF needs OCR first)" if kind == "pdf" else ""
        raise LoadError(f"{source}: no text to ingest{hint}")
    for d in docs:
        d.metadata.setdefault("page", None)
        d.metadata.update(source=source, kind=kind)
    return docs


def load_pdf(path: Path, limits: Limits) -> list[Document]:
    from pypdf import PdfReader
    from pypdf.errors import PdfReadError

    try:
        reader = PdfReader(path)
        if reader.is_encrypted and not reader.decrypt(""):
            raise LoadError("encrypted PDF; remove the password and ingest it again")
        n = len(reader.pages)
    except LoadError:
        raise
    except (PdfReadError, ValueError, KeyError, TypeError, OSError) as exc:
        raise LoadError(f"corrupt or unreadable PDF ({exc})") from None
    if n > limits.max_pages:
        raise LoadError(f"{n} pages is over the {limits.max_pages} page limit "
                        "(raise ingest.max_pages to allow it)")
    docs = []
    for i, page in enumerate(reader.pages, start=1):
        try:
            text = page.extract_text() or ""
        except Exception as exc:  # pypdf raises many types on damaged page streams
            raise LoadError(f"page {i} cannot be read ({exc})") from None
        docs.append(Document(page_content=text, metadata={"page": i}))
    return docs


def load_text(data: bytes) -> list[Document]:
    return [Document(page_content=decode(data))]


class _VisibleText(HTMLParser):
    """Collects the text a reader sees: no scripts, styles or templates; blocks on new lines."""

    HIDDEN = {"script", "style", "noscript", "template", "head", "svg"}
    BLOCK = {"p", "div", "br", "li", "tr", "h1", "h2", "h3", "h4", "h5", "h6", "section", "article",
             "header", "footer", "pre", "blockquote", "table", "ul", "ol", "dd", "dt", "hr", "title"}

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.parts: list[str] = []
        self.hidden = 0
        self.title = ""
        self._in_title = False

    def handle_starttag(self, tag, attrs):
        if tag in self.HIDDEN:
            self.hidden += 1
        if tag == "title":
            self._in_title = True
        if tag in self.BLOCK:
            self.parts.append("\n")

    def handle_endtag(self, tag):
        if tag in self.HIDDEN and self.hidden:
            self.hidden -= 1
        if tag == "title":
            self._in_title = False
        if tag in self.BLOCK:
            self.parts.append("\n")

    def handle_data(self, data):
        if self._in_title:
            self.title += data
        elif not self.hidden:
            self.parts.append(data)


def load_html(data: bytes) -> list[Document]:
    parser = _VisibleText()
    parser.feed(decode(data))
    parser.close()
    text = re.sub(r"[ \t\r\f\v]+", " ", "".join(parser.parts))
    text = re.sub(r"\s*\n\s*", "\n", text).strip()
    meta = {"title": parser.title.strip()} if parser.title.strip() else {}
    return [Document(page_content=text, metadata=meta)]


W = "{http://schemas.openxmlformats.org/wordprocessingml/2006/main}"


def check_zip(zf: zipfile.ZipFile) -> None:
    """Refuse a zip (a .docx is one) whose members would inflate past ``limits.unzipped_mb`` in all, or
    past ``limits.zip_ratio`` times their stored size, before anything is inflated.

    The sizes come from the zip's directory; :mod:`zipfile` never inflates a member past its declared
    size, so a member that lies about its size fails its CRC check instead of filling memory.
    """
    lim = current_limits()
    total = 0
    for info in zf.infolist():
        total += info.file_size
        if info.file_size > 1_000_000 and info.file_size > lim.zip_ratio * max(info.compress_size, 1):
            ratio = info.file_size / max(info.compress_size, 1)
            raise LoadError(f"refused: {info.filename} would inflate {ratio:,.0f} times (limits.zip_ratio is "
                            f"{lim.zip_ratio:g}); this looks like a zip bomb")
    if total > lim.unzipped_mb * 1e6:
        raise LoadError(f"refused: it would inflate to {total / 1e6:,.0f} MB (limits.unzipped_mb is "
                        f"{lim.unzipped_mb:g} MB)")


def load_docx(data: bytes) -> list[Document]:
    """Paragraph text of a .docx (tables included), headings kept as their own lines."""
    try:
        with zipfile.ZipFile(io.BytesIO(data)) as zf:
            check_zip(zf)
            root = ElementTree.fromstring(zf.read("word/document.xml"))
    except (zipfile.BadZipFile, KeyError, ElementTree.ParseError, RuntimeError, EOFError) as exc:
        raise LoadError(f"corrupt .docx ({exc})") from None
    paragraphs = []
    for p in root.iter(f"{W}p"):
        text = "".join(t.text or "" for t in p.iter(f"{W}t"))
        if text.strip():
            paragraphs.append(text)
    return [Document(page_content="\n".join(paragraphs))]


def load_csv(data: bytes, rows_per_doc: int = 50) -> list[Document]:
    """Rows as ``column: value`` lines, in blocks of ``rows_per_doc`` rows (``rows`` metadata)."""
    text = decode(data)
    try:
        dialect = csv.Sniffer().sniff(text[:4096])
    except csv.Error:
        dialect = csv.excel
    rows = list(csv.DictReader(io.StringIO(text), dialect=dialect))
    docs = []
    for start in range(0, len(rows), rows_per_doc):
        block = rows[start:start + rows_per_doc]
        lines = ["; ".join(f"{k}: {v}" for k, v in row.items() if k and v) for row in block]
        docs.append(Document(page_content="\n".join(lines),
                             metadata={"rows": f"{start + 1}-{start + len(block)}"}))
    return docs


def _flatten(value, prefix: str = "") -> list[str]:
    if isinstance(value, dict):
        return [line for k, v in value.items() for line in _flatten(v, f"{prefix}{k}.")]
    if isinstance(value, list):
        return [line for i, v in enumerate(value) for line in _flatten(v, f"{prefix}{i}.")]
    return [f"{prefix.rstrip('.')}: {value}"] if prefix else [str(value)]


def load_json(data: bytes) -> list[Document]:
    """JSON (or JSON Lines) flattened to ``path.to.key: value`` lines."""
    text = decode(data)
    try:
        value = json.loads(text)
    except json.JSONDecodeError:
        try:
            value = [json.loads(line) for line in text.splitlines() if line.strip()]
        except json.JSONDecodeError as exc:
            raise LoadError(f"invalid JSON at line {exc.lineno}: {exc.msg}") from None
    return [Document(page_content="\n".join(_flatten(value)))]


LOADERS = {"pdf": load_pdf, "text": load_text, "markdown": load_text, "html": load_html,
           "docx": load_docx, "csv": load_csv, "json": load_json}
