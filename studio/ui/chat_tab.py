"""The Chat tab: plain or grounded chat, streamed, with citations, sources and saved sessions.

The handler turns widget values into a backend choice, :class:`GenerationSettings` and (with a
collection) a :class:`RagChain`, streams from the core and turns the pieces into messages.
"""

from __future__ import annotations

import json
import tempfile
from collections.abc import Iterator
from pathlib import Path

import gradio as gr

from studio.backends import BACKENDS, BackendCache, GenerationSettings
from studio.config import StudioConfig
from studio.errors import StudioError
from studio.markup import neutralize
from studio.paths import uploads_dir
from studio.rag.sessions import Sessions
from studio.registry import BUNDLED
from studio.ui.chat_rag import NO_COLLECTION, RagService, highlight_unsupported, linkify, sources_html
from studio.ui.guard import as_float, as_int, choice, fail, text

CHAT_MODELS = [name for name, (_, _, fmt, _) in BUNDLED.items() if fmt == "gguf"]
NO_ADAPTER = "(none)"


def adapter_choices() -> list[tuple[str, str]]:
    """(label, adapter folder) of finished generation fine-tunes, newest first."""
    from finetune.adapters import list_adapters

    return [(NO_ADAPTER, NO_ADAPTER)] + [(a.label(), str(a.path)) for a in list_adapters("generation")]


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


def session_choices(sessions: Sessions) -> list[tuple[str, str]]:
    return [(s.title + (f" [{s.collection}]" if s.collection else ""), s.id) for s in sessions.list()]


