"""Okapi BM25 over a collection's chunks, with tokens that keep code identifiers whole.

``read.table``, ``install.packages`` and ``drop_na`` are kept as one token *and* split into
their parts, so a question naming a function finds it exactly and still matches prose.

score(q, d) = sum_t idf(t) * tf(t,d) * (k1 + 1) / (tf(t,d) + k1 * (1 - b + b * |d| / avgdl)),
idf(t) = ln(1 + (N - df(t) + 0.5) / (df(t) + 0.5)).
"""

from __future__ import annotations

import math
import re
from collections import Counter, defaultdict

import numpy as np

_TOKEN = re.compile(r"[a-z0-9_]+(?:[.][a-z0-9_]+)*")
STOPWORDS = frozenset("""a about above after again against all am an and any are as at be because been before
being below between both but by can could did do does doing down during each few for from further had has have
having he her here hers herself him himself his how i if in into is it its itself just me more most my myself no
nor not now of off on once only or other our ours ourselves out over own same she should so some such than that
the their theirs them themselves then there these they this those through to too under until up very was we were
what when where which while who whom why will with would you your yours yourself yourselves""".split())


def tokenize(text: str) -> list[str]:
    """Lower-cased word tokens without stopwords; dotted/underscored names also give their parts."""
    out: list[str] = []
    for tok in _TOKEN.findall(text.lower()):
        if tok in STOPWORDS:
            continue
        out.append(tok)
        if "." in tok or "_" in tok:
            out.extend(p for p in re.split(r"[._]", tok) if p and p not in STOPWORDS and p != tok)
    return out


class BM25Index:
    """An in-memory BM25 index: ``BM25Index(texts).search("read.table header", k=5)``."""

    def __init__(self, texts: list[str], k1: float = 1.5, b: float = 0.75):
        self.k1, self.b = k1, b
        self.n = len(texts)
        self.lengths = np.zeros(self.n, dtype=np.float32)
        self.postings: dict[str, list[tuple[int, int]]] = defaultdict(list)
        for i, text in enumerate(texts):
            counts = Counter(tokenize(text))
            self.lengths[i] = sum(counts.values())
            for term, tf in counts.items():
                self.postings[term].append((i, tf))
        self.avgdl = float(self.lengths.mean()) if self.n else 0.0

    def idf(self, term: str) -> float:
        df = len(self.postings.get(term, ()))
        return math.log(1 + (self.n - df + 0.5) / (df + 0.5))

    def scores(self, query: str) -> np.ndarray:
        """BM25 score of every document for ``query`` (shape (n,))."""
        out = np.zeros(self.n, dtype=np.float32)
        if not self.n:
            return out
        norm = self.k1 * (1 - self.b + self.b * self.lengths / max(self.avgdl, 1e-9))
        for term in set(tokenize(query)):
            posting = self.postings.get(term)
            if not posting:
                continue
            idx = np.fromiter((p[0] for p in posting), dtype=np.int64, count=len(posting))
            tf = np.fromiter((p[1] for p in posting), dtype=np.float32, count=len(posting))
            out[idx] += self.idf(term) * tf * (self.k1 + 1) / (tf + norm[idx])
        return out

    def search(self, query: str, k: int, allowed: np.ndarray | None = None) -> list[tuple[int, float]]:
        """Top ``k`` (index, score) with a positive score; ``allowed`` is a boolean mask."""
        s = self.scores(query)
        if allowed is not None:
            s = np.where(allowed, s, 0.0)
        top = np.argsort(-s, kind="stable")[:k]
        return [(int(i), float(s[i])) for i in top if s[i] > 0]
