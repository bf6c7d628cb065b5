"""The Chat tab's handlers called as the page calls them, with plain dicts: no browser, no server.

What a browser alone shows (streaming in the page, links you click) stays in tests/test_ui.py and
tests/test_ui_rag.py.
"""

from __future__ import annotations

import json
import re
import time

import gradio as gr
import pytest

from ingest.config import IngestConfig
from studio.backends import BackendCache
from studio.backends.base import GenerationSettings
from studio.config import StudioConfig
from studio.rag.sessions import Sessions
from studio.turns import Turns
from studio.ui import chat_sessions, chat_tab
from studio.ui.chat_rag import NO_COLLECTION, RagService
from studio.ui.docs_tab import DocsService
from studio.ui.wiring import paced

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def services(tmp_path_factory):
    cfg = StudioConfig()
    docs = DocsService(IngestConfig())
    doc = tmp_path_factory.mktemp("chat-docs") / "lighthouse.txt"
    doc.write_text("The lamp room of the lighthouse is cleaned every morning by the keeper. "
                   "The keeper lights the lamp at dusk and writes the weather into the log.\n")
    docs.ingestor().ingest([doc], "handlers")
    backends = BackendCache()
    return chat_tab.ChatServices(cfg, backends, RagService(docs, backends, cfg.rag), Sessions(), Turns())


def request(**changes) -> dict:
    """The values the page sends on Send, with the tab's defaults."""
    cfg = StudioConfig()
    v = {"message": "", "history": [], "session_id": None, "collection": NO_COLLECTION,
         "mode": cfg.rag.retrieval.mode, "k": cfg.rag.retrieval.k, "min_score": cfg.rag.min_score,
         "style": cfg.rag.style, "backend": cfg.chat.backend, "model": cfg.chat.model, "base_url": "",
         "adapter": chat_tab.NO_ADAPTER, "system": "", "temperature": 0.0, "top_p": 0.9, "top_k": 40,
         "max_tokens": 24, "seed": 0}
    return {**v, **changes}


def run(v: dict, services) -> list[dict]:
    return list(chat_tab.respond(v, services=services))


def test_plain_chat_streams_then_saves_the_turn(services):
    updates = run(request(message="What is the capital of France? Answer in one word."), services)
    assert updates[0]["message"] == "" and updates[0]["stats"] == "*working…*"
    final = updates[-1]
    assert "Paris" in final["chatbot"][-1]["content"]
    assert [m["role"] for m in final["history"]] == ["user", "assistant"]
    assert "tokens" in final["stats"] and final["sources"] == ""
    sid = updates[0]["session_id"]
    saved = services.sessions.messages(sid)
    assert [m["role"] for m in saved] == ["user", "assistant"] and "Paris" in saved[1]["content"]
    assert len(updates) > 2  # streamed: partial replies came before the saved one


def test_a_long_reply_is_redrawn_a_few_times_a_second_and_ends_whole(services):
    """Redrawing at every token costs the model's threads CPU (benchmarks/shared_load.py); a paced reply must still
    show its first words at once and end with the whole text."""
    tokens = []
    real = services.backends.get("llamacpp", "smollm2-135m-instruct")
    stream = real.stream([{"role": "user", "content": "Write four sentences about the sea."}],
                         GenerationSettings(max_tokens=96, temperature=0.0, seed=0))
    for _ in stream:
        tokens.append(stream.text)
    updates = run(request(message="Write four sentences about the sea.", max_tokens=96), services)
    assert updates[-1]["chatbot"][-1]["content"] == tokens[-1]  # whole (the same text, greedy)
    streamed = [u for u in updates[1:-1] if "chatbot" in u]
    seconds = float(re.search(r"· ([\d.]+) s ·", updates[-1]["stats"]).group(1))
    assert 1 <= len(streamed) <= seconds * services.cfg.server.redraws_per_second + 2 < len(tokens)
    assert streamed[-1]["chatbot"][-1]["content"] == tokens[-1]  # the last words are drawn, not held back


