"""The Gradio app shell: a header naming the loaded model, one tab per working feature.

Only ``studio.ui`` imports gradio. Tabs appear here once their feature works end to end.
"""

from __future__ import annotations

import contextlib
import io
import logging
import os
import sys

import gradio as gr

from studio.accounts import Accounts
from studio.backends import BackendCache
from studio.config import StudioConfig
from studio.env import home_dir
from studio.limits import configure
from studio.paths import Roots
from studio.turns import Turns
from studio.ui.admin_tab import build_admin_tab
from studio.ui.chat_rag import RagService
from studio.ui.chat_tab import build_chat_tab, header_text
from studio.ui.docs_tab import DocsService, build_docs_tab
from studio.ui.eval_tab import build_eval_tab
from studio.ui.finetune_tab import build_finetune_tab
from studio.ui.generate_tab import build_generate_tab
from studio.ui.http import middleware
from studio.ui.models_tab import build_models_tab
from studio.ui.prompt_tab import build_prompt_tab
from studio.ui.sampling_tab import build_sampling_tab

log = logging.getLogger(__name__)
CLOSE_TOASTS = "() => document.querySelectorAll('[data-testid=\"toast-close\"]').forEach(b => b.click())"
QUEUE_MAX = 64  # requests waiting in Gradio's queue; more are refused at once rather than piling up

CSS = """
#chat-stats { font-size: 0.85em; opacity: 0.75; }
.chunk, .hit { border: 1px solid var(--border-color-primary); border-radius: 6px; margin: 6px 0; padding: 6px; }
.chunk-meta, .hit-meta { font-size: 0.8em; opacity: 0.75; }
.chunk pre, .hit pre { white-space: pre-wrap; margin: 4px 0 0; font-size: 0.85em; }
.chunk mark { background: #fde68a; }
.docs-error { color: #b91c1c; }
#chat-sources details { border: 1px solid var(--border-color-primary); border-radius: 6px; margin: 4px 0;
                        padding: 4px 8px; }
#chat-sources pre { white-space: pre-wrap; font-size: 0.85em; }
#chat-sources mark { background: #fde68a; }
#chat-sources .grounded, .sources-none { font-size: 0.85em; opacity: 0.8; }
.answer-check li.unsupported, mark.unsupported, .eval-answer .unsupported { background: #ffd6d6; color: #000; }
.answer-check li.supported, .eval-answer .supported { background: #e3f7e3; color: #000; }
.votes { font-size: 0.9em; }
.vote-row { display: flex; align-items: center; gap: 8px; margin: 3px 0; }
.vote-answer { width: 7em; text-align: right; overflow-wrap: anywhere; }
.vote-track { flex: 1; background: var(--background-fill-secondary); border-radius: 3px; height: 1.1em; }
.vote-bar { display: block; height: 100%; background: #3b7dd8; border-radius: 3px; min-width: 2px; }
.vote-count { width: 5em; opacity: 0.8; }
/* long texts in tables wrap inside their panel instead of widening it */
#ft-examples-table table, #eval-table table, #docs-results table { table-layout: fixed; width: 100%; }
#ft-examples-table td, #ft-examples-table th, #eval-table td, #docs-results td {
  white-space: normal !important; overflow-wrap: anywhere; }
#ft-examples-table td span, #eval-table td span, #docs-results td span { white-space: normal !important; }
"""


def make_backends(cfg: StudioConfig, roots: Roots | None = None) -> BackendCache:
    """The app's model cache: model paths confined to ``roots``; user-typed endpoints only as the config
    allows once the studio is exposed (a local studio lets its user point at any endpoint)."""
    c = cfg.chat
    shared = cfg.server.exposed() or cfg.server.auth or Accounts().exist()
    allowed = [*cfg.security.allowed_base_urls] if shared else None
    return BackendCache(base_url=c.base_url, api_key=c.key(), roots=roots or server_roots(cfg),
                        allowed_urls=allowed, n_ctx=c.n_ctx, n_threads=c.n_threads or None,
                        parallel=c.parallel, timeout=c.timeout)


def server_roots(cfg: StudioConfig) -> Roots:
    """Where paths sent through the UI may point (see :mod:`studio.paths`)."""
    os.environ.setdefault("GRADIO_TEMP_DIR", str(home_dir("uploads")))  # uploads land in STUDIO_HOME (0700)
    return Roots.for_server(cfg.security.allowed_roots)


