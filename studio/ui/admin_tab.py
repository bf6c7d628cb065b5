"""The Admin tab of a shared studio: accounts, every job, every collection's owner, who is generating now,
and the audit log. Only admins see it (the tab is shown to them at page load) and every handler checks
again on the server, so the endpoints refuse anyone else; in a studio without accounts the local user is
the admin. Accounts are managed with ``studio users`` at the server's command line (passwords never travel
through the page)."""

from __future__ import annotations

import datetime
from functools import partial

import gradio as gr

from studio import audit
from studio.accounts import Accounts
from studio.env import LOCAL_USER
from studio.errors import StudioError
from studio.jobs import Jobs, read_status
from studio.turns import Turns
from studio.ui.docs_tab import DocsService
from studio.ui.guard import as_int, fail, text
from studio.ui.wiring import Values, on, user_of

SHOWN = ["accounts", "jobs", "collections", "busy", "log"]


def _check(user: str) -> None:
    if not Accounts().is_admin(user):
        raise gr.Error("The admin panel is for admins.")


def _when(t: float | None) -> str:
    return datetime.datetime.fromtimestamp(t).strftime("%Y-%m-%d %H:%M") if t else ""


def overview(v: Values, *, docs: DocsService, turns: Turns, user: str = LOCAL_USER) -> Values:
    """Accounts, every job, every collection with its owner, generations in progress, the audit log's tail."""
    _check(user)
    limit = as_int(v.get("limit") or 200, "entries", 1)
    try:
        entries = audit.entries(min(limit, audit.MAX_READ), text(v.get("actor"), "the account") or None,
                                text(v.get("action"), "the action") or None)
        collections = docs.ingestor(user=user).every_collection()
    except StudioError as exc:
        raise fail(exc) from None
    store = docs.ingestor().store
    return {
        "accounts": [[a.name, "admin" if a.admin else "member", a.created] for a in Accounts().list()],
        "jobs": [[j.id, j.owner, j.kind, j.state, read_status(j.run_dir).get("step", ""), _when(j.created)]
                 for j in Jobs(user=user).list()],
        "collections": [[c.name, c.owner, "shared" if c.shared else "private", store.count(c.name)]
                        for c in collections],
        "busy": ", ".join(f"{u}: {n}" for u, n in sorted(turns.active().items())) or "nobody is generating now",
        "log": [[e.get("time", ""), e.get("actor", ""), e.get("action", ""), e.get("target", ""),
                 " ".join(f"{k}={val}" for k, val in e.items() if k not in ("time", "actor", "action", "target"))]
                for e in reversed(entries)],
    }


def build_admin_tab(docs: DocsService, turns: Turns, tab):
    """Widgets and events of the Admin tab; returns (fn, outputs) for page load: the tab shown to admins only."""
    ui: dict = {}
    gr.Markdown("Accounts are added and removed with `studio users` on the server; this panel reads.")
    ui["accounts"] = gr.Dataframe(headers=["account", "role", "created"], interactive=False, label="Accounts",
                                  elem_id="admin-accounts")
    ui["busy"] = gr.Markdown(elem_id="admin-busy")
    ui["jobs"] = gr.Dataframe(headers=["job", "owner", "kind", "state", "step", "created"], interactive=False,
                              label="Every job", elem_id="admin-jobs")
    ui["collections"] = gr.Dataframe(headers=["collection", "owner", "sharing", "chunks"], interactive=False,
                                     label="Every collection", elem_id="admin-collections")
    with gr.Row():
        ui["actor"] = gr.Textbox(label="Audit: account", scale=1)
        ui["action"] = gr.Textbox(label="action starts with", placeholder="collection.", scale=1)
        ui["limit"] = gr.Number(200, precision=0, label="entries", scale=1)
        ui["refresh"] = gr.Button("Refresh", scale=1, elem_id="admin-refresh")
    ui["log"] = gr.Dataframe(headers=["time", "account", "action", "target", "details"], interactive=False,
                             label="Audit log, newest first", elem_id="admin-log", wrap=True)
    show = partial(overview, docs=docs, turns=turns)
    on(ui["refresh"].click, show, ui, ["actor", "action", "limit"], SHOWN, api_name="admin_overview")
    on(tab.select, show, ui, ["actor", "action", "limit"], SHOWN, api_name="admin_lists", show_progress="hidden")

    def page_load(request: gr.Request):
        return gr.update(visible=Accounts().is_admin(user_of(request)))

    return page_load, tab
