"""The Chat tab: plain or grounded chat, streamed, with citations, sources and saved sessions.

Layout and wiring live in :func:`build_chat_tab`; the handlers are module-level functions over plain
``{name: value}`` dicts (see :mod:`studio.ui.wiring`), so they are tested without a browser:
:func:`respond` turns the widget values into a backend choice, :class:`GenerationSettings` and (with a
collection) a :class:`RagChain`, streams from the core and turns the pieces into messages. The Sessions
panel (saved chats) is :mod:`studio.ui.chat_sessions`.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from functools import partial

import gradio as gr

from finetune.adapters import adapter_of, list_adapters
from ingest.pages import original_path, render_page_isolated
from studio.backends import BACKENDS, BackendCache, GenerationSettings
from studio.config import StudioConfig
from studio.env import LOCAL_USER
from studio.errors import StudioError
from studio.markup import neutralize
from studio.modelstore import chat_model_names
from studio.rag.sessions import Sessions
from studio.registry import backend_for
from studio.turns import Turns
from studio.ui.chat_rag import NO_COLLECTION, RagService, answer_meta, rendered_answer, sources_html
from studio.ui.chat_sessions import page_choices, rendered_messages, session_choices, sessions_panel, wire_sessions
from studio.ui.guard import as_float, as_int, choice, fail, text
from studio.ui.wiring import Values, on, paced, user_of

NO_ADAPTER = "(none)"
REQUEST = ["message", "history", "session_id", "collection", "mode", "k", "min_score", "style", "backend", "model",
           "base_url", "adapter", "system", "temperature", "top_p", "top_k", "max_tokens", "seed"]
SHOWN = ["chatbot", "history", "session_id", "message", "header", "stats", "sources", "session_pick", "cites",
         "page_pick"]
CONTINUE = ("Continue your last reply exactly where it stopped. Do not repeat what you already wrote and do not "
            "add a preamble.")


@dataclass
class ChatServices:
    """What the Chat tab's handlers work with: the config, loaded models, the RAG service, saved sessions."""

    cfg: StudioConfig
    backends: BackendCache
    rag: RagService
    sessions: Sessions
    turns: Turns  # each account's replies one at a time (limits.generations_per_user)


def adapter_choices(user: str = LOCAL_USER) -> list[tuple[str, str]]:
    """(label, adapter folder) of ``user``'s finished generation fine-tunes, newest first."""
    return [(NO_ADAPTER, NO_ADAPTER)] + [(a.label(), str(a.path)) for a in list_adapters("generation", user)]


def picked_adapter(picked: str | None, backend: str | None = None,
                   user: str = LOCAL_USER) -> tuple[str, str, str] | None:
    """(backend, base model, what the backend loads) for the adapter picked from :func:`adapter_choices`
    (``user``'s own only): the exported GGUF on llamacpp (the default once exported), the PEFT folder on hf.
    None for no adapter."""
    if picked in (None, "", NO_ADAPTER):
        return None
    if picked not in [p for _, p in adapter_choices(user)]:
        raise gr.Error("The adapter must be one of your finished fine-tunes in the list (reload the page to see "
                       "new ones).")
    try:
        a = adapter_of(picked)
        backend, loads = a.serving(backend)
    except StudioError as exc:
        raise fail(exc) from None
    return backend, a.base_model, loads


def header_text(backends: BackendCache, cfg: StudioConfig) -> str:
    """The line at the top of the app: which models are loaded, and through which backend."""
    loaded = backends.loaded()
    if loaded:
        names = ", ".join(b.describe() for b in loaded)
        return f"**GenAI Studio** · loaded: {names}"
    return f"**GenAI Studio** · default model: {cfg.chat.model} ({cfg.chat.backend}), loads on first message"


def shown_messages(convo: list[dict]) -> list[dict]:
    """The conversation as the chat shows it: images, links and HTML in any message defused."""
    return [{"role": m["role"], "content": neutralize(m["content"])} for m in convo]


