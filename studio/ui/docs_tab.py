"""The Documents tab: upload, preview chunking, ingest with progress, list, delete, search.

Handlers turn widget values into an :class:`IngestConfig`, call the core
(:class:`ingest.pipeline.Ingestor`, :func:`ingest.loaders.load_file`) and render the results.
"""

from __future__ import annotations

import html
import threading
from datetime import datetime
from pathlib import Path

import gradio as gr

from ingest.config import IngestConfig, SplitterConfig
from ingest.loaders import LoadError, load_file
from ingest.splitters import split_documents
from studio.config import StudioConfig
from studio.errors import StudioError
from studio.limits import current as current_limits
from studio.paths import Roots, uploads_dir
from studio.ui.guard import as_int, fail, text

DEFAULT_COLLECTION = "documents"
MAX_PREVIEW = 60


class DocsService:
    """One :class:`Ingestor` per splitter setting, sharing the embedder and the Chroma client."""

    def __init__(self, cfg: IngestConfig):
        self.cfg = cfg
        self._base = None
        self._lock = threading.Lock()

    def ingestor(self, splitter: SplitterConfig | None = None):
        from ingest.pipeline import Ingestor

        with self._lock:
            if self._base is None:
                self._base = Ingestor(self.cfg)
        if splitter is None:
            return self._base
        cfg = IngestConfig(**{**self.cfg.__dict__, "splitter": splitter})
        return Ingestor(cfg, store=self._base.store, embedder=self._base.embedder, manifest=self._base.manifest)

    def collections(self) -> list[str]:
        return self.ingestor().store.list_collections()


def safe_name(path: str) -> str:
    """The file name a browser upload gets as its source: no folders, no '..', no hidden names."""
    name = Path(path).name
    if not name or name.startswith(".") or ".." in name:
        raise StudioError(f"refusing the upload name {name!r}")
    return name


def uploaded_paths(files, folder) -> list[str]:
    """The uploaded files' paths, each checked to lie in the upload folder (a client can post any string)."""
    uploads = Roots([uploads_dir()])
    paths = [getattr(f, "name", f) for f in (files or []) + (folder or [])]
    if len(paths) > current_limits().ingest_files:
        raise gr.Error(f"at most {current_limits().ingest_files:,} files at once (limits.ingest_files)")
    try:
        checked = [str(uploads.resolve(p, "upload")) for p in paths if p]
    except StudioError as exc:
        raise fail(exc) from None
    return [p for p in checked if Path(p).is_file()]


def chunk_preview_html(path: str, splitter: SplitterConfig) -> str:
    """Chunks of one file as cards: metadata on top, the overlap with the previous chunk marked."""
    try:
        docs = load_file(path, safe_name(path))
    except LoadError as exc:
        return f"<p class='docs-error'>{html.escape(str(exc))}</p>"
    chunks = split_documents(docs, splitter)
    size, overlap = splitter.resolved()
    parts = [f"<p><b>{html.escape(safe_name(path))}</b>: {len(chunks)} chunks with the {splitter.splitter} "
             f"splitter (size {size}, overlap {overlap})"
             + (f"; the first {MAX_PREVIEW} are shown" if len(chunks) > MAX_PREVIEW else "") + "</p>"]
    prev_end: tuple | None = None
    for c in chunks[:MAX_PREVIEW]:
        m = c.metadata
        text = c.page_content
        shared = 0
        if prev_end and prev_end[0] == m.get("page") and m["start"] < prev_end[1]:
            shared = min(len(text), prev_end[1] - m["start"])
        prev_end = (m.get("page"), m["start"] + len(text))
        where = f"page {m['page']} · " if m.get("page") else ""
        heads = f" · {html.escape(m['headers'])}" if m.get("headers") else ""
        body = (f"<mark title='overlap with the previous chunk'>{html.escape(text[:shared])}</mark>"
                if shared else "") + html.escape(text[shared:])
        parts.append(f"<div class='chunk'><div class='chunk-meta'>chunk {m['chunk']} · {where}{len(text)} chars"
                     f"{heads} · hash {m['chunk_hash']}</div><pre>{body}</pre></div>")
    return "\n".join(parts)


