"""The shared studio's audit log: who did what, appended to ``STUDIO_HOME/audit.jsonl`` and never rewritten.

One JSON object per line: ``time`` (UTC, ISO 8601), ``actor`` (an account name, or ``local`` for the
machine's own user at the command line), ``action`` (``users.add``, ``login.failed``...), ``target``
and any details. Each entry is one ``write`` to a file opened with ``O_APPEND`` under a home lock, so
concurrent writers never interleave or lose lines. The file is private to the studio's owner (0600);
``studio audit`` shows it. Passwords and document text never go into it.
"""

from __future__ import annotations

import datetime
import json
import os
from pathlib import Path

from studio.env import home_lock, private_file, studio_home
from studio.errors import StudioError

MAX_READ = 10_000


def log_path(home: Path | None = None) -> Path:
    return (home or studio_home()) / "audit.jsonl"


def record(actor: str, action: str, target: str = "", home: Path | None = None, **details) -> dict:
    entry = {"time": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"), "actor": actor,
             "action": action, "target": target, **details}
    line = (json.dumps(entry, ensure_ascii=False) + "\n").encode()
    path = log_path(home)
    with home_lock("audit"):
        fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
        try:
            os.write(fd, line)
        finally:
            os.close(fd)
    private_file(path)
    return entry


def entries(limit: int = 200, actor: str | None = None, action: str | None = None,
            home: Path | None = None) -> list[dict]:
    """The last ``limit`` entries (oldest first), optionally of one actor or action prefix."""
    if not 1 <= limit <= MAX_READ:
        raise StudioError(f"limit must be between 1 and {MAX_READ:,}")
    path = log_path(home)
    if not path.is_file():
        return []
    out = []
    for line in path.read_text(encoding="utf-8", errors="replace").splitlines():
        try:
            entry = json.loads(line)
        except ValueError:
            continue  # a line cut by a crash mid-write is skipped, the rest still read
        if actor and entry.get("actor") != actor:
            continue
        if action and not str(entry.get("action", "")).startswith(action):
            continue
        out.append(entry)
    return out[-limit:]