# --- handlers ------------------------------------------------------------------------------------------
def settings_of(v: Values) -> GenerationSettings:
    """The generation settings the widgets ask for (checked against the core's limits)."""
    try:
        return GenerationSettings(temperature=as_float(v["temperature"], "temperature"),
                                  top_p=as_float(v["top_p"], "top-p"), top_k=as_int(v["top_k"], "top-k"),
                                  max_tokens=as_int(v["max_tokens"], "max new tokens"),
                                  seed=as_int(v["seed"], "seed", 0))
    except StudioError as exc:
        raise fail(exc) from None


def _answer_stream(v: Values, turn: list[dict], settings: GenerationSettings, s: ChatServices, user: str):
    """(stream, backend) for one turn: a RAG chain's answer with a collection, else the model's reply."""
    grounded = v["collection"] not in (None, "", NO_COLLECTION)
    adapter = picked_adapter(v["adapter"], v["backend"], user)
    lora = adapter[2] if adapter else None
    chat = None if grounded and v["style"] == "extractive" else \
        s.backends.get(v["backend"], v["model"] or None, v["base_url"] or None, lora)
    if grounded:
        settings.max_tokens = min(settings.max_tokens, s.cfg.rag.max_tokens)
        chain = s.rag.chain(v["collection"], chat, as_int(v["k"], "k"), v["mode"],
                            as_float(v["min_score"], "similarity"), v["style"], settings, user)
        return chain.stream(turn[-1]["content"], turn[:-1]), chat
    system = text(v["system"], "the system prompt", "system_prompt_chars").strip()
    return chat.stream(([{"role": "system", "content": system}] if system else []) + turn, settings), chat


def _finished(v: Values, stream, chat, shown: list[dict]) -> tuple[str, list, dict, str, str]:
    """(reply to save, citations, metadata to save, status line, sources panel) once the stream has ended;
    ``shown``'s last message becomes the reply as displayed (defused, [n] linked, unsupported sentences
    marked)."""
    if v["collection"] not in (None, "", NO_COLLECTION):
        res = stream.result
        g = f" · groundedness {res.groundedness:.2f}" if res.groundedness is not None else ""
        line = f"{v['collection']} · {len(res.citations)} citations{g} · {res.seconds:.1f} s"
        meta = answer_meta(res, v["collection"], line)
        shown[-1]["content"] = rendered_answer(res.answer, meta)
        return res.answer, [c.__dict__ for c in res.citations], meta, line, sources_html(res)
    shown[-1]["content"] = neutralize(stream.text)
    line = (f"{chat.describe()} · {stream.completion_tokens} tokens · {stream.seconds:.1f} s · "
            f"{stream.tokens_per_second:.0f} tok/s")
    return stream.text, [], {"stats": line}, line, ""


def respond(v: Values, *, services: ChatServices, user: str = LOCAL_USER) -> Iterator[Values]:
    """One chat turn: yields the chat as it streams, then the saved turn with its stats and sources."""
    s = services
    message = text(v["message"], "the message").strip()
    choice(v["backend"], list(BACKENDS), "backend")
    if not message:
        gr.Warning("Type a message first.")
        yield {"message": ""}
        return
    settings = settings_of(v)
    convo = list(v["history"] or [])
    if v["session_id"]:
        try:
            s.sessions.get(v["session_id"], user)  # a session id is someone's: only its owner goes on with it
        except StudioError as exc:
            raise fail(exc) from None
    sid = v["session_id"] or s.sessions.create(
        collection=v["collection"] if v["collection"] not in (None, "", NO_COLLECTION) else None, user=user).id
    turn = [*convo, {"role": "user", "content": message}]
    shown = [*shown_messages(turn), {"role": "assistant", "content": ""}]
    yield {"chatbot": shown, "history": convo, "session_id": sid, "message": "", "stats": "*working…*",
           "sources": ""}
    try:
        stream, chat = _answer_stream(v, turn, settings, s, user)
        first = {"header": header_text(s.backends, s.cfg), "stats": ""}  # (the model may have just loaded)
        for _ in paced(stream, s.cfg.server.redraws_per_second):
            shown[-1]["content"] = neutralize(stream.text)
            # the state keeps the partial reply too, so Stop leaves what the user saw
            yield {"chatbot": shown, "history": [*turn, {"role": "assistant", "content": stream.text}], **first}
            first = {}
        reply, cites, meta, line, panel = _finished(v, stream, chat, shown)
    except StudioError as exc:
        raise fail(exc) from None
    s.sessions.add_message(sid, "user", message, user=user)
    s.sessions.add_message(sid, "assistant", reply, citations=cites, meta=meta, user=user)
    shown_cites = {"collection": v["collection"], "citations": cites}
    yield {"chatbot": shown, "history": [*turn, {"role": "assistant", "content": reply}],
           "header": header_text(s.backends, s.cfg), "stats": line, "sources": panel,
           "session_pick": gr.update(choices=session_choices(s.sessions, user), value=sid), "cites": shown_cites,
           "page_pick": page_choices(shown_cites)}


