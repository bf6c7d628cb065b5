"""OCR for PDF pages without a text layer (scans, photographed pages): pdfium renders, Tesseract reads.

A page whose text layer holds fewer than ``MIN_CHARS`` visible characters is rendered at 300 dpi by
pdfium (``pypdfium2``) and read by Tesseract through ``pytesseract`` (Debian's ``tesseract-ocr``).
Both run in a child process (``python -m ingest.ocr``), like the page viewer's renderer: pdfium is
native code reading a user's file, and a crash must end the child, not the ingest or the server.

>>> ocr_available()          # None, or what to install
>>> ocr_pages("scan.pdf", [1, 3])   # {1: "text of page 1", 3: "..."}
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

MIN_CHARS = 20  # a page with fewer visible characters in its text layer is treated as an image
DPI = 300  # Tesseract's documented sweet spot for body text
MAX_PIXELS = 40_000_000  # a page larger than this (a poster) is rendered at a lower resolution
SECONDS_PER_PAGE = 120  # the child is stopped after this many seconds per page
INSTALL_HINT = ("OCR needs Tesseract: install it with `sudo apt-get install tesseract-ocr` "
                "(and `pip install pytesseract`), then ingest the file again")


class OcrError(Exception):
    """OCR could not run (missing Tesseract, a crash or timeout in the child)."""


def needs_ocr(text: str) -> bool:
    return sum(not ch.isspace() for ch in text) < MIN_CHARS


def ocr_available() -> str | None:
    """None when OCR can run here, else what to install."""
    try:
        import pytesseract  # noqa: F401
    except ImportError:
        return INSTALL_HINT
    return None if shutil.which("tesseract") else INSTALL_HINT


def ocr_pages(path: str | Path, pages: list[int], lang: str = "eng") -> dict[int, str]:
    """The OCRed text of ``pages`` (1-based) of the PDF at ``path``, read in a child process."""
    missing = ocr_available()
    if missing:
        raise OcrError(missing)
    if not pages:
        return {}
    try:
        done = subprocess.run([sys.executable, "-m", "ingest.ocr", str(path), lang, *map(str, pages)],
                              capture_output=True, timeout=SECONDS_PER_PAGE * len(pages))
    except subprocess.TimeoutExpired:
        raise OcrError(f"OCR of {len(pages)} page(s) took over {SECONDS_PER_PAGE} s a page") from None
    if done.returncode != 0:
        reason = done.stderr.decode(errors="replace").strip().splitlines()[-1:] or ["it crashed"]
        raise OcrError(f"OCR failed: {reason[0][:300]}")
    return {int(k): v for k, v in json.loads(done.stdout).items()}


def _read(path: str, lang: str, pages: list[int]) -> dict[int, str]:
    import pypdfium2 as pdfium
    import pytesseract

    pdf = pdfium.PdfDocument(path)
    try:
        out = {}
        for number in pages:
            page = pdf[number - 1]
            width, height = page.get_size()  # points: 1/72 inch
            scale = min(DPI / 72, (MAX_PIXELS / max(1.0, width * height)) ** 0.5)
            image = page.render(scale=scale, grayscale=True).to_pil()
            out[number] = pytesseract.image_to_string(image, lang=lang)
            page.close()
        return out
    finally:
        pdf.close()


def _main(argv: list[str]) -> int:
    """``python -m ingest.ocr PDF LANG PAGE...``: a JSON object {page: text} on stdout."""
    print(json.dumps(_read(argv[0], argv[1], [int(p) for p in argv[2:]])))
    return 0


if __name__ == "__main__":
    sys.exit(_main(sys.argv[1:]))
