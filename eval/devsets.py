"""RAG development sets: real documentation corpora from Debian packages, with questions split in two.

Each corpus has answerable questions (written from randomly drawn pages: the file, the page or the
section that answers, and key terms a right answer contains and the question does not) and
unanswerable ones on nearby topics. Every question belongs to one half, decided by the hash of its
text (so adding a question never moves another): ``tune`` (thresholds and settings are chosen on it)
and ``report`` (only measured; nothing is tuned on it).

- ``rman``: four R manuals, PDF (``r-doc-pdf``): pages.
- ``pgdoc``: 62 pages of the PostgreSQL 15 manual, HTML from DocBook (``postgresql-doc-15``): sections.
- ``pylib``: 50 pages of the Python 3.11 library reference, HTML from Sphinx (``python3-doc``): sections.

(``sqlite3-doc`` is kept out on purpose: an outside check uses it.)

>>> corpus = CORPORA["pgdoc"]; corpus.files()[:2]; len(corpus.questions("report"))
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path

from studio.errors import StudioError

DATA = Path(__file__).resolve().parent.parent / "benchmarks" / "data"


@dataclass(frozen=True)
class Corpus:
    name: str
    title: str
    package: str  # the Debian package that ships it
    base: str  # folder of the files
    stem: str  # question files: {stem}_questions.jsonl, {stem}_unanswerable.jsonl; file list {stem}_files.txt
    names: tuple[str, ...] = ()  # the files, when not listed in {stem}_files.txt

    def files(self) -> list[str]:
        listed = DATA / f"{self.stem}_files.txt"
        names = self.names or tuple(listed.read_text().split())
        paths = [str(Path(self.base) / n) for n in names]
        missing = [p for p in paths if not Path(p).is_file()]
        if missing:
            raise StudioError(f"{self.title}: {len(missing)} files missing (first: {missing[0]}); "
                              f"install the Debian package: sudo apt-get install {self.package}")
        return paths

    def _load(self, kind: str) -> list[dict]:
        path = DATA / f"{self.stem}_{kind}.jsonl"
        rows = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
        ranked = sorted(range(len(rows)), key=lambda i: hashlib.sha1(rows[i]["q"].encode()).hexdigest())
        tune = set(ranked[:(len(rows) + 1) // 2])
        for i, row in enumerate(rows):
            row["split"] = "tune" if i in tune else "report"
        return rows

    def questions(self, split: str | None = None) -> list[dict]:
        return [q for q in self._load("questions") if split in (None, q["split"])]

    def unanswerable(self, split: str | None = None) -> list[dict]:
        return [q for q in self._load("unanswerable") if split in (None, q["split"])]


CORPORA = {
    "rman": Corpus("rman", "R manuals (PDF)", "r-doc-pdf", "/usr/share/R/doc/manual", "r_manuals",
                   ("R-FAQ.pdf", "R-intro.pdf", "R-data.pdf", "R-lang.pdf")),
    "pgdoc": Corpus("pgdoc", "PostgreSQL 15 manual (HTML)", "postgresql-doc-15",
                    "/usr/share/doc/postgresql-doc-15/html", "pgdoc"),
    "pylib": Corpus("pylib", "Python 3.11 library reference (HTML)", "python3-doc",
                    "/usr/share/doc/python3-doc/html/library", "pylib"),
}


def _norm(text: str) -> str:
    return " ".join(text.replace("¶", " ").replace("\xa0", " ").split()).lower()


def right_place(source: str, page: int | None, headers: str, q: dict) -> bool:
    """Whether a passage is where question ``q`` is answered: its page, or its section (innermost heading)."""
    if source != q["source"]:
        return False
    if "pages" in q:
        return page in q["pages"]
    return _norm(headers.rsplit(" > ", 1)[-1]) == _norm(q["section"])


def has_key(text: str, q: dict) -> bool:
    return any(k.lower() in text.lower() for k in q["keys"])