def test_paced_keeps_the_first_and_the_last_item():
    def slow():
        for i in range(8):
            time.sleep(0.05)
            yield i

    assert list(paced(slow(), 1.0)) == [0, 7]  # 0.4 s of items at one a second: the first, then the last
    assert list(paced(iter([]), 8)) == [] and list(paced(iter(["only"]), 8)) == ["only"]


def test_grounded_chat_cites_and_fills_the_sources_panel(services):
    updates = run(request(message="Who cleans the lamp room?", collection="handlers", style="extractive",
                          min_score=0.0), services)
    final = updates[-1]
    shown = final["chatbot"][-1]["content"]
    assert "keeper" in shown and "(#chat-src-1)" in shown  # the citation links to the sources panel
    assert "lighthouse.txt" in final["sources"]
    assert final["stats"].startswith("handlers · 1 citations")
    assert json.loads(json.dumps(services.sessions.messages(updates[0]["session_id"])[1]["citations"]))


def test_an_empty_message_changes_nothing_but_the_box(services, monkeypatch):
    warned = []
    monkeypatch.setattr(gr, "Warning", warned.append)
    assert run(request(message="   "), services) == [{"message": ""}]
    assert warned == ["Type a message first."]


@pytest.mark.parametrize("changes, says", [
    ({"temperature": "hot"}, "temperature must be a finite number"),
    ({"max_tokens": 10**9}, "limits.max_new_tokens"),
    ({"backend": "gpt"}, "backend must be one of"),
    ({"message": "x" * 20_000}, "limits.message_chars"),
    ({"collection": "no-such-collection"}, "no collection 'no-such-collection'"),
])
def test_bad_values_are_refused_with_a_sentence(services, changes, says):
    with pytest.raises(gr.Error, match=says):
        run(request(**{"message": "hello", **changes}), services)


def test_picking_a_collection_shows_the_grounded_temperature(services):
    cfg = services.cfg
    assert chat_tab.grounded_defaults({"collection": "handlers"}, services=services) == {
        "temperature": cfg.rag.temperature}
    assert chat_tab.grounded_defaults({"collection": NO_COLLECTION}, services=services) == {
        "temperature": cfg.generation.temperature}


def test_sessions_reopen_rename_export_and_delete(services):
    sid = run(request(message="Say hello."), services)[0]["session_id"]
    opened = chat_sessions.open_session({"session_pick": sid}, sessions=services.sessions)
    assert opened["session_id"] == sid and len(opened["history"]) == 2
    renamed = chat_sessions.rename_session({"session_id": sid, "title": "Greetings"}, sessions=services.sessions)
    assert ("Greetings", sid) in renamed["session_pick"]["choices"]
    exported = chat_sessions.export_session({"session_id": sid}, sessions=services.sessions, fmt="json")
    path = exported["export_file"]["value"]
    assert json.loads(open(path).read())["title"] == "Greetings"
    gone = chat_sessions.delete_session({"session_id": sid}, sessions=services.sessions)
    assert gone["session_id"] is None and all(v != sid for _, v in gone["session_pick"]["choices"])
    with pytest.raises(gr.Error, match="not a chat session id"):
        chat_sessions.open_session({"session_pick": "../../etc"}, sessions=services.sessions)


def test_a_handler_that_changes_nothing_leaves_its_outputs_alone():
    """pick_adapter with no adapter picked returns {}: through the wiring that is a skip for each output."""
    from studio.ui.wiring import on

    with gr.Blocks():
        ui = {"adapter": gr.Dropdown(["(none)"], value="(none)"), "backend": gr.Textbox(), "model": gr.Textbox()}
        seen = {}
        on(lambda fn, inputs, outputs, **kw: seen.update(fn=fn), chat_tab.pick_adapter, ui, ["adapter"],
           ["backend", "model"])
    answer = seen["fn"]("(none)")
    assert set(answer) == {ui["backend"], ui["model"]}
    assert all(v == gr.skip() for v in answer.values())
