"""Job controls shared by the tabs that train in the background (Generate, Fine-tune).

:func:`job_controls` lays out the job picker with Cancel, Resume and a refresh button into a tab's
``ui`` dict; :func:`wire_job_controls` wires Cancel and Resume to :func:`cancel_job` and
:func:`resume_job`, handlers over ``{name: value}`` dicts (see :mod:`studio.ui.wiring`). The tab
wires the refresh button itself (it refreshes more than the list).
"""

from __future__ import annotations

from functools import partial
from pathlib import Path

import gradio as gr

from studio.errors import StudioError
from studio.jobs import read_status
from studio.ui.guard import fail
from studio.ui.wiring import Values, on


def jobs():
    from studio.jobs import Jobs

    return Jobs()


def job_choices(kind: str) -> list[tuple[str, str]]:
    """(label, id) of this kind's jobs, newest first, with state, run folder and step."""
    out = []
    for j in jobs().list():
        if j.kind != kind:
            continue
        step = read_status(j.run_dir).get("step", 0)
        out.append((f"{j.id} · {j.state} · {Path(j.run_dir).name} · step {step}", j.id))
    return out


def run_dir_of(job_id) -> Path | None:
    if not job_id:
        return None
    try:
        return Path(jobs().get(job_id).run_dir)
    except StudioError:
        return None


# --- handlers ------------------------------------------------------------------------------------------
def cancel_job(v: Values) -> Values:
    """Cancel (SIGTERM: the loop checkpoints, then stops) the picked job."""
    if not v["job"]:
        raise gr.Error("Pick a job first.")
    try:
        jobs().cancel(v["job"])
    except StudioError as exc:
        raise fail(exc) from None
    gr.Info("Cancel sent: the run stops after its current step and saves a checkpoint.")
    return {}


def resume_job(v: Values, *, kind: str) -> Values:
    """Resume the picked job from its checkpoint; the picker shows it again, queued or running."""
    if not v["job"]:
        raise gr.Error("Pick a job first.")
    try:
        jobs().resume(v["job"])
    except StudioError as exc:
        raise fail(exc) from None
    return {"job": gr.update(choices=job_choices(kind), value=v["job"])}


# --- layout and wiring ------------------------------------------------------------------------------------
def job_controls(ui: dict, kind: str, prefix: str, refresh_label: str = "Refresh") -> None:
    """The job picker (``ui["job"]``) with ``cancel``, ``resume`` and ``refresh`` buttons."""
    ui["job"] = gr.Dropdown(job_choices(kind), label="Job", elem_id=f"{prefix}-job", allow_custom_value=True)
    with gr.Row():
        ui["cancel"] = gr.Button("Cancel", elem_id=f"{prefix}-cancel")
        ui["resume"] = gr.Button("Resume", elem_id=f"{prefix}-resume")
        ui["refresh"] = gr.Button(refresh_label)


def wire_job_controls(ui: dict, kind: str) -> None:
    """Cancel and Resume, served as ``/{kind}_cancel`` and ``/{kind}_resume``."""
    on(ui["cancel"].click, cancel_job, ui, ["job"], [], api_name=f"{kind}_cancel")
    on(ui["resume"].click, partial(resume_job, kind=kind), ui, ["job"], ["job"], api_name=f"{kind}_resume")
