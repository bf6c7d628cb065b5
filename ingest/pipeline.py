"""The ingestion pipeline: files -> chunks -> vectors -> Chroma, incrementally and safely.

>>> ing = Ingestor(IngestConfig())
>>> report = ing.ingest(["docs/"], "manuals")        # per file: added/updated/unchanged/failed
>>> ing.query("manuals", "how do I install packages?", k=5)

Per file, in this order: hash the bytes (plus the splitter settings) -> skip if the manifest
holds that version -> load and split -> embed -> upsert chunks with ids derived from (source,
version, index) -> delete the source's chunks of other versions -> record the version. A crash
at any point leaves chunks that the next run overwrites (same ids) or deletes (old version), and
the file is only marked done at the end: exactly one copy of every chunk after a rerun.

Parsing runs ahead in a worker thread while the previous file is embedded (ONNX Runtime
releases the GIL), so PDF parsing overlaps with embedding.
"""

from __future__ import annotations

import hashlib
import logging
import os
import time
from collections.abc import Callable, Iterable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path

from ingest.config import IngestConfig
from ingest.loaders import Limits, LoadError, load_file
from ingest.manifest import FileRecord, Manifest, page_ranges
from ingest.pages import keep_original
from ingest.splitters import split_documents
from ingest.store import TMP, check_collection_name
from studio import audit
from studio.accounts import Accounts
from studio.env import LOCAL_USER, home_lock
from studio.errors import StudioError
from studio.limits import current as current_limits

log = logging.getLogger(__name__)

Progress = Callable[[int, int, str], None]  # (files done, files total, current source)


@dataclass
class FileResult:
    source: str
    status: str  # added | updated | unchanged | failed
    chunks: int = 0
    error: str | None = None
    pages: int | None = None
    ocr: str = ""  # pages read with OCR ("1-3, 7")


@dataclass
class IngestReport:
    collection: str
    files: list[FileResult]
    seconds: float

    def to_dict(self) -> dict:
        return {"collection": self.collection, "files": [asdict(f) for f in self.files],
                "seconds": round(self.seconds, 3)}

    def count(self, status: str) -> int:
        return sum(f.status == status for f in self.files)


@dataclass
class _Prepared:
    source: str
    version: str = ""
    size: int = 0
    chunks: list = field(default_factory=list)
    pages: int | None = None
    error: str | None = None
    unchanged: bool = False
    ocr: str = ""


EMBED_FORMAT = "headed"  # what embedding_text() builds; a change re-embeds every file once


def embedding_text(chunk) -> str:
    """What is embedded for a chunk: its text, led by its page title and heading path where the file has
    headings ("CREATE TABLE > Notes"), so a chunk deep in a section still carries what it is about.
    The stored text (what is shown and quoted) is the chunk's own."""
    meta = chunk.metadata
    heads = [meta.get("title", ""), meta.get("headers", "")]
    heads = [h for i, h in enumerate(heads) if h and not any(h in o for o in heads[i + 1:])]
    return " > ".join(heads) + "\n" + chunk.page_content if meta.get("headers") else chunk.page_content


@dataclass
class _Chunk:
    """A stored chunk read back for :func:`embedding_text` (the shape of a LangChain Document)."""

    page_content: str
    metadata: dict


REEMBED_BATCH = 256


def discover(paths: Iterable[str | Path]) -> list[tuple[Path | None, str, str | None]]:
    """(path, source name, refusal) for every file under ``paths``.

    A file given directly is named by its file name; files in a folder by their path relative
    to it. Hidden files are skipped; symlinks that lead outside the folder are refused.
    """
    found: list[tuple[Path | None, str, str | None]] = []
    for raw in paths:
        root = Path(raw).expanduser()
        if root.is_file():
            found.append((root, root.name, None))
            continue
        if not root.is_dir():
            raise StudioError(f"{raw} does not exist; give files or folders to ingest")
        real_root = root.resolve()
        for dirpath, dirnames, filenames in os.walk(root, followlinks=False):
            dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
            for name in sorted(filenames):
                if name.startswith("."):
                    continue
                path = Path(dirpath) / name
                source = path.relative_to(root).as_posix()
                if path.is_symlink():
                    target = path.resolve()
                    if not target.is_relative_to(real_root):
                        found.append((None, source, "symlink leads outside the folder; not followed"))
                        continue
                found.append((path, source, None))
    return found


