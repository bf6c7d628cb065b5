"""Background jobs: each one a subprocess running the same `studio` command a user would type.

The registry is SQLite under STUDIO_HOME (``jobs.sqlite``), so it survives a restart of the
studio. A job's truth is its run folder's ``status.json`` (written by the training loop); the
registry mirrors it whenever jobs are listed (:meth:`Jobs.refresh`). A running job whose process
is gone while its status still says "running" was killed or crashed: it is marked failed.

At most ``max_running`` jobs run at once (``jobs.max_running`` in the studio config, or
``STUDIO_MAX_JOBS``; default 1); the rest wait as
``queued`` and start when a slot frees (a finishing job starts the next one itself).

>>> jobs = Jobs()
>>> job = jobs.submit("generate", ["generate", "train", "run/config.yaml", "--run-dir", "run"], "run")
>>> jobs.cancel(job.id)       # SIGTERM: the loop stops after its step and checkpoints
>>> jobs.resume(job.id)       # continues from the checkpoint, same step counter
"""

from __future__ import annotations

import json
import os
import re
import signal
import sqlite3
import subprocess
import sys
import time
import uuid
from dataclasses import asdict, dataclass
from functools import cached_property
from pathlib import Path

import psutil

from studio import audit
from studio.accounts import Accounts
from studio.env import LOCAL_USER, ensure_column, home_dir, open_db
from studio.errors import StudioError
from studio.limits import current as current_limits

FINAL = ("finished", "cancelled", "failed")


@dataclass
class Job:
    id: str
    kind: str
    run_dir: str
    argv: list[str]
    state: str
    pid: int | None
    created: float
    started: float | None
    ended: float | None
    error: str | None
    pid_started: float | None = None  # the process's start time: a reused PID is not this job's
    owner: str = LOCAL_USER  # the account that started it

    def to_dict(self) -> dict:
        return asdict(self)


def studio_command() -> list[str]:
    exe = Path(sys.executable).with_name("studio")
    return [str(exe)] if exe.is_file() else [sys.executable, "-m", "studio.cli"]


def start_time(pid: int) -> float | None:
    """When process ``pid`` started (seconds since the epoch), or None if there is no such process."""
    try:
        return psutil.Process(pid).create_time()
    except (psutil.NoSuchProcess, psutil.AccessDenied, psutil.ZombieProcess):
        return None


def job_process(job: Job) -> psutil.Process | None:
    """The job's process, if ``job.pid`` still names it: alive, not a zombie, and started when the job
    recorded (a PID the system has since given to another program is not the job's)."""
    if not job.pid:
        return None
    try:
        proc = psutil.Process(job.pid)
        if job.pid_started is not None and abs(proc.create_time() - job.pid_started) > 0.05:
            return None
        return None if proc.status() == psutil.STATUS_ZOMBIE else proc
    except (psutil.NoSuchProcess, psutil.AccessDenied, psutil.ZombieProcess):
        return None


def _alive(job: Job) -> bool:
    return job_process(job) is not None


# A job is marked running before its process exists (so two pumps never start it twice); until the
# process's PID is recorded, a refresh from another thread or page must not take it for a dead job.
SPAWN_GRACE_S = 60.0

_READY: set[Path] = set()  # registries whose table this process has created or brought up to date


