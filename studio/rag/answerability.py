"""Do the documents answer this question? Evidence that does not hang on one corpus's score scale.

A fixed cosine threshold (the studio's first rule: best chunk >= 0.30) was tuned on the R manuals and
did not carry over: on a database manual it refused 1 of 6 unanswerable questions, because near-miss
questions ("which function makes a version-4 UUID?" over pages about the uuid type) score as high as
answerable ones. So the decision reads several kinds of evidence, each on a scale of its own:

- ``top``: the best chunk's cosine similarity to the question;
- ``coverage``: the share of the question's terms, weighted by their rarity *in this collection*
  (BM25 idf), found in one of the best three chunks;
- ``rare_absent``: how many of the question's words are rare in general English (eval's word
  rarities) and absent from the whole collection: a question about ``ntile`` or ``dplyr`` asked of
  documents that never say the word;
- ``agreement``: the share of the dense ranking's top k that BM25 also ranks top k;
- ``best_window``: the best cosine between the question and a window of two sentences of the best
  chunks (whether some sentence actually addresses the question, not only the chunk's topic).

A logistic model over them, fitted on the *tuning halves* of three corpora of different kinds (R
manuals as PDF, PostgreSQL's manual and Python's library reference as HTML; ``eval.devsets``) by
``benchmarks/rag_tune.py``, gives ``p``, the chance the documents answer; the one threshold was
chosen there too. The fitted weights live in ``answerability.json`` beside this file.
"""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass
from functools import lru_cache
from pathlib import Path

from eval.text import idf as general_idf
from studio.text import tokenize

MODEL = Path(__file__).with_name("answerability.json")
FEATURES = ("top", "coverage", "rare_absent", "agreement", "best_window")
RARE_IDF = 5.75  # a word in at most ~30 of the 10,000 general-English documents eval.text counts


@dataclass
class Evidence:
    top: float
    coverage: float
    rare_absent: float
    agreement: float
    best_window: float

    def vector(self) -> list[float]:
        return [getattr(self, f) for f in FEATURES]

    def to_dict(self) -> dict:
        return {k: round(v, 4) for k, v in asdict(self).items()}


def gather(question: str, hits, dense_ids: list[str], bm25_ids: list[str], index, best_window: float) -> Evidence:
    """The evidence for one retrieval (``index``: the collection's :class:`studio.rag.bm25.BM25Index`)."""
    terms = set(tokenize(question))
    total = sum(index.idf(t) for t in terms) or 1.0
    coverage = max((sum(index.idf(t) for t in terms & set(tokenize(h.text))) / total for h in hits[:3]), default=0.0)
    absent = [t for t in terms if t not in index.postings and general_idf(t) >= RARE_IDF]
    agreement = len(set(dense_ids) & set(bm25_ids)) / max(1, len(dense_ids)) if dense_ids and bm25_ids else 0.0
    return Evidence(top=hits[0].score if hits else 0.0, coverage=coverage, rare_absent=float(min(len(absent), 3)),
                    agreement=agreement, best_window=best_window)


@lru_cache(maxsize=1)
def model() -> dict:
    return json.loads(MODEL.read_text())


def probability(evidence: Evidence, fitted: dict | None = None) -> float:
    """The fitted model's chance that the documents answer the question."""
    m = fitted or model()
    z = m["intercept"] + sum(c * (x - mu) / s for c, x, mu, s in
                             zip(m["coef"], evidence.vector(), m["mean"], m["scale"], strict=True))
    return 1.0 / (1.0 + math.exp(-z))


def threshold() -> float:
    return float(model()["threshold"])
