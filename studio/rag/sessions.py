"""Chat sessions kept in SQLite under ``$STUDIO_HOME/sessions.sqlite``.

>>> s = Sessions()
>>> sid = s.create(collection="manuals").id
>>> s.add_message(sid, "user", "How do I cite R?")
>>> s.add_message(sid, "assistant", "Use citation() [1]", citations=[{...}])
>>> s.export_markdown(sid)

A session belongs to the user who started it (``user``: an account name, or ``local`` for the studio's
own user): every call carries the user, and another user's session id reads as "no chat session",
the same as an id that does not exist, so ids neither leak nor work across workspaces.

A session is titled after its first question until renamed. Every call opens its own
connection, so sessions are safe to use from several UI threads and processes at once.

Why not LangChain's ``SQLChatMessageHistory``: it stores messages only; a studio session also keeps
each answer's citations and metadata, a title and its collection, and exports to Markdown and JSON.
That is a difference in what is stored, not a measured one.
"""

from __future__ import annotations

import json
import re
import sqlite3
import time
import uuid
from dataclasses import asdict, dataclass
from datetime import datetime
from pathlib import Path

from ingest.store import place
from studio.env import LOCAL_USER, ensure_column, open_db, studio_home
from studio.errors import StudioError

SCHEMA = [
    """CREATE TABLE IF NOT EXISTS sessions (id TEXT PRIMARY KEY, title TEXT NOT NULL, collection TEXT,
       created REAL NOT NULL, updated REAL NOT NULL, titled INTEGER NOT NULL DEFAULT 0,
       owner TEXT NOT NULL DEFAULT 'local')""",
    """CREATE TABLE IF NOT EXISTS messages (session TEXT NOT NULL REFERENCES sessions(id) ON DELETE CASCADE,
       seq INTEGER NOT NULL, role TEXT NOT NULL, content TEXT NOT NULL, citations TEXT, meta TEXT,
       created REAL NOT NULL, PRIMARY KEY (session, seq))""",
]


@dataclass
class Session:
    id: str
    title: str
    collection: str | None
    created: float
    updated: float


class Sessions:
    def __init__(self, path: Path | None = None):
        self.path = path or studio_home() / "sessions.sqlite"
        with self._db() as db:
            for stmt in SCHEMA:
                db.execute(stmt)
            # a studio from before workspaces: its sessions are the local user's
            ensure_column(db, "sessions", "owner", f"TEXT NOT NULL DEFAULT '{LOCAL_USER}'")

    def _db(self) -> sqlite3.Connection:
        db = open_db(self.path)
        db.execute("PRAGMA foreign_keys=ON")
        return db

    def create(self, title: str = "New chat", collection: str | None = None, user: str = LOCAL_USER) -> Session:
        now = time.time()
        session = Session(uuid.uuid4().hex[:12], title, collection, now, now)
        with self._db() as db:
            db.execute("INSERT INTO sessions (id, title, collection, created, updated, titled, owner) "
                       "VALUES (?,?,?,?,?,0,?)", (session.id, title, collection, now, now, user))
        return session

    def get(self, sid: str, user: str = LOCAL_USER) -> Session:
        if not isinstance(sid, str) or not re.fullmatch(r"[0-9a-f]{1,32}", sid):
            raise StudioError(f"{str(sid)[:40]!r} is not a chat session id; `studio sessions list` shows them")
        with self._db() as db:
            row = db.execute("SELECT id, title, collection, created, updated FROM sessions WHERE id=? AND owner=?",
                             (sid, user)).fetchone()
        if row is None:
            raise StudioError(f"no chat session {sid!r}; `studio sessions list` shows them")
        return Session(*row)

    def list(self, user: str = LOCAL_USER) -> list[Session]:
        with self._db() as db:
            rows = db.execute("SELECT id, title, collection, created, updated FROM sessions WHERE owner=? "
                              "ORDER BY updated DESC", (user,)).fetchall()
        return [Session(*r) for r in rows]

    def rename(self, sid: str, title: str, user: str = LOCAL_USER) -> None:
        if not title.strip():
            raise StudioError("a session title cannot be empty")
        if len(title) > 200:
            raise StudioError("a session title can be at most 200 characters")
        self.get(sid, user)
        with self._db() as db:
            db.execute("UPDATE sessions SET title=?, titled=1 WHERE id=? AND owner=?", (title.strip(), sid, user))

    def delete(self, sid: str, user: str = LOCAL_USER) -> None:
        self.get(sid, user)
        with self._db() as db:
            db.execute("DELETE FROM sessions WHERE id=? AND owner=?", (sid, user))

    def add_message(self, sid: str, role: str, content: str, citations: list | None = None,
                    meta: dict | None = None, user: str = LOCAL_USER) -> None:
        now = time.time()
        with self._db() as db:
            titled = db.execute("SELECT titled FROM sessions WHERE id=? AND owner=?", (sid, user)).fetchone()
            if titled is None:
                raise StudioError(f"no chat session {sid!r}")
            seq = db.execute("SELECT COALESCE(MAX(seq), -1) + 1 FROM messages WHERE session=?", (sid,)).fetchone()[0]
            db.execute("INSERT INTO messages VALUES (?,?,?,?,?,?,?)",
                       (sid, seq, role, content, json.dumps(citations or []), json.dumps(meta or {}), now))
            db.execute("UPDATE sessions SET updated=? WHERE id=?", (now, sid))
            if role == "user" and not titled[0]:
                title = " ".join(content.split())
                title = title if len(title) <= 60 else title[:57].rsplit(" ", 1)[0] + "…"
                db.execute("UPDATE sessions SET title=?, titled=1 WHERE id=?", (title, sid))

    def truncate(self, sid: str, keep: int, user: str = LOCAL_USER) -> int:
        """Keep the first ``keep`` messages of the session (Regenerate and Edit drop the last turn);
        returns how many were removed."""
        self.get(sid, user)
        with self._db() as db:
            removed = db.execute("DELETE FROM messages WHERE session=? AND seq >= ?", (sid, max(0, int(keep))))
            db.execute("UPDATE sessions SET updated=? WHERE id=?", (time.time(), sid))
        return removed.rowcount

    def messages(self, sid: str, user: str = LOCAL_USER) -> list[dict]:
        self.get(sid, user)
        with self._db() as db:
            rows = db.execute("SELECT role, content, citations, meta, created FROM messages WHERE session=? "
                              "ORDER BY seq", (sid,)).fetchall()
        return [{"role": r, "content": c, "citations": json.loads(ci), "meta": json.loads(m), "created": t}
                for r, c, ci, m, t in rows]

    def export_json(self, sid: str, user: str = LOCAL_USER) -> dict:
        return {**asdict(self.get(sid, user)), "messages": self.messages(sid, user)}

    def export_markdown(self, sid: str, user: str = LOCAL_USER) -> str:
        session = self.get(sid, user)
        when = datetime.fromtimestamp(session.created).strftime("%Y-%m-%d %H:%M")
        lines = [f"# {session.title}", "",
                 f"*{when}" + (f" · collection `{session.collection}`" if session.collection else "") + "*", ""]
        for msg in self.messages(sid, user):
            lines += [f"**{'You' if msg['role'] == 'user' else 'Studio'}:** {msg['content']}", ""]
            for c in msg["citations"]:
                where = place(c["source"], c.get("page"), c.get("section", ""), c.get("anchor", ""))
                lines.append(f"- [{c['n']}] {where}")
            if msg["citations"]:
                lines.append("")
        return "\n".join(lines)