class Jobs:
    """The job registry as seen by ``user``: their own jobs (an admin sees and controls everyone's); another
    user's job id reads as no job. The queue and the running-job slots are shared by everyone."""

    def __init__(self, db: Path | None = None, max_running: int | None = None, user: str = LOCAL_USER):
        self.db = Path(db) if db else home_dir() / "jobs.sqlite"
        self.max_running = max_running or _configured_limit()
        self.user = user
        if self.db in _READY and self.db.exists():  # every open page's timer builds one several times a tick
            return
        with self._conn() as c:
            c.execute("""CREATE TABLE IF NOT EXISTS jobs (id TEXT PRIMARY KEY, kind TEXT, run_dir TEXT, argv TEXT,
                         state TEXT, pid INTEGER, created REAL, started REAL, ended REAL, error TEXT,
                         pid_started REAL)""")
            ensure_column(c, "jobs", "pid_started", "REAL")  # a registry from before PIDs carried their start time
            # a registry from before workspaces: its jobs are the local user's
            ensure_column(c, "jobs", "owner", f"TEXT NOT NULL DEFAULT '{LOCAL_USER}'")
        _READY.add(self.db)

    @cached_property
    def admin(self) -> bool:
        """Whether this user sees and controls every job (read from the accounts when first asked)."""
        return Accounts().is_admin(self.user)

    def _conn(self) -> sqlite3.Connection:
        return open_db(self.db, isolation_level=None)

    def _row(self, r) -> Job:
        return Job(r[0], r[1], r[2], json.loads(r[3]), r[4], r[5], r[6], r[7], r[8], r[9], r[10], r[11])

    def _mine(self) -> tuple[str, list]:
        """The SQL condition (and its values) for the jobs this user sees."""
        return ("1", []) if self.admin else ("owner = ?", [self.user])

    def _set(self, job_id: str, **fields) -> None:
        cols = ", ".join(f"{k} = ?" for k in fields)
        with self._conn() as c:
            c.execute(f"UPDATE jobs SET {cols} WHERE id = ?", [*fields.values(), job_id])

    # --- registry ------------------------------------------------------------------------------------
    def register(self, kind: str, argv: list[str], run_dir: str | Path, state: str = "queued",
                 pid: int | None = None) -> Job:
        job_id = uuid.uuid4().hex[:8]
        now = time.time()
        most = current_limits().jobs_per_user
        with self._conn() as c:
            c.execute("BEGIN IMMEDIATE")  # count and insert as one step: two submits cannot both squeeze in
            active = c.execute("SELECT COUNT(*) FROM jobs WHERE owner = ? AND state IN ('queued', 'running')",
                               (self.user,)).fetchone()[0]
            if active >= most and self.user != LOCAL_USER:  # the studio's owner at the command line is not rationed
                c.execute("ROLLBACK")
                raise StudioError(f"you have {active} jobs queued or running; the limit is {most} per account "
                                  "(limits.jobs_per_user): wait for one to finish or cancel one")
            c.execute("INSERT INTO jobs (id, kind, run_dir, argv, state, pid, created, started, ended, error, "
                      "pid_started, owner) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                      (job_id, kind, str(run_dir), json.dumps(argv), state, pid, now,
                       now if state == "running" else None, None, None, start_time(pid) if pid else None,
                       self.user))
            c.execute("COMMIT")
        return self.get(job_id)

    def get(self, job_id: str) -> Job:
        """A job by its id or a unique prefix of it (hex digits only)."""
        if not isinstance(job_id, str) or not re.fullmatch(r"[0-9a-f]{1,32}", job_id):
            raise StudioError(f"{str(job_id)[:40]!r} is not a job id; `studio jobs list` shows them")
        mine, values = self._mine()
        with self._conn() as c:
            rows = c.execute(f"SELECT * FROM jobs WHERE (id = ? OR id LIKE ?) AND {mine}",
                             (job_id, f"{job_id}%", *values)).fetchall()
        if not rows:
            raise StudioError(f"no job {job_id!r}; `studio jobs list` shows them")
        if len(rows) > 1:
            raise StudioError(f"{job_id!r} matches {len(rows)} jobs; give more of the id")
        return self._row(rows[0])

    def list(self) -> list[Job]:
        self.refresh()
        mine, values = self._mine()
        with self._conn() as c:
            return [self._row(r) for r in c.execute(f"SELECT * FROM jobs WHERE {mine} ORDER BY created DESC",
                                                    values).fetchall()]

    def finish(self, job_id: str, state: str, error: str | None = None) -> None:
        self._set(job_id, state=state, ended=time.time(), error=error, pid=None, pid_started=None)

    def refresh(self) -> None:
        """Mirror each running job's status.json; mark dead ones failed; start queued jobs."""
        with self._conn() as c:
            running = [self._row(r) for r in c.execute("SELECT * FROM jobs WHERE state = 'running'").fetchall()]
        for job in running:
            if _alive(job):
                continue
            if job.pid is None and time.time() - (job.started or 0) < SPAWN_GRACE_S:
                continue  # pump() has marked it running and is starting its process right now
            status = read_status(job.run_dir)
            state = status.get("state")
            if state in FINAL:
                self.finish(job.id, state, status.get("error"))
            else:
                log = Path(job.run_dir) / "job.log"
                tail = log.read_text(errors="replace").strip().splitlines()[-1:] if log.is_file() else []
                self.finish(job.id, "failed", "the process ended without finishing (killed or crashed)"
                            + (f": {tail[0]}" if tail else ""))
        self.pump()

    def pump(self) -> None:
        """Start queued jobs, oldest first, while fewer than ``max_running`` run."""
        while True:
            with self._conn() as c:
                c.execute("BEGIN IMMEDIATE")
                n = c.execute("SELECT COUNT(*) FROM jobs WHERE state = 'running'").fetchone()[0]
                row = c.execute("SELECT * FROM jobs WHERE state = 'queued' ORDER BY created LIMIT 1").fetchone()
                if n >= self.max_running or row is None:
                    c.execute("COMMIT")
                    return
                job = self._row(row)
                c.execute("UPDATE jobs SET state = 'running', started = ? WHERE id = ?", (time.time(), job.id))
                c.execute("COMMIT")
            self._spawn(job)

    def _spawn(self, job: Job) -> None:
        Path(job.run_dir).mkdir(parents=True, exist_ok=True)
        log = open(Path(job.run_dir) / "job.log", "ab")
        env = {**os.environ, "STUDIO_JOB_ID": job.id}
        proc = subprocess.Popen([*studio_command(), *job.argv], stdout=log, stderr=subprocess.STDOUT,
                                stdin=subprocess.DEVNULL, env=env, start_new_session=True)
        log.close()
        self._set(job.id, pid=proc.pid, pid_started=start_time(proc.pid))

    # --- user actions --------------------------------------------------------------------------------
    def submit(self, kind: str, argv: list[str], run_dir: str | Path) -> Job:
        job = self.register(kind, argv, run_dir)
        audit.record(self.user, "job.start", job.id, kind=kind, run=Path(run_dir).name)
        self.pump()
        return self.get(job.id)

    def cancel(self, job_id: str) -> Job:
        job = self.get(job_id)
        if job.state not in FINAL:
            audit.record(self.user, "job.cancel", job.id, owner=job.owner)
        if job.state == "queued":
            self.finish(job.id, "cancelled")
        elif job.state == "running" and job.pid:
            proc = job_process(job)
            if proc is None:  # gone, or its PID now names another program: signal nothing
                self.refresh()
            else:
                try:
                    proc.send_signal(signal.SIGTERM)  # the loop checkpoints and exits; refresh() records it
                except psutil.NoSuchProcess:
                    pass
        elif job.state in FINAL:
            raise StudioError(f"job {job.id} already {job.state}")
        return self.get(job.id)

    def wait(self, job_id: str, timeout: float = 300, states: tuple[str, ...] = FINAL) -> Job:
        end = time.time() + timeout
        while time.time() < end:
            self.refresh()
            job = self.get(job_id)
            if job.state in states:
                return job
            time.sleep(0.3)
        raise StudioError(f"job {job_id} still {self.get(job_id).state} after {timeout:.0f} s")

    def resume(self, job_id: str) -> Job:
        job = self.get(job_id)
        if job.state not in ("cancelled", "failed"):
            raise StudioError(f"job {job.id} is {job.state}; only a cancelled or failed job can be resumed")
        rd = Path(job.run_dir)
        if not (rd / "checkpoints" / "last.ckpt").is_file() and not any((rd / "checkpoints").glob("checkpoint-*")):
            raise StudioError(f"job {job.id} has no checkpoint to resume from; start it again instead")
        argv = [a for a in job.argv if a != "--resume"] + ["--resume"]
        audit.record(self.user, "job.resume", job.id, owner=job.owner)
        with self._conn() as c:
            c.execute("UPDATE jobs SET state = 'queued', argv = ?, error = NULL, ended = NULL WHERE id = ?",
                      (json.dumps(argv), job.id))
        self.pump()
        return self.get(job.id)

    def queue_position(self, job_id: str) -> tuple[int, Job | None]:
        """(place in the queue from 1, the running job it waits behind) for a queued job; (0, None) otherwise.

        Queued jobs start oldest first (:meth:`pump`), so a job's place is one more than the queued jobs
        created before it; the job it waits behind is the running one that started last (the slot that
        frees first is unknowable, the newest running job is what the user just saw start); another account's
        running job is not named to a user who is not an admin."""
        job = self.get(job_id)
        if job.state != "queued":
            return 0, None
        with self._conn() as c:
            ahead = c.execute("SELECT COUNT(*) FROM jobs WHERE state = 'queued' AND created < ?",
                              (job.created,)).fetchone()[0]
            row = c.execute("SELECT * FROM jobs WHERE state = 'running' ORDER BY started DESC LIMIT 1").fetchone()
        running = self._row(row) if row else None
        if running and not self.admin and running.owner != self.user:  # another account's: not theirs to see
            running = None
        return ahead + 1, running

    def log(self, job_id: str, n: int = 200, max_chars: int = 20_000) -> str:
        """The last ``n`` lines of the job's process output (``job.log``: the loop's and the Trainer's
        lines), at most ``max_chars`` characters."""
        path = Path(self.get(job_id).run_dir) / "job.log"
        if not path.is_file():
            return ""
        with open(path, "rb") as fh:
            fh.seek(max(0, path.stat().st_size - 4 * max_chars))
            text = fh.read().decode("utf-8", errors="replace")
        # progress bars redraw one line with carriage returns: keep what the line says last
        lines = []
        for line in text.replace("\r\n", "\n").rstrip("\n").split("\n"):
            redraws = [part for part in line.split("\r") if part.strip()]
            lines.append(redraws[-1] if redraws else "")
        return "\n".join(lines[-n:])[-max_chars:]

    def tail(self, job_id: str, n: int = 10) -> list[str]:
        job = self.get(job_id)
        events = Path(job.run_dir) / "events.jsonl"
        lines = events.read_text().splitlines() if events.is_file() else []
        return lines[-n:]

    def run_here(self, kind: str, argv: list[str], run_dir: str | Path, work) -> dict:
        """Run ``work()`` in this process as a job the registry shows (or as the job that spawned this
        process, ``STUDIO_JOB_ID``): finished with the run's state, or failed with the error, after
        which a queued job may start in the freed slot. Returns ``{run_dir, status, job_id, step}``."""
        job_id = os.environ.get("STUDIO_JOB_ID") or self.register(kind, argv, run_dir, state="running",
                                                                  pid=os.getpid()).id
        try:
            status = work()
        except BaseException as exc:
            self.finish(job_id, "failed", f"{type(exc).__name__}: {exc}")
            self.pump()
            raise
        self.finish(job_id, status["state"], status.get("error"))
        self.pump()  # a freed slot starts the next queued job
        return {"run_dir": str(run_dir), "status": status["state"], "job_id": job_id, "step": status.get("step")}


