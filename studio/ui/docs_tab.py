"""The Documents tab: upload, preview chunking, ingest with progress, list, delete, search.

Layout and wiring live in :func:`build_docs_tab`; the handlers are module-level functions over plain
``{name: value}`` dicts (see :mod:`studio.ui.wiring`), so they are tested without a browser: they turn
widget values into a :class:`SplitterConfig`, call the core (:class:`ingest.pipeline.Ingestor`,
:func:`ingest.loaders.load_file`) through a :class:`DocsService` and render the results.
"""

from __future__ import annotations

import html
import threading
from datetime import datetime
from functools import partial
from pathlib import Path

import gradio as gr

from ingest.config import IngestConfig, SplitterConfig
from ingest.loaders import LoadError, load_file
from ingest.splitters import split_documents
from ingest.store import place
from studio.config import StudioConfig
from studio.env import LOCAL_USER
from studio.errors import StudioError
from studio.limits import current as current_limits
from studio.modelstore import embedding_model_names
from studio.paths import Roots, uploads_dir
from studio.ui.guard import as_int, choice, fail, text
from studio.ui.wiring import Values, on, user_of

DEFAULT_COLLECTION = "documents"
PER_PAGE = 20  # chunk cards on one page of the preview
# each endpoint's inputs in the order an API client passes them positionally
PREVIEW = ["preview_file", "files", "folder", "splitter", "chunk_size", "overlap", "preview_page"]
INGEST = ["files", "folder", "collection", "splitter", "chunk_size", "overlap"]
INGESTED = ["results", "summary", "listing", "to_delete", "collection", "sharing"]
SEARCH = ["collection", "query", "k"]
REEMBED_WARNING = (
    "Re-embedding reads every chunk of the collection again with the chosen model (a few minutes for "
    "thousands of chunks on a CPU); searches use the old vectors until the new ones are all in. The check "
    "that refuses unanswerable questions was fitted on all-MiniLM-L6-v2's similarities: with another model "
    "its refusals are less certain. New collections get the model the Models tab sets for embeddings.")


class DocsService:
    """One :class:`Ingestor` per splitter setting, sharing the embedder and the Chroma client."""

    def __init__(self, cfg: IngestConfig):
        self.cfg = cfg
        self._base = None
        self._lock = threading.Lock()

    def ingestor(self, splitter: SplitterConfig | None = None, user: str = LOCAL_USER):
        """An :class:`Ingestor` acting for ``user`` (sharing one store, embedding model and manifest)."""
        from ingest.pipeline import Ingestor

        with self._lock:
            if self._base is None:
                self._base = Ingestor(self.cfg)
        if splitter is None and user == LOCAL_USER:
            return self._base
        cfg = IngestConfig(**{**self.cfg.__dict__, "splitter": splitter}) if splitter else self.cfg
        return self._base.for_user(user, cfg)

    def collections(self, user: str = LOCAL_USER) -> list[str]:
        """The names of the collections ``user`` can read (their own first, then the shared ones)."""
        return [c.name for c in self.ingestor(user=user).collections()]

    def default_collection(self, user: str = LOCAL_USER) -> str:
        """Where a user's first upload goes: ``documents``, or ``NAME-documents`` for an account (collection
        names are one namespace, so two accounts cannot both have ``documents``)."""
        return DEFAULT_COLLECTION if user == LOCAL_USER else f"{user}-{DEFAULT_COLLECTION}"


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


