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
import zipfile
from dataclasses import dataclass
from pathlib import Path

from langchain_core.documents import Document

from ingest.ocr import OcrError, needs_ocr, ocr_available, ocr_pages
from ingest.structure import html_sections, markdown_sections
from studio.limits import current as current_limits


class LoadError(Exception):
    """A file that cannot be ingested, with the reason a user can act on."""


@dataclass
class Limits:
    """What a single file may weigh. Bigger files fail alone with a clear reason."""

    max_file_mb: float = 100.0
    max_pages: int = 3000
    ocr: bool = True  # read pages without a text layer with Tesseract


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
    unread = [d.metadata["page"] for d in docs if d.metadata.get("unread")]
    tried = [d.metadata["page"] for d in docs if d.metadata.get("ocr_empty")]
    docs = [d for d in docs if d.page_content.strip()]
    if not docs:
        hint = (f" (a scanned PDF needs OCR first: {ocr_available()})" if unread and ocr_available()
                else " (no text layer, and OCR found no text on its pages either: are they blank?)" if tried else "")
        raise LoadError(f"{source}: no text to ingest{hint}")
    for d in docs:
        d.metadata.pop("unread", None)
        d.metadata.pop("ocr_empty", None)
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
    return _ocr_image_pages(path, docs, limits)


def _ocr_image_pages(path: Path, docs: list[Document], limits: Limits) -> list[Document]:
    """Pages without a text layer read with OCR (``ocr: True`` in their metadata); where OCR cannot run,
    they stay empty and are marked ``unread`` (the caller says what to install)."""
    blank = [d for d in docs if needs_ocr(d.page_content)]
    if not blank:
        return docs
    most = current_limits().ocr_pages
    if not limits.ocr or ocr_available() or len(blank) > most:
        if limits.ocr and len(blank) > most:
            raise LoadError(f"{len(blank)} pages have no text layer; OCR reads at most {most} per file "
                            "(limits.ocr_pages)")
        for d in blank:
            d.metadata["unread"] = True
        return docs
    try:
        texts = ocr_pages(path, [d.metadata["page"] for d in blank])
    except OcrError as exc:
        raise LoadError(str(exc)) from None
    for d in blank:
        text = texts.get(d.metadata["page"], "")
        if not needs_ocr(text):
            d.page_content = text
            d.metadata["ocr"] = True
        else:
            d.metadata["ocr_empty"] = True
    return docs


def load_text(data: bytes) -> list[Document]:
    return [Document(page_content=decode(data))]


def load_html(data: bytes) -> list[Document]:
    """One document per section (see :mod:`ingest.structure`): its text, heading path and anchor."""
    title, sections = html_sections(decode(data))
    meta = {"title": title} if title else {}
    return [Document(page_content=s.text, metadata={**meta, "section": " > ".join(s.path), "anchor": s.anchor})
            for s in sections]


def load_markdown(data: bytes) -> list[Document]:
    """One document per section under its ``#`` headings, like :func:`load_html`."""
    return [Document(page_content=s.text, metadata={"section": " > ".join(s.path), "anchor": s.anchor})
            for s in markdown_sections(decode(data))]


W = "{http://schemas.openxmlformats.org/wordprocessingml/2006/main}"
MC = "{http://schemas.openxmlformats.org/markup-compatibility/2006}"


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
    """The text of a .docx in reading order, as one document.

    Headers first (each distinct one once), then the body, then the footers. One line per
    paragraph (headings included; a line break inside a paragraph is a newline, a tab stays a
    tab), one line per table row with its cells joined by `` | `` (a merged cell once; a nested
    table's rows follow the row holding it), a text box's paragraphs after the paragraph it is
    anchored to. Blank paragraphs are dropped. The zip is checked by :func:`check_zip` before
    python-docx inflates anything.
    """
    from docx.exceptions import PythonDocxError
    from docx.opc.constants import CONTENT_TYPE
    from docx.opc.exceptions import OpcError
    from docx.package import Package
    from lxml.etree import XMLSyntaxError

    try:
        with zipfile.ZipFile(io.BytesIO(data)) as zf:
            check_zip(zf)
        # docx.Document() does these two steps, but names a stream by its repr in its error
        part = Package.open(io.BytesIO(data)).main_document_part
        if part.content_type != CONTENT_TYPE.WML_DOCUMENT_MAIN:
            raise LoadError(f"not a plain Word document ({part.content_type}); save it as .docx")
        document = part.document
        headers, footers = _docx_headers_footers(document)
        lines = headers + _docx_blocks(document.element.body) + footers
    except (zipfile.BadZipFile, KeyError, ValueError, RuntimeError, EOFError, XMLSyntaxError, PythonDocxError,
            OpcError) as exc:
        raise LoadError(f"corrupt .docx ({exc})") from None
    return [Document(page_content="\n".join(lines))]


