"""Retrieval over a collection: dense, BM25, hybrid (reciprocal rank fusion), MMR, thresholds.

>>> r = Retriever(Ingestor(), "manuals", RetrievalConfig(k=5, mode="hybrid"))
>>> r.retrieve("How do I use read.table?")            # [Hit(...)], best first
>>> r.as_langchain().invoke("read.table header")       # LangChain Documents

Every hit carries ``score``, the cosine similarity of its chunk to the query (also for chunks
found by BM25 alone), so one threshold means the same thing in every mode.
Hybrid: rrf(d) = sum over the dense and BM25 rankings of 1 / (rrf_k + rank(d)).
MMR: pick argmax_d  lambda * sim(q, d) - (1 - lambda) * max_{s in picked} sim(d, s).

Why our own fusion and MMR rather than LangChain's ``EnsembleRetriever`` (the same reciprocal rank
fusion) and langchain-chroma's ``max_marginal_relevance_search``: not for measured quality; no
side-by-side measurement of them has been made. It is for what the studio needs from every hit: a
cosine score even for chunks BM25 alone found (the answerability threshold and the Documents tab
read it), MMR over the fused candidates rather than the dense ones only, and filters by source that
apply to both rankings.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass, replace

import numpy as np

from ingest.store import Hit
from studio.errors import StudioError
from studio.limits import check_text
from studio.rag.bm25 import BM25Index
from studio.rag.config import RetrievalConfig


@dataclass
class Retrieval:
    hits: list[Hit]
    dense_ids: list[str]  # the dense ranking's top k (empty in bm25 mode)
    bm25_ids: list[str]  # the BM25 ranking's top k (empty in dense mode)
    query_vector: np.ndarray


class _Corpus:
    """A collection's chunks with their BM25 index, rebuilt when the collection changes."""

    def __init__(self, got: dict):
        self.ids: list[str] = got["ids"]
        self.texts: list[str] = got["documents"]
        self.metas: list[dict] = [m or {} for m in got["metadatas"]]
        self.position = {cid: i for i, cid in enumerate(self.ids)}
        self.sources = np.array([m.get("source", "") for m in self.metas], dtype=object)
        self.index = BM25Index(self.texts)


