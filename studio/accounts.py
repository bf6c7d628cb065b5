"""Accounts of a shared studio: names, roles and slow salted password hashes under STUDIO_HOME.

``STUDIO_HOME/users.json`` (0600, rewritten atomically under a home lock, so two ``studio users``
commands never lose each other's change) holds, per account, its role and an scrypt hash
(``hashlib.scrypt``, n=2**14, r=8, p=1, a 16-byte random salt: about 50 ms and 16 MB per check, so
a stolen file costs an attacker that much per guess). Passwords are never stored, logged or taken from
the command line. With no account the studio is the one-user local studio it always was; once one
exists, ``studio serve`` asks everyone to log in (:meth:`Accounts.check` is Gradio's auth function).

>>> accounts = Accounts(); accounts.add("ada", "correct horse battery", admin=True); accounts.check("ada", "x")
False
"""

from __future__ import annotations

import base64
import datetime
import hashlib
import hmac
import json
import os
import re
import secrets
import threading
import time
from dataclasses import dataclass
from pathlib import Path

from studio import audit
from studio.env import LOCAL_USER, home_lock, private_file, studio_home
from studio.errors import StudioError

NAME = re.compile(r"^[a-z][a-z0-9_.-]{0,31}$")
MIN_PASSWORD, MAX_PASSWORD = 8, 256
SCRYPT = {"n": 2 ** 14, "r": 8, "p": 1}
MAX_FAILURES, FAILURE_WINDOW = 5, 300.0  # this many wrong passwords for a name within the window: wait


@dataclass
class Account:
    name: str
    admin: bool
    created: str


def hash_password(password: str, salt: bytes | None = None, n: int = SCRYPT["n"], r: int = SCRYPT["r"],
                  p: int = SCRYPT["p"]) -> str:
    """``scrypt$n$r$p$salt$hash`` (base64) of ``password``."""
    salt = salt or secrets.token_bytes(16)
    digest = hashlib.scrypt(password.encode(), salt=salt, n=n, r=r, p=p, maxmem=64 * 2 ** 20, dklen=32)
    b64 = base64.b64encode
    return f"scrypt${n}${r}${p}${b64(salt).decode()}${b64(digest).decode()}"


def verify_password(password: str, stored: str) -> bool:
    try:
        kind, n, r, p, salt, _ = stored.split("$")
        if kind != "scrypt":
            return False
        again = hash_password(password, base64.b64decode(salt), int(n), int(r), int(p))
    except (ValueError, TypeError):
        return False
    return hmac.compare_digest(again.encode(), stored.encode())


def check_name(name: str) -> str:
    if not isinstance(name, str) or not NAME.match(name):
        raise StudioError("an account name is 1-32 characters: a lower-case letter first, then lower-case letters, "
                          "digits, '.', '_' or '-'")
    if name == LOCAL_USER:
        raise StudioError(f"{name!r} is the machine user's own name in the studio; choose another")
    return name


def check_password(password: str) -> str:
    if not isinstance(password, str) or not MIN_PASSWORD <= len(password) <= MAX_PASSWORD:
        raise StudioError(f"a password has {MIN_PASSWORD} to {MAX_PASSWORD} characters")
    if password.strip() != password or "\n" in password:
        raise StudioError("a password cannot begin or end with spaces or hold a line break")
    return password