def _last_turn(v: Values, what: str) -> int:
    """The index of the last user message in the history; a refusal naming ``what`` when there is none."""
    convo = list(v["history"] or [])
    users = [i for i, m in enumerate(convo) if m["role"] == "user"]
    if not users:
        raise gr.Error(f"Nothing to {what} yet: send a message first.")
    return users[-1]


def _drop_last_turn(v: Values, s: ChatServices, at: int, user: str) -> list[dict]:
    """Remove the last user message and what follows it from the saved session; the rest of the chat as shown."""
    if v["session_id"]:
        try:
            s.sessions.truncate(v["session_id"], at, user)
            return rendered_messages(s.sessions.messages(v["session_id"], user))
        except StudioError as exc:
            raise fail(exc) from None
    return shown_messages(list(v["history"] or [])[:at])


def regenerate(v: Values, *, services: ChatServices, user: str = LOCAL_USER) -> Iterator[Values]:
    """Answer the last message again with the next seed (shown in the Seed box, so the answer stays
    reproducible); at temperature 0 the answer will be the same, and the toast says so."""
    at = _last_turn(v, "regenerate")
    convo = list(v["history"])
    _drop_last_turn(v, services, at, user)
    seed = as_int(v["seed"], "seed", 0) + 1
    if as_float(v["temperature"], "temperature") == 0:
        gr.Info("Temperature is 0, so the answer comes out the same; raise it for a different one.")
    for update in respond({**v, "message": convo[at]["content"], "history": convo[:at], "seed": seed},
                          services=services, user=user):
        yield {**update, "seed": seed}


def edit_last(v: Values, *, services: ChatServices, user: str = LOCAL_USER) -> Values:
    """Put the last message back into the box to change it; its answer goes (send it again to get a new one)."""
    at = _last_turn(v, "edit")
    convo = list(v["history"])
    shown = _drop_last_turn(v, services, at, user)
    return {"message": convo[at]["content"], "chatbot": shown, "history": convo[:at], "stats": "",
            "sources": "", "cites": None, "page_pick": page_choices(None)}


def continue_reply(v: Values, *, services: ChatServices, user: str = LOCAL_USER) -> Iterator[Values]:
    """Plain chat: the model carries on its last reply (cut by the token limit, say), appended to it.
    A grounded answer is complete with its citations: ask a follow-up instead."""
    s = services
    convo = list(v["history"] or [])
    if not convo or convo[-1]["role"] != "assistant":
        raise gr.Error("Nothing to continue yet: send a message first.")
    if v["collection"] not in (None, "", NO_COLLECTION):
        raise gr.Error("Continue extends a plain-chat reply; a grounded answer is complete with its citations. "
                       "Ask a follow-up question instead.")
    settings = settings_of(v)
    try:
        if v["session_id"]:
            s.sessions.get(v["session_id"], user)
        chat = s.backends.get(choice(v["backend"], list(BACKENDS), "backend"), v["model"] or None,
                              v["base_url"] or None)
        stream = chat.stream([*convo, {"role": "user", "content": CONTINUE}], settings)
        shown = shown_messages(convo)
        before = convo[-1]["content"]
        for _ in paced(stream, s.cfg.server.redraws_per_second):
            shown[-1]["content"] = neutralize(before + stream.text)
            yield {"chatbot": shown}
    except StudioError as exc:
        raise fail(exc) from None
    reply = before + stream.text
    if v["session_id"]:
        s.sessions.truncate(v["session_id"], len(convo) - 1, user)
        s.sessions.add_message(v["session_id"], "assistant", reply, meta={"continued": True}, user=user)
    yield {"chatbot": shown, "history": [*convo[:-1], {"role": "assistant", "content": reply}],
           "stats": f"continued · {stream.completion_tokens} more tokens · {stream.seconds:.1f} s"}