def _docx_headers_footers(document) -> tuple[list[str], list[str]]:
    """Lines of every header and footer a section defines and shows, each distinct text once.

    A header "linked to previous" has no definition of its own (and asking python-docx for its
    content would add an empty one), so it is skipped; so are first-page and even-page variants
    the document does not switch on, which Word keeps but never prints.
    """
    even = document.settings.odd_and_even_pages_header_footer
    headers: list[str] = []
    footers: list[str] = []
    seen: set[str] = set()
    for section in document.sections:
        shown = [(headers, section.header), (footers, section.footer)]
        if section.different_first_page_header_footer:
            shown += [(headers, section.first_page_header), (footers, section.first_page_footer)]
        if even:
            shown += [(headers, section.even_page_header), (footers, section.even_page_footer)]
        for out, hf in shown:
            if hf.is_linked_to_previous:
                continue
            lines = _docx_blocks(hf.part.element)  # w:hdr / w:ftr holds blocks as the body does
            text = "\n".join(lines)
            if text and text not in seen:
                seen.add(text)
                out.extend(lines)
    return headers, footers


def _docx_blocks(container) -> list[str]:
    """Lines of the paragraphs and tables in a body, header, cell or text box, in order."""
    lines = []
    for el in _docx_children(container, "p", "tbl"):
        lines += _docx_table(el) if el.tag == f"{W}tbl" else _docx_paragraph(el)
    return lines


def _docx_paragraph(p) -> list[str]:
    """The paragraph's own text as one line (none if blank), then the lines of its text boxes.

    python-docx's ``Paragraph.text`` reads only the paragraph's direct runs and hyperlinks, so
    it misses tracked insertions (``w:ins``), inline content controls and simple fields; here
    every run belongs to the nearest paragraph above it. A text box sits in a run of its anchor
    paragraph as ``mc:AlternateContent``: the DrawingML ``mc:Choice`` and a VML ``mc:Fallback``
    holding the same paragraphs, so only the choice is read (a lone VML box has no fallback
    around it and is read too). Deleted and moved-away text is not.
    """
    own = "".join(r.text for r in p.iter(f"{W}r") if _docx_owned_by(r, p))  # CT_R.text: tabs, breaks
    lines = [own] if own.strip() else []
    for box in p.iter(f"{W}txbxContent"):
        if _docx_owned_by(box, p):
            lines += _docx_blocks(box)
    return lines


_DOCX_SKIPPED = {f"{W}del", f"{W}moveFrom", f"{W}p", f"{MC}Fallback"}


def _docx_owned_by(el, p) -> bool:
    """Whether ``el`` is ``p``'s own content: not in a nested paragraph, a deletion or a fallback."""
    parent = el.getparent()
    while parent is not None and parent is not p:
        if parent.tag in _DOCX_SKIPPED:
            return False
        parent = parent.getparent()
    return parent is p


def _docx_table(tbl) -> list[str]:
    """One line per row, ``cell | cell``; then, after that row, the rows of tables nested in it.

    Each ``w:tc`` is read once. python-docx's ``row.cells`` repeats a horizontally merged cell
    once per grid column and a vertically merged one in every row it spans (and raises on a
    ``vMerge`` it cannot place), so the rows' own ``w:tc`` elements are read instead and a
    ``vMerge="continue"`` cell, whose text is the cell above's, is left out.
    """
    lines = []
    for tr in _docx_children(tbl, "tr"):
        cells, nested = [], []
        for tc in _docx_children(tr, "tc"):
            if tc.vMerge == "continue":
                continue
            parts = []
            for el in _docx_children(tc, "p", "tbl"):
                if el.tag == f"{W}tbl":
                    nested += _docx_table(el)
                else:
                    parts += _docx_paragraph(el)
            cells.append(" ".join(parts).replace("\n", " "))  # the row stays one line
        if any(c.strip() for c in cells):
            lines.append(" | ".join(cells))
        lines += nested
    return lines


def _docx_children(el, *tags: str):
    """``el``'s ``w:`` children with these names, looking through content controls and custom XML.

    python-docx's ``iter_inner_content`` stops at such wrappers, which hold cover pages, tables
    of contents and template fields.
    """
    wanted = {f"{W}{t}" for t in tags}
    for child in el:
        if child.tag in wanted:
            yield child
        elif child.tag in (f"{W}sdt", f"{W}sdtContent", f"{W}customXml"):
            yield from _docx_children(child, *tags)


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


LOADERS = {"pdf": load_pdf, "text": load_text, "markdown": load_markdown, "html": load_html,
           "docx": load_docx, "csv": load_csv, "json": load_json}