class Retriever:
    """Retrieves chunks of one collection of an :class:`ingest.pipeline.Ingestor`'s store."""

    _cache: dict[tuple, _Corpus] = {}
    _cache_lock = threading.Lock()

    def __init__(self, ingestor, collection: str, cfg: RetrievalConfig | None = None):
        self.ingestor = ingestor
        self.collection = collection
        self.cfg = (cfg or RetrievalConfig()).check()
        ingestor.readable(collection)  # the user's or a shared one; a clear error for a missing one

    @property
    def embedder(self):
        """The collection's own embedding model (the one its vectors came from)."""
        return self.ingestor.embedder_for(self.collection)

    # --- the pieces -----------------------------------------------------------------------------
    def corpus(self) -> _Corpus:
        """The BM25 corpus, cached per collection version (the manifest's file versions)."""
        store = self.ingestor.store
        versions = tuple((r.source, r.version) for r in self.ingestor.manifest.files(store.location, self.collection))
        key = (store.location, self.collection, versions, store.count(self.collection))
        with self._cache_lock:
            if key not in self._cache:
                self._cache.clear()  # one corpus at a time keeps memory flat
                self._cache[key] = _Corpus(store.get_chunks(self.collection))
            return self._cache[key]

    def _where(self, sources: list[str] | None) -> dict | None:
        if not sources:
            return None
        return {"source": sources[0]} if len(sources) == 1 else {"source": {"$in": list(sources)}}

    def _vectors(self, ids: list[str]) -> dict[str, np.ndarray]:
        if not ids:
            return {}
        got = self.ingestor.store.collection(self.collection, create=False).get(ids=ids, include=["embeddings"])
        return {cid: np.asarray(v, dtype=np.float32) for cid, v in zip(got["ids"], got["embeddings"], strict=True)}

    def _bm25(self, query: str, n: int, sources: list[str] | None) -> list[Hit]:
        corpus = self.corpus()
        allowed = np.isin(corpus.sources, sources) if sources else None
        hits = []
        for i, score in corpus.index.search(query, n, allowed):
            m = corpus.metas[i]
            hits.append(Hit(source=m.get("source", ""), page=m.get("page"), chunk=int(m.get("chunk", 0)),
                            score=0.0, text=corpus.texts[i], id=corpus.ids[i], headers=m.get("headers", ""),
                            anchor=m.get("anchor", ""), bm25=round(score, 4)))
        return hits

    # --- the whole retrieval ------------------------------------------------------------------------
    def retrieve(self, query: str, sources: list[str] | None = None, cfg: RetrievalConfig | None = None) -> list[Hit]:
        """The ``k`` best chunks for ``query`` (optionally only from ``sources``), best first."""
        return self.search(query, sources, cfg).hits

    def search(self, query: str, sources: list[str] | None = None, cfg: RetrievalConfig | None = None) -> Retrieval:
        """:meth:`retrieve` with what the answerability check reads: each ranking's top ids, the query vector."""
        cfg = (cfg or self.cfg).check()
        if not check_text("the query", query, "message_chars").strip():
            raise StudioError("the question is empty")
        if sources is not None and len(sources) > 1000:
            raise StudioError("name at most 1,000 sources to search in")
        qvec = self.embedder.encode([query])[0]
        n = max(cfg.fetch_k, cfg.k)
        store = self.ingestor.store
        dense = [] if cfg.mode == "bm25" else store.search(self.collection, qvec, n, self._where(sources))
        sparse = [] if cfg.mode == "dense" else self._bm25(query, n, sources)
        if cfg.mode == "dense":
            ranked = dense
        elif cfg.mode == "bm25":
            ranked = sparse
        else:
            ranked = self._fuse(dense, sparse, cfg.rrf_k)
        vectors = self._vectors([h.id for h in ranked]) if (cfg.mmr or cfg.mode != "dense") else {}
        for h in ranked:  # every hit gets its cosine similarity, whatever found it
            if h.id in vectors:
                h.score = round(float(vectors[h.id] @ qvec), 6)
        ranked = [h for h in ranked if h.score >= cfg.score_threshold]
        if cfg.mmr:
            ranked = self._mmr(ranked, vectors, qvec, cfg.k, cfg.mmr_lambda)
        return Retrieval(ranked[:cfg.k], [h.id for h in dense[:cfg.k]], [h.id for h in sparse[:cfg.k]], qvec)

    @staticmethod
    def _fuse(dense: list[Hit], sparse: list[Hit], rrf_k: int) -> list[Hit]:
        fused: dict[str, Hit] = {}
        for ranking in (dense, sparse):
            for rank, hit in enumerate(ranking, 1):
                mine = fused.setdefault(hit.id, replace(hit, rrf=0.0))
                mine.rrf += 1.0 / (rrf_k + rank)
                if hit.bm25 is not None:
                    mine.bm25 = hit.bm25
        out = sorted(fused.values(), key=lambda h: -h.rrf)
        for h in out:
            h.rrf = round(h.rrf, 6)
        return out

    @staticmethod
    def _mmr(hits: list[Hit], vectors: dict, qvec: np.ndarray, k: int, lam: float) -> list[Hit]:
        pool = [h for h in hits if h.id in vectors]
        picked: list[Hit] = []
        while pool and len(picked) < k:
            def gain(h: Hit) -> float:
                redundancy = max((float(vectors[h.id] @ vectors[p.id]) for p in picked), default=0.0)
                return lam * float(vectors[h.id] @ qvec) - (1 - lam) * redundancy
            best = max(pool, key=gain)
            picked.append(best)
            pool.remove(best)
        return picked

    def as_langchain(self, sources: list[str] | None = None):
        """This retriever as a LangChain ``BaseRetriever``."""
        from studio.rag.lc import StudioRetriever

        return StudioRetriever(retriever=self, sources=sources)
