"""RAG settings (light: importing this loads no model, index or database)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

from studio.errors import StudioError
from studio.limits import check_float, check_int
from studio.limits import current as current_limits
from studio.schema import config_class

STYLES = ("hybrid", "generative", "extractive")
MODES = ("dense", "bm25", "hybrid")


@config_class
@dataclass
class RetrievalConfig:
    """How many chunks to bring, found how."""

    k: int = 5
    mode: Literal["dense", "bm25", "hybrid"] = field(default="hybrid", metadata={"help": "dense | bm25 | hybrid"})
    fetch_k: int = field(default=20, metadata={"help": "candidates per ranking before fusion/MMR"})
    mmr: bool = False
    mmr_lambda: float = 0.7
    score_threshold: float = field(default=0.0, metadata={"help": "minimum cosine similarity of a hit"})
    rrf_k: int = 60

    def check(self) -> RetrievalConfig:
        if self.mode not in MODES:
            raise StudioError(f"unknown retrieval mode {self.mode!r}; choose one of: {', '.join(MODES)}")
        lim = current_limits()
        check_int("k", self.k, 1, lim.retrieval_k, "retrieval_k")
        check_int("fetch_k", self.fetch_k, 1, lim.fetch_k, "fetch_k")
        check_int("rrf_k", self.rrf_k, 1, 10_000)
        check_float("score_threshold", self.score_threshold, -1, 1)
        if not 0 <= self.mmr_lambda <= 1:
            raise StudioError(f"mmr_lambda must be between 0 and 1, got {self.mmr_lambda}")
        return self


@config_class
@dataclass
class RagConfig:
    """How the chain retrieves and answers (``rag`` section of configs/studio.yaml)."""

    retrieval: RetrievalConfig = field(default_factory=lambda: RetrievalConfig(k=4, mode="hybrid"))
    style: Literal["hybrid", "generative", "extractive"] = field(default="hybrid", metadata={
        "help": "hybrid | generative | extractive"})
    min_score: float = field(default=0.0, metadata={
        "help": "a floor: best chunk's cosine needed to answer (0 = none; the evidence decides)"})
    min_evidence: float | None = field(default=None, metadata={
        "help": "the answerability model's probability needed to answer (None = the threshold fitted on the "
                "tuning halves; 0 = always answer)"})
    refuse_unsupported: bool = field(default=True, metadata={
        "help": "mark a generative answer unanswerable when the passages support none of its sentences"})
    quotes: int = field(default=2, metadata={"help": "at most this many quotes (hybrid, extractive)"})
    quote_ratio: float = field(default=0.7, metadata={"help": "a further quote must score this share of the best"})
    quote_same_passage: bool = field(default=True, metadata={"help": "further quotes only from the first's passage"})
    sentence_window: int = field(default=3, metadata={"help": "sentences per quote"})
    keyword_weight: float = field(default=0.6, metadata={"help": "weight of keyword overlap in quote choice"})
    max_tokens: int = 120
    temperature: float = field(default=0.0, metadata={
        "help": "grounded answers' temperature (the Chat tab sets its slider to it when a collection is picked)"})
    condense: Literal["concat", "llm", "off"] = field(default="concat", metadata={"help": "concat | llm | off"})
    groundedness_scorer: str = field(default="judge", metadata={"help": "judge | encoder | lexical | embedding | llm"})

    def check(self) -> RagConfig:
        if self.style not in STYLES:
            raise StudioError(f"unknown answer style {self.style!r}; choose one of: {', '.join(STYLES)}")
        if self.condense not in ("concat", "llm", "off"):
            raise StudioError(f"condense must be concat, llm or off, not {self.condense!r}")
        check_float("min_score", self.min_score, -1, 1)
        if self.min_evidence is not None:
            check_float("min_evidence", self.min_evidence, 0, 1)
        check_float("temperature", self.temperature, 0, 5)
        check_int("max_tokens", self.max_tokens, 1, current_limits().max_new_tokens, "max_new_tokens")
        check_int("quotes", self.quotes, 0, 20)
        check_int("sentence_window", self.sentence_window, 1, 20)
        self.retrieval.check()
        return self