class Accounts:
    """The accounts file of a STUDIO_HOME (``home``: default the current one)."""

    def __init__(self, home: Path | None = None, actor: str = LOCAL_USER):
        self.home = home or studio_home()
        self.path = self.home / "users.json"
        self.actor = actor  # who is making changes, for the audit log
        self._failures: dict[str, list[float]] = {}
        self._guard = threading.Lock()
        self._dummy = ""  # checked for unknown names, so they take as long as a real one (made on first use)

    # --- the file -------------------------------------------------------------------------------
    def _read(self) -> dict:
        if not self.path.is_file():
            return {}
        try:
            data = json.loads(self.path.read_text())
        except (OSError, ValueError) as exc:
            raise StudioError("the accounts file (users.json in the studio home) cannot be read; restore it "
                              "from a backup or remove it to start without accounts") from exc
        return data.get("users", {})

    def _write(self, users: dict) -> None:
        tmp = self.path.with_name(f".users.{os.getpid()}.{threading.get_ident()}.tmp")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as fh:
            json.dump({"version": 1, "users": users}, fh, indent=1)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, self.path)
        private_file(self.path)

    # --- what commands do -----------------------------------------------------------------------
    def exist(self) -> bool:
        return bool(self._read())

    def list(self) -> list[Account]:
        return [Account(name, bool(u.get("admin")), u.get("created", ""))
                for name, u in sorted(self._read().items())]

    def get(self, name: str) -> Account | None:
        return next((a for a in self.list() if a.name == name), None)

    def is_admin(self, name: str) -> bool:
        """Admins manage accounts, publish collections and see every job; the machine's own user at the
        command line (``local``) owns the studio home and is one."""
        if name == LOCAL_USER:
            return True
        account = self.get(name)
        return bool(account and account.admin)

    def add(self, name: str, password: str, admin: bool = False) -> Account:
        check_name(name)
        check_password(password)
        with home_lock("accounts"):
            users = self._read()
            if name in users:
                raise StudioError(f"account {name!r} exists; change its password with `studio users passwd {name}`")
            if not users and not admin:
                raise StudioError("the first account must be an admin (it manages the others): add --admin")
            created = datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds")
            users[name] = {"hash": hash_password(password), "admin": admin, "created": created}
            self._write(users)
        audit.record(self.actor, "users.add", name, home=self.home, admin=admin)
        return Account(name, admin, created)

    def passwd(self, name: str, password: str) -> None:
        check_password(password)
        with home_lock("accounts"):
            users = self._read()
            if name not in users:
                raise StudioError(f"no account {name!r}; see `studio users list`")
            users[name]["hash"] = hash_password(password)
            self._write(users)
        audit.record(self.actor, "users.passwd", name, home=self.home)

    def remove(self, name: str) -> None:
        with home_lock("accounts"):
            users = self._read()
            if name not in users:
                raise StudioError(f"no account {name!r}; see `studio users list`")
            admins = [n for n, u in users.items() if u.get("admin")]
            if admins == [name] and len(users) > 1:
                raise StudioError(f"{name!r} is the only admin; make another admin first, or remove the others")
            del users[name]
            self._write(users)
        audit.record(self.actor, "users.rm", name, home=self.home)

    def check(self, name: str, password: str) -> bool:
        """Whether ``password`` is ``name``'s (Gradio's auth function). After :data:`MAX_FAILURES` wrong
        passwords for a name within :data:`FAILURE_WINDOW` seconds, every try fails until the window
        has passed (a guessing script gets a handful of tries per five minutes, not thousands)."""
        if not isinstance(name, str) or not isinstance(password, str) or len(password) > MAX_PASSWORD:
            return False
        now = time.monotonic()
        with self._guard:
            recent = [t for t in self._failures.get(name, []) if now - t < FAILURE_WINDOW]
            self._failures[name] = recent
            if len(recent) >= MAX_FAILURES:
                audit.record(name if name in self._read() else "?", "login.throttled", home=self.home)
                return False
        user = self._read().get(name) if NAME.match(name) else None
        if user is None and not self._dummy:
            self._dummy = hash_password(secrets.token_hex(8))
        ok = verify_password(password, user["hash"] if user else self._dummy) and user is not None
        if not ok:
            with self._guard:
                self._failures.setdefault(name, []).append(now)
        # an unknown name is logged as "?": a password typed into the name field must not land in the log
        audit.record(name if user is not None else "?", "login" if ok else "login.failed", home=self.home)
        return ok