def view_page(v: Values, *, services: ChatServices, user: str = LOCAL_USER) -> Values:
    """The picked citation's PDF page as an image, its quoted passage shaded (from the original kept at
    ingest; only citations of the answer on screen can be picked)."""
    cites = v["cites"] or {}
    by_n = {str(c["n"]): c for c in cites.get("citations", []) if c.get("page")}
    if not v["page_pick"]:
        return {}
    c = by_n.get(choice(v["page_pick"], list(by_n), "the cited page"))
    try:
        ing = services.rag.docs.ingestor(user=user)
        ing.readable(cites["collection"])  # still the user's, or still shared
        record = ing.manifest.get(ing.store.location, cites["collection"], c["source"])
        if record is None:
            raise StudioError(f"{c['source']} is no longer in {cites['collection']}")
        image = render_page_isolated(original_path(record.version), int(c["page"]), c.get("quote") or c["text"][:300])
    except StudioError as exc:
        raise fail(exc) from None
    found = ("the quoted passage is shaded" if image.info.get("quote_found")
             else "the quote was not found as text on it")
    return {"page_image": image, "page_note": f"{neutralize(c['source'])}, page {c['page']}: {found}."}


def grounded_defaults(v: Values, *, services: ChatServices) -> Values:
    """Picking a collection sets the temperature to the grounded default (``rag.temperature``) where
    the user can see it; back to plain chat, the chat default (``generation.temperature``)."""
    cfg = services.cfg
    grounded = v["collection"] not in (None, "", NO_COLLECTION)
    return {"temperature": cfg.rag.temperature if grounded else cfg.generation.temperature}


def new_chat(_v: Values) -> Values:
    return {"chatbot": [], "history": [], "session_id": None, "stats": "", "sources": "",
            "session_pick": gr.update(value=None), "cites": None, "page_pick": page_choices(None)}


def pick_model(v: Values) -> Values:
    """An installed model picked from the list brings its backend along (a GGUF runs on llamacpp, a model
    folder on hf); a typed path or an endpoint's model name leaves the backend as it is."""
    model = text(v["model"], "the model").strip()
    if v.get("backend") == "openai" or model not in chat_model_names():
        return {}
    return {"backend": backend_for(model)}


def pick_adapter(v: Values, *, user: str = LOCAL_USER) -> Values:
    """A finished fine-tune's adapter brings its base model and the backend it runs fastest on: llamacpp once
    exported to GGUF (Fine-tune tab, Export to llama.cpp), else hf."""
    picked = picked_adapter(v["adapter"], None, user)
    if picked is None:
        return {}
    return {"backend": gr.update(value=picked[0]), "model": gr.update(value=picked[1])}


def on_load(_v: Values, *, services: ChatServices, user: str = LOCAL_USER) -> Values:
    """What a page load refreshes: the collections, saved chats, adapters and installed chat models."""
    names = services.rag.docs.collections(user)
    count = f"{len(names)} collection{'s' if len(names) != 1 else ''} you can use"
    return {"collection": gr.update(choices=[NO_COLLECTION, *names], info=f"{count}; answers come with citations"),
            "session_pick": gr.update(choices=session_choices(services.sessions, user)),
            "adapter": gr.update(choices=adapter_choices(user)),
            "model": gr.update(choices=chat_model_names())}