def build_chat_tab(cfg: StudioConfig, backends: BackendCache, header: gr.Markdown, rag: RagService):
    """Widgets and events of the Chat tab; returns (fn, outputs) to run when a page loads."""
    gen, rc = cfg.generation, cfg.rag
    sessions = Sessions()
    with gr.Row():
        with gr.Column(scale=3):
            chatbot = gr.Chatbot(label="Chat", height=460, elem_id="chatbot", buttons=["copy", "copy_all"],
                                 placeholder="Ask the model anything, or pick a collection to get answers "
                                             "grounded in your documents, with citations.")
            with gr.Row():
                box = gr.Textbox(placeholder="Type a message and press Enter", show_label=False,
                                 scale=5, elem_id="chat-input", autofocus=True)
                send = gr.Button("Send", variant="primary", scale=1, elem_id="chat-send")
            with gr.Row():
                stop = gr.Button("Stop", variant="stop", elem_id="chat-stop")
                clear = gr.Button("New chat", elem_id="chat-clear")
            stats = gr.Markdown("", elem_id="chat-stats")
            sources = gr.HTML("", elem_id="chat-sources", label="Sources")
        with gr.Column(scale=1):
            with gr.Accordion("Documents", open=True):
                collection = gr.Dropdown([NO_COLLECTION], value=NO_COLLECTION, label="Collection",
                                         elem_id="chat-collection",
                                         info="answers come from this collection, with citations")
                mode = gr.Radio(["hybrid", "dense", "bm25"], value=rc.retrieval.mode, label="Retrieval")
                k = gr.Slider(1, 10, value=rc.retrieval.k, step=1, label="Chunks retrieved (k)")
                min_score = gr.Slider(0, 1, value=rc.min_score, step=0.05, label="Answer only above similarity",
                                      info="below it the studio says the documents do not say")
                style = gr.Radio(["hybrid", "generative", "extractive"], value=rc.style, label="Answer style",
                                 info="hybrid: model answer + quotes; extractive: quotes only")
            with gr.Accordion("Model", open=False):
                backend = gr.Dropdown(list(BACKENDS), value=cfg.chat.backend, label="Backend",
                                      elem_id="chat-backend")
                model = gr.Dropdown(CHAT_MODELS, value=cfg.chat.model, label="Model",
                                    allow_custom_value=True, elem_id="chat-model",
                                    info="a registry name, a .gguf path or an HF folder; "
                                         "for openai, the endpoint's model (blank = its first)")
                adapter = gr.Dropdown([NO_ADAPTER], value=NO_ADAPTER, label="LoRA adapter (hf backend)",
                                      elem_id="chat-adapter",
                                      info="a finished Fine-tune run; picking one switches to hf and its base model")
                base_url = gr.Textbox(cfg.chat.base_url or "", label="Base URL (openai backend)",
                                      placeholder="http://127.0.0.1:8000/v1")
                system = gr.Textbox(cfg.chat.system_prompt or "", label="System prompt (plain chat)", lines=2,
                                    placeholder="empty = the model's own default")
            with gr.Accordion("Generation", open=False):
                temperature = gr.Slider(0, 2, value=gen.temperature, step=0.05, label="Temperature",
                                        info="0 = greedy (deterministic); grounded answers use 0")
                top_p = gr.Slider(0.05, 1, value=gen.top_p, step=0.05, label="Top-p")
                top_k = gr.Slider(0, 200, value=gen.top_k, step=1, label="Top-k (0 = off)")
                max_tokens = gr.Slider(16, 2048, value=gen.max_tokens, step=16, label="Max new tokens")
                seed = gr.Number(gen.seed, precision=0, label="Seed")
            with gr.Accordion("Sessions", open=False):
                session_pick = gr.Dropdown([], label="Saved chats", elem_id="chat-session")
                title = gr.Textbox(label="Title", elem_id="chat-session-title")
                with gr.Row():
                    rename = gr.Button("Rename", size="sm")
                    delete = gr.Button("Delete", size="sm", variant="stop")
                with gr.Row():
                    export_md = gr.Button("Export .md", size="sm")
                    export_json = gr.Button("Export .json", size="sm")
                export_file = gr.File(label="Export", visible=False)
    history = gr.State([])
    session_id = gr.State(None)

    def respond(message, convo, sid, coll, mode_v, k_v, min_v, style_v, backend_name, model_name, url,
                lora, sys_prompt, temp, tp, tk, max_new, seed_value) -> Iterator:
        message = text(message, "the message").strip()
        sys_prompt = text(sys_prompt, "the system prompt", "system_prompt_chars")
        choice(backend_name, list(BACKENDS), "backend")
        if not message:
            gr.Warning("Type a message first.")
            yield gr.skip(), convo, sid, "", gr.skip(), gr.skip(), gr.skip(), gr.skip()
            return
        grounded = coll and coll != NO_COLLECTION
        temp = as_float(temp, "temperature")
        try:
            settings = GenerationSettings(temperature=temp, top_p=as_float(tp, "top-p"), top_k=as_int(tk, "top-k"),
                                          max_tokens=as_int(max_new, "max new tokens"),
                                          seed=as_int(seed_value, "seed", 0))
        except StudioError as exc:
            raise fail(exc) from None
        sid = sid or sessions.create(collection=coll if grounded else None).id
        turn = [*convo, {"role": "user", "content": message}]
        shown = [*shown_messages(turn), {"role": "assistant", "content": ""}]
        yield shown, convo, sid, "", gr.skip(), "*working…*", "", gr.skip()
        try:
            lora = None if lora in (None, "", NO_ADAPTER) else choice(lora, [v for _, v in adapter_choices()],
                                                                       "the adapter")
            chat = backends.get(backend_name, model_name or None, url or None, lora) \
                if style_v != "extractive" or not grounded else None
            if grounded:
                settings.temperature = 0.0 if temp == gen.temperature else temp
                settings.max_tokens = min(settings.max_tokens, rc.max_tokens)
                settings.stop = ["\n\n", "<context>", "Question:"]
                chain = rag.chain(coll, chat, as_int(k_v, "k"), mode_v, as_float(min_v, "similarity"), style_v,
                                  settings)
                stream = chain.stream(message, convo)
            else:
                prompt = ([{"role": "system", "content": sys_prompt}] if sys_prompt.strip() else []) + turn
                stream = chat.stream(prompt, settings)
            for _ in stream:
                shown[-1]["content"] = neutralize(stream.text)
                # the state keeps the partial reply too, so Stop leaves what the user saw
                partial = [*turn, {"role": "assistant", "content": stream.text}]
                yield shown, partial, sid, "", header_text(backends, cfg), "", gr.skip(), gr.skip()
        except StudioError as exc:
            raise fail(exc) from None
        if grounded:
            res = stream.result
            reply, cites = res.answer, [c.__dict__ for c in res.citations]
            shown[-1]["content"] = linkify(highlight_unsupported(neutralize(reply), res.sentences), len(res.hits))
            g = f" · groundedness {res.groundedness:.2f}" if res.groundedness is not None else ""
            line = f"{coll} · {len(res.citations)} citations{g} · {res.seconds:.1f} s"
            panel = sources_html(res)
        else:
            reply, cites, panel = stream.text, [], ""
            shown[-1]["content"] = neutralize(reply)
            line = (f"{chat.describe()} · {stream.completion_tokens} tokens · {stream.seconds:.1f} s · "
                    f"{stream.tokens_per_second:.0f} tok/s")
        sessions.add_message(sid, "user", message)
        sessions.add_message(sid, "assistant", reply, citations=cites)
        done = [*turn, {"role": "assistant", "content": reply}]
        yield (shown, done, sid, "", header_text(backends, cfg), line, panel,
               gr.update(choices=session_choices(sessions), value=sid))

    def new_chat():
        return [], [], None, "", "", gr.update(value=None)

    def open_session(sid):
        if not sid:
            return gr.skip(), gr.skip(), gr.skip(), gr.skip(), gr.skip()
        try:
            s = sessions.get(sid)
        except StudioError as exc:
            raise fail(exc) from None
        convo = [{"role": m["role"], "content": m["content"]} for m in sessions.messages(sid)]
        return shown_messages(convo), convo, sid, s.title, gr.update(value=s.collection or NO_COLLECTION)

    def rename_session(sid, new_title):
        if not sid:
            raise gr.Error("Open or start a chat first.")
        try:
            sessions.rename(sid, new_title)
        except StudioError as exc:
            raise fail(exc) from None
        return gr.update(choices=session_choices(sessions), value=sid)

    def delete_session(sid):
        if sid:
            try:
                sessions.delete(sid)
            except StudioError as exc:
                raise fail(exc) from None
        return [], [], None, gr.update(choices=session_choices(sessions), value=None), ""

    def export(sid, fmt):
        if not sid:
            raise gr.Error("Open or start a chat first.")
        try:
            body = json.dumps(sessions.export_json(sid), indent=2) if fmt == "json" else sessions.export_markdown(sid)
        except StudioError as exc:
            raise fail(exc) from None
        path = Path(tempfile.mkdtemp(prefix="studio-export-", dir=uploads_dir())) / f"chat-{sid}.{fmt}"
        path.write_text(body, encoding="utf-8")
        return gr.update(value=str(path), visible=True)

    def pick_adapter(path):
        if path in (None, "", NO_ADAPTER):
            return gr.skip(), gr.skip()
        from finetune.adapters import adapter_of

        choice(path, [v for _, v in adapter_choices()], "the adapter")
        try:
            a = adapter_of(path)
        except StudioError as exc:
            raise fail(exc) from None
        return gr.update(value="hf"), gr.update(value=a.base_model)

    adapter.input(pick_adapter, adapter, [backend, model], api_name="pick_adapter")
    inputs = [box, history, session_id, collection, mode, k, min_score, style, backend, model, base_url, adapter,
              system, temperature, top_p, top_k, max_tokens, seed]
    outputs = [chatbot, history, session_id, box, header, stats, sources, session_pick]
    on_submit = box.submit(respond, inputs, outputs, api_name="chat_enter", api_visibility="undocumented")
    on_click = send.click(respond, inputs, outputs, api_name="chat")
    # Stop cancels the running generation; the backend frees its model when the stream closes.
    stop.click(None, None, None, cancels=[on_submit, on_click])
    clear.click(new_chat, None, [chatbot, history, session_id, stats, sources, session_pick],
                cancels=[on_submit, on_click])
    session_pick.input(open_session, session_pick, [chatbot, history, session_id, title, collection],
                       api_name="open_session")
    rename.click(rename_session, [session_id, title], session_pick)
    delete.click(delete_session, session_id, [chatbot, history, session_id, session_pick, stats])
    export_md.click(lambda sid: export(sid, "md"), session_id, export_file, api_name="export_md")
    export_json.click(lambda sid: export(sid, "json"), session_id, export_file, api_name="export_json")

    def on_load():
        names = rag.docs.collections()
        count = f"{len(names)} collection{'s' if len(names) != 1 else ''} in this studio"
        return (gr.update(choices=[NO_COLLECTION, *names], info=f"{count}; answers come with citations"),
                gr.update(choices=session_choices(sessions)), gr.update(choices=adapter_choices()))

    return on_load, [collection, session_pick, adapter]
