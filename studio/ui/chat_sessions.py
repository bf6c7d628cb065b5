"""Saved chats in the Chat tab: the Sessions panel (open, rename, delete, export) and how a saved chat is
shown again. Handlers take the :class:`Sessions` store and the user, like the Chat tab's (see
:mod:`studio.ui.wiring`); every call is checked against the session's owner in the store.
"""

from __future__ import annotations

import json
import tempfile
from functools import partial
from pathlib import Path

import gradio as gr

from studio.env import LOCAL_USER
from studio.errors import StudioError
from studio.markup import neutralize
from studio.paths import uploads_dir
from studio.rag.sessions import Sessions
from studio.ui.chat_rag import NO_COLLECTION, rendered_answer, saved_result, sources_html
from studio.ui.guard import fail, text
from studio.ui.wiring import Values, on

OPENED = ["chatbot", "history", "session_id", "title", "collection", "stats", "sources", "cites", "page_pick"]


def session_choices(sessions: Sessions, user: str = LOCAL_USER) -> list[tuple[str, str]]:
    return [(s.title + (f" [{s.collection}]" if s.collection else ""), s.id) for s in sessions.list(user)]


def page_choices(cites: dict | None) -> dict:
    """The page viewer's list: every citation that has a page, as "[n] file · page p"."""
    found = [(f"[{c['n']}] {c['source']} · page {c['page']}", str(c["n"]))
             for c in (cites or {}).get("citations", []) if c.get("page")]
    return gr.update(choices=found, value=None)


def rendered_messages(messages: list[dict]) -> list[dict]:
    """A saved session's messages as the chat shows them: grounded answers with their links and marks."""
    return [{"role": m["role"], "content": rendered_answer(m["content"], m["meta"])
             if (m.get("meta") or {}).get("grounded") else neutralize(m["content"])} for m in messages]


def open_session(v: Values, *, sessions: Sessions, user: str = LOCAL_USER) -> Values:
    """A saved chat as it was: grounded answers with their [n] links and marks, the last grounded answer's
    sources panel, sentence check and page list, and the status line of its last answer."""
    sid = v["session_pick"]
    if not sid:
        return {}
    try:
        s = sessions.get(sid, user)
        msgs = sessions.messages(sid, user)
    except StudioError as exc:
        raise fail(exc) from None
    convo = [{"role": m["role"], "content": m["content"]} for m in msgs]
    answers = [m for m in msgs if m["role"] == "assistant"]
    grounded = [m for m in answers if m["meta"].get("grounded")]
    last = grounded[-1] if grounded else None
    cites = {"collection": last["meta"]["collection"], "citations": last["citations"]} if last else None
    return {"chatbot": rendered_messages(msgs), "history": convo, "session_id": sid, "title": s.title,
            "collection": gr.update(value=s.collection or NO_COLLECTION),
            "stats": answers[-1]["meta"].get("stats", "") if answers else "",
            "sources": sources_html(saved_result(last["meta"], last["citations"])) if last else "",
            "cites": cites, "page_pick": page_choices(cites)}


def rename_session(v: Values, *, sessions: Sessions, user: str = LOCAL_USER) -> Values:
    if not v["session_id"]:
        raise gr.Error("Open or start a chat first.")
    try:
        sessions.rename(v["session_id"], text(v["title"], "the title"), user)
    except StudioError as exc:
        raise fail(exc) from None
    return {"session_pick": gr.update(choices=session_choices(sessions, user), value=v["session_id"])}


def delete_session(v: Values, *, sessions: Sessions, user: str = LOCAL_USER) -> Values:
    if v["session_id"]:
        try:
            sessions.delete(v["session_id"], user)
        except StudioError as exc:
            raise fail(exc) from None
    return {"chatbot": [], "history": [], "session_id": None, "stats": "",
            "session_pick": gr.update(choices=session_choices(sessions, user), value=None)}


def export_session(v: Values, *, sessions: Sessions, fmt: str, user: str = LOCAL_USER) -> Values:
    """The open chat as Markdown or JSON, written to a file the page offers for download."""
    sid = v["session_id"]
    if not sid:
        raise gr.Error("Open or start a chat first.")
    try:
        body = (json.dumps(sessions.export_json(sid, user), indent=2) if fmt == "json"
                else sessions.export_markdown(sid, user))
    except StudioError as exc:
        raise fail(exc) from None
    path = Path(tempfile.mkdtemp(prefix="studio-export-", dir=uploads_dir())) / f"chat-{sid}.{fmt}"
    path.write_text(body, encoding="utf-8")
    return {"export_file": gr.update(value=str(path), visible=True)}


def sessions_panel(ui: dict) -> None:
    with gr.Accordion("Sessions", open=False):
        ui["session_pick"] = gr.Dropdown([], label="Saved chats", elem_id="chat-session")
        ui["title"] = gr.Textbox(label="Title", elem_id="chat-session-title")
        with gr.Row():
            ui["rename"] = gr.Button("Rename", size="sm")
            ui["delete"] = gr.Button("Delete", size="sm", variant="stop")
        with gr.Row():
            ui["export_md"] = gr.Button("Export .md", size="sm")
            ui["export_json"] = gr.Button("Export .json", size="sm")
        ui["export_file"] = gr.File(label="Export", visible=False)


def wire_sessions(ui: dict, sessions: Sessions) -> None:
    on(ui["session_pick"].input, partial(open_session, sessions=sessions), ui, ["session_pick"], OPENED,
       api_name="open_session")
    on(ui["rename"].click, partial(rename_session, sessions=sessions), ui, ["session_id", "title"], ["session_pick"],
       api_name="rename_session")
    on(ui["delete"].click, partial(delete_session, sessions=sessions), ui, ["session_id"],
       ["chatbot", "history", "session_id", "session_pick", "stats"], api_name="delete_session")
    for fmt in ("md", "json"):
        on(ui[f"export_{fmt}"].click, partial(export_session, sessions=sessions, fmt=fmt), ui, ["session_id"],
           ["export_file"], api_name=f"export_{fmt}")