# --- layout ---------------------------------------------------------------------------------------------
def _conversation(ui: dict) -> None:
    ui["chatbot"] = gr.Chatbot(label="Chat", height=460, elem_id="chatbot", buttons=["copy", "copy_all"],
                               placeholder="Ask the model anything, or pick a collection to get answers "
                                           "grounded in your documents, with citations.")
    with gr.Row():
        ui["message"] = gr.Textbox(placeholder="Type a message and press Enter", show_label=False, scale=5,
                                   elem_id="chat-input", autofocus=True)
        ui["send"] = gr.Button("Send", variant="primary", scale=1, elem_id="chat-send")
    with gr.Row():
        ui["regenerate"] = gr.Button("Regenerate", size="sm", elem_id="chat-regenerate")
        ui["continue"] = gr.Button("Continue", size="sm", elem_id="chat-continue")
        ui["edit"] = gr.Button("Edit last message", size="sm", elem_id="chat-edit")
        ui["stop"] = gr.Button("Stop", size="sm", elem_id="chat-stop")  # grey: red is for what destroys
        ui["clear"] = gr.Button("New chat", size="sm", elem_id="chat-clear")
    ui["stats"] = gr.Markdown("", elem_id="chat-stats")
    ui["sources"] = gr.HTML("", elem_id="chat-sources", label="Sources")
    with gr.Accordion("Page viewer: the cited PDF page", open=False, elem_id="chat-pages"):
        ui["page_pick"] = gr.Dropdown([], label="Cited page", elem_id="chat-page-pick")
        ui["page_note"] = gr.Markdown("", elem_id="chat-page-note")
        ui["page_image"] = gr.Image(label="The cited page, the quoted passage shaded", type="pil", height=720,
                                    elem_id="chat-page", interactive=False, buttons=["fullscreen"])


def _documents(ui: dict, cfg: StudioConfig) -> None:
    rc = cfg.rag
    with gr.Accordion("Documents", open=True):
        ui["collection"] = gr.Dropdown([NO_COLLECTION], value=NO_COLLECTION, label="Collection",
                                       elem_id="chat-collection", info="answers come from this collection, with "
                                                                       "citations")
        ui["mode"] = gr.Radio(["hybrid", "dense", "bm25"], value=rc.retrieval.mode, label="Retrieval")
        ui["k"] = gr.Slider(1, 10, value=rc.retrieval.k, step=1, label="Chunks retrieved (k)")
        ui["min_score"] = gr.Slider(0, 1, value=rc.min_score, step=0.05, label="Answer only above similarity",
                                    info="a cosine floor on top of the answerability check (0 = none)")
        ui["style"] = gr.Radio(["hybrid", "generative", "extractive"], value=rc.style, label="Answer style",
                               info="hybrid: model answer + quotes; extractive: quotes only")


def _model(ui: dict, cfg: StudioConfig) -> None:
    with gr.Accordion("Model", open=False):
        ui["backend"] = gr.Dropdown(list(BACKENDS), value=cfg.chat.backend, label="Backend", elem_id="chat-backend")
        ui["model"] = gr.Dropdown(chat_model_names(), value=cfg.chat.model, label="Model", allow_custom_value=True,
                                  elem_id="chat-model",
                                  info="an installed model (see Models), a .gguf path or an HF folder; for openai, "
                                       "the endpoint's model (blank = its first)")
        ui["adapter"] = gr.Dropdown([NO_ADAPTER], value=NO_ADAPTER, label="LoRA adapter", elem_id="chat-adapter",
                                    info="a finished Fine-tune run on its base model: on llamacpp once exported "
                                         "to llama.cpp (Fine-tune tab), else on hf")
        ui["base_url"] = gr.Textbox(cfg.chat.base_url or "", label="Base URL (openai backend)",
                                    placeholder="http://127.0.0.1:8000/v1")
        ui["system"] = gr.Textbox(cfg.chat.system_prompt or "", label="System prompt (plain chat)", lines=2,
                                  placeholder="empty = the model's own default")


