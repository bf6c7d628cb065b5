"""The ingestion manifest: which file version each collection holds, for incremental ingest.

One SQLite table under ``$STUDIO_HOME`` keyed by (store location, collection, source) with the
file's content hash plus the splitter settings (``version``). A row is written only after all
of that file's chunks are stored and its older chunks deleted, so a killed run never records a
file it did not finish: the next run simply does that file again, and chunk ids derived from
(source, version, index) make the redo land on the same rows.
"""

from __future__ import annotations

import sqlite3
import time
from dataclasses import dataclass
from pathlib import Path

from studio.env import ensure_column, open_db, studio_home

SCHEMA = """
CREATE TABLE IF NOT EXISTS files (
    store TEXT NOT NULL, collection TEXT NOT NULL, source TEXT NOT NULL,
    version TEXT NOT NULL, chunks INTEGER NOT NULL, pages INTEGER,
    bytes INTEGER, ingested_at REAL NOT NULL, ocr TEXT NOT NULL DEFAULT '',
    PRIMARY KEY (store, collection, source)
)"""
COLUMNS = "source, version, chunks, pages, bytes, ingested_at, ocr"
# who owns each collection and whether its owner shared it (read-only) with everyone; a collection with
# no row is from a studio before workspaces, and belongs to the local user
OWNERS = """
CREATE TABLE IF NOT EXISTS collections (
    store TEXT NOT NULL, collection TEXT NOT NULL, owner TEXT NOT NULL,
    shared INTEGER NOT NULL DEFAULT 0, created REAL NOT NULL,
    PRIMARY KEY (store, collection)
)"""


USAGE = "CREATE TABLE IF NOT EXISTS usage (user TEXT NOT NULL, day TEXT NOT NULL, bytes INTEGER NOT NULL, " \
        "PRIMARY KEY (user, day))"  # what each account ingested per UTC day (limits.ingest_mb_per_day)


def _today() -> str:
    return time.strftime("%Y-%m-%d", time.gmtime())


@dataclass
class FileRecord:
    source: str
    version: str
    chunks: int
    pages: int | None
    bytes: int | None
    ingested_at: float
    ocr: str = ""  # the pages read with OCR, as "1-3, 7"


def page_ranges(pages: list[int]) -> str:
    """[1, 2, 3, 7] -> "1-3, 7"."""
    runs: list[list[int]] = []
    for p in sorted(set(pages)):
        if runs and p == runs[-1][1] + 1:
            runs[-1][1] = p
        else:
            runs.append([p, p])
    return ", ".join(f"{a}-{b}" if b > a else str(a) for a, b in runs)


class Manifest:
    def __init__(self, path: Path | None = None):
        self.path = path or studio_home() / "manifest.sqlite"
        with self._db() as db:
            db.execute(SCHEMA)
            db.execute(OWNERS)
            db.execute(USAGE)
            ensure_column(db, "files", "ocr", "TEXT NOT NULL DEFAULT ''")  # an older studio's manifest

    def _db(self) -> sqlite3.Connection:
        return open_db(self.path)

    def get(self, store: str, collection: str, source: str) -> FileRecord | None:
        with self._db() as db:
            row = db.execute(f"SELECT {COLUMNS} FROM files "
                             "WHERE store=? AND collection=? AND source=?", (store, collection, source)).fetchone()
        return FileRecord(*row) if row else None

    def put(self, store: str, collection: str, record: FileRecord) -> None:
        with self._db() as db:
            db.execute(f"INSERT OR REPLACE INTO files (store, collection, {COLUMNS}) VALUES (?,?,?,?,?,?,?,?,?)",
                       (store, collection, record.source, record.version, record.chunks, record.pages,
                        record.bytes, record.ingested_at or time.time(), record.ocr))

    def remove(self, store: str, collection: str, source: str | None = None) -> None:
        with self._db() as db:
            if source is None:
                db.execute("DELETE FROM files WHERE store=? AND collection=?", (store, collection))
            else:
                db.execute("DELETE FROM files WHERE store=? AND collection=? AND source=?",
                           (store, collection, source))

    def claim(self, store: str, collection: str, owner: str) -> str:
        """Record ``owner`` as the collection's owner unless it has one; returns the owner it has (the
        first claim wins when two people create one name at once)."""
        with self._db() as db:
            db.execute("INSERT OR IGNORE INTO collections (store, collection, owner, shared, created) "
                       "VALUES (?,?,?,0,?)", (store, collection, owner, time.time()))
            return db.execute("SELECT owner FROM collections WHERE store=? AND collection=?",
                              (store, collection)).fetchone()[0]

    def owners(self, store: str) -> dict[str, tuple[str, bool]]:
        """{collection: (owner, shared)} for the collections that have an owner recorded."""
        with self._db() as db:
            rows = db.execute("SELECT collection, owner, shared FROM collections WHERE store=?", (store,)).fetchall()
        return {c: (o, bool(s)) for c, o, s in rows}

    def share(self, store: str, collection: str, owner: str, shared: bool) -> None:
        with self._db() as db:
            db.execute("INSERT INTO collections (store, collection, owner, shared, created) VALUES (?,?,?,?,?) "
                       "ON CONFLICT (store, collection) DO UPDATE SET shared=excluded.shared",
                       (store, collection, owner, int(shared), time.time()))

    def used_today(self, user: str) -> int:
        """Bytes of new or changed documents ``user`` ingested today (UTC)."""
        with self._db() as db:
            row = db.execute("SELECT bytes FROM usage WHERE user=? AND day=?", (user, _today())).fetchone()
        return row[0] if row else 0

    def add_usage(self, user: str, size: int) -> None:
        with self._db() as db:
            db.execute("INSERT INTO usage (user, day, bytes) VALUES (?,?,?) "
                       "ON CONFLICT (user, day) DO UPDATE SET bytes = bytes + excluded.bytes", (user, _today(), size))

    def forget(self, store: str, collection: str) -> None:
        """The collection is gone: its files and its owner."""
        with self._db() as db:
            db.execute("DELETE FROM files WHERE store=? AND collection=?", (store, collection))
            db.execute("DELETE FROM collections WHERE store=? AND collection=?", (store, collection))

    def files(self, store: str, collection: str) -> list[FileRecord]:
        with self._db() as db:
            rows = db.execute(f"SELECT {COLUMNS} FROM files "
                              "WHERE store=? AND collection=? ORDER BY source", (store, collection)).fetchall()
        return [FileRecord(*r) for r in rows]
