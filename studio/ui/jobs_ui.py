"""Job controls shared by the tabs that train in the background (Generate, Fine-tune)."""

from __future__ import annotations

from pathlib import Path

import gradio as gr

from studio.errors import StudioError
from studio.jobs import read_status
from studio.ui.guard import fail


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


def job_controls(kind: str, prefix: str, refresh_label: str = "Refresh") -> tuple[gr.Dropdown, gr.Button]:
    """The job picker with Cancel (SIGTERM: the loop checkpoints, then stops) and Resume (from that
    checkpoint) wired; returns (the picker, the refresh button) for the tab to wire."""
    job = gr.Dropdown(job_choices(kind), label="Job", elem_id=f"{prefix}-job", allow_custom_value=True)
    with gr.Row():
        cancel = gr.Button("Cancel", elem_id=f"{prefix}-cancel")
        resume = gr.Button("Resume", elem_id=f"{prefix}-resume")
        refresh = gr.Button(refresh_label)

    def do_cancel(job_id):
        if not job_id:
            raise gr.Error("Pick a job first.")
        try:
            jobs().cancel(job_id)
        except StudioError as exc:
            raise fail(exc) from None
        gr.Info("Cancel sent: the run stops after its current step and saves a checkpoint.")

    def do_resume(job_id):
        if not job_id:
            raise gr.Error("Pick a job first.")
        try:
            jobs().resume(job_id)
        except StudioError as exc:
            raise fail(exc) from None
        return gr.update(choices=job_choices(kind), value=job_id)

    cancel.click(do_cancel, job, None, api_name=f"{kind}_cancel")
    resume.click(do_resume, job, job, api_name=f"{kind}_resume")
    return job, refresh
