"""The Chat tab: pick a backend and model, set generation options, chat with streamed replies.

The handler turns widget values into a backend choice and :class:`GenerationSettings`, calls
``backend.stream`` and turns the pieces into chat messages; all model work stays in the core.
"""

from __future__ import annotations

from collections.abc import Iterator

import gradio as gr

from studio.backends import BACKENDS, BackendCache, GenerationSettings
from studio.config import StudioConfig
from studio.errors import StudioError
from studio.registry import BUNDLED

CHAT_MODELS = [name for name, (_, _, fmt, _) in BUNDLED.items() if fmt == "gguf"]


def header_text(backends: BackendCache, cfg: StudioConfig) -> str:
    """The line at the top of the app: which models are loaded, and through which backend."""
    loaded = backends.loaded()
    if loaded:
        names = ", ".join(b.describe() for b in loaded)
        return f"**GenAI Studio** · loaded: {names}"
    return f"**GenAI Studio** · default model: {cfg.chat.model} ({cfg.chat.backend}), loads on first message"


def build_chat_tab(cfg: StudioConfig, backends: BackendCache, header: gr.Markdown) -> None:
    """Widgets and events of the Chat tab (call inside a ``gr.Tab``)."""
    gen = cfg.generation
    with gr.Row():
        with gr.Column(scale=3):
            chatbot = gr.Chatbot(label="Chat", height=480, elem_id="chatbot", buttons=["copy", "copy_all"],
                                 placeholder="Ask the model anything. Replies stream as they are generated.")
            with gr.Row():
                box = gr.Textbox(placeholder="Type a message and press Enter", show_label=False,
                                 scale=5, elem_id="chat-input", autofocus=True)
                send = gr.Button("Send", variant="primary", scale=1, elem_id="chat-send")
            with gr.Row():
                stop = gr.Button("Stop", variant="stop", elem_id="chat-stop")
                clear = gr.Button("Clear", elem_id="chat-clear")
            stats = gr.Markdown("", elem_id="chat-stats")
        with gr.Column(scale=1):
            with gr.Accordion("Model", open=True):
                backend = gr.Dropdown(list(BACKENDS), value=cfg.chat.backend, label="Backend",
                                      elem_id="chat-backend")
                model = gr.Dropdown(CHAT_MODELS, value=cfg.chat.model, label="Model",
                                    allow_custom_value=True, elem_id="chat-model",
                                    info="a registry name, a .gguf path or an HF folder; "
                                         "for openai, the endpoint's model (blank = its first)")
                base_url = gr.Textbox(cfg.chat.base_url or "", label="Base URL (openai backend)",
                                      placeholder="http://127.0.0.1:8000/v1")
                system = gr.Textbox(cfg.chat.system_prompt or "", label="System prompt", lines=2,
                                    placeholder="empty = the model's own default")
            with gr.Accordion("Generation", open=False):
                temperature = gr.Slider(0, 2, value=gen.temperature, step=0.05, label="Temperature",
                                        info="0 = greedy (deterministic)")
                top_p = gr.Slider(0.05, 1, value=gen.top_p, step=0.05, label="Top-p")
                top_k = gr.Slider(0, 200, value=gen.top_k, step=1, label="Top-k (0 = off)")
                max_tokens = gr.Slider(16, 2048, value=gen.max_tokens, step=16, label="Max new tokens")
                seed = gr.Number(gen.seed, precision=0, label="Seed")
    history = gr.State([])

    def respond(message: str, convo: list, backend_name: str, model_name: str, url: str, sys_prompt: str,
                temp: float, tp: float, tk: float, max_new: float, seed_value: float) -> Iterator:
        message = (message or "").strip()
        if not message:
            gr.Warning("Type a message first.")
            yield gr.skip(), convo, "", gr.skip(), gr.skip()
            return
        turn = [*convo, {"role": "user", "content": message}]
        shown = [*turn, {"role": "assistant", "content": ""}]
        yield shown, convo, "", gr.skip(), "*loading the model…*" if not backends.loaded() else ""
        try:
            settings = GenerationSettings(temperature=float(temp), top_p=float(tp), top_k=int(tk),
                                          max_tokens=int(max_new), seed=int(seed_value or 0))
            chat = backends.get(backend_name, model_name or None, url or None)
            prompt = ([{"role": "system", "content": sys_prompt}] if sys_prompt.strip() else []) + turn
            stream = chat.stream(prompt, settings)
            for _ in stream:
                shown[-1]["content"] = stream.text
                # the state keeps the partial reply too, so Stop leaves what the user saw
                yield shown, [dict(m) for m in shown], "", header_text(backends, cfg), ""
        except StudioError as exc:
            raise gr.Error(str(exc)) from None
        done = [*turn, {"role": "assistant", "content": stream.text}]
        rate = f"{stream.completion_tokens} tokens · {stream.seconds:.1f} s · {stream.tokens_per_second:.0f} tok/s"
        yield done, done, "", header_text(backends, cfg), f"{chat.describe()} · {rate}"

    inputs = [box, history, backend, model, base_url, system, temperature, top_p, top_k, max_tokens, seed]
    outputs = [chatbot, history, box, header, stats]
    on_submit = box.submit(respond, inputs, outputs)
    on_click = send.click(respond, inputs, outputs)
    # Stop cancels the running generation; the backend frees its model when the stream closes.
    stop.click(None, None, None, cancels=[on_submit, on_click])
    clear.click(lambda: ([], [], ""), None, [chatbot, history, stats], cancels=[on_submit, on_click])
