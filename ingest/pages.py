"""Cited PDF pages as images: the originals kept at ingest, one page rendered with the quote marked.

Ingest keeps a copy of every PDF it embeds under ``STUDIO_HOME/originals/<sha256 prefix>.pdf`` (named by
content, so a file ingested into several collections is kept once). :func:`render_page` rasterises one
page with pdfium (``pypdfium2``, the renderer Chromium uses) and shades the quoted passage, found with
pdfium's own text search, so a reader sees the sentence where it stands on the page.

>>> path = original_path("3f2a...")          # from the manifest's version of (collection, source)
>>> image = render_page(path, page=2, quote="with a height of 979 metres")
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

from studio.env import home_dir
from studio.errors import StudioError

MAX_SCALE = 3.0  # 216 dpi: sharp on a laptop screen, a few MB of pixels per page at most
MAX_PIXELS = 12_000_000  # a page larger than this (a poster) is rendered smaller
_HEX = re.compile(r"[0-9a-f]{16}")


def originals_dir() -> Path:
    return home_dir("originals")


def content_key(data: bytes) -> str:
    """The name a file's original is kept under: the first 16 hex digits of its SHA-256 (as in the
    manifest's version)."""
    return hashlib.sha256(data).hexdigest()[:16]


def keep_original(path: str | Path, version: str) -> Path | None:
    """Keep a PDF's original for the page viewer (written to a temporary name, then renamed: a reader
    never sees half a file). Other kinds of files are not kept: they have no pages to show."""
    path = Path(path)
    if path.suffix.lower() != ".pdf":
        return None
    target = original_path(version[:16], must_exist=False)
    if not target.is_file():
        tmp = target.with_suffix(f".{os.getpid()}.tmp")
        shutil.copyfile(path, tmp)
        os.chmod(tmp, 0o600)
        os.replace(tmp, target)
    return target


def original_path(key: str, must_exist: bool = True) -> Path:
    """The kept original for ``key`` (16 hex digits); refused for anything else, so no name a client
    sends can reach outside the originals folder."""
    if not isinstance(key, str) or not _HEX.fullmatch(key[:16]) or len(key) < 16:
        raise StudioError("no original is kept for this document")
    path = originals_dir() / f"{key[:16]}.pdf"
    if must_exist and not path.is_file():
        raise StudioError("the original of this document is not kept (it was ingested before the studio "
                          "kept originals, or is not a PDF): ingest it again to see its pages")
    return path


def render_page(path: str | Path, page: int, quote: str = "", scale: float = 1.5):
    """Page ``page`` (1-based) of the PDF as a PIL image, the first occurrence of ``quote`` shaded yellow
    (whitespace-insensitive; when the whole quote is not found on the page, its first sentence is tried)."""
    import pypdfium2 as pdfium
    from PIL import ImageDraw

    try:
        pdf = pdfium.PdfDocument(str(path))
    except pdfium.PdfiumError as exc:
        raise StudioError(f"the kept original cannot be opened ({exc})") from None
    try:
        if not isinstance(page, int) or not 1 <= page <= len(pdf):
            raise StudioError(f"page {page} is not in this document (it has {len(pdf)} pages)")
        pg = pdf[page - 1]
        width, height = pg.get_size()
        scale = max(0.5, min(float(scale), MAX_SCALE, (MAX_PIXELS / max(1.0, width * height)) ** 0.5))
        image = pg.render(scale=scale).to_pil().convert("RGB")
        boxes = _quote_boxes(pg, quote)
        if boxes:
            overlay = image.copy()
            draw = ImageDraw.Draw(overlay)
            for left, bottom, right, top in boxes:  # PDF points, origin bottom-left
                draw.rectangle([left * scale - 1, (height - top) * scale - 1, right * scale + 1,
                                (height - bottom) * scale + 1], fill=(253, 224, 71))
            image = _blend(image, overlay)
        image.info["quote_found"] = bool(boxes)
        pg.close()
        return image
    finally:
        pdf.close()


def render_page_isolated(path: str | Path, page: int, quote: str = "", timeout: float = 60.0):
    """:func:`render_page` in a child process: pdfium is native code reading a user's file, and a crash in
    it (a malformed PDF, or its finalizers meeting a server's threads: we saw ``free(): invalid pointer``
    end a studio) must end only the child. Costs about half a second per page."""
    from PIL import Image

    try:
        done = subprocess.run([sys.executable, "-m", "ingest.pages", str(path), str(int(page))],
                              input=(quote or "").encode(), capture_output=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        raise StudioError(f"rendering page {page} took over {timeout:.0f} s") from None
    if done.returncode != 0:
        reason = done.stderr.decode(errors="replace").strip().splitlines()[-1:] or ["it crashed"]
        raise StudioError(f"page {page} could not be rendered: {reason[0][:300]}")
    head, _, png = done.stdout.partition(b"\n")
    image = Image.open(io.BytesIO(png))
    image.load()
    image.info["quote_found"] = bool(json.loads(head).get("quote_found"))
    return image


def _main(argv: list[str]) -> int:
    """``python -m ingest.pages PDF PAGE`` (the quote on stdin): a JSON line, then the PNG, on stdout."""
    try:
        image = render_page(argv[0], int(argv[1]), sys.stdin.read())
    except StudioError as exc:
        print(str(exc), file=sys.stderr)
        return 2
    out = io.BytesIO()
    image.save(out, format="PNG")
    sys.stdout.buffer.write(json.dumps({"quote_found": image.info["quote_found"]}).encode() + b"\n" + out.getvalue())
    return 0



def _blend(image, overlay):
    from PIL import Image, ImageChops

    # multiply keeps the black text readable under the yellow
    return Image.blend(image, ImageChops.multiply(image, overlay), 0.85)


def _quote_boxes(pg, quote: str) -> list[tuple[float, float, float, float]]:
    """Rectangles (PDF points) of the quote's characters on the page, or [] when it is not there."""
    words = " ".join((quote or "").rstrip(" …").split())
    if not words:
        return []
    tp = pg.get_textpage()
    try:
        text = tp.get_text_range()
        flat, index = [], []  # the page text with runs of whitespace as one space, and each char's index
        for i, ch in enumerate(text):
            if ch.isspace():
                if flat and flat[-1] != " ":
                    flat.append(" ")
                    index.append(i)
            else:
                flat.append(ch)
                index.append(i)
        page_text = "".join(flat)
        candidates = [words, re.split(r"(?<=[.!?])\s", words)[0], words[:80]]
        for want in candidates:
            at = page_text.find(want)
            if at >= 0 and want.strip():
                first, last = index[at], index[at + len(want) - 1]
                count = tp.count_rects(first, last - first + 1)
                return [tp.get_rect(i) for i in range(count)]
        return []
    finally:
        tp.close()


if __name__ == "__main__":
    sys.exit(_main(sys.argv[1:]))
