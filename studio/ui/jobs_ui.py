"""Job controls shared by the tabs that train in the background (Generate, Fine-tune).

:func:`job_controls` lays out the job picker with Cancel, Resume and a refresh button into a tab's
``ui`` dict; :func:`wire_job_controls` wires Cancel and Resume to :func:`cancel_job` and
:func:`resume_job`, handlers over ``{name: value}`` dicts (see :mod:`studio.ui.wiring`). The tab
wires the refresh button itself (it refreshes more than the list).
"""

from __future__ import annotations

import shutil
import threading
import time
from collections import OrderedDict
from functools import partial
from pathlib import Path

import gradio as gr

from studio.env import LOCAL_USER
from studio.errors import StudioError
from studio.jobs import read_status
from studio.ui.guard import fail
from studio.ui.wiring import Values, on


def jobs(user: str = LOCAL_USER):
    """The job registry as ``user`` sees it (their own jobs; an admin's: everyone's)."""
    from studio.jobs import Jobs

    return Jobs(user=user)


def job_choices(kind: str, user: str = LOCAL_USER) -> list[tuple[str, str]]:
    """(label, id) of this kind's jobs, newest first, with state, run folder and (once it stopped) the step it
    reached. A running job's label leaves the step out: the progress line shows it live, and a label that
    changed every tick would make the picker redraw under the user's pointer."""
    out = []
    for j in jobs(user).list():
        if j.kind != kind:
            continue
        step = "" if j.state == "running" else f" · step {read_status(j.run_dir).get('step', 0)}"
        whose = f" · {j.owner}" if j.owner != user else ""  # an admin sees others' jobs, named
        out.append((f"{j.id} · {j.state} · {Path(j.run_dir).name}{step}{whose}", j.id))
    return out


def run_dir_of(job_id, user: str = LOCAL_USER) -> Path | None:
    """The run folder of one of ``user``'s jobs (None for no job, or a job that is not theirs)."""
    if not job_id:
        return None
    try:
        return Path(jobs(user).get(job_id).run_dir)
    except StudioError:
        return None