def chunk_preview_html(path: str, splitter: SplitterConfig, page: int = 1) -> str:
    """One page (:data:`PER_PAGE` cards) of a file's chunks: metadata on top, the overlap with the previous
    chunk marked; the count and the page shown in the first line."""
    try:
        docs = load_file(path, safe_name(path))
    except LoadError as exc:
        return f"<p class='docs-error'>{html.escape(str(exc))}</p>"
    chunks = split_documents(docs, splitter)
    size, overlap = splitter.resolved()
    pages = max(1, -(-len(chunks) // PER_PAGE))
    page = min(max(1, page), pages)
    first = (page - 1) * PER_PAGE
    shown = chunks[first:first + PER_PAGE]
    parts = [f"<p class='preview-count'><b>{html.escape(safe_name(path))}</b>: {len(chunks)} chunks with the "
             f"{splitter.splitter} splitter (size {size}, overlap {overlap})"
             + (f"; chunks {first + 1}–{first + len(shown)} shown, page {page} of {pages}" if pages > 1 else "")
             + "</p>"]
    prev = chunks[first - 1] if first else None
    prev_end = (_part(prev.metadata), prev.metadata["start"] + len(prev.page_content)) if prev else None
    for c in shown:
        m = c.metadata
        text = c.page_content
        shared = 0
        if prev_end and prev_end[0] == _part(m) and m["start"] < prev_end[1]:
            shared = min(len(text), prev_end[1] - m["start"])
        prev_end = (_part(m), m["start"] + len(text))
        where = f"page {m['page']} · " if m.get("page") else ""
        heads = f" · {html.escape(m['headers'])}" if m.get("headers") else ""
        body = (f"<mark title='overlap with the previous chunk'>{html.escape(text[:shared])}</mark>"
                if shared else "") + html.escape(text[shared:])
        parts.append(f"<div class='chunk'><div class='chunk-meta'>chunk {m['chunk']} · {where}{len(text)} chars"
                     f"{heads} · hash {m['chunk_hash']}</div><pre>{body}</pre></div>")
    return "\n".join(parts)


def _part(meta: dict) -> tuple:
    """The page or section a chunk's ``start`` offset counts from."""
    return meta.get("page"), meta.get("headers", ""), meta.get("anchor", "")


def hits_html(hits) -> str:
    if not hits:
        return "<p>No matches.</p>"
    cards = []
    for i, h in enumerate(hits, 1):
        where = html.escape(place(h.source, h.page, h.headers, h.anchor, " · "))
        cards.append(f"<div class='hit'><div class='hit-meta'>[{i}] {where} · score {h.score:.3f}</div>"
                     f"<pre>{html.escape(h.text)}</pre></div>")
    return "\n".join(cards)


def documents_rows(service: DocsService, collection: str, user: str) -> list[list]:
    try:
        records = service.ingestor(user=user).documents(collection)
    except StudioError:
        return []
    return [[r.source, (f"{r.pages or ''} (OCR: {r.ocr})" if r.ocr else r.pages or ""), r.chunks,
             datetime.fromtimestamp(r.ingested_at).strftime("%Y-%m-%d %H:%M")]
            for r in records]


# --- handlers ------------------------------------------------------------------------------------------
def splitter_of(v: Values) -> SplitterConfig:
    """The splitter the widgets ask for (its size and overlap checked by the core)."""
    cfg = SplitterConfig(v["splitter"], as_int(v["chunk_size"], "chunk size", 0), as_int(v["overlap"], "overlap", -1))
    try:
        cfg.resolved()
    except StudioError as exc:
        raise fail(exc) from None
    return cfg


def _sharing(service: DocsService, collection: str, user: str) -> str:
    """Who sees the collection, and which embedding model its vectors come from."""
    ing = service.ingestor(user=user)
    try:
        info = ing.readable(collection)
    except StudioError:
        return f"A new collection is private to you; it will be embedded with **{ing.cfg.embed_model}**."
    model = f" Embedded with **{ing.model_of(collection)}**."
    if info.owner != user:
        return f"Shared read-only by **{info.owner}**: you can search it and chat with it.{model}"
    return ("**Shared** with everyone, read-only." if info.shared else "**Private**: only you see it.") + model


def _listing(service: DocsService, collection: str, user: str) -> Values:
    rows = documents_rows(service, collection, user)
    return {"listing": rows, "to_delete": gr.update(choices=[r[0] for r in rows], value=None),
            "sharing": _sharing(service, collection, user)}


def show_listing(v: Values, *, service: DocsService, user: str = LOCAL_USER) -> Values:
    """Picking a collection lists its documents and offers them for deletion."""
    return _listing(service, v["collection"], user)


def upload(v: Values) -> Values:
    """New uploads become the choices of the file to preview, the first one picked."""
    paths = uploaded_paths(v["files"], v["folder"])
    return {"preview_file": gr.update(choices=[(Path(p).name, p) for p in paths], value=paths[0] if paths else None)}


def preview(v: Values) -> Values:
    """The chosen (or first uploaded) file cut into chunks by the chosen splitter."""
    uploaded = uploaded_paths(v["files"], v["folder"])
    path = v["preview_file"] or next(iter(uploaded), None)
    if not path:
        raise gr.Error("Upload a file first.")
    try:
        path = str(Roots([uploads_dir()]).resolve(path, "file to preview"))
    except StudioError as exc:
        raise fail(exc) from None
    return {"preview": chunk_preview_html(path, splitter_of(v), as_int(v.get("preview_page"), "preview page", 1))}


def _no_progress(*_args, **_kwargs) -> None:
    pass


def ingest(v: Values, *, service: DocsService, progress=None, user: str = LOCAL_USER) -> Values:
    """Ingest the uploads into the collection: a row per file, a summary line, the refreshed listing."""
    progress = _no_progress if progress is None else progress
    paths = uploaded_paths(v["files"], v["folder"])
    if not paths:
        raise gr.Error("Upload files or a folder first.")
    name = text(v["collection"], "the collection name") or ""
    try:
        for p in paths:
            safe_name(p)
        ing = service.ingestor(splitter_of(v), user)
        progress(0, desc="loading the embedding model")
        report = ing.ingest(paths, name.strip(),
                            lambda done, total, src: progress((done, total), desc=f"embedding {src}", unit="files"))
    except StudioError as exc:
        raise fail(exc) from None
    rows = [[r.source, r.status, r.chunks, r.error or (f"pages {r.ocr} read with OCR" if r.ocr else "")]
            for r in report.files]
    counts = ", ".join(f"{report.count(s)} {s}" for s in ("added", "updated", "unchanged", "failed")
                       if report.count(s))
    return {"results": rows, "summary": f"**{name}**: {counts} in {report.seconds:.1f} s",
            **_listing(service, name.strip(), user),
            "collection": gr.update(choices=service.collections(user), value=name.strip())}


def delete(v: Values, *, service: DocsService, user: str = LOCAL_USER) -> Values:
    """Remove the chosen document from the collection."""
    source = v["to_delete"]
    if not source:
        raise gr.Error("Choose a document to delete.")
    try:
        n = service.ingestor(user=user).remove(v["collection"], source)
    except StudioError as exc:
        raise fail(exc) from None
    gr.Info(f"Removed {source} ({n} chunks).")
    return _listing(service, v["collection"], user)


def publish(v: Values, *, service: DocsService, shared: bool, user: str = LOCAL_USER) -> Values:
    """Share the collection with everyone, read-only, or make it private again (admins, their own)."""
    try:
        service.ingestor(user=user).publish(text(v["collection"], "the collection name") or "", shared)
    except StudioError as exc:
        raise fail(exc) from None
    return {"sharing": _sharing(service, v["collection"], user)}


def reembed(v: Values, *, service: DocsService, progress=None, user: str = LOCAL_USER) -> Values:
    """Embed the collection's chunks again with another model (its owner only), with a progress bar; searches
    keep the old vectors until the new ones are all in."""
    progress = _no_progress if progress is None else progress
    name = (text(v["collection"], "the collection name") or "").strip()
    model = choice(v["reembed_model"], embedding_model_names(), "the embedding model")
    try:
        ing = service.ingestor(user=user)
        before = ing.model_of(ing.writable(name).name)
        progress(0, desc=f"loading {model}")
        n = ing.reembed(name, model, lambda done, total, _c: progress((done, total), desc="re-embedding",
                                                                       unit="chunks"))
    except StudioError as exc:
        raise fail(exc) from None
    gr.Info(f"{name}: {n:,} chunks embedded with {model}" + (f" (was {before})." if before != model else "."))
    return _listing(service, name, user)


def refresh(v: Values, *, service: DocsService, user: str = LOCAL_USER) -> Values:
    """The listing again, and the collections as they are now (the typed name kept among them)."""
    typed = [v["collection"]] if isinstance(v["collection"], str) and v["collection"] else []
    return {**_listing(service, v["collection"], user),
            "collection": gr.update(choices=list(dict.fromkeys([*service.collections(user), *typed])))}


def search(v: Values, *, service: DocsService, user: str = LOCAL_USER) -> Values:
    """The collection's best chunks for the query, by the same hybrid retrieval as ``studio query``."""
    from studio.rag.config import RetrievalConfig
    from studio.rag.retriever import Retriever

    try:
        config = RetrievalConfig(k=as_int(v["k"], "k"), mode="hybrid")
        retriever = Retriever(service.ingestor(user=user), v["collection"], config)
        return {"hits": hits_html(retriever.retrieve(v["query"]))}
    except StudioError as exc:
        raise fail(exc) from None


def on_load(_v: Values, *, service: DocsService, user: str = LOCAL_USER) -> Values:
    """What a page load refreshes: the user's collections (the first one picked) and its listing."""
    names = service.collections(user)
    mine = service.default_collection(user)
    current = names[0] if names else mine
    return {"collection": gr.update(choices=list(dict.fromkeys([*names, mine])), value=current),
            **_listing(service, current, user)}


# --- layout ---------------------------------------------------------------------------------------------
def _ingest_form(ui: dict, sp: SplitterConfig) -> None:
    ui["files"] = gr.File(label="Files (PDF, TXT, MD, HTML, DOCX, CSV, JSON)", file_count="multiple",
                          elem_id="docs-files")
    ui["folder"] = gr.File(label="…or a whole folder", file_count="directory", elem_id="docs-folder")
    ui["collection"] = gr.Dropdown([DEFAULT_COLLECTION], value=DEFAULT_COLLECTION, allow_custom_value=True,
                                   label="Collection (pick one, or type a new name)", elem_id="docs-collection")
    with gr.Row():
        ui["splitter"] = gr.Radio(["recursive", "sentence", "markdown", "token"], value=sp.splitter,
                                  label="Splitter", elem_id="docs-splitter")
    with gr.Row():
        ui["chunk_size"] = gr.Number(sp.chunk_size, precision=0,
                                     label="Chunk size (0 = default: 1000 chars, 200 tokens)")
        ui["overlap"] = gr.Number(sp.chunk_overlap, precision=0, label="Overlap (-1 = default)")
    with gr.Row():
        ui["preview_btn"] = gr.Button("Preview chunks", elem_id="docs-preview")
        ui["ingest_btn"] = gr.Button("Ingest", variant="primary", elem_id="docs-ingest")
    ui["results"] = gr.Dataframe(headers=["file", "status", "chunks", "reason"], label="Last ingestion",
                                 interactive=False, elem_id="docs-results", wrap=True,
                                 column_widths=["28%", "12%", "10%", "50%"])
    ui["summary"] = gr.Markdown(elem_id="docs-summary")


def _preview_pane(ui: dict) -> None:
    with gr.Row():
        ui["preview_file"] = gr.Dropdown([], label="File to preview", elem_id="docs-preview-file", scale=3)
        ui["preview_page"] = gr.Number(1, precision=0, minimum=1, label=f"Preview page ({PER_PAGE} chunks each)",
                                       elem_id="docs-preview-page", scale=1)
    ui["preview"] = gr.HTML("<p>Upload files and press <b>Preview chunks</b> to see how they will be cut.</p>",
                            elem_id="docs-preview-html")


def _collection_pane(ui: dict) -> None:
    gr.Markdown("### In the collection")
    with gr.Row():
        with gr.Column(scale=3):
            ui["listing"] = gr.Dataframe(headers=["document", "pages", "chunks", "ingested"], interactive=False,
                                         elem_id="docs-list")
        with gr.Column(scale=1):
            ui["to_delete"] = gr.Dropdown([], label="Document", elem_id="docs-delete-choice")
            ui["delete_btn"] = gr.Button("Delete document", variant="stop", elem_id="docs-delete")  # it destroys
            ui["refresh_btn"] = gr.Button("Refresh", elem_id="docs-refresh")
            ui["sharing"] = gr.Markdown("A new collection is private to you.", elem_id="docs-sharing")
            with gr.Row():  # admins only (the server refuses others)
                ui["publish_btn"] = gr.Button("Share with everyone", size="sm", elem_id="docs-publish")
                ui["unpublish_btn"] = gr.Button("Make private", size="sm", elem_id="docs-unpublish")
            with gr.Accordion("Embedding model", open=False):
                gr.Markdown(REEMBED_WARNING)
                ui["reembed_model"] = gr.Dropdown(embedding_model_names(), label="Re-embed with",
                                                  elem_id="docs-reembed-model")
                ui["reembed_btn"] = gr.Button("Re-embed the collection", size="sm", elem_id="docs-reembed")


def _search_pane(ui: dict) -> None:
    gr.Markdown("### Search")
    with gr.Row():
        ui["query"] = gr.Textbox(placeholder="What are you looking for?", show_label=False, scale=5,
                                 elem_id="docs-query")
        ui["k"] = gr.Slider(1, 20, value=5, step=1, label="k", scale=1)
        ui["search_btn"] = gr.Button("Search", scale=1, elem_id="docs-search")
    ui["hits"] = gr.HTML(elem_id="docs-hits")


def _wire(ui: dict, service: DocsService) -> None:
    # the API names of the events that had none are the ones Gradio gave them from the old handlers' names
    on(ui["files"].change, upload, ui, ["files", "folder"], ["preview_file"], api_name="on_upload")
    on(ui["folder"].change, upload, ui, ["files", "folder"], ["preview_file"], api_name="on_upload_1")
    on(ui["preview_btn"].click, preview, ui, PREVIEW, ["preview"], defaults={"preview_page": 1},
       api_name="preview_chunks")
    on(ui["preview_page"].submit, preview, ui, PREVIEW, ["preview"], defaults={"preview_page": 1},
       api_name="preview_page")
    # the progress bar sits on the results table, not over the collection field the user just filled in
    # ingests have their own worker (one at a time): a long one never holds a slot chat replies need
    on(ui["ingest_btn"].click, partial(ingest, service=service), ui, INGEST, INGESTED, api_name="ingest",
       show_progress_on=[ui["results"]], concurrency_id="ingest", concurrency_limit=1)
    on(ui["delete_btn"].click, partial(delete, service=service), ui, ["collection", "to_delete"],
       ["listing", "to_delete", "sharing"], api_name="on_delete")
    on(ui["refresh_btn"].click, partial(refresh, service=service), ui, ["collection"],
       ["listing", "to_delete", "sharing", "collection"], api_name="on_refresh")
    on(ui["collection"].change, partial(show_listing, service=service), ui, ["collection"],
       ["listing", "to_delete", "sharing"], api_name="listing_update")
    for name, shared in (("publish", True), ("unpublish", False)):
        on(ui[f"{name}_btn"].click, partial(publish, service=service, shared=shared), ui, ["collection"], ["sharing"],
           api_name=name)
    on(ui["reembed_btn"].click, partial(reembed, service=service), ui, ["collection", "reembed_model"],
       ["listing", "to_delete", "sharing"], api_name="reembed", show_progress_on=[ui["listing"]],
       concurrency_id="ingest", concurrency_limit=1)
    found = partial(search, service=service)
    on(ui["search_btn"].click, found, ui, SEARCH, ["hits"], api_name="search")
    on(ui["query"].submit, found, ui, SEARCH, ["hits"], api_name="search_enter", api_visibility="undocumented")


def build_docs_tab(cfg: StudioConfig, service: DocsService, tab=None):
    """Widgets and events of the Documents tab; returns (fn, outputs) to run when a page loads. Selecting
    the ``tab`` lists the collections and the picked one's documents again."""
    ui: dict = {}
    with gr.Row():
        with gr.Column(scale=2):
            _ingest_form(ui, cfg.ingest.splitter)
        with gr.Column(scale=3):
            _preview_pane(ui)
    _collection_pane(ui)
    _search_pane(ui)
    _wire(ui, service)
    if tab is not None:
        on(tab.select, partial(refresh, service=service), ui, ["collection"],
           ["listing", "to_delete", "sharing", "collection"], api_name="docs_lists", show_progress="hidden")
    load = ["collection", "listing", "to_delete", "sharing"]

    def page_load(request: gr.Request):
        return {ui[n]: update for n, update in on_load({}, service=service, user=user_of(request)).items()}

    return page_load, [ui[n] for n in load]
