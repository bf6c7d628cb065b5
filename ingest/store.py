"""The Chroma store: embedded under ``$STUDIO_HOME/chroma`` by default, or a server by URL.

>>> store = Store()                                  # or Store("http://127.0.0.1:8000")
>>> store.add_chunks("manuals", ids, vectors, texts, metadatas)
>>> store.search("manuals", query_vector, k=5)       # [Hit(source, page, chunk, score, text)]
>>> store.as_vectorstore("manuals", embeddings)      # a LangChain VectorStore (langchain-chroma)

Collections use cosine distance and no Chroma embedding function (its default would download
a model): vectors always come from :class:`ingest.embeddings.MiniLMEmbeddings`.
"""

from __future__ import annotations

import re
from dataclasses import asdict, dataclass
from typing import Any
from urllib.parse import urlparse

from studio.env import home_dir
from studio.errors import StudioError

NAME_RE = re.compile(r"^[a-zA-Z0-9][a-zA-Z0-9._-]{1,510}[a-zA-Z0-9]$")
BATCH = 1000


TMP = "studio-tmp."  # collections the studio builds before swapping them in (re-embedding); never a user's


def check_collection_name(name: str) -> str:
    if not NAME_RE.match(name or "") or ".." in name:
        raise StudioError(
            f"collection name {name!r} is not allowed: use 3-512 characters of letters, digits, "
            "'.', '_' or '-', starting and ending with a letter or digit"
        )
    if name.startswith(TMP):
        raise StudioError(f"collection names starting with {TMP!r} are the studio's own; choose another name")
    return name


@dataclass
class Hit:
    """One retrieved chunk. ``score`` is the cosine similarity (1 = same direction)."""

    source: str
    page: int | None
    chunk: int
    score: float
    text: str
    id: str = ""
    headers: str = ""
    anchor: str = ""  # the section's id in an HTML or Markdown file
    bm25: float | None = None  # the BM25 score, when a keyword ranking found it
    rrf: float | None = None  # the fused rank score, in hybrid retrieval

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def place(source: str, page: int | None = None, section: str = "", anchor: str = "", sep: str = ", ") -> str:
    """Where a passage is, for people: ``R-intro.pdf, page 12`` or, where pages do not exist,
    ``struct.html § Byte Order, Size, and Alignment (#byte-order-size-and-alignment)`` (the innermost
    heading, and the anchor to append to the page's address)."""
    if page:
        return f"{source}{sep}page {page}"
    heading = section.rsplit(" > ", 1)[-1] if section else ""
    return source + (f" § {heading}" if heading else "") + (f" (#{anchor})" if anchor else "")