def build_app(cfg: StudioConfig, backends: BackendCache, docs: DocsService | None = None) -> gr.Blocks:
    """The whole UI as a ``gr.Blocks`` (not launched)."""
    configure(cfg.limits)
    roots = server_roots(cfg)
    docs = docs or DocsService(cfg.ingest)
    rag = RagService(docs, backends, cfg.rag)
    turns = Turns()  # one line per account across Chat and the Prompt Lab
    with gr.Blocks(title="GenAI Studio") as demo:
        header = gr.Markdown(header_text(backends, cfg), elem_id="studio-header")
        tabs = {}
        with gr.Tabs():
            with gr.Tab("Chat", id="chat") as tabs["chat"]:
                chat_load, chat_outputs = build_chat_tab(cfg, backends, header, rag, turns, tabs["chat"])
            with gr.Tab("Documents", id="documents") as tabs["documents"]:
                docs_load, docs_outputs = build_docs_tab(cfg, docs, tabs["documents"])
            with gr.Tab("Prompt Lab", id="prompt-lab") as tabs["prompt-lab"]:
                prompt_load, prompt_outputs = build_prompt_tab(cfg, backends, turns, tabs["prompt-lab"])
            with gr.Tab("Sampling", id="sampling") as tabs["sampling"]:
                build_sampling_tab()
            with gr.Tab("Fine-tune", id="finetune") as tabs["finetune"]:
                finetune_load, finetune_outputs = build_finetune_tab(roots)
            with gr.Tab("Generate", id="generate") as tabs["generate"]:
                build_generate_tab(roots)
            with gr.Tab("Eval", id="eval") as tabs["eval"]:
                build_eval_tab(roots, backends, tabs["eval"], cfg.chat)
            with gr.Tab("Models", id="models") as tabs["models"]:
                models_load, models_outputs = build_models_tab(cfg, roots, tabs["models"])
            with gr.Tab("Admin", id="admin", visible=False) as tabs["admin"]:  # shown to admins at page load
                admin_load, admin_tab = build_admin_tab(docs, turns, tabs["admin"])
        for tab in tabs.values():  # a toast from one tab does not stay over the next one
            tab.select(None, None, None, js=CLOSE_TOASTS, api_visibility="private")
        demo.load(lambda: header_text(backends, cfg), None, header, api_name="header")
        demo.load(chat_load, None, chat_outputs, api_name="chat_load")
        demo.load(docs_load, None, docs_outputs, api_name="docs_load")
        demo.load(prompt_load, None, prompt_outputs, api_name="prompt_load")
        demo.load(finetune_load, None, finetune_outputs, api_name="finetune_load")
        demo.load(models_load, None, models_outputs, api_name="models_load")
        demo.load(admin_load, None, admin_tab, api_name="admin_load")
    return demo


def serve(cfg: StudioConfig) -> None:
    """Start the web UI and block until interrupted.

    ``share`` or a non-loopback host needs ``auth``: a public link or a network address without a
    login would hand the machine's models and files to anyone who can reach it. Requests whose Host
    is not one the studio is served as are refused (DNS rebinding), pages may load images from the
    studio only, and uploads are capped at ``ingest.max_file_mb``. Without internet the share attempt
    fails, says so, and the local server keeps serving.
    """
    s = cfg.server
    auth = s.login(Accounts())
    backends = make_backends(cfg)
    docs = DocsService(cfg.ingest)
    if s.preload:
        if cfg.chat.backend != "openai":
            log.info("loading %s (%s)", cfg.chat.model, cfg.chat.backend)
            backends.get(cfg.chat.backend, cfg.chat.model)
        docs.collections()  # open the store now, so the first page load lists collections at once
    demo = build_app(cfg, backends, docs)
    demo.queue(default_concurrency_limit=s.concurrency, max_size=QUEUE_MAX)
    chatter = io.StringIO()  # gradio prints its own share advice (download a binary): keep it for -v
    with contextlib.redirect_stdout(chatter):
        demo.launch(server_name=s.host, server_port=s.port, share=s.share, auth=auth,
                    prevent_thread_lock=True, quiet=True, css=CSS, footer_links=["gradio"],
                    max_file_size=f"{cfg.ingest.max_file_mb:g}mb", show_error=False,
                    app_kwargs={"middleware": middleware(s)})
    if chatter.getvalue().strip():
        log.info("gradio: %s", chatter.getvalue().strip())
    local = f"http://{s.host}:{s.port}"
    print(f"GenAI Studio is serving at {local}", file=sys.stderr, flush=True)
    if s.share:
        if demo.share_url:
            print(f"Public link: {demo.share_url} (login required)", file=sys.stderr, flush=True)
        else:
            print("studio: could not open a public share link (no internet, or the share service "
                  f"is unreachable); still serving locally at {local}", file=sys.stderr, flush=True)
    try:
        demo.block_thread()
    except KeyboardInterrupt:
        pass
    finally:
        demo.close()