def clock(seconds: float) -> str:
    """``1:05`` or ``1:02:05``."""
    s = int(round(max(0.0, seconds)))
    h, m = divmod(s // 60, 60)
    return f"{h}:{m:02d}:{s % 60:02d}" if h else f"{m}:{s % 60:02d}"


def progress_line(job, status: dict, now: float | None = None, user: str = LOCAL_USER) -> str:
    """Where the job is: its place in the queue and what it waits behind; elapsed time and an ETA (from
    the pace so far) while it runs; how long it took once it ended."""
    now = time.time() if now is None else now
    if job.state == "queued":
        place, ahead = jobs(user).queue_position(job.id)
        behind = f"behind job {ahead.id} ({Path(ahead.run_dir).name})" if ahead else "for a free slot"
        return f"Queued {behind}; starts when it ends (position {place} in the queue)."
    if job.state == "running" and job.started:
        elapsed = now - job.started
        step, total = status.get("step") or 0, status.get("steps") or status.get("max_steps")
        eta = (f" · about {clock(elapsed / step * (total - step))} left (ETA "
               f"{time.strftime('%H:%M:%S', time.localtime(now + elapsed / step * (total - step)))})"
               if step and total and total > step else " · ETA after the first steps")
        return f"Running for {clock(elapsed)}{eta}."
    if job.started and job.ended:
        return f"{job.state.capitalize()} after {clock(job.ended - job.started)}."
    return f"{job.state.capitalize()}; it never started." if job.state == "cancelled" else ""


def job_view(job_id, log: bool = True, user: str = LOCAL_USER) -> Values:
    """The picked job's progress line and (``log``) its log; empty when none is picked or it is unknown."""
    if not job_id:
        return {"progress": "", **({"log": ""} if log else {})}
    try:
        registry = jobs(user)
        job = registry.get(job_id)
        shown = {"log": registry.log(job.id)} if log else {}
        return {"progress": progress_line(job, read_status(job.run_dir), user=user), **shown}
    except StudioError:
        return {"progress": "", **({"log": ""} if log else {})}


class Picks:
    """Which job each page (Gradio session) last picked, for the timer: a tick the page sent just before
    Start (or a pick) is answered after it, and would otherwise draw the previous job's progress over the
    new job's and put the previous job back in the picker. A tick for a job its page no longer shows is
    dropped. Holds the ``MAX`` most recent pages."""

    MAX = 4096

    def __init__(self):
        self._picked: OrderedDict[str, str] = OrderedDict()
        self._lock = threading.Lock()

    def pick(self, session: str, job: str | None) -> None:
        if not session:
            return
        with self._lock:
            self._picked[session] = job or ""
            self._picked.move_to_end(session)
            while len(self._picked) > self.MAX:
                self._picked.popitem(last=False)

    def stale(self, session: str, job: str | None) -> bool:
        """Whether a tick that shows ``job`` comes from before its page picked another one."""
        with self._lock:
            return session in self._picked and self._picked[session] != (job or "")


PICKS = Picks()


# --- handlers ------------------------------------------------------------------------------------------
def submit_job(cfg, kind: str, folder: str, name: str, command: list[str], user: str,
               session: str = "") -> Values:
    """Write a new run folder (``runs/{folder}/{name}-...``) with the resolved ``cfg`` and submit ``command``
    on it as ``user``'s ``kind`` job; the picker shows it. A refused job (the account's limit) leaves no folder."""
    from studio.config import save_config
    from studio.jobs import job_argv
    from studio.paths import new_run_dir

    rd = new_run_dir(folder, name)
    rd.mkdir(parents=True)
    save_config(cfg, rd / "config.yaml")
    try:
        j = jobs(user).submit(kind, job_argv(command, rd), rd)
    except StudioError as exc:
        shutil.rmtree(rd, ignore_errors=True)
        raise fail(exc) from None
    PICKS.pick(session, j.id)
    return {"job": gr.update(choices=job_choices(kind, user), value=j.id)}


def cancel_job(v: Values, *, user: str = LOCAL_USER) -> Values:
    """Cancel the picked job: a queued one leaves the queue; a running one gets SIGTERM (the loop
    checkpoints, then stops). The toast says which."""
    if not v["job"]:
        raise gr.Error("Pick a job first.")
    try:
        job = jobs(user).cancel(v["job"])
    except StudioError as exc:
        raise fail(exc) from None
    if job.state == "cancelled" and not job.started:
        gr.Info(f"Job {job.id} left the queue; it had not started, so there is nothing to resume.")
    else:
        gr.Info(f"Cancel sent to job {job.id}: it stops after its current step and saves a checkpoint.")
    return {}


def _label(choices, job_id: str) -> str | None:
    return next((c[0] for c in choices or () if c[1] == job_id), None)


def watch_job(v: Values, *, kind: str, user: str = LOCAL_USER) -> Values:
    """The timer's look at the jobs: the picked job's progress line and log, and the picker's labels
    when a job's state or step changed (``labels``: what the page shows now, kept in a State)."""
    out = job_view(v["job"], log=bool(v.get("log_open")), user=user)  # the log is sent only while its panel is open
    now = job_choices(kind, user)
    if now != v["labels"]:  # the value is set again only when the picked job's own label changed, so the
        # input shows it; a new job alone (Start's, or another page's) changes only the list
        relabel = v["job"] and _label(now, v["job"]) != _label(v["labels"], v["job"])
        out.update(job=gr.update(choices=now, **({"value": v["job"]} if relabel else {})), labels=now)
    return out


WATCHED = ["job", "labels", "progress", "log"]  # what the watch handler may change


def watched(show, kind: str, tick: bool = False):
    """``show`` (a tab's renderer of the picked job) plus :func:`watch_job`, as one handler: the tab's 2 s
    timer then costs one request per tick, not two. A pick is remembered for its page (:class:`Picks`);
    a ``tick`` for a job its page no longer shows changes nothing."""
    def handler(v: Values, user: str = LOCAL_USER, session: str = "") -> Values:
        if not tick:
            PICKS.pick(session, v["job"])
        elif PICKS.stale(session, v["job"]):
            return {}
        return {**show(v, user=user), **watch_job(v, kind=kind, user=user)}

    handler.__name__ = show.__name__  # the endpoint keeps the name it had (show_3, ...)
    return handler


def resume_job(v: Values, *, kind: str, user: str = LOCAL_USER) -> Values:
    """Resume the picked job from its checkpoint; the picker shows it again, queued or running."""
    if not v["job"]:
        raise gr.Error("Pick a job first.")
    try:
        jobs(user).resume(v["job"])
    except StudioError as exc:
        raise fail(exc) from None
    return {"job": gr.update(choices=job_choices(kind, user), value=v["job"])}


# --- layout and wiring ------------------------------------------------------------------------------------
def job_controls(ui: dict, kind: str, prefix: str, refresh_label: str = "Refresh") -> None:
    """The job picker (``ui["job"]``) with ``cancel``, ``resume`` and ``refresh`` buttons."""
    # empty until the page's first timer tick fills in the visitor's own jobs (a page is built once, for everyone)
    ui["job"] = gr.Dropdown([], label="Job", elem_id=f"{prefix}-job", allow_custom_value=True)
    with gr.Row():
        ui["cancel"] = gr.Button("Cancel", elem_id=f"{prefix}-cancel")
        ui["resume"] = gr.Button("Resume", elem_id=f"{prefix}-resume")
        ui["refresh"] = gr.Button(refresh_label)
    ui["labels"] = gr.State([])


def job_log_panel(ui: dict, prefix: str) -> None:
    """The progress line (queue place, elapsed, ETA) and the job's output in a collapsed panel."""
    ui["progress"] = gr.Markdown("", elem_id=f"{prefix}-progress")
    with gr.Accordion("Log", open=False, elem_id=f"{prefix}-log-panel") as ui["log_panel"]:
        ui["log"] = gr.Code("", language=None, label="job output (last 200 lines)", elem_id=f"{prefix}-log",
                            interactive=False, max_lines=20)
    ui["log_open"] = gr.State(False)


def open_log(v: Values, *, user: str = LOCAL_USER) -> Values:
    """Opening the Log panel shows the picked job's output at once; the timer then keeps it current."""
    return {"log_open": True, **job_view(v["job"], user=user)}


def close_log(_v: Values) -> Values:
    return {"log_open": False}


def wire_job_controls(ui: dict, kind: str, show=None, shown: list[str] = (), extra: list[str] = ()) -> None:
    """Cancel, Resume and the Log panel; with ``show`` (the tab's renderer of the picked job, changing
    ``shown``), picking a job and each timer tick run it together with :func:`watch_job` (``extra``: more
    inputs ``show`` reads)."""
    if show is not None:
        inputs = ["job", *extra, "labels", "log_open"]  # shown plus the progress line, the log and the labels
        on(ui["job"].change, watched(show, kind), ui, inputs, [*shown, *WATCHED], api_name=f"{kind}_pick")
        on(ui["timer"].tick, watched(show, kind, tick=True), ui, inputs, [*shown, *WATCHED],
           show_progress="hidden", api_name=f"{kind}_watch")
    on(ui["log_panel"].expand, open_log, ui, ["job"], ["log_open", "progress", "log"], api_visibility="private")
    on(ui["log_panel"].collapse, close_log, ui, [], ["log_open"], api_visibility="private")
    """Cancel and Resume, served as ``/{kind}_cancel`` and ``/{kind}_resume``."""
    on(ui["cancel"].click, cancel_job, ui, ["job"], [], api_name=f"{kind}_cancel")
    on(ui["resume"].click, partial(resume_job, kind=kind), ui, ["job"], ["job"], api_name=f"{kind}_resume")

