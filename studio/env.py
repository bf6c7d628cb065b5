"""Where the studio keeps its state, and the offline defaults applied before heavy imports.

All state (Chroma data, chat sessions, jobs, runs, caches) lives under ``STUDIO_HOME``
(default ``~/.genai-studio``).
"""

from __future__ import annotations

import fcntl
import hashlib
import os
import sqlite3
import time
from collections.abc import Iterator
from contextlib import contextmanager
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


_APPLIED: set[str] = set()  # the offline variables the studio set (the user had not)


def apply_offline_defaults() -> None:
    """Set the offline environment variables unless the user already set them."""
    for key, value in OFFLINE_DEFAULTS.items():
        if key not in os.environ:
            os.environ[key] = value
            _APPLIED.add(key)


def applied_offline_default(key: str) -> bool:
    """Whether ``key`` holds the studio's own offline default rather than the user's choice (an explicit
    `studio models pull` may then reach the hub; a user's own HF_HUB_OFFLINE=1 is obeyed)."""
    return key in _APPLIED and os.environ.get(key) == OFFLINE_DEFAULTS[key]


def _private_dir(path: Path) -> Path:
    """Create ``path`` (and missing parents) readable by this user only (0700)."""
    if not path.is_dir():
        path.mkdir(parents=True, exist_ok=True, mode=0o700)
    return path


LOCAL_USER = "local"  # who acts when no account logged in: the machine user who runs the studio


def studio_home() -> Path:
    """The studio's state folder (``$STUDIO_HOME`` or ``~/.genai-studio``), created on demand (0700).

    Chat sessions, collections, jobs and runs are the user's own: other accounts on the machine
    cannot list or read them.
    """
    chosen = os.environ.get("STUDIO_HOME")
    home = Path(chosen or Path.home() / ".genai-studio").expanduser()
    if not home.is_dir():
        _private_dir(home)
        os.chmod(home, 0o700)  # mkdir's mode is filtered by the umask; say it exactly
    elif not chosen and home.stat().st_mode & 0o077 and home.stat().st_uid == os.getuid():
        os.chmod(home, 0o700)  # the default home of an older version, created world-readable
    return home


def home_dir(*parts: str) -> Path:
    """A sub-folder of the studio home, created on demand (0700), e.g. ``home_dir("cache", "hf")``."""
    return _private_dir(studio_home().joinpath(*parts))


def private_file(path: str | Path) -> Path:
    """Make ``path`` (a database or a secret) readable and writable by this user only (0600),
    with SQLite's -wal and -shm companions when they exist."""
    path = Path(path)
    for p in (path, Path(f"{path}-wal"), Path(f"{path}-shm")):
        try:
            if p.exists() and (p.stat().st_mode & 0o777) != 0o600:
                os.chmod(p, 0o600)
        except OSError:  # another process removed the companion meanwhile
            pass
    return path


def open_db(path: str | Path, **kwargs) -> sqlite3.Connection:
    """A SQLite connection in WAL mode to a database only this user can read (0600)."""
    db = sqlite3.connect(path, timeout=30, **kwargs)
    # Switching a store to WAL needs it alone, and sqlite does not wait for that: pages opening a new
    # (or an older) studio at the same moment would get "database is locked". Once WAL, it stays WAL.
    deadline = time.monotonic() + 30
    while db.execute("PRAGMA journal_mode").fetchone()[0] != "wal":
        try:
            db.execute("PRAGMA journal_mode=WAL")
        except sqlite3.OperationalError as exc:
            if "locked" not in str(exc) or time.monotonic() > deadline:
                db.close()
                raise
            time.sleep(0.02)
    private_file(path)
    return db


def ensure_column(db: sqlite3.Connection, table: str, column: str, declaration: str) -> None:
    """Add a column an older studio's table lacks. Pages that open at the same moment each check and add it:
    the one that comes second finds it added and goes on (sqlite says "duplicate column name")."""
    if column in {row[1] for row in db.execute(f"PRAGMA table_info({table})")}:
        return
    try:
        db.execute(f"ALTER TABLE {table} ADD COLUMN {column} {declaration}")
    except sqlite3.OperationalError as exc:
        if "duplicate column name" not in str(exc):
            raise


@contextmanager
def home_lock(*key: str, wait: bool = True) -> Iterator[bool]:
    """An exclusive lock named by ``key``, shared by every process and thread using this STUDIO_HOME.

    ``flock`` on a file under ``STUDIO_HOME/locks``: the kernel drops it when its holder exits or is
    killed, so a crash never leaves a stale lock behind. With ``wait=False`` it yields False at once
    when someone else holds it (and True when it was taken).
    """
    name = hashlib.sha1("\x00".join(key).encode()).hexdigest()[:20]
    fd = os.open(home_dir("locks") / f"{name}.lock", os.O_RDWR | os.O_CREAT, 0o600)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX if wait else fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            yield False
            return
        yield True
    finally:
        fcntl.flock(fd, fcntl.LOCK_UN)
        os.close(fd)


def install_secret() -> bytes:
    """32 random bytes kept in ``STUDIO_HOME/secret.key`` (0600), made on first use.

    Used where the studio needs something a document's author cannot predict but the same install
    should reproduce (the delimiters around retrieved passages).
    """
    path = studio_home() / "secret.key"
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        data = path.read_bytes()
        if len(data) >= 32:
            return data[:32]
        fd = os.open(path, os.O_WRONLY | os.O_TRUNC)  # an empty file left by a kill mid-write
    key = os.urandom(32)
    with os.fdopen(fd, "wb") as fh:
        fh.write(key)
    return key