def chunk_id(source: str, version: str, index: int) -> str:
    return f"{hashlib.sha1(source.encode()).hexdigest()[:16]}-{version[:24]}-{index:05d}"


@dataclass
class CollectionInfo:
    name: str
    owner: str
    shared: bool  # readable by everyone; only the owner changes it


def _read_only(info: CollectionInfo) -> StudioError:
    return StudioError(f"{info.name!r} is shared read-only; only its owner ({info.owner}) can change it")


class Ingestor:
    """Ingests into one store for one user; holds the embedder so repeated calls reuse the loaded model.

    Workspaces: every collection has an owner (who created it). ``user`` sees their own collections and
    those an admin shared, and changes only their own; another user's private collection reads as one that
    does not exist. :meth:`for_user` gives the same store, embedder and manifest acting for someone else.
    """

    def __init__(self, cfg: IngestConfig | None = None, store=None, embedder=None, manifest: Manifest | None = None,
                 user: str = LOCAL_USER):
        from ingest.store import Store

        self.user = user
        self.cfg = cfg or IngestConfig()
        self.cfg.splitter.resolved()  # fail early on bad sizes
        self.store = store or Store(self.cfg.chroma_url)
        # loaded embedding models by name: a collection is searched and extended with the model its vectors
        # came from (recorded with them), whatever the configured model for new collections is now
        self._embedders: dict[str, object] = embedder if isinstance(embedder, dict) else {}
        if embedder is not None and not isinstance(embedder, dict):
            self._embedders[getattr(embedder, "model_name", None) or self.cfg.embed_model] = embedder
        self.manifest = manifest or Manifest()
        self.limits = Limits(max_file_mb=self.cfg.max_file_mb, max_pages=self.cfg.max_pages)

    def for_user(self, user: str, cfg: IngestConfig | None = None) -> Ingestor:
        return Ingestor(cfg or self.cfg, store=self.store, embedder=self._embedders, manifest=self.manifest,
                        user=user)

    # --- who sees and changes what ---------------------------------------------------------------
    def _infos(self) -> dict[str, CollectionInfo]:
        if any(n.startswith(TMP) for n in self.store.all_names()):
            self._recover()
        owners = self.manifest.owners(self.store.location)
        return {name: CollectionInfo(name, *owners.get(name, (LOCAL_USER, False)))
                for name in self.store.list_collections()}

    def every_collection(self) -> list[CollectionInfo]:
        """All collections with their owners (names and owners only: an admin's overview, not their content)."""
        if not Accounts().is_admin(self.user):
            raise StudioError("only an admin sees every account's collections")
        return sorted(self._infos().values(), key=lambda c: (c.owner, c.name))

    def collections(self) -> list[CollectionInfo]:
        """The collections this user can read: their own, then those shared with everyone."""
        seen = [c for c in self._infos().values() if c.owner == self.user or c.shared]
        return sorted(seen, key=lambda c: (c.owner != self.user, c.name))

    def _missing(self, collection: str) -> StudioError:
        known = ", ".join(c.name for c in self.collections()) or "none yet"
        return StudioError(f"no collection {collection!r}; your collections: {known}")

    def readable(self, collection: str) -> CollectionInfo:
        """The collection's info if this user may search it; otherwise the same error as for a missing one."""
        check_collection_name(collection)
        info = self._infos().get(collection)
        if info is None or not (info.owner == self.user or info.shared):
            raise self._missing(collection)
        return info

    def writable(self, collection: str) -> CollectionInfo:
        info = self.readable(collection)
        if info.owner != self.user:
            raise _read_only(info)
        return info

    def _claim(self, collection: str) -> None:
        """Make ``collection`` this user's if it is new; refuse a name another user holds."""
        check_collection_name(collection)
        info = self._infos().get(collection)
        if info is not None:
            if info.owner == self.user:
                return
            if info.shared:
                raise _read_only(info)
            raise StudioError(f"the name {collection!r} is taken; choose another collection name")
        if self.manifest.claim(self.store.location, collection, self.user) != self.user:
            raise StudioError(f"the name {collection!r} is taken; choose another collection name")

    def publish(self, collection: str, shared: bool = True) -> CollectionInfo:
        """Share (or stop sharing) one of this user's collections with everyone, read-only. Admins only."""
        info = self.writable(collection)
        if not Accounts().is_admin(self.user):
            raise StudioError("only an admin can share a collection with everyone; ask one to publish it")
        self.manifest.share(self.store.location, collection, info.owner, shared)
        audit.record(self.user, "collection.publish" if shared else "collection.unpublish", collection)
        return CollectionInfo(collection, info.owner, shared)

    @property
    def embedder(self):
        """The configured embedding model (the one a new collection gets)."""
        return self.embedder_named(self.cfg.embed_model)

    def embedder_named(self, model: str):
        if model not in self._embedders:
            from ingest.embeddings import MiniLMEmbeddings

            self._embedders[model] = MiniLMEmbeddings(model, engine=self.cfg.embed_engine)
        return self._embedders[model]

    def model_of(self, collection: str) -> str:
        """The embedding model of ``collection``'s vectors (the configured one for a collection made before the
        studio recorded it: then it was the only model in use)."""
        return self.store.embed_model(collection) or self.cfg.embed_model

    def record_models(self) -> list[str]:
        """Record the configured model on every collection made before the studio kept each one's model (done
        before the configured model changes); returns the names it recorded."""
        done = []
        for name in self.store.list_collections():
            if self.store.embed_model(name) is None:
                self.store.set_meta(name, embed_model=self.cfg.embed_model)
                done.append(name)
        return done

    def embedder_for(self, collection: str):
        """The model that embeds queries and new chunks of ``collection``: its own, never another one."""
        return self.embedder_named(self.model_of(collection))

    def _splitter_signature(self, model: str) -> str:
        s = self.cfg.splitter
        size, overlap = s.resolved()
        # the model's name, not the loaded model: an unchanged corpus is checked without loading it
        return hashlib.sha1(f"{s.splitter}|{size}|{overlap}|{model}|{EMBED_FORMAT}".encode()).hexdigest()[:8]

    def _prepare(self, path: Path | None, source: str, refusal: str | None, collection: str, sig: str) -> _Prepared:
        if refusal:
            return _Prepared(source, error=f"{source}: {refusal}")
        try:
            data = path.read_bytes()
        except OSError as exc:
            return _Prepared(source, error=f"{source}: cannot read ({exc.strerror})")
        version = hashlib.sha256(data).hexdigest()[:16] + sig
        try:
            keep_original(path, version)  # a PDF's pages for the Chat tab's page viewer
        except OSError as exc:
            log.warning("could not keep the original of %s for the page viewer: %s", source, exc)
        known = self.manifest.get(self.store.location, collection, source)
        # unchanged only if the store still holds every chunk the manifest counts (a run killed between
        # writing and recording, or chunks deleted behind the studio's back, are redone, not trusted)
        if known and known.version == version and known.chunks == self.store.count(
                collection, {"$and": [{"source": source}, {"version": version}]}):
            return _Prepared(source, version, len(data), pages=known.pages, unchanged=True,
                             chunks=[None] * known.chunks, ocr=known.ocr)
        try:
            docs = load_file(path, source, self.limits)
            chunks = split_documents(docs, self.cfg.splitter)
        except LoadError as exc:
            return _Prepared(source, error=str(exc))
        except Exception as exc:  # a parser bug on one odd file must not stop the batch
            log.exception("unexpected failure reading %s", source)
            return _Prepared(source, error=f"{source}: could not be read ({type(exc).__name__}: {exc})")
        pages = max((d.metadata.get("page") or 0 for d in docs), default=0) or None
        ocr = page_ranges([d.metadata["page"] for d in docs if d.metadata.get("ocr")])
        return _Prepared(source, version, len(data), chunks, pages, ocr=ocr)

    def _over_limits(self, collection: str, prep: _Prepared, previous: FileRecord | None) -> str | None:
        """Why this file may not be stored (the collection's size, the account's bytes today), or None."""
        limits = current_limits()
        after = self.store.count(collection) - (previous.chunks if previous else 0) + len(prep.chunks)
        if after > limits.collection_chunks:
            return (f"{prep.source}: the collection would hold {after:,} chunks; the limit is "
                    f"{limits.collection_chunks:,} (limits.collection_chunks): remove documents or start another")
        if self.user != LOCAL_USER:
            used = self.manifest.used_today(self.user)
            if used + prep.size > limits.ingest_mb_per_day * 1e6:
                return (f"{prep.source}: {prep.size / 1e6:.1f} MB more would pass your {limits.ingest_mb_per_day:g} "
                        f"MB a day (limits.ingest_mb_per_day; {used / 1e6:.1f} MB used today): go on tomorrow")
        return None

    def _commit(self, collection: str, prep: _Prepared) -> FileResult:
        previous = self.manifest.get(self.store.location, collection, prep.source)
        refused = self._over_limits(collection, prep, previous)
        if refused:
            return FileResult(prep.source, "failed", 0, refused)
        texts = [c.page_content for c in prep.chunks]
        vectors = self.embedder_for(collection).encode([embedding_text(c) for c in prep.chunks])
        now = datetime.now(UTC).isoformat(timespec="seconds")
        metas = []
        for c in prep.chunks:
            meta = {k: v for k, v in c.metadata.items() if v is not None and v != ""}
            meta.update(version=prep.version, ingested_at=now)
            metas.append(meta)
        ids = [chunk_id(prep.source, prep.version, c.metadata["chunk"]) for c in prep.chunks]
        self.store.add_chunks(collection, ids, vectors, texts, metas)
        self.store.delete_where(collection, {"$and": [{"source": prep.source}, {"version": {"$ne": prep.version}}]})
        self.manifest.put(self.store.location, collection,
                          FileRecord(prep.source, prep.version, len(ids), prep.pages, prep.size, time.time(),
                                     prep.ocr))
        if self.user != LOCAL_USER:
            self.manifest.add_usage(self.user, prep.size)
        status = "updated" if previous else "added"
        return FileResult(prep.source, status, len(ids), None, prep.pages, prep.ocr)

    def _lock(self, collection: str):
        """One writer per collection at a time, across processes: two ingests of one file can then
        never interleave their writes and deletes (which could leave a manifest row without chunks)."""
        return home_lock("collection", self.store.location, collection)

    def ingest(self, paths: Iterable[str | Path], collection: str, progress: Progress | None = None) -> IngestReport:
        """Ingest files and folders into ``collection``; one bad file fails alone."""
        start = time.perf_counter()
        check_collection_name(collection)
        items = discover(paths)
        most = current_limits().ingest_files
        if len(items) > most:
            raise StudioError(f"{len(items):,} files to ingest; the limit is {most:,} (limits.ingest_files): "
                              "ingest the folder in parts")
        self._claim(collection)
        self.store.collection(collection, embed_model=self.cfg.embed_model)  # a new one gets the configured model
        if self.store.embed_model(collection) is None:  # one made before the model was recorded: its model now
            self.store.set_meta(collection, embed_model=self.cfg.embed_model)
        with self._lock(collection):
            report = self._ingest(items, collection, progress, start)
        audit.record(self.user, "collection.ingest", collection,
                     **{s: report.count(s) for s in ("added", "updated", "unchanged", "failed")})
        return report

    def _ingest(self, items, collection: str, progress: Progress | None, start: float) -> IngestReport:
        sig = self._splitter_signature(self.model_of(collection))
        results: list[FileResult] = []
        with ThreadPoolExecutor(max_workers=1, thread_name_prefix="parse") as pool:
            pending: list[Future] = []
            queue = iter(items)

            def refill() -> None:
                for item in queue:
                    pending.append(pool.submit(self._prepare, *item, collection, sig))
                    if len(pending) >= max(1, self.cfg.prefetch):
                        return

            refill()
            while pending:
                prep: _Prepared = pending.pop(0).result()
                refill()
                if progress:
                    progress(len(results), len(items), prep.source)
                if prep.error:
                    results.append(FileResult(prep.source, "failed", 0, prep.error))
                elif prep.unchanged:
                    results.append(FileResult(prep.source, "unchanged", len(prep.chunks), None, prep.pages,
                                              prep.ocr))
                else:
                    results.append(self._commit(collection, prep))
        if progress:
            progress(len(results), len(items), "")
        return IngestReport(collection, results, time.perf_counter() - start)

    # --- reading and removing ----------------------------------------------------------------
    def documents(self, collection: str) -> list[FileRecord]:
        self.readable(collection)
        return self.manifest.files(self.store.location, collection)

    def remove(self, collection: str, source: str) -> int:
        """Delete one document's chunks; returns how many chunks it had."""
        self.writable(collection)
        record = self.manifest.get(self.store.location, collection, source)
        if record is None:
            known = ", ".join(r.source for r in self.documents(collection)[:10]) or "none"
            raise StudioError(f"{collection!r} holds no document {source!r}; it holds: {known}")
        with self._lock(collection):
            self.store.delete_where(collection, {"source": source})
            self.manifest.remove(self.store.location, collection, source)
        audit.record(self.user, "document.rm", collection, source=source)
        return record.chunks

    def delete_collection(self, collection: str) -> None:
        self.writable(collection)
        with self._lock(collection):
            self.store.delete_collection(collection)
            self.manifest.forget(self.store.location, collection)
        audit.record(self.user, "collection.delete", collection)

    def query(self, collection: str, text: str, k: int = 5, where: dict | None = None):
        if not text.strip():
            raise StudioError("the query is empty; type what you are looking for")
        if k < 1:
            raise StudioError(f"k must be at least 1, got {k}")
        self.readable(collection)
        return self.store.search(collection, self.embedder_for(collection).encode([text])[0], k, where)

    # --- changing a collection's embedding model --------------------------------------------------
    def reembed(self, collection: str, model: str, progress: Progress | None = None) -> int:
        """Embed every chunk of ``collection`` again with ``model``; returns the number of chunks.

        The new vectors go into a temporary collection; only when all are in does it take the collection's
        place (renames), so searches meanwhile use the old vectors, a failure or a kill leaves the old
        collection as it was, and the two models' vectors are never mixed in one collection.
        """
        self.writable(collection)
        embedder = self.embedder_named(model)  # a model that cannot embed fails here, before anything changes
        with self._lock(collection):
            previous = self.model_of(collection)
            if previous == model:
                return self.store.count(collection)
            new = f"{TMP}new.{collection}"
            self.store.drop(new)
            self.store.create(new, embed_model=model)
            total, done = self.store.count(collection), 0
            while done < total:
                page = self.store.get_chunks(collection, limit=REEMBED_BATCH, offset=done)
                if not page["ids"]:
                    break
                texts = [embedding_text(_Chunk(t or "", m or {})) for t, m in zip(page["documents"],
                                                                                 page["metadatas"], strict=True)]
                self.store.add_chunks(new, page["ids"], embedder.encode(texts), page["documents"], page["metadatas"])
                done += len(page["ids"])
                if progress:
                    progress(done, total, collection)
            self.store.set_meta(new, complete="1")
            self._swap(collection)
        audit.record(self.user, "collection.reembed", collection, model=model, previous=previous, chunks=done)
        return done

    def _swap(self, collection: str) -> None:
        """Put a complete re-embedded collection in the place of the old one (see :meth:`_recover`)."""
        new, old = f"{TMP}new.{collection}", f"{TMP}old.{collection}"
        if collection in self.store.all_names():
            self.store.rename(collection, old)
        self.store.rename(new, collection)
        self.store.drop(old)

    def _recover(self) -> None:
        """Finish or undo a re-embedding a kill interrupted: a complete new collection takes the place it was
        made for; an incomplete one is dropped (the old collection is still there, or back in place)."""
        names = set(self.store.all_names())
        for collection in sorted({n.split(".", 2)[2] for n in names if n.startswith((f"{TMP}new.", f"{TMP}old."))}):
            with home_lock("collection", self.store.location, collection, wait=False) as mine:
                if not mine:  # a re-embedding is running now: its collection stays as it is meanwhile
                    continue
                now = set(self.store.all_names())
                new, old = f"{TMP}new.{collection}", f"{TMP}old.{collection}"
                if new in now and (self.store.collection(new, create=False).metadata or {}).get("complete"):
                    self._swap(collection)
                    continue
                self.store.drop(new)
                if old in now and collection not in now:
                    self.store.rename(old, collection)
                self.store.drop(old)