class Store:
    """A Chroma client plus the studio's conventions (names, cosine space, batching)."""

    def __init__(self, url: str | None = None):
        import chromadb
        from chromadb.config import Settings

        settings = Settings(anonymized_telemetry=False)
        if url:
            parsed = urlparse(url if "://" in url else f"http://{url}")
            if not parsed.hostname:
                raise StudioError(f"--chroma-url {url!r} is not a URL like http://127.0.0.1:8000")
            port = parsed.port or (443 if parsed.scheme == "https" else 8000)
            try:
                self.client = chromadb.HttpClient(host=parsed.hostname, port=port,
                                                  ssl=parsed.scheme == "https", settings=settings)
                self.client.heartbeat()
            except Exception:
                raise StudioError(f"cannot reach a Chroma server at {url}; is `chroma run` up?") from None
            self.location = f"{parsed.scheme}://{parsed.hostname}:{port}"
        else:
            path = home_dir("chroma")
            self.client = chromadb.PersistentClient(path=str(path), settings=settings)
            self.location = f"local:{path}"

    def collection(self, name: str, create: bool = True, embed_model: str | None = None):
        """The Chroma collection; ``create`` makes a missing one, recording ``embed_model`` (the model its
        vectors come from) in its metadata, so the vectors and the name of their model never part."""
        if not name.startswith(TMP):
            check_collection_name(name)
        if create:
            try:
                return self.client.get_collection(name, embedding_function=None)
            except Exception:  # noqa: BLE001 - chroma's "does not exist" differs between its clients
                meta = {"embed_model": embed_model} if embed_model else None
                return self.client.get_or_create_collection(
                    name, configuration={"hnsw": {"space": "cosine"}}, metadata=meta, embedding_function=None)
        try:
            return self.client.get_collection(name, embedding_function=None)
        except Exception:
            known = ", ".join(self.list_collections()) or "none yet"
            raise StudioError(f"no collection {name!r}; existing collections: {known}") from None

    def create(self, name: str, embed_model: str) -> None:
        """A new, empty collection (one of the studio's temporary ones) for ``embed_model``'s vectors."""
        self.client.create_collection(name, configuration={"hnsw": {"space": "cosine"}},
                                      metadata={"embed_model": embed_model}, embedding_function=None)

    def all_names(self) -> list[str]:
        """Every collection in the store, the studio's temporary ones included."""
        return sorted(c if isinstance(c, str) else c.name for c in self.client.list_collections())

    def list_collections(self) -> list[str]:
        return [n for n in self.all_names() if not n.startswith(TMP)]

    def embed_model(self, name: str) -> str | None:
        """The embedding model recorded for the collection's vectors (None for one made before it was kept)."""
        return (self.collection(name, create=False).metadata or {}).get("embed_model")

    def set_meta(self, name: str, **meta: str) -> None:
        col = self.collection(name, create=False)
        col.modify(metadata={**(col.metadata or {}), **meta})

    def rename(self, old: str, new: str) -> None:
        self.collection(old, create=False).modify(name=new)

    def drop(self, name: str) -> None:
        """Delete a collection if it exists (the studio's temporary ones)."""
        if name in self.all_names():
            self.client.delete_collection(name)

    def delete_collection(self, name: str) -> None:
        self.collection(name, create=False)
        self.client.delete_collection(name)

    def count(self, name: str, where: dict | None = None) -> int:
        """Chunks in the collection (those matching ``where`` when given)."""
        col = self.collection(name, create=False)
        return col.count() if where is None else len(col.get(where=where, include=[])["ids"])

    def add_chunks(self, name: str, ids: list[str], vectors, texts: list[str], metadatas: list[dict]) -> None:
        """Upsert (idempotent: the same id twice leaves one copy)."""
        col = self.collection(name, create=not name.startswith(TMP))
        for i in range(0, len(ids), BATCH):
            col.upsert(ids=ids[i:i + BATCH], embeddings=[list(map(float, v)) for v in vectors[i:i + BATCH]],
                       documents=texts[i:i + BATCH], metadatas=metadatas[i:i + BATCH])

    def delete_where(self, name: str, where: dict) -> None:
        self.collection(name).delete(where=where)

    def search(self, name: str, vector, k: int = 5, where: dict | None = None) -> list[Hit]:
        col = self.collection(name, create=False)
        res = col.query(query_embeddings=[list(map(float, vector))], n_results=k, where=where,
                        include=["documents", "metadatas", "distances"])
        hits = []
        for cid, text, meta, dist in zip(res["ids"][0], res["documents"][0], res["metadatas"][0],
                                         res["distances"][0], strict=True):
            meta = meta or {}
            hits.append(Hit(source=meta.get("source", ""), page=meta.get("page"), chunk=int(meta.get("chunk", 0)),
                            score=round(1.0 - float(dist), 6), text=text or "", id=cid,
                            headers=meta.get("headers", ""), anchor=meta.get("anchor", "")))
        return hits

    def get_chunks(self, name: str, where: dict | None = None, limit: int | None = None, offset: int = 0) -> dict:
        """The stored chunks (ids, documents, metadatas) matching ``where`` (a page of them with ``limit``)."""
        return self.collection(name, create=False).get(where=where, include=["documents", "metadatas"],
                                                       limit=limit, offset=offset)

    def as_vectorstore(self, name: str, embeddings):
        """The collection as a LangChain ``VectorStore`` (langchain-chroma's ``Chroma``)."""
        from langchain_chroma import Chroma

        self.collection(name)
        return Chroma(client=self.client, collection_name=name, embedding_function=embeddings)