def job_argv(command: list[str], run_dir: Path, resume: bool = False) -> list[str]:
    """The studio command that runs (or resumes) the job whose resolved config is in ``run_dir``."""
    return [*command, str(run_dir / "config.yaml"), "--run-dir", str(run_dir), *(["--resume"] if resume else [])]


def _configured_limit() -> int:
    """STUDIO_MAX_JOBS, else ``jobs.max_running`` of the studio config (STUDIO_CONFIG), else 1."""
    if os.environ.get("STUDIO_MAX_JOBS"):
        return max(1, int(os.environ["STUDIO_MAX_JOBS"]))
    from studio.config import StudioConfig, load_config

    return max(1, load_config(StudioConfig, os.environ.get("STUDIO_CONFIG")).jobs.max_running)


# --- run folders: what a job's training loop writes and the CLI and tabs read --------------------------
def read_json(path: str | Path, default=None):
    """A JSON file, or ``default`` when it is missing or half-written."""
    try:
        return json.loads(Path(path).read_text())
    except (OSError, ValueError):
        return default


def read_jsonl(path: str | Path) -> list[dict]:
    """The rows of a JSONL log; a line cut by a kill is skipped."""
    path = Path(path)
    rows = []
    for line in path.read_text().splitlines() if path.is_file() else []:
        try:
            rows.append(json.loads(line))
        except ValueError:
            continue
    return rows


def read_status(run_dir: str | Path) -> dict:
    return read_json(Path(run_dir) / "status.json", {})


def write_status(run_dir: str | Path, **fields) -> None:
    """Merge ``fields`` into ``status.json``, atomically (a reader never sees half a file)."""
    run_dir = Path(run_dir)
    tmp = run_dir / "status.json.tmp"
    tmp.write_text(json.dumps({**read_status(run_dir), **fields, "updated": time.time()}))
    os.replace(tmp, run_dir / "status.json")