def _generation(ui: dict, cfg: StudioConfig) -> None:
    gen = cfg.generation
    with gr.Accordion("Generation", open=False):
        ui["temperature"] = gr.Slider(0, 2, value=gen.temperature, step=0.05, label="Temperature",
                                      elem_id="chat-temperature",
                                      info=f"0 = greedy (deterministic); picking a collection sets "
                                           f"{cfg.rag.temperature:g}, the grounded default")
        ui["top_p"] = gr.Slider(0.05, 1, value=gen.top_p, step=0.05, label="Top-p")
        ui["top_k"] = gr.Slider(0, 200, value=gen.top_k, step=1, label="Top-k (0 = off)")
        ui["max_tokens"] = gr.Slider(16, 2048, value=gen.max_tokens, step=16, label="Max new tokens",
                                     elem_id="chat-max-tokens")
        ui["seed"] = gr.Number(gen.seed, precision=0, label="Seed", elem_id="chat-seed")


def _wire(ui: dict, s: ChatServices) -> None:
    on(ui["adapter"].input, pick_adapter, ui, ["adapter"], ["backend", "model"], api_name="pick_adapter")
    on(ui["model"].input, pick_model, ui, ["model", "backend"], ["backend"], api_name="pick_model")
    on(ui["collection"].input, partial(grounded_defaults, services=s), ui, ["collection"], ["temperature"],
       api_name="grounded_defaults")
    turn, fair = partial(respond, services=s), {"turns": (s.turns, "stats"), "concurrency_id": "generate"}
    sent = [on(ui["message"].submit, turn, ui, REQUEST, SHOWN, api_name="chat_enter", api_visibility="undocumented",
               **fair),
            on(ui["send"].click, turn, ui, REQUEST, SHOWN, api_name="chat", **fair)]
    sent.append(on(ui["regenerate"].click, partial(regenerate, services=s), ui, REQUEST, [*SHOWN, "seed"],
                   api_name="chat_regenerate", **fair))
    sent.append(on(ui["continue"].click, partial(continue_reply, services=s), ui, REQUEST,
                   ["chatbot", "history", "stats"], api_name="chat_continue", **fair))
    on(ui["edit"].click, partial(edit_last, services=s), ui, ["history", "session_id"],
       ["message", "chatbot", "history", "stats", "sources", "cites", "page_pick"], api_name="chat_edit")
    ui["stop"].click(None, None, None, cancels=sent)  # the backend frees its model when the stream closes
    on(ui["clear"].click, new_chat, ui, [], ["chatbot", "history", "session_id", "stats", "sources", "session_pick",
                                              "cites", "page_pick"], cancels=sent, api_name="new_chat")
    on(ui["page_pick"].input, partial(view_page, services=s), ui, ["page_pick", "cites"],
       ["page_image", "page_note"], api_name="chat_page")
    wire_sessions(ui, s.sessions)


def build_chat_tab(cfg: StudioConfig, backends: BackendCache, header: gr.Markdown, rag: RagService, turns: Turns,
                   tab=None):
    """Widgets and events of the Chat tab; returns (fn, outputs) to run when a page loads. Selecting the
    ``tab`` lists collections, saved chats and adapters again (another tab may have changed them)."""
    services = ChatServices(cfg, backends, rag, Sessions(), turns)
    ui: dict = {"header": header}
    with gr.Row():
        with gr.Column(scale=3):
            _conversation(ui)
        with gr.Column(scale=1):
            _documents(ui, cfg)
            _model(ui, cfg)
            _generation(ui, cfg)
            sessions_panel(ui)
    ui["history"] = gr.State([])
    ui["session_id"] = gr.State(None)
    ui["cites"] = gr.State(None)  # the answer on screen's collection and citations, for the page viewer
    _wire(ui, services)
    load = ["collection", "session_pick", "adapter", "model"]
    if tab is not None:
        on(tab.select, partial(on_load, services=services), ui, [], load, api_name="chat_lists",
           show_progress="hidden")
    def page_load(request: gr.Request):
        updates = on_load({}, services=services, user=user_of(request))
        updates["model"] = gr.update(choices=chat_model_names(), value=cfg.chat.model)  # the chat role's model now
        return {ui[n]: update for n, update in updates.items()}

    return page_load, [ui[n] for n in load]
