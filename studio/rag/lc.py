"""LangChain adapters for the RAG pieces (imported only when LangChain composition is wanted)."""

from __future__ import annotations

from typing import Any

from langchain_core.callbacks import CallbackManagerForRetrieverRun
from langchain_core.documents import Document
from langchain_core.retrievers import BaseRetriever
from pydantic import ConfigDict


class StudioRetriever(BaseRetriever):
    """A :class:`studio.rag.retriever.Retriever` as a LangChain ``BaseRetriever``.

    Documents carry ``source``, ``page``, ``chunk``, ``score`` (cosine), ``bm25`` and ``rrf``.
    """

    model_config = ConfigDict(arbitrary_types_allowed=True)

    retriever: Any
    sources: list[str] | None = None

    def _get_relevant_documents(self, query: str, *, run_manager: CallbackManagerForRetrieverRun) -> list[Document]:
        return [Document(page_content=h.text, id=h.id,
                         metadata={k: v for k, v in h.to_dict().items() if k not in ("text", "id")})
                for h in self.retriever.retrieve(query, self.sources)]