def hits_html(hits) -> str:
    if not hits:
        return "<p>No matches.</p>"
    cards = []
    for i, h in enumerate(hits, 1):
        where = f"{html.escape(h.source)} · page {h.page}" if h.page else html.escape(h.source)
        cards.append(f"<div class='hit'><div class='hit-meta'>[{i}] {where} · score {h.score:.3f}</div>"
                     f"<pre>{html.escape(h.text)}</pre></div>")
    return "\n".join(cards)


def documents_rows(service: DocsService, collection: str) -> list[list]:
    try:
        records = service.ingestor().documents(collection)
    except StudioError:
        return []
    return [[r.source, r.pages or "", r.chunks, datetime.fromtimestamp(r.ingested_at).strftime("%Y-%m-%d %H:%M")]
            for r in records]


def build_docs_tab(cfg: StudioConfig, service: DocsService):
    """Build the tab; returns (fn, outputs) for the app to run when a page loads."""
    sp = cfg.ingest.splitter
    with gr.Row():
        with gr.Column(scale=2):
            files = gr.File(label="Files (PDF, TXT, MD, HTML, DOCX, CSV, JSON)", file_count="multiple",
                            elem_id="docs-files")
            folder = gr.File(label="…or a whole folder", file_count="directory", elem_id="docs-folder")
            collection = gr.Dropdown([DEFAULT_COLLECTION], value=DEFAULT_COLLECTION, allow_custom_value=True,
                                     label="Collection (pick one, or type a new name)", elem_id="docs-collection")
            with gr.Row():
                splitter = gr.Radio(["recursive", "sentence", "markdown", "token"], value=sp.splitter,
                                    label="Splitter", elem_id="docs-splitter")
            with gr.Row():
                size = gr.Number(sp.chunk_size, precision=0, label="Chunk size (0 = default: 1000 chars, 200 tokens)")
                overlap = gr.Number(sp.chunk_overlap, precision=0, label="Overlap (-1 = default)")
            with gr.Row():
                preview_btn = gr.Button("Preview chunks", elem_id="docs-preview")
                ingest_btn = gr.Button("Ingest", variant="primary", elem_id="docs-ingest")
            results = gr.Dataframe(headers=["file", "status", "chunks", "reason"], label="Last ingestion",
                                   interactive=False, elem_id="docs-results", wrap=True)
            summary = gr.Markdown(elem_id="docs-summary")
        with gr.Column(scale=3):
            preview_file = gr.Dropdown([], label="File to preview", elem_id="docs-preview-file")
            preview = gr.HTML("<p>Upload files and press <b>Preview chunks</b> to see how they will be cut.</p>",
                              elem_id="docs-preview-html")
    gr.Markdown("### In the collection")
    with gr.Row():
        with gr.Column(scale=3):
            listing = gr.Dataframe(headers=["document", "pages", "chunks", "ingested"], interactive=False,
                                   elem_id="docs-list")
        with gr.Column(scale=1):
            to_delete = gr.Dropdown([], label="Document", elem_id="docs-delete-choice")
            delete_btn = gr.Button("Delete document", variant="stop", elem_id="docs-delete")
            refresh_btn = gr.Button("Refresh", elem_id="docs-refresh")
    gr.Markdown("### Search")
    with gr.Row():
        query = gr.Textbox(placeholder="What are you looking for?", show_label=False, scale=5, elem_id="docs-query")
        k = gr.Slider(1, 20, value=5, step=1, label="k", scale=1)
        search_btn = gr.Button("Search", scale=1, elem_id="docs-search")
    hits = gr.HTML(elem_id="docs-hits")

    def splitter_cfg(kind, n, ov) -> SplitterConfig:
        cfg_ = SplitterConfig(kind, as_int(n, "chunk size", 0), as_int(ov, "overlap", -1))
        try:
            cfg_.resolved()
        except StudioError as exc:
            raise fail(exc) from None
        return cfg_

    def listing_update(name):
        rows = documents_rows(service, name)
        return rows, gr.update(choices=[r[0] for r in rows], value=None)

    def on_upload(f, d):
        paths = uploaded_paths(f, d)
        return gr.update(choices=[(Path(p).name, p) for p in paths], value=paths[0] if paths else None)

    def on_preview(path, f, d, kind, n, ov):
        uploaded = uploaded_paths(f, d)
        path = path or next(iter(uploaded), None)
        if not path:
            raise gr.Error("Upload a file first.")
        try:
            path = str(Roots([uploads_dir()]).resolve(path, "file to preview"))
        except StudioError as exc:
            raise fail(exc) from None
        return chunk_preview_html(path, splitter_cfg(kind, n, ov))

    def on_ingest(f, d, name, kind, n, ov, progress=gr.Progress()):  # noqa: B008 - gradio injects it
        paths = uploaded_paths(f, d)
        if not paths:
            raise gr.Error("Upload files or a folder first.")
        name = text(name, "the collection name") or ""
        try:
            for p in paths:
                safe_name(p)
            ing = service.ingestor(splitter_cfg(kind, n, ov))
            progress(0, desc="loading the embedding model")
            report = ing.ingest(paths, name.strip(),
                                lambda done, total, src: progress((done, total), desc=f"embedding {src}",
                                                                  unit="files"))
        except StudioError as exc:
            raise fail(exc) from None
        rows = [[r.source, r.status, r.chunks, r.error or ""] for r in report.files]
        counts = ", ".join(f"{report.count(s)} {s}" for s in ("added", "updated", "unchanged", "failed")
                           if report.count(s))
        docs_rows, choice = listing_update(name.strip())
        return (rows, f"**{name}**: {counts} in {report.seconds:.1f} s", docs_rows, choice,
                gr.update(choices=service.collections(), value=name.strip()))

    def on_delete(name, source):
        if not source:
            raise gr.Error("Choose a document to delete.")
        try:
            n = service.ingestor().remove(name, source)
        except StudioError as exc:
            raise fail(exc) from None
        gr.Info(f"Removed {source} ({n} chunks).")
        return listing_update(name)

    def on_search(name, text, k_value):
        from studio.rag.config import RetrievalConfig
        from studio.rag.retriever import Retriever

        try:  # the same retrieval as `studio query` (hybrid), so the tab and the CLI agree
            retriever = Retriever(service.ingestor(), name, RetrievalConfig(k=as_int(k_value, "k"), mode="hybrid"))
            return hits_html(retriever.retrieve(text))
        except StudioError as exc:
            raise fail(exc) from None

    def on_refresh(name):
        rows, choice = listing_update(name)
        return rows, choice, gr.update(choices=sorted({*service.collections(), name}))

    files.change(on_upload, [files, folder], preview_file)
    folder.change(on_upload, [files, folder], preview_file)
    preview_btn.click(on_preview, [preview_file, files, folder, splitter, size, overlap], preview,
                      api_name="preview_chunks")
    ingest_btn.click(on_ingest, [files, folder, collection, splitter, size, overlap],
                     [results, summary, listing, to_delete, collection], api_name="ingest")
    delete_btn.click(on_delete, [collection, to_delete], [listing, to_delete])
    refresh_btn.click(on_refresh, collection, [listing, to_delete, collection])
    collection.change(listing_update, collection, [listing, to_delete])
    search_btn.click(on_search, [collection, query, k], hits, api_name="search")
    query.submit(on_search, [collection, query, k], hits, api_name="search_enter", api_visibility="undocumented")

    def on_load():
        names = service.collections()
        current = names[0] if names else DEFAULT_COLLECTION
        rows, choice = listing_update(current)
        return gr.update(choices=sorted({*names, DEFAULT_COLLECTION}), value=current), rows, choice

    return on_load, [collection, listing, to_delete]
